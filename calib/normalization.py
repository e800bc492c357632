"""Frame normalization before rejection and combination.

Each frame ``i`` gets a location ``m_i`` (median, ADU) and a robust scale ``s_i = 1.4826·MAD`` (ADU), both computed on
a subsample of the frame (evenly spaced rows, every ``column_step``-th column). With frame 0 as the reference:

* ``none`` — ``x' = x``;
* ``additive`` — ``x' = x − m_i + m_0`` (removes offsets, e.g. sky or bias drift);
* ``multiplicative`` — ``x' = x · m_0 / m_i`` (flats: removes illumination changes; needs ``m_i > 0``).

Every normalization is expressed as ``x' = x·mul + add`` so it can be applied band by band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMALIZATIONS = ("none", "additive", "multiplicative")
MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True)
class FrameLevel:
    """Robust level of one frame: ``location_adu`` = median, ``scale_adu`` = 1.4826·MAD."""

    location_adu: float
    scale_adu: float


def robust_level(sample: np.ndarray) -> FrameLevel:
    """Median and 1.4826·MAD (ADU) of the finite values of ``sample``, in float64 (the same numbers as
    ``np.median`` of the values as float64; ``sample`` is not modified)."""
    values = np.array(sample, copy=True).ravel()  # partitioned in place below
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if values.size == 0:
        raise ValueError("no finite values to estimate a level from")
    median = _median_in_place(values)
    deviations = np.subtract(values, median, dtype=np.float64)
    np.abs(deviations, out=deviations)
    return FrameLevel(median, MAD_TO_SIGMA * _median_in_place(deviations))


def _median_in_place(values: np.ndarray) -> float:
    """``np.median(values.astype(np.float64))`` of a 1-D array, partitioning ``values`` in place (no copies)."""
    m = values.size
    k = (m - 1) // 2
    if m % 2:
        values.partition(k)
        return float(values[k])
    values.partition((k, k + 1))
    return float(np.mean(values[k:k + 2], dtype=np.float64))


def normalization_factors(levels: Sequence[FrameLevel], method: str) -> list[tuple[float, float]]:
    """``(mul, add)`` per frame such that ``x' = x·mul + add`` (see the module docstring)."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if method == "none" or not levels:
        return [(1.0, 0.0)] * len(levels)
    ref = levels[0].location_adu
    if method == "additive":
        return [(1.0, ref - lvl.location_adu) for lvl in levels]
    bad = [i for i, lvl in enumerate(levels) if lvl.location_adu <= 0]
    if bad:
        raise ValueError(f"multiplicative normalization needs a positive median; frames {bad} have median <= 0")
    return [(ref / lvl.location_adu, 0.0) for lvl in levels]
