"""IRAF/ccdproc image sections (``BIASSEC``, ``DATASEC``, ``TRIMSEC``).

A section string ``[x1:x2,y1:y2]`` is 1-based and inclusive, x (columns, FITS axis 1) first. NumPy indexes
``data[y, x]`` 0-based and half-open, so ``[x1:x2,y1:y2]`` becomes ``data[y1-1:y2, x1-1:x2]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


@dataclass(frozen=True)
class Section:
    """A rectangle in 1-based inclusive pixel coordinates (IRAF convention)."""

    x1: int
    x2: int
    y1: int
    y2: int

    def __post_init__(self) -> None:
        if min(self.x1, self.y1) < 1 or self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"invalid section {self.iraf}: needs 1 <= x1 <= x2 and 1 <= y1 <= y2")

    @classmethod
    def parse(cls, text: str) -> Section:
        """Parse ``"[x1:x2,y1:y2]"``. Raises ``ValueError`` naming the bad text."""
        m = _SECTION.match(text.strip())
        if not m:
            raise ValueError(f"not an IRAF section: {text!r} (expected '[x1:x2,y1:y2]', 1-based inclusive)")
        x1, x2, y1, y2 = (int(g) for g in m.groups())
        return cls(x1, x2, y1, y2)

    @property
    def iraf(self) -> str:
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"

    @property
    def slices(self) -> tuple[slice, slice]:
        """NumPy ``(rows, cols)`` slices for ``data[rows, cols]``."""
        return slice(self.y1 - 1, self.y2), slice(self.x1 - 1, self.x2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y2 - self.y1 + 1, self.x2 - self.x1 + 1

    def fits_in(self, shape: tuple[int, int]) -> bool:
        """True when the section lies inside an image of NumPy ``shape`` (rows, cols)."""
        return self.y2 <= shape[0] and self.x2 <= shape[1]


def data_region(data: np.ndarray, header: Mapping[str, Any] | None) -> np.ndarray:
    """``data[DATASEC]`` when ``header`` has a valid ``DATASEC`` inside the image, else the whole image (a view)."""
    text = header.get("DATASEC") if header is not None else None
    if isinstance(text, str):
        try:
            sec = Section.parse(text)
        except ValueError:
            return data
        if sec.fits_in(data.shape):
            return data[sec.slices]
    return data
