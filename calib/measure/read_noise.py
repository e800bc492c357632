"""Read noise from bias frames: the difference (pair) method and its N-frame alternating-sum extension.

Two biases: RON = σ(B1 − B2)/√2 (ADU); the fixed pattern (bias structure, column offsets) cancels in the difference
and a per-frame offset (ADC drift) does not change σ. N biases (even): RON = σ(B1 − B2 + B3 − … − Bn)/√n, summed
in float64. σ is the 5σ-clipped standard deviation over the measurement region (see :mod:`calib.measure.stats`:
central half of ``DATASEC``, no overscan, no amp-glow corners; the MAD is biased on ×16-quantised data).

Uncertainty: δRON ≈ RON/√(2(N_px − 1)) from the pixel count of the final sum; the spread of the single pairs is
reported too. In electrons: RON_e = gain · RON_adu (gain in e⁻/ADU). The measured value includes the ADC's
quantisation noise q²/12 (q = 16 ADU for 12-bit data ×16); ``read_noise_sheppard_adu`` removes it.
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
    clipped_stats,
    load_frame,
    mad_std,
    resolve_region,
    sheppard_std,
)
from calib.sections import Section


def pair_read_noise_adu(bias1: np.ndarray, bias2: np.ndarray, k_sigma: float = DEFAULT_K_SIGMA) -> float:
    """σ(B1 − B2)/√2 in ADU (clipped σ, float64) for two equally shaped arrays already cut to the region."""
    diff = np.asarray(bias1, dtype=np.float64) - np.asarray(bias2, dtype=np.float64)
    return clipped_stats(diff, k_sigma).std / math.sqrt(2.0)


def measure_read_noise(biases: Sequence[object], gain_e_per_adu: float | None = None, *,
                       region: str | Section | None = None, k_sigma: float = DEFAULT_K_SIGMA,
                       margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> dict[str, Any]:
    """Read noise from ≥ 2 biases (paths, Frames or arrays). Returns a JSON-ready dict.

    Keys: ``read_noise_adu`` (σ(ΣB)/√n), ``read_noise_adu_uncertainty``, ``read_noise_e`` and its uncertainty when
    ``gain_e_per_adu`` is given, ``read_noise_sheppard_adu``, ``read_noise_mad_adu`` (biased; comparison only),
    ``pairs_adu`` (each B(2k−1) − B(2k) pair), ``convergence`` (n, read_noise_adu), ``n_frames``, ``n_pixels``,
    ``n_rejected``, ``region``, ``quantisation_step_adu``, ``method``, ``notes``.
    """
    items = list(biases)
    series = alternating_series(items, region=region, k_sigma=k_sigma, margin_fraction=margin_fraction)
    n_used, final = series.steps[-1]
    ron_adu = final.std / math.sqrt(n_used)
    ron_unc = final.std_uncertainty / math.sqrt(n_used)
    # single pairs (second pass; two frames in memory at a time)
    pairs: list[float] = []
    mad_values: list[float] = []
    for k in range(0, n_used, 2):
        a, _ = load_frame(items[k])
        b, _ = load_frame(items[k + 1])
        cut_a, cut_b = a[series.region.slices], b[series.region.slices]
        pairs.append(pair_read_noise_adu(cut_a, cut_b, k_sigma))
        if k == 0:
            mad_values.append(mad_std(cut_a - cut_b) / math.sqrt(2.0))
    out: dict[str, Any] = {
        "measurement": "read-noise",
        "method": "pair" if n_used == 2 else "alternating-sum",
        "read_noise_adu": ron_adu,
        "read_noise_adu_uncertainty": ron_unc,
        "read_noise_sheppard_adu": sheppard_std(ron_adu, series.step_adu),
        "read_noise_mad_adu": mad_values[0],
        "pairs_adu": pairs,
        "pairs_spread_adu": float(np.std(pairs, ddof=1)) if len(pairs) > 1 else None,
        "convergence": [{"n": n, "read_noise_adu": st.std / math.sqrt(n)} for n, st in series.steps],
        "n_frames": n_used,
        "frames": series.names,
        "n_pixels": final.n_used,
        "n_rejected": final.n_rejected,
        "k_sigma": k_sigma,
        "region": series.region.iraf,
        "quantisation_step_adu": series.step_adu,
        "gain_e_per_adu": gain_e_per_adu,
        "read_noise_e": None,
        "read_noise_e_uncertainty": None,
        "notes": list(series.notes),
    }
    if gain_e_per_adu is not None:
        if gain_e_per_adu <= 0:
            raise ValueError(f"gain_e_per_adu must be > 0, got {gain_e_per_adu}")
        out["read_noise_e"] = gain_e_per_adu * ron_adu
        out["read_noise_e_uncertainty"] = gain_e_per_adu * ron_unc
    if series.step_adu and series.step_adu > 1 and out["read_noise_mad_adu"] > 0:
        bias_pct = 100.0 * (out["read_noise_mad_adu"] / ron_adu - 1.0)
        out["notes"].append(f"pixel values move in steps of {series.step_adu:g} ADU: the MAD-based estimate "
                            f"differs by {bias_pct:+.1f} % from the clipped standard deviation and is not used")
    return out


def region_of(frame: object, region: str | Section | None = None,
              margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> Section:
    """The region a measurement would use for ``frame`` (for reports and the CLI)."""
    data, header = load_frame(frame, np.float32)
    return resolve_region(data.shape, header, region, margin_fraction)
