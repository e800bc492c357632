"""Overscan correction and trimming from ``BIASSEC``/``TRIMSEC`` (IRAF sections, 1-based inclusive, x first).

* ``overscan_correct(data, biassec, method)`` subtracts the overscan level (ADU) from every pixel:
  - ``method="mean"`` or ``"median"``: one number, the mean/median of all ``BIASSEC`` pixels;
  - ``per_row=True``: for each row ``y`` the mean/median of that row's overscan pixels, then (``fit_order`` ≥ 0) a
    least-squares polynomial of that order in ``y`` fitted to those row levels — the model subtracted from row ``y``
    (``fit_order=None`` subtracts the raw per-row levels). The overscan columns must span the rows of the image.
* ``trim(data, trimsec)`` returns ``data`` cut to ``TRIMSEC`` (or ``DATASEC``).
* ``correct_and_trim(data, header)`` does both from the header's keys and updates the header (removes
  ``BIASSEC``, rewrites ``DATASEC``/``TRIMSEC`` to the new frame, adds ``OVSCLEV`` and HISTORY).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from calib.provenance import add_history
from calib.sections import Section

OVERSCAN_METHODS = ("mean", "median")


def _section(sec: str | Section, shape: tuple[int, int], name: str) -> Section:
    section = sec if isinstance(sec, Section) else Section.parse(sec)
    if not section.fits_in(shape):
        raise ValueError(f"{name} {section.iraf} lies outside the {shape[1]}x{shape[0]} frame")
    return section


def overscan_level(data: np.ndarray, biassec: str | Section, method: str = "median", *, per_row: bool = False,
                   fit_order: int | None = 0) -> np.ndarray:
    """The overscan level (ADU) to subtract: a scalar array, or one value per image row when ``per_row``."""
    if method not in OVERSCAN_METHODS:
        raise ValueError(f"unknown overscan method {method!r}; choose mean or median")
    section = _section(biassec, data.shape, "BIASSEC")
    region = data[section.slices].astype(np.float64)
    func = np.mean if method == "mean" else np.median
    if not per_row:
        return np.asarray(func(region))
    if section.y1 != 1 or section.y2 != data.shape[0]:
        raise ValueError(f"per-row overscan needs BIASSEC to span all {data.shape[0]} rows, got {section.iraf}")
    levels = func(region, axis=1)
    if fit_order is None:
        return levels
    y = np.arange(levels.size, dtype=np.float64)
    coeffs = np.polynomial.polynomial.polyfit(y, levels, fit_order)
    return np.polynomial.polynomial.polyval(y, coeffs)


def overscan_correct(data: np.ndarray, biassec: str | Section, method: str = "median", *, per_row: bool = False,
                     fit_order: int | None = 0) -> np.ndarray:
    """``data − overscan level`` as float32 (see :func:`overscan_level`)."""
    level = overscan_level(data, biassec, method, per_row=per_row, fit_order=fit_order)
    out = data.astype(np.float32)
    out -= (level[:, None] if level.ndim == 1 else level).astype(np.float32)
    return out


def trim(data: np.ndarray, trimsec: str | Section) -> np.ndarray:
    """``data`` cut to ``trimsec`` (a copy)."""
    return np.array(data[_section(trimsec, data.shape, "TRIMSEC").slices])


def correct_and_trim(data: np.ndarray, header: fits.Header, method: str = "median", *, per_row: bool = False,
                     fit_order: int | None = 0) -> tuple[np.ndarray, fits.Header]:
    """Overscan-correct with the header's ``BIASSEC`` (if any) and trim to ``TRIMSEC`` or ``DATASEC`` (if any)."""
    header = header.copy()
    out = data.astype(np.float32)
    if "BIASSEC" in header:
        level = overscan_level(out, header["BIASSEC"], method, per_row=per_row, fit_order=fit_order)
        out -= (level[:, None] if level.ndim == 1 else level).astype(np.float32)
        header["OVSCLEV"] = (round(float(np.mean(level)), 3), f"[adu] {method} overscan level subtracted")
        add_history(header, f"darkd overscan: {method} of BIASSEC {header['BIASSEC']}"
                            + (f", per row, polynomial order {fit_order}" if per_row else ""))
        header.remove("BIASSEC")
    keep = header.get("TRIMSEC") or header.get("DATASEC")
    if keep:
        section = _section(keep, out.shape, "TRIMSEC")
        out = np.array(out[section.slices])
        new = Section(1, out.shape[1], 1, out.shape[0]).iraf
        for key in ("TRIMSEC", "DATASEC"):
            if key in header:
                header[key] = new
        add_history(header, f"darkd trim: {section.iraf}")
    return out, header
