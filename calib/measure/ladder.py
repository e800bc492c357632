"""Dark mean against exposure (black-point over-correction, dark-scaling verdict) and dark current against temperature.

Ladder: darks at several exposures (e.g. 1 s … 600 s) and optionally biases (t = 0). Per exposure the level is the
mean over the region (default: all of ``DATASEC``, the frame mean the paper plots) minus the frame's overscan
(``BIASSEC``) mean when there is one — this removes the ADC drift, which moves whole frames by tens of ADU but is not
dark signal. Three models are fitted by weighted least squares, y = c0, y = c0 + c1·t, y = c0 + c1·t + c2·t², and the
one with the lowest BIC = χ² + k·ln(n) is chosen (σ per point: the frame-to-frame scatter of the means over √n, at
least the pixel noise over √N_px, at least ``min_sigma_adu``).

Verdict: dark scaling (subtracting k·(Dark − Bias) from a light of another exposure) assumes the dark signal is
proportional to t and the bias is what a t = 0 dark would show. It is **not valid** when a dark level lies below the
bias level by more than 3σ (optical-black over-correction) or when the chosen model is quadratic or has a negative
slope. The result lists the evidence.

Temperature: ln Dc = a + b·T fitted to dark currents at several temperatures (weights from their uncertainties);
the doubling temperature is T_d = ln 2 / b (°C), δT_d = T_d·δb/b.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from calib.measure.dark_current import group_by_exposure, measure_dark_current
from calib.measure.stats import (
    DEFAULT_K_SIGMA,
    frame_header,
    header_float,
    header_section,
    load_frame,
    resolve_region,
)
from calib.sections import Section

MODELS = ("constant", "linear", "quadratic")
BELOW_BIAS_SIGMA = 3.0


def _level(items: Sequence[object], region: str | Section | None, margin_fraction: float) -> dict[str, Any]:
    """Mean level (ADU, overscan-corrected when every frame has a BIASSEC) of frames of one exposure, with its σ."""
    means: list[float] = []
    corrected: list[float | None] = []
    noise: list[float] = []
    sec: Section | None = None
    for item in items:
        data, header = load_frame(item, np.float64)
        if sec is None:
            sec = resolve_region(data.shape, header, region, margin_fraction)
        cut = data[sec.slices]
        m = float(cut.mean())
        means.append(m)
        biassec = header_section(header, "BIASSEC")
        err2 = float(cut.var()) / cut.size
        if biassec is not None:
            ovs = data[biassec.slices]
            corrected.append(m - float(ovs.mean()))
            err2 += float(ovs.var()) / ovs.size  # the overscan mean's own noise
        else:
            corrected.append(None)
        noise.append(math.sqrt(err2))
    use_os = all(c is not None for c in corrected)
    vals = np.array(corrected if use_os else means, dtype=float)
    scatter = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else 0.0
    return {"level_adu": float(vals.mean()), "sigma_adu": max(scatter, float(np.mean(noise))),
            "raw_mean_adu": float(np.mean(means)), "overscan_corrected": use_os, "n_frames": len(vals),
            "region": sec.iraf if sec is not None else None}


def fit_models(t_s: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> dict[str, dict[str, Any]]:
    """Weighted polynomial fits of degree 0..2 with χ² and BIC; a model needs at least one degree of freedom."""
    fits_out: dict[str, dict[str, Any]] = {}
    n = len(t_s)
    for degree, name in enumerate(MODELS):
        k = degree + 1
        if n < k + 1:
            continue
        coeffs = np.polyfit(t_s, y, degree, w=1.0 / sigma)
        resid = y - np.polyval(coeffs, t_s)
        chi2 = float(np.sum((resid / sigma) ** 2))
        fits_out[name] = {"coefficients": [float(c) for c in coeffs[::-1]],  # c0, c1, c2
                          "chi2": chi2, "bic": chi2 + k * math.log(n), "max_residual_adu": float(np.max(np.abs(resid)))}
    return fits_out


def measure_dark_ladder(darks: Sequence[object], biases: Sequence[object] = (), *,
                        region: str | Section | None = None, margin_fraction: float = 0.0,
                        gain_e_per_adu: float | None = None, min_sigma_adu: float = 0.0) -> dict[str, Any]:
    """Dark level against exposure with model choice, below-bias detection and the dark-scaling verdict (dict).

    ``points`` per exposure: exposure_s, level_adu (overscan-corrected when possible), sigma_adu, raw_mean_adu,
    below_bias. ``model`` is the chosen fit, ``fits`` all of them; ``scaling_valid`` and ``verdict`` with ``evidence``.
    """
    groups = group_by_exposure(darks)
    if len(groups) < 2:
        raise ValueError(f"a dark ladder needs >= 2 exposures, got {list(groups)}")
    points: list[dict[str, Any]] = []
    bias_level = None
    sec_used: str | Section | None = region
    if biases:
        bias_level = _level(biases, region, margin_fraction)
        sec_used = bias_level["region"]
        points.append({"exposure_s": 0.0, "kind": "bias", **bias_level})
    for t, frames in groups.items():
        lv = _level(frames, sec_used, margin_fraction)
        sec_used = lv["region"]
        points.append({"exposure_s": float(t), "kind": "dark", **lv})
    t_s = np.array([p["exposure_s"] for p in points])
    y = np.array([p["level_adu"] for p in points])
    sigma = np.maximum(np.array([p["sigma_adu"] for p in points]), max(min_sigma_adu, 1e-6))
    fits_all = fit_models(t_s, y, sigma)
    chosen = min(fits_all, key=lambda name: fits_all[name]["bic"])
    evidence: list[str] = []
    ref = bias_level or {"level_adu": points[0]["level_adu"], "sigma_adu": points[0]["sigma_adu"]}
    ref_name = "bias" if bias_level else f"shortest dark ({points[0]['exposure_s']:g} s)"
    below = []
    for p in points:
        gap = ref["level_adu"] - p["level_adu"]
        p["below_bias"] = p["kind"] == "dark" and gap > BELOW_BIAS_SIGMA * math.hypot(p["sigma_adu"], ref["sigma_adu"])
        if p["below_bias"]:
            below.append(p)
    if below:
        worst = max(below, key=lambda p: ref["level_adu"] - p["level_adu"])
        evidence.append(f"dark level below the {ref_name} level at {len(below)} exposure(s), by up to "
                        f"{ref['level_adu'] - worst['level_adu']:.1f} ADU at {worst['exposure_s']:g} s "
                        "(black-point over-correction by optical-black clamping)")
    coeffs = fits_all[chosen]["coefficients"]
    t_max = float(t_s.max())
    slope_end = coeffs[1] + 2 * coeffs[2] * t_max if chosen == "quadratic" else (coeffs[1] if chosen == "linear" else 0)
    nonlinear = chosen == "quadratic"
    if nonlinear:
        evidence.append(f"dark level is quadratic in exposure (c2 = {coeffs[2]:.3e} ADU/s², BIC "
                        f"{fits_all['quadratic']['bic']:.1f} vs linear {fits_all['linear']['bic']:.1f})")
    if slope_end < 0:
        evidence.append(f"dark level falls with exposure (slope {slope_end:.4f} ADU/s at {t_max:g} s)")
    valid = not (below or nonlinear or slope_end < 0)
    lin = fits_all.get("linear")
    if valid:
        verdict = "dark scaling is valid for this camera: the dark level is " + (
            "linear in exposure and never below the bias" if chosen == "linear" else "flat (no dark signal seen)")
    else:
        verdict = "dark scaling is not valid for this camera: use darks of the same exposure and temperature"
    return {
        "measurement": "dark-ladder",
        "points": points,
        "fits": fits_all,
        "model": chosen,
        "linear": chosen in ("linear", "constant") and slope_end >= 0,
        "linear_max_residual_adu": lin["max_residual_adu"] if lin else None,
        "mean_dark_rate_e_per_s": lin["coefficients"][1] * gain_e_per_adu if lin and gain_e_per_adu else None,
        "below_bias": bool(below),
        "scaling_valid": valid,
        "verdict": verdict,
        "evidence": evidence,
        "reference": ref_name,
        "region": sec_used if isinstance(sec_used, str) else None,
        "gain_e_per_adu": gain_e_per_adu,
    }


def fit_doubling_temperature(temperatures_c: Sequence[float], dark_currents_e_per_s: Sequence[float],
                             uncertainties_e_per_s: Sequence[float] | None = None) -> dict[str, Any]:
    """ln Dc = a + b·T (weights Dc/δDc); doubling temperature T_d = ln2/b °C with δT_d = T_d·δb/b.

    Points with Dc ≤ 0 are dropped (noted). Needs ≥ 2 distinct temperatures with a positive dark current.
    """
    temps = np.asarray(temperatures_c, dtype=float)
    dc = np.asarray(dark_currents_e_per_s, dtype=float)
    unc = np.asarray(uncertainties_e_per_s, dtype=float) if uncertainties_e_per_s is not None else None
    ok = dc > 0
    notes = [] if ok.all() else [f"{int((~ok).sum())} point(s) with dark current <= 0 left out of the fit"]
    temps, dc = temps[ok], dc[ok]
    if len(np.unique(np.round(temps, 2))) < 2:
        raise ValueError("the doubling temperature needs positive dark currents at >= 2 temperatures")
    w = dc / np.maximum(unc[ok], 1e-12 * dc) if unc is not None else np.ones_like(dc)  # σ(ln Dc) = δDc/Dc
    if len(dc) > 2 or unc is not None:
        (b, a), cov = np.polyfit(temps, np.log(dc), 1, w=w, cov="unscaled")
    else:
        (b, a), cov = np.polyfit(temps, np.log(dc), 1), np.zeros((2, 2))
    d_b = float(math.sqrt(cov[0, 0])) if cov[0, 0] > 0 else None
    t_d = math.log(2.0) / b if b != 0 else math.inf
    return {"doubling_temperature_c": t_d,
            "doubling_temperature_uncertainty_c": abs(t_d * d_b / b) if d_b is not None and b else None,
            "dark_current_at_0c_e_per_s": float(math.exp(a)),
            "slope_per_c": float(b), "notes": notes}


def measure_dark_vs_temperature(darks: Sequence[object], biases: Sequence[object], gain_e_per_adu: float,
                                read_noise_e: float | None = None, region: str | Section | None = None, *,
                                temperature_step_c: float = 1.0, k_sigma: float = DEFAULT_K_SIGMA) -> dict[str, Any]:
    """Darks at several temperatures (``CCD-TEMP``, grouped to ``temperature_step_c``), each group of equal exposure:
    N-frame dark current per temperature, then :func:`fit_doubling_temperature`."""
    groups: dict[float, list[object]] = {}
    for item in darks:
        header = frame_header(item)
        temp = header_float(header, "CCD-TEMP", "CCDTEMP1", "SET-TEMP")
        if temp is None:
            raise ValueError(f"{item}: no CCD-TEMP in the header")
        groups.setdefault(round(temp / temperature_step_c) * temperature_step_c, []).append(item)
    points = []
    for temp, frames in sorted(groups.items()):
        r = measure_dark_current(frames, biases, gain_e_per_adu, read_noise_e, region, k_sigma=k_sigma)
        points.append({"temperature_c": r["temperature_c"] if r["temperature_c"] is not None else temp,
                       "dark_current_e_per_s": r["dark_current_e_per_s"],
                       "uncertainty_e_per_s": r["dark_current_uncertainty_e_per_s"],
                       "exposure_s": r["exposure_s"], "n_frames": r["n_frames"]})
    fit = fit_doubling_temperature([p["temperature_c"] for p in points], [p["dark_current_e_per_s"] for p in points],
                                   [p["uncertainty_e_per_s"] for p in points])
    return {"measurement": "dark-temperature", "points": points, **fit}
