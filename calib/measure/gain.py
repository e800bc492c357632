"""Gain by photon transfer from pairs of equal flats and a pair of biases; multi-level photon-transfer curve (PTC).

One level (Janesick): g = (μF1 + μF2 − μB1 − μB2) / (σ²(F1 − F2) − σ²(B1 − B2))  [e⁻/ADU]. The flat field's
pixel-response pattern (PRNU, vignetting, dust) cancels in F1 − F2; the bias-pair variance removes the read noise.
Means are plain means over the region (ADU), σ² clipped variances (ADU²). Uncertainty: the variance of a clipped σ²
over N pixels is σ⁴·2/(N−1), propagated to g (means are far more precise and neglected).

Several levels: per level signal S = (μF1 + μF2)/2 − (μB1 + μB2)/2 (ADU) and shot variance
V = (σ²(F1 − F2) − σ²(B1 − B2))/2 (ADU²). Below saturation V = S/g, so a least-squares line V = a·S + b through the
levels below the variance peak gives g = 1/a. Full well: g·S at the level of largest variance (the PTC turns over when
pixels start to clip); a lower bound when the variance still rises at the brightest level. Linearity: when the flats
carry different ``EXPTIME``, a line S = k·t through the unsaturated levels and the largest residual in % of S.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from calib.measure.stats import (
    DEFAULT_K_SIGMA,
    DEFAULT_MARGIN_FRACTION,
    alternating_series,
)
from calib.sections import Section


def _pair(items: Sequence[object], what: str, region: str | Section | None, k_sigma: float,
          margin_fraction: float) -> tuple[float, float, float, int, Section, float | None]:
    """(mean of the two frames, σ² of their difference, δσ², N pixels, region, EXPTIME) for exactly two frames."""
    if len(items) != 2:
        raise ValueError(f"photon transfer needs exactly 2 {what} per level, got {len(items)}")
    s = alternating_series(list(items), region=region, k_sigma=k_sigma, margin_fraction=margin_fraction,
                           exposure_tolerance=0.01)
    _, st = s.steps[0]
    var = st.std**2
    d_var = var * math.sqrt(2.0 / max(st.n_used - 1, 1))
    return float(np.mean(s.means_adu)), var, d_var, st.n_used, s.region, s.exposures_s[0]


def measure_gain(flats: Sequence[object], biases: Sequence[object], *, region: str | Section | None = None,
                 k_sigma: float = DEFAULT_K_SIGMA, margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> dict[str, Any]:
    """Gain (e⁻/ADU) from two equal flats and two biases. JSON-ready dict with ``gain_e_per_adu`` and its uncertainty,
    ``signal_adu``, ``shot_variance_adu2``, ``read_noise_adu`` (σ(B1 − B2)/√2) and ``read_noise_e``."""
    mu_f, var_f, dvar_f, n_px, sec, exp_s = _pair(flats, "flats", region, k_sigma, margin_fraction)
    mu_b, var_b, dvar_b, _, _, _ = _pair(biases, "biases", sec, k_sigma, margin_fraction)
    shot_var2 = var_f - var_b  # variance of the difference: twice the per-frame shot variance
    if shot_var2 <= 0 or mu_f <= mu_b:
        raise ValueError(f"flats show no photon signal above the biases (mean {mu_f:.1f} vs {mu_b:.1f} ADU, "
                         f"difference variance {var_f:.1f} vs {var_b:.1f} ADU²): are they really flats?")
    gain = 2.0 * (mu_f - mu_b) / shot_var2
    d_gain = gain * math.hypot(dvar_f, dvar_b) / shot_var2
    ron_adu = math.sqrt(var_b / 2.0)
    return {
        "measurement": "gain",
        "method": "photon-transfer pair",
        "gain_e_per_adu": gain,
        "gain_e_per_adu_uncertainty": d_gain,
        "signal_adu": mu_f - mu_b,
        "signal_e": gain * (mu_f - mu_b),
        "shot_variance_adu2": shot_var2 / 2.0,
        "read_noise_adu": ron_adu,
        "read_noise_e": gain * ron_adu,
        "flat_exposure_s": exp_s,
        "n_pixels": n_px,
        "region": sec.iraf,
        "notes": [],
    }


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted least-squares y = a·x + b → (a, b)."""
    a, b = np.polyfit(x, y, 1, w=w)
    return float(a), float(b)


