"""Dark current that cannot go negative: Buil's pair method, its N-frame alternating sum, the multi-exposure slope —
and the naive methods beside them, flagged when they fail as the reference paper (Part 1) describes.

Pair (Buil): two darks of equal exposure t and temperature; fixed pattern and amp glow cancel in D1 − D2:
    Dc ≤ (g²·σ²(D1 − D2)/2 − RON²_e) / t        [e⁻/s/pixel]
N frames (even n), alternating signs in float64 (no truncation, no cancellation of large partial sums):
    Dc ≤ (g²·σ²(D1 − D2 + D3 − … − Dn)/n − RON²_e) / t
Both are upper bounds: the random-telegraph variance RTS² ≥ 0 is included. g in e⁻/ADU, σ the 5σ-clipped standard
deviation (ADU) over the measurement region (central half of DATASEC: no overscan, no glow corners). RON is measured
from the biases over the same region unless given; the measured value carries the same ADC quantisation variance as
the darks, so it cancels (a datasheet RON does not, and biases Dc by q²·g²/12/t).
Uncertainty (1σ): δ(σ²) = σ²·√(2/(N_px − 1)) for the sum's variance, and 2·RON·δRON; the interval is ± z·δ.

Naive methods, for comparison only:
    mean method   Dc = g·(mean(D) − mean(B))/t — negative when optical-black clamping pushes darks below the bias;
    overscan-corrected mean method — the same after subtracting each frame's BIASSEC mean (removes ADC drift only);
    two-exposure noise method (CCD era, our reconstruction of the idea behind BasicCCDParameters' second method, not
    its code): Dc = g²·(σ²(D_long − B) − σ²(D_short − B))/(t_long − t_short), single frames, so fixed pattern and glow
    noise leak in.
Several exposures: the pair variance per frame v(t) = g²σ²(ΣD)/n = RON² + Dc·t is fitted by a weighted line; the
slope is Dc, independent of the RON estimate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from calib.measure.stats import (
    DEFAULT_K_SIGMA,
    DEFAULT_MARGIN_FRACTION,
    AlternatingSeries,
    alternating_series,
    clipped_stats,
    frame_header,
    header_float,
    load_frame,
)
from calib.sections import Section


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _exposure(series: AlternatingSeries, exposure_s: float | None) -> float:
    t = exposure_s if exposure_s is not None else series.exposures_s[0]
    if t is None:
        raise ValueError("dark exposure unknown: no EXPTIME in the headers and no exposure_s given")
    if t <= 0:
        raise ValueError(f"dark exposure must be > 0 s, got {t}")
    return float(t)


def _bias_terms(biases: Sequence[object], gain: float, read_noise_e: float | None, sec: Section,
                k_sigma: float, notes: list[str]) -> tuple[float, float, str, AlternatingSeries | None]:
    """(RON e⁻, δRON e⁻, source, bias series or None)."""
    bseries = None
    if len(biases) >= 2:
        bseries = alternating_series(list(biases), region=sec, k_sigma=k_sigma)
        notes.extend(f"biases: {n}" for n in bseries.notes)
    if read_noise_e is not None:
        if read_noise_e < 0:
            raise ValueError(f"read_noise_e must be >= 0, got {read_noise_e}")
        notes.append("read noise given, not measured: a datasheet value lacks the ADC quantisation noise that the "
                     "darks carry, which biases the dark current upwards")
        return float(read_noise_e), 0.0, "given", bseries
    if bseries is None:
        raise ValueError("need >= 2 bias frames to measure the read noise (or give read_noise_e)")
    n, st = bseries.steps[-1]
    ron_adu = st.std / math.sqrt(n)
    return gain * ron_adu, gain * st.std_uncertainty / math.sqrt(n), f"measured from {n} biases", bseries


def measure_dark_current(darks: Sequence[object], biases: Sequence[object], gain_e_per_adu: float,
                         read_noise_e: float | None = None, region: str | Section | None = None, *,
                         exposure_s: float | None = None, k_sigma: float = DEFAULT_K_SIGMA,
                         margin_fraction: float = DEFAULT_MARGIN_FRACTION, confidence: float = 0.95) -> dict[str, Any]:
    """Dark current (e⁻/s/pixel) from ≥ 2 darks of equal exposure (+ biases); a JSON-ready dict.

    Keys: ``dark_current_e_per_s`` (N-frame upper bound), ``dark_current_ci_e_per_s`` [low, high],
    ``dark_current_uncertainty_e_per_s`` (1σ), ``dark_current_pair_e_per_s`` (first pair only), ``convergence``
    (n = 2, 4, …), ``dark_current_naive_e_per_s`` (mean method), ``dark_current_naive_overscan_e_per_s``,
    ``naive_negative``, ``naive_understated``, ``read_noise_e`` and its source, ``n_frames``, ``frames``,
    ``exposure_s``, ``temperature_c``, ``region``, ``method``, ``notes``.
    """
    if gain_e_per_adu is None or gain_e_per_adu <= 0:
        raise ValueError(f"gain_e_per_adu must be > 0, got {gain_e_per_adu}")
    g = float(gain_e_per_adu)
    z = _z(confidence)
    ds = alternating_series(list(darks), region=region, k_sigma=k_sigma, margin_fraction=margin_fraction)
    t = _exposure(ds, exposure_s)
    notes = list(ds.notes)
    ron_e, d_ron_e, ron_source, bs = _bias_terms(biases, g, read_noise_e, ds.region, k_sigma, notes)
    convergence = []
    for n, st in ds.steps:
        var_e = g * g * st.std**2 / n
        dc = (var_e - ron_e**2) / t
        d_dc = math.hypot(var_e * math.sqrt(2.0 / max(st.n_used - 1, 1)), 2.0 * ron_e * d_ron_e) / t
        convergence.append({"n": n, "dark_current_e_per_s": dc, "uncertainty_e_per_s": d_dc,
                            "variance_e2": var_e, "n_pixels": st.n_used, "n_rejected": st.n_rejected})
    final = convergence[-1]
    dc, d_dc = final["dark_current_e_per_s"], final["uncertainty_e_per_s"]
    ci = [dc - z * d_dc, dc + z * d_dc]
    dark_signal_e = dc * t
    if dc < 0:
        notes.append(f"variance of the darks ({final['variance_e2']:.3f} e⁻²) is below RON² ({ron_e**2:.3f} e⁻²): "
                     "dark current not measurable at this exposure; use longer darks")
    elif dark_signal_e < 0.5 * ron_e**2:
        notes.append(f"dark signal {dark_signal_e:.3f} e⁻ is small next to RON² = {ron_e**2:.3f} e⁻²: the result "
                     "depends strongly on the read noise; longer darks measure it better")
    naive = naive_os = None
    if bs is not None:
        mean_d, mean_b = float(np.mean(ds.means_adu)), float(np.mean(bs.means_adu))
        naive = g * (mean_d - mean_b) / t
        os_dark, os_bias = _all_present(ds.overscan_means_adu), _all_present(bs.overscan_means_adu)
        if os_dark is not None and os_bias is not None:
            os_d = mean_d - float(np.mean(os_dark))
            os_b = mean_b - float(np.mean(os_bias))
            naive_os = g * (os_d - os_b) / t
    naive_negative = naive is not None and naive < 0
    naive_understated = naive is not None and naive < ci[0]
    if naive_negative:
        notes.append(f"naive mean method gives {naive:.5f} e⁻/s: the darks are darker than the biases "
                     "(optical-black over-correction) — a physical nonsense, not a dark current")
    elif naive_understated:
        notes.append(f"naive mean method ({naive:.5f} e⁻/s) is below the pair-method interval: understated")
    temps = [x for x in ds.temperatures_c if x is not None]
    return {
        "measurement": "dark-current",
        "method": "pair (Buil)" if ds.steps[-1][0] == 2 else "N-frame alternating sum",
        "dark_current_e_per_s": dc,
        "dark_current_upper_bound": True,
        "dark_current_uncertainty_e_per_s": d_dc,
        "dark_current_ci_e_per_s": ci,
        "confidence": confidence,
        "dark_current_pair_e_per_s": convergence[0]["dark_current_e_per_s"],
        "dark_signal_e": dark_signal_e,
        "convergence": convergence,
        "dark_current_naive_e_per_s": naive,
        "dark_current_naive_overscan_e_per_s": naive_os,
        "naive_negative": naive_negative,
        "naive_understated": naive_understated,
        "dark_mean_adu": float(np.mean(ds.means_adu)),
        "bias_mean_adu": float(np.mean(bs.means_adu)) if bs is not None else None,
        "gain_e_per_adu": g,
        "read_noise_e": ron_e,
        "read_noise_e_uncertainty": d_ron_e,
        "read_noise_source": ron_source,
        "n_frames": ds.steps[-1][0],
        "n_biases": bs.steps[-1][0] if bs is not None else 0,
        "frames": ds.names,
        "exposure_s": t,
        "temperature_c": float(np.mean(temps)) if temps else None,
        "temperature_spread_c": float(np.ptp(temps)) if temps else None,
        "region": ds.region.iraf,
        "k_sigma": k_sigma,
        "notes": notes,
    }


def _all_present(values: Sequence[float | None]) -> list[float] | None:
    """``values`` when none is missing, else None."""
    present = [v for v in values if v is not None]
    return present if len(present) == len(values) else None


def _frame_exposure(item: object) -> float:
    if isinstance(item, np.ndarray):
        raise ValueError("grouping by exposure needs FITS headers (EXPTIME); give paths or Frames, not bare arrays")
    header = frame_header(item)
    t = header_float(header, "EXPTIME", "EXPOSURE")
    if t is None:
        raise ValueError(f"{item}: no EXPTIME in the header")
    return t


def group_by_exposure(frames: Sequence[object], decimals: int = 3) -> dict[float, list[object]]:
    """Frames grouped by their header EXPTIME (rounded to ``decimals``), shortest exposure first."""
    groups: dict[float, list[object]] = {}
    for item in frames:
        groups.setdefault(round(_frame_exposure(item), decimals), []).append(item)
    return dict(sorted(groups.items()))


def noise_ratio_dark_current(dark_short: object, dark_long: object, bias: object, gain_e_per_adu: float,
                             region: Section, k_sigma: float = DEFAULT_K_SIGMA) -> float:
    """CCD-era two-exposure noise method: g²·(σ²(D_long − B) − σ²(D_short − B))/(t_long − t_short) [e⁻/s].

    Single frames: fixed pattern (DSNU, glow gradient) and the bias' own noise enter both σ², only partly cancelling.
    """
    b, _ = load_frame(bias)
    cut_b = b[region.slices]
    var = []
    for item in (dark_short, dark_long):
        d, _ = load_frame(item)
        var.append(clipped_stats(d[region.slices] - cut_b, k_sigma).std ** 2)
    dt = _frame_exposure(dark_long) - _frame_exposure(dark_short)
    if dt <= 0:
        raise ValueError("the long dark must have the longer exposure")
    return gain_e_per_adu**2 * (var[1] - var[0]) / dt


def measure_dark_current_exposures(darks: Sequence[object], biases: Sequence[object], gain_e_per_adu: float,
                                   read_noise_e: float | None = None, region: str | Section | None = None, *,
                                   k_sigma: float = DEFAULT_K_SIGMA, margin_fraction: float = DEFAULT_MARGIN_FRACTION,
                                   confidence: float = 0.95) -> dict[str, Any]:
    """Darks at ≥ 2 exposures (≥ 2 frames each): per-exposure N-frame results and the slope of the pair variance.

    v(t) = g²·σ²(ΣD)/n (e⁻²) is fitted by v = a + Dc·t, weights 1/δv; ``dark_current_e_per_s`` is the slope Dc with
    its 1σ fit uncertainty and interval; √a estimates the read noise. Also the naive mean-method values per exposure
    and the two-exposure noise method (shortest vs longest exposure).
    """
    groups = {t: fr for t, fr in group_by_exposure(darks).items() if len(fr) >= 2}
    if len(groups) < 2:
        raise ValueError("the slope method needs >= 2 exposures with >= 2 darks each; "
                         f"got {[(t, len(f)) for t, f in group_by_exposure(darks).items()]}")
    per_exposure = [measure_dark_current(fr, biases, gain_e_per_adu, read_noise_e, region, k_sigma=k_sigma,
                                         margin_fraction=margin_fraction, confidence=confidence)
                    for fr in groups.values()]
    t = np.array([r["exposure_s"] for r in per_exposure])
    v = np.array([r["convergence"][-1]["variance_e2"] for r in per_exposure])
    dv = np.array([r["convergence"][-1]["variance_e2"] * math.sqrt(2.0 / max(r["convergence"][-1]["n_pixels"] - 1, 1))
                   for r in per_exposure])
    w = 1.0 / dv**2
    sw, swt, swtt = w.sum(), (w * t).sum(), (w * t * t).sum()
    swv, swtv = (w * v).sum(), (w * t * v).sum()
    det = sw * swtt - swt**2
    slope = (sw * swtv - swt * swv) / det
    intercept = (swtt * swv - swt * swtv) / det
    d_slope = math.sqrt(sw / det)
    resid = v - (intercept + slope * t)
    chi2 = float(np.sum(w * resid**2))
    if len(t) > 2 and chi2 / (len(t) - 2) > 1.0:  # scatter beyond the pixel statistics: inflate
        d_slope *= math.sqrt(chi2 / (len(t) - 2))
    z = _z(confidence)
    region_used = per_exposure[0]["region"]
    notes: list[str] = []
    noise_ratio = None
    if biases:
        noise_ratio = noise_ratio_dark_current(groups[min(groups)][0], groups[max(groups)][0], biases[0],
                                               gain_e_per_adu, Section.parse(region_used), k_sigma)
    naive = [r["dark_current_naive_e_per_s"] for r in per_exposure]
    if any(x is not None and x < 0 for x in naive):
        notes.append("the naive mean method goes negative at " + ", ".join(
            f"{r['exposure_s']:g} s" for r in per_exposure if (r["dark_current_naive_e_per_s"] or 0) < 0))
    return {
        "measurement": "dark-current",
        "method": "pair-variance slope over exposures",
        "dark_current_e_per_s": slope,
        "dark_current_upper_bound": True,
        "dark_current_uncertainty_e_per_s": d_slope,
        "dark_current_ci_e_per_s": [slope - z * d_slope, slope + z * d_slope],
        "confidence": confidence,
        "read_noise_from_intercept_e": math.sqrt(intercept) if intercept > 0 else None,
        "fit_chi2": chi2,
        "dark_current_naive_e_per_s": naive[-1],
        "naive_negative": any(x is not None and x < 0 for x in naive),
        "dark_current_noise_ratio_e_per_s": noise_ratio,
        "read_noise_e": per_exposure[0]["read_noise_e"],
        "gain_e_per_adu": gain_e_per_adu,
        "exposures_s": t.tolist(),
        "exposure_s": float(t.max()),
        "n_frames": int(sum(r["n_frames"] for r in per_exposure)),
        "per_exposure": per_exposure,
        "region": region_used,
        "notes": notes,
    }
