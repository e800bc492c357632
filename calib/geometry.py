"""Overscan correction and trimming from ``BIASSEC``/``TRIMSEC`` (IRAF sections, 1-based inclusive, x first).

* ``overscan_correct(data, biassec, method)`` subtracts the overscan level (ADU) from every pixel:
  - ``method="mean"`` or ``"median"``: one number, the mean/median of all ``BIASSEC`` pixels;
  - ``per_row=True``: for each row ``y`` the mean/median of that row's overscan pixels, then (``fit_order`` ≥ 0) a
    least-squares polynomial of that order in ``y`` fitted to those row levels — the model subtracted from row ``y``
    (``fit_order=None`` subtracts the raw per-row levels). The overscan columns must span the rows of the image.
* ``trim(data, trimsec)`` returns ``data`` cut to ``TRIMSEC`` (or ``DATASEC``).
* ``correct_and_trim(data, header)`` does both from the header's keys and updates the header (removes
  ``BIASSEC``, rewrites ``DATASEC``/``TRIMSEC`` to the new frame, adds ``OVSCLEV`` and HISTORY).
* ``prepare_frame(data, header, Preprocessing(...))`` is the per-frame step used by ``darkd master`` and
  ``darkd calibrate`` (``--overscan none|mean|median|rows``, ``--trim``); see :class:`Preprocessing`.

The scalar median of quantised data (a 12-bit ADC scaled ×16 gives values on a 16-ADU grid) is itself stuck on that
grid, so it could not follow an ADC drift smaller than one step. When the overscan values lie on a grid (fewer distinct
values than half the pixels), ``"median"`` is the grouped (interpolated) median::

    median = L + (N/2 − F) / f × q

with ``q`` the grid step, ``L`` the lower edge (value − q/2) of the bin holding the sample median, ``F`` the number of
values below that bin and ``f`` the number inside it; for continuous data it is ``numpy.median``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    if not per_row:
        return np.asarray(np.mean(region) if method == "mean" else grouped_median(region))
    func = np.mean if method == "mean" else np.median
    levels = func(region, axis=1)
    rows = np.arange(section.y1 - 1, section.y2, dtype=np.float64)
    if fit_order is None:
        # rows outside BIASSEC's rows (e.g. optical-black rows) take the nearest covered row's level
        return np.pad(levels, (section.y1 - 1, data.shape[0] - section.y2), mode="edge")
    coeffs = np.polynomial.polynomial.polyfit(rows, levels, fit_order)
    return np.polynomial.polynomial.polyval(np.arange(data.shape[0], dtype=np.float64), coeffs)


def grouped_median(values: np.ndarray) -> float:
    """Median of ``values``; the grouped (interpolated) median when they lie on a grid (module docstring)."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = flat.size
    if n == 0:
        raise ValueError("no overscan pixels")
    uniq = np.unique(flat)
    if uniq.size < 2 or uniq.size > n // 2:
        return float(np.median(flat))
    step = float(np.min(np.diff(uniq)))
    centre = float(np.median(flat))
    bin_value = uniq[np.argmin(np.abs(uniq - centre))]
    below = int(np.searchsorted(flat, bin_value, side="left"))
    inside = int(np.searchsorted(flat, bin_value, side="right")) - below
    return float(bin_value - step / 2 + (n / 2 - below) / inside * step)


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


OVERSCAN_CHOICES = ("none", "mean", "median", "rows")


