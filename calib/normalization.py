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
    """Median and 1.4826·MAD (ADU) of the finite values of ``sample``."""
    values = np.asarray(sample, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values to estimate a level from")
    median = float(np.median(values))
    return FrameLevel(median, MAD_TO_SIGMA * float(np.median(np.abs(values - median))))


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
