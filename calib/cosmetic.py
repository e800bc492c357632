"""Cosmetic correction of calibrated lights with the masters' defect maps (``darkd calibrate --cosmetic``).

The defect maps are the ``MASK`` extensions every master carries (:mod:`calib.defects`). The map used for a light is
the union (bitwise OR) of the maps of the masters that calibrate it — the dark's hot, warm and flickering pixels, the
flat's cold and dead ones. After the calibration formula each flagged pixel is replaced by the median of its
unflagged neighbours in the 3×3 box (5×5 when none is good; :func:`calib.defects.replace_defects`), as Siril's
cosmetic correction and Ekos's defect map do. The light's header records ``COSMETIC`` (pixels replaced), ``COSMFLAG``
(the flags corrected), ``COSMMAPS`` (the masters whose maps were used) and a HISTORY line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from calib.defects import Defect, read_master_defects, replace_defects
from calib.provenance import add_history

COSMETIC_FLAGS = Defect.HOT | Defect.WARM | Defect.RTS | Defect.COLD | Defect.DEAD


@dataclass(frozen=True)
class CosmeticMap:
    """The union of the masters' defect maps and the names of the masters it came from."""

    mask: np.ndarray
    sources: tuple[str, ...]


def load_cosmetic_map(masters: Sequence[str | os.PathLike[str] | None]) -> CosmeticMap:
    """OR of the ``MASK`` extensions of ``masters`` (``None`` entries skipped).

    Raises ``ValueError`` when none of them has a defect map (masters built before darkd wrote maps: rebuild them)
    or when two maps differ in shape.
    """
    mask: np.ndarray | None = None
    sources: list[str] = []
    for master in masters:
        if master is None:
            continue
        found = read_master_defects(master)
        if found is None:
            continue
        if mask is None:
            mask = found.mask.copy()
        elif mask.shape != found.mask.shape:
            raise ValueError(f"{master}: defect map {found.mask.shape} differs in shape from {mask.shape}")
        else:
            mask |= found.mask
        sources.append(Path(master).name)
    if mask is None:
        names = ", ".join(Path(m).name for m in masters if m is not None)
        raise ValueError(f"cosmetic correction needs a defect map (MASK extension) in a master; none in {names}: "
                         f"rebuild the masters with this darkd version")
    return CosmeticMap(mask=mask, sources=tuple(sources))


def apply_cosmetic(data: np.ndarray, cosmetic: CosmeticMap, header: fits.Header,
                   flags: Defect = COSMETIC_FLAGS) -> np.ndarray:
    """Replace the flagged pixels of a calibrated light (float32 out) and record it in ``header`` (modified)."""
    if data.shape != cosmetic.mask.shape:
        raise ValueError(f"light {data.shape} and defect map {cosmetic.mask.shape} differ in shape")
    out, replaced = replace_defects(data, cosmetic.mask, flags)
    names = " ".join(f.name for f in Defect if f & flags and f.name is not None)
    header["COSMETIC"] = (replaced, "pixels replaced by their good neighbours median")
    header["COSMFLAG"] = (names, "defect flags corrected")
    header["COSMMAPS"] = (" ".join(cosmetic.sources)[-68:], "masters whose MASK was used")
    add_history(header, f"darkd cosmetic: {replaced} pixels flagged {names.replace(' ', '|')} replaced by the "
                        f"median of their good 3x3 (else 5x5) neighbours")
    return out