def measure_ptc(flat_pairs: Sequence[Sequence[object]], biases: Sequence[object], *,
                region: str | Section | None = None, k_sigma: float = DEFAULT_K_SIGMA,
                margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> dict[str, Any]:
    """Photon-transfer curve from ≥ 2 flat pairs at different levels: gain fit, full well, linearity.

    Returns ``gain_e_per_adu`` (1/slope of V against S below the variance peak) with its uncertainty, ``levels``
    (per level: exposure_s, signal_adu, shot_variance_adu2, gain_e_per_adu), ``full_well_e`` with
    ``full_well_reached`` (False: a lower bound), ``linearity_max_deviation_pct`` (None when the flats share one
    exposure), ``read_noise_adu``/``read_noise_e``.
    """
    if len(flat_pairs) < 2:
        raise ValueError(f"a photon-transfer curve needs flat pairs at >= 2 levels, got {len(flat_pairs)}")
    mu_b, var_b, _, _, sec, _ = _pair(biases, "biases", region, k_sigma, margin_fraction)
    levels: list[dict[str, Any]] = []
    for pair in flat_pairs:
        mu_f, var_f, dvar_f, _, _, exp_s = _pair(pair, "flats", sec, k_sigma, margin_fraction)
        s_adu, v_adu2 = mu_f - mu_b, (var_f - var_b) / 2.0
        levels.append({"exposure_s": exp_s, "signal_adu": s_adu, "shot_variance_adu2": v_adu2,
                       "shot_variance_uncertainty_adu2": dvar_f / 2.0,
                       "gain_e_per_adu": s_adu / v_adu2 if v_adu2 > 0 else None})
    levels.sort(key=lambda lv: lv["signal_adu"])
    s = np.array([lv["signal_adu"] for lv in levels])
    v = np.array([lv["shot_variance_adu2"] for lv in levels])
    dv = np.array([lv["shot_variance_uncertainty_adu2"] for lv in levels])
    peak = int(np.argmax(v))
    reached = peak < len(levels) - 1
    use = slice(0, peak + 1) if not reached else slice(0, peak)  # the peak itself is already clipping
    notes: list[str] = []
    if use.stop < 2:
        use = slice(0, max(peak + 1, 2))
        notes.append("fewer than 2 levels below the variance peak: the fit uses the peak level too")
    a, b = _line(s[use], v[use], 1.0 / np.maximum(dv[use], 1e-12))
    gain = 1.0 / a
    resid = v[use] - (a * s[use] + b)
    d_a = float(np.std(resid, ddof=1) / math.sqrt(np.sum((s[use] - s[use].mean()) ** 2))) if use.stop > 2 else 0.0
    full_well_e = gain * float(s[peak])
    lin_dev: float | None = None
    exps = [lv["exposure_s"] for lv in levels[use]]
    if all(e is not None for e in exps) and len({round(float(e), 6) for e in exps}) >= 2:
        t = np.array(exps, dtype=float)
        k = float(np.sum(t * s[use]) / np.sum(t * t))
        lin_dev = float(np.max(np.abs(s[use] - k * t) / s[use]) * 100.0)
    else:
        notes.append("all flats share one exposure (e.g. an auto-levelling panel): linearity not measured")
    if not reached:
        notes.append("variance still rises at the brightest level: full well is a lower bound")
    ron_adu = math.sqrt(var_b / 2.0)
    return {
        "measurement": "ptc",
        "method": "photon-transfer curve",
        "gain_e_per_adu": gain,
        "gain_e_per_adu_uncertainty": gain * d_a / a if a else None,
        "ptc_intercept_adu2": b,
        "levels": levels,
        "full_well_e": full_well_e,
        "full_well_reached": reached,
        "linearity_max_deviation_pct": lin_dev,
        "read_noise_adu": ron_adu,
        "read_noise_e": gain * ron_adu,
        "region": sec.iraf,
        "notes": notes,
    }
