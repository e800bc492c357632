"""Robust statistics and measurement regions shared by the camera-characterisation measurements.

**Clipped standard deviation.** Noise measurements use an iteratively k·σ-clipped *standard deviation*, not the median
absolute deviation: CMOS cameras such as the QHY163M digitise 12 bits and scale ×16, so pixel values move in steps of
16 ADU. With a read noise of ~1–2 steps the MAD (and any percentile) is quantised to a few possible values and biased
by up to tens of per cent, while the standard deviation stays unbiased apart from the quantisation variance q²/12
(which is part of the read noise the camera really delivers; Sheppard's correction removes it when wanted). Clipping
at 5σ removes hot pixels, cosmic rays and random-telegraph jumps; on a Gaussian it discards a fraction 6·10⁻⁷ of the
pixels and 1.5·10⁻⁵ of the variance (negligible).

**Uncertainty of σ.** For N independent Gaussian pixels, std(σ̂) ≈ σ/√(2(N−1)).

**Default region.** The data section (``DATASEC`` from the header, else the whole frame) shrunk by ``margin_fraction``
(25 %) of its width/height on every side, i.e. the central half in each axis. This excludes the overscan (``BIASSEC``)
and optical-black rows (they lie outside ``DATASEC``) and the amp-glow corners and edges: the glow's fixed *pattern*
cancels in a difference image but its *shot noise* does not, so glow pixels would inflate read noise and dark current.
A region that overlaps ``BIASSEC`` or ``OBSEC`` is refused (:class:`RegionError`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from calib.frames import Frame, read_frame, read_header
from calib.sections import Section

DEFAULT_K_SIGMA = 5.0
DEFAULT_MARGIN_FRACTION = 0.25


class RegionError(ValueError):
    """A measurement region that is outside the frame or overlaps the overscan / optical-black area."""


@dataclass(frozen=True)
class ClippedStats:
    """Mean and standard deviation (input units) after iterative k·σ clipping; ``n_used`` pixels kept."""

    mean: float
    std: float
    n_used: int
    n_rejected: int
    k_sigma: float

    @property
    def std_uncertainty(self) -> float:
        """1-σ uncertainty of ``std`` for Gaussian data: σ/√(2(N−1))."""
        return self.std / math.sqrt(2.0 * max(self.n_used - 1, 1))


def clipped_stats(values: np.ndarray, k_sigma: float = DEFAULT_K_SIGMA, max_iter: int = 20) -> ClippedStats:
    """Iterative k·σ clipping around the mean (float64 accumulation); stops when no more pixels are rejected.

    Raises ``ValueError`` when fewer than 2 finite values remain.
    """
    if k_sigma <= 0:
        raise ValueError(f"k_sigma must be > 0, got {k_sigma}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n_total = v.size
    if n_total < 2:
        raise ValueError("need at least 2 finite pixels for a standard deviation")
    mask = np.ones(n_total, dtype=bool)
    mean = float(v.mean())
    std = float(v.std(ddof=1))
    for _ in range(max_iter):
        if std == 0.0:
            break
        new_mask = np.abs(v - mean) <= k_sigma * std
        if new_mask.sum() < 2:
            break
        if np.array_equal(new_mask, mask):
            break
        mask = new_mask
        kept = v[mask]
        mean = float(kept.mean())
        std = float(kept.std(ddof=1))
    n_used = int(mask.sum())
    return ClippedStats(mean=mean, std=std, n_used=n_used, n_rejected=n_total - n_used, k_sigma=k_sigma)


def clipped_std(values: np.ndarray, k_sigma: float = DEFAULT_K_SIGMA) -> float:
    """Standard deviation after iterative k·σ clipping (see :func:`clipped_stats`)."""
    return clipped_stats(values, k_sigma).std


def mad_std(values: np.ndarray) -> float:
    """1.4826·MAD — shown only for comparison: biased on ×16-quantised data (see module docstring)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def quantisation_step(values: np.ndarray, sample: int = 200_000) -> float | None:
    """The common step of the pixel values (16 for ×16-scaled 12-bit data), or None for non-integer data."""
    v = np.asarray(values).ravel()[:sample]
    if v.size == 0:
        return None
    if not np.all(np.isfinite(v)) or not np.allclose(v, np.rint(v)):
        return None
    u = np.unique(np.rint(v).astype(np.int64))
    if u.size < 2:
        return None
    return float(np.gcd.reduce(np.diff(u)))