@dataclass(frozen=True)
class Preprocessing:
    """Per-frame treatment before integration or calibration: overscan subtraction, then trimming.

    ``overscan``: ``"none"`` (default), ``"mean"``/``"median"`` (one level per frame from ``BIASSEC``) or ``"rows"``
    (per-row medians of the ``BIASSEC`` columns fitted with a polynomial of order ``fit_order`` along the rows; rows
    outside ``BIASSEC`` get the fitted model). ``trim``: cut each frame to ``TRIMSEC`` (else ``DATASEC``).
    ``biassec``/``trimsec`` override the header (the QHY driver and our simulator write no section keywords).

    Why the default is ``"none"``: CMOS cameras with optical-black clamping (e.g. the QHY163M) already subtract the
    OB rows' signal on chip, and their overscan columns carry only the bias pedestal, read noise and the ADC
    reference drift — a master dark taken with the same treatment contains the same pedestal, so subtracting the
    overscan gains nothing and adds the overscan estimate's noise (≈ 1.25·RON/√N_overscan for the median). It helps
    when the ADC reference drifts between frames — fast bursts of short frames warm the electronics by tens of ADU —
    because then each frame's level follows its own overscan. Masters and lights must get the same treatment.
    """

    overscan: str = "none"
    trim: bool = False
    biassec: str | None = None
    trimsec: str | None = None
    fit_order: int = 0

    def __post_init__(self) -> None:
        if self.overscan not in OVERSCAN_CHOICES:
            raise ValueError(f"unknown overscan method {self.overscan!r}; choose {', '.join(OVERSCAN_CHOICES)}")

    @property
    def active(self) -> bool:
        return self.overscan != "none" or self.trim


def treatment_of(header: fits.Header) -> tuple[str, str]:
    """(overscan method, trimmed section or ``""``) recorded by :func:`prepare_frame`; ``("none", "")`` if absent."""
    return str(header.get("OVSCMETH", "none")), str(header.get("TRIMMED", "") or "")


def prepare_frame(data: np.ndarray, header: fits.Header,
                  prep: Preprocessing) -> tuple[np.ndarray, fits.Header, float | None]:
    """Apply ``prep`` to one frame: ``(float32 data, updated header copy, mean overscan level ADU or None)``.

    Header: ``OVSCMETH`` (method), ``OVSCSEC`` (BIASSEC used), ``OVSCLEV`` (mean level subtracted, ADU), ``TRIMMED``
    (section kept), ``BIASSEC`` removed after trimming, ``DATASEC``/``TRIMSEC`` rewritten, HISTORY lines.
    """
    header = header.copy()
    out = np.asarray(data, dtype=np.float32).copy()
    level_adu: float | None = None
    header["OVSCMETH"] = (prep.overscan, "darkd overscan: none, mean, median, rows")
    if prep.overscan != "none":
        biassec = prep.biassec or header.get("BIASSEC")
        if not biassec:
            raise ValueError(f"--overscan {prep.overscan} needs a BIASSEC (header keyword or --biassec)")
        method, per_row = ("median", True) if prep.overscan == "rows" else (prep.overscan, False)
        level = overscan_level(out, biassec, method, per_row=per_row, fit_order=prep.fit_order if per_row else 0)
        out -= (level[:, None] if level.ndim == 1 else level).astype(np.float32)
        level_adu = float(np.mean(level))
        header["OVSCSEC"] = (_section(biassec, out.shape, "BIASSEC").iraf, "overscan section used")
        header["OVSCLEV"] = (round(level_adu, 4), f"[adu] {prep.overscan} overscan level subtracted")
        add_history(header, f"darkd overscan: {prep.overscan} of {header['OVSCSEC']} = {level_adu:.3f} ADU subtracted"
                            + (f" (per-row medians, polynomial order {prep.fit_order})" if per_row else ""))
    if prep.trim:
        keep = prep.trimsec or header.get("TRIMSEC") or header.get("DATASEC")
        if not keep:
            raise ValueError("--trim needs a TRIMSEC or DATASEC (header keyword or --trimsec)")
        section = _section(keep, out.shape, "TRIMSEC")
        out = np.ascontiguousarray(out[section.slices])
        new = Section(1, out.shape[1], 1, out.shape[0]).iraf
        for key in ("TRIMSEC", "DATASEC"):
            header[key] = new
        header.remove("BIASSEC", ignore_missing=True)
        header["TRIMMED"] = (section.iraf, "section kept by darkd trim")
        add_history(header, f"darkd trim: {section.iraf}")
    return out, header, level_adu


def requested_treatment(prep: Preprocessing, header: fits.Header) -> tuple[str, str]:
    """The (method, trimmed section) that :func:`prepare_frame` would record for a frame with ``header``."""
    if not prep.trim:
        return prep.overscan, ""
    keep = prep.trimsec or header.get("TRIMSEC") or header.get("DATASEC")
    return prep.overscan, (Section.parse(str(keep)).iraf if keep else "?")