def sheppard_std(std: float, step: float | None) -> float:
    """σ with the quantisation variance removed: √(σ² − q²/12) (Sheppard's correction); σ when no step."""
    if not step:
        return std
    return math.sqrt(max(std * std - step * step / 12.0, 0.0))


def _header_section(header: fits.Header | None, key: str) -> Section | None:
    if header is None or key not in header:
        return None
    try:
        return Section.parse(str(header[key]))
    except ValueError as exc:
        raise RegionError(f"header {key}={header[key]!r} is not a valid section: {exc}") from exc


def _overlaps(a: Section, b: Section) -> bool:
    return not (a.x2 < b.x1 or b.x2 < a.x1 or a.y2 < b.y1 or b.y2 < a.y1)


def default_region(shape: tuple[int, int], header: fits.Header | None = None,
                   margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> Section:
    """Central part of ``DATASEC`` (whole frame without one): ``margin_fraction`` of each side cut away."""
    if not 0.0 <= margin_fraction < 0.5:
        raise ValueError(f"margin_fraction must be in [0, 0.5), got {margin_fraction}")
    data = _header_section(header, "DATASEC") or Section(1, shape[1], 1, shape[0])
    if not data.fits_in(shape):
        raise RegionError(f"DATASEC {data.iraf} lies outside the {shape[1]}x{shape[0]} frame")
    h, w = data.shape
    mx, my = int(w * margin_fraction), int(h * margin_fraction)
    return Section(data.x1 + mx, data.x2 - mx, data.y1 + my, data.y2 - my)


def resolve_region(shape: tuple[int, int], header: fits.Header | None = None,
                   region: str | Section | None = None,
                   margin_fraction: float = DEFAULT_MARGIN_FRACTION) -> Section:
    """The measurement region: ``region`` (IRAF text or Section) checked against the frame, or the default.

    Raises :class:`RegionError` when the region is outside the frame or overlaps ``BIASSEC``/``OBSEC`` (overscan
    and optical-black pixels carry no dark signal and a different noise: mixing them in biases every measurement).
    """
    if region is None:
        return default_region(shape, header, margin_fraction)
    try:
        sec = region if isinstance(region, Section) else Section.parse(str(region))
    except ValueError as exc:
        raise RegionError(str(exc)) from exc
    if not sec.fits_in(shape):
        raise RegionError(f"region {sec.iraf} lies outside the {shape[1]}x{shape[0]} frame")
    for key, what in (("BIASSEC", "overscan"), ("OBSEC", "optical-black rows")):
        other = _header_section(header, key)
        if other is not None and _overlaps(sec, other):
            raise RegionError(f"region {sec.iraf} overlaps the {what} {key}={other.iraf}; choose a region inside "
                              f"DATASEC={header.get('DATASEC', '?') if header is not None else '?'}")
    return sec


# ---- frames -------------------------------------------------------------------------------------------------------


def load_frame(item: object, dtype: type = np.float64) -> tuple[np.ndarray, fits.Header]:
    """(data as ``dtype``, header) from a path, a :class:`calib.frames.Frame` or a bare array (empty header)."""
    if isinstance(item, Frame):
        return np.asarray(item.data, dtype=dtype), item.header
    if isinstance(item, np.ndarray):
        return np.asarray(item, dtype=dtype), fits.Header()
    frame = read_frame(_frame_path(item), dtype=dtype)
    return frame.data, frame.header


def frame_header(item: object) -> fits.Header:
    """The FITS header of a path (read from disk), a :class:`calib.frames.Frame` or any object with a ``header``."""
    header = getattr(item, "header", None)
    if header is not None:
        return header
    return read_header(_frame_path(item))


def _frame_path(item: object) -> str | os.PathLike[str]:
    if isinstance(item, str | os.PathLike):
        return item
    raise TypeError(f"expected a FITS path, a Frame or an array, got {type(item).__name__}")


def frame_name(item: object, index: int) -> str:
    """A short label for reports: the file name, or ``array[i]``."""
    if isinstance(item, Frame) and item.path is not None:
        return item.path.name
    if isinstance(item, str | os.PathLike):
        return Path(item).name
    return f"array[{index}]"


def header_float(header: fits.Header, *keys: str) -> float | None:
    """First of ``keys`` present in ``header`` as float, else None."""
    for key in keys:
        if key in header:
            try:
                return float(header[key])
            except (TypeError, ValueError):
                continue
    return None


@dataclass
class AlternatingSeries:
    """Result of streaming an alternating sum ``F1 − F2 + F3 − …`` (float64) over a region.

    ``steps[i]`` holds the clipped statistics of the sum after n = 2(i+1) frames; ``means_adu`` the plain
    (unclipped) mean of each frame over the region (ADU); ``overscan_means_adu`` the mean of ``BIASSEC`` (None
    without one); ``exposures_s`` / ``temperatures_c`` from the headers (None if absent).
    """

    region: Section
    steps: list[tuple[int, ClippedStats]]
    means_adu: list[float]
    exposures_s: list[float | None]
    temperatures_c: list[float | None]
    names: list[str]
    overscan_means_adu: list[float | None]
    step_adu: float | None
    header: fits.Header
    notes: list[str]


def alternating_series(items: list[object], *, region: str | Section | None = None,
                       k_sigma: float = DEFAULT_K_SIGMA, margin_fraction: float = DEFAULT_MARGIN_FRACTION,
                       exposure_tolerance: float = 1e-3) -> AlternatingSeries:
    """Stream frames (one in memory at a time) into the alternating sum and its clipped σ at n = 2, 4, ….

    An odd count drops the last frame (noted). Frames of different exposure (``EXPTIME`` relative difference above
    ``exposure_tolerance``) or shape are refused with ``ValueError``. Needs at least two frames.
    """
    if len(items) < 2:
        raise ValueError(f"need at least 2 frames of equal exposure, got {len(items)}")
    notes: list[str] = []
    if len(items) % 2:
        notes.append(f"odd number of frames ({len(items)}): the last one ({frame_name(items[-1], len(items) - 1)}) "
                     "is not used (the alternating sum needs pairs)")
        items = items[:-1]
    acc: np.ndarray | None = None
    sec: Section | None = None
    first_header = fits.Header()
    steps: list[tuple[int, ClippedStats]] = []
    means: list[float] = []
    exposures: list[float | None] = []
    temps: list[float | None] = []
    names: list[str] = []
    overscans: list[float | None] = []
    step_adu: float | None = None
    for i, item in enumerate(items):
        data, header = load_frame(item, np.float64)
        if sec is None:
            first_header = header
            sec = resolve_region(data.shape, header, region, margin_fraction)
            ref_shape = data.shape
            step_adu = quantisation_step(data[sec.slices])
        elif data.shape != ref_shape:
            raise ValueError(f"{frame_name(item, i)}: shape {data.shape} differs from the first frame's {ref_shape}")
        cut = data[sec.slices]
        exp_s = header_float(header, "EXPTIME", "EXPOSURE")
        if exposures and exp_s is not None and exposures[0] is not None:
            ref = exposures[0]
            if abs(exp_s - ref) > exposure_tolerance * max(abs(ref), 1e-3):
                raise ValueError(f"mismatched exposure: {frame_name(item, i)} has EXPTIME={exp_s} s but "
                                 f"{names[0]} has {ref} s; the pair method needs darks of equal exposure")
        exposures.append(exp_s)
        temps.append(header_float(header, "CCD-TEMP", "CCDTEMP1"))
        names.append(frame_name(item, i))
        means.append(float(cut.mean(dtype=np.float64)))
        biassec = _header_section(header, "BIASSEC")
        overscans.append(float(data[biassec.slices].mean(dtype=np.float64))
                         if biassec is not None and biassec.fits_in(data.shape) else None)
        if acc is None:
            acc = cut.copy()
        elif i % 2:
            acc -= cut
        else:
            acc += cut
        if i % 2:
            steps.append((i + 1, clipped_stats(acc, k_sigma)))
    assert sec is not None
    return AlternatingSeries(region=sec, steps=steps, means_adu=means, exposures_s=exposures, temperatures_c=temps,
                             names=names, overscan_means_adu=overscans, step_adu=step_adu, header=first_header,
                             notes=notes)


def header_section(header: fits.Header | None, key: str) -> Section | None:
    """The section stored under ``key`` (e.g. ``BIASSEC``) in ``header``, or None; RegionError when malformed."""
    return _header_section(header, key)
