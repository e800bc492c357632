"""Defect maps: the pixels of a sensor that calibration cannot fix, found from the masters darkd builds anyway.

A defect map is a ``uint8`` image of bit flags, 0 = good (the bad-pixel-mask convention of LCO's BANZAI and of
``ccdproc``/``astropy.nddata``, where any non-zero value masks the pixel). It is stored with a master as an image
extension ``EXTNAME = 'MASK'`` — the name :meth:`astropy.nddata.CCDData.read` looks for, so ccdproc masks the pixels
without being told — with every threshold and count in its header.

Flags (:class:`Defect`) and their tests. ``r = x − med₈(x)`` is a pixel minus the median of its 8 neighbours (this
removes amp glow and other smooth gradients) and ``σ_b(r)`` the clipped standard deviation of ``r`` in 16×16 blocks
(glow shot noise raises the local noise in the corners; see :func:`calib.measure.amp_glow.block_sigma`):

* ``HOT``  (1): in ``D − B`` (master dark minus master bias) ``r > k_hot · σ_b(r)``.
* ``WARM`` (2): with masters at two or more exposures ``t``, the per-pixel least-squares slope
  ``s = Σ(t − t̄)(D_t − B) / Σ(t − t̄)²`` (ADU/s) has ``r(s) > k_warm · σ_b(r(s))`` — the pixel gains signal with
  exposure faster than its neighbours. Flags are independent: a pixel whose dark current is high is both ``HOT``
  (in this master) and ``WARM`` (growing); a pixel with a fixed offset is ``HOT`` only.
* ``RTS``  (4): random-telegraph (flickering) pixels: the per-pixel temporal spread ``σ_t`` of the frames of one
  stack stands out from its neighbours', ``σ_t − med₈(σ_t) > k_rts · σ_b`` (local, so amp glow's shot noise is not
  flicker). Hot pixels are excluded, since their shot noise alone raises ``σ_t``.
* ``COLD`` (8): in a flat normalised to mean 1, ``f < (1 − cold_depth) · med₈(f)``: the pixel responds less than
  its neighbours by more than ``cold_depth``.
* ``DEAD`` (16): ``f < dead_level``: (almost) no response at all.

Every master carries its map (:func:`master_defect_map`, written by :func:`calib.masters.build_master`); the tests
run over ``DATASEC`` when the master's header has one (elsewhere the map is 0), per kind:

* dark, flat-dark: ``HOT`` on ``D − B`` when a master bias is given, else on ``D`` itself (the local residual ``r``
  removes the bias level; a bias pixel with a fixed offset then counts as hot too, and is harmless to replace), and
  ``RTS`` on the spread of the stack;
* bias: ``RTS`` (random-telegraph noise is a read-noise effect of the pixel's source follower);
* flat: ``COLD`` and ``DEAD`` on the master divided by its mean (``RTS`` is not tested: a flat stack's spread is
  shot noise that follows the vignetting);
* ``WARM`` (dark only) needs darks at other exposures of the same key: when the library has them, the new dark's map
  tests the ladder of this master and those (``ladder``: exposure and ``D_t`` of each, the same master bias
  subtracted), so the map of a library's later darks gains the ``WARM`` flag.

The stack's spread (:func:`stack_spread_adu`) is computed after the integration from an evenly spaced subsample of at
most ``SPREAD_FRAMES`` = 12 input frames, read band by band, each pixel's highest value left out (a cosmic ray hits a
pixel in one frame; a telegraph pixel is high in about half of them): with the ``m = n − 1`` values kept,
``σ_t = sqrt(Σ(x − x̄)² / (m − 1))``. The ``RTS`` test is local like the others: ``σ_t − med₈(σ_t) > k_rts ·
σ_b`` — amp glow raises ``σ_t`` smoothly (its shot noise), a telegraph pixel alone.

Drift (:func:`hot_pixel_drift`): two maps of the same key and thresholds, built months apart, are compared by their
count of ``HOT|WARM`` pixels; a rise beyond ``limit_fraction`` (default +20 %) and by at least ``min_new`` pixels
(default 5, so that 3 → 4 borderline pixels is not news) is a warning.

Interpolation (:func:`replace_defects`) replaces each flagged pixel by the median of its unflagged neighbours in the
3×3 box (5×5 when none of those is good), as Siril's cosmetic correction and PHD2's defect map do.

Exports for the programs that keep their own defect lists, so the guider and the preview use the same defects:

* PHD2 (``OpenPHDGuiding/phd2``, ``src/defect_map.cpp``): a text file ``PHD2_defect_map_<profile>.txt`` with a
  ``# PHD2 Defect Map v1`` first line, ``#`` comment lines, ``# Defect count: N`` and one ``x y`` line per defect
  (0-based pixel coordinates). PHD2 only uses the list beside a master dark ``PHD2_defect_map_master_<profile>.fit``
  of the sensor's size; :func:`phd2_defect_map_text` writes the list.
* Ekos (``KDE/kstars``, ``kstars/ekos/auxiliary/defectmap.cpp``): a JSON object with ``camera``, ``median``,
  ``standardDeviation``, ``hotAggressiveness``, ``coldAggressiveness`` and the arrays ``hot`` and ``cold`` of
  ``{"x", "y", "value"}`` (0-based; ``value`` is the dark's pixel value). :func:`ekos_defect_map` builds it.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from astropy.io import fits

from calib.integration import open_sources
from calib.measure.amp_glow import block_sigma, neighbour_median
from calib.sections import Section

MASK_EXTNAME = "MASK"
SPREAD_FRAMES = 12
SPREAD_BAND_ROWS = 256


class Defect(enum.IntFlag):
    """Bit flags of a defect map (``uint8``)."""

    HOT = 1
    WARM = 2
    RTS = 4
    COLD = 8
    DEAD = 16


@dataclass(frozen=True)
class DefectThresholds:
    """The thresholds of :mod:`calib.defects` (dimensionless multiples of σ, or fractions of the flat's level)."""

    k_hot: float = 5.0
    k_warm: float = 5.0
    k_rts: float = 6.0
    cold_depth: float = 0.3
    dead_level: float = 0.05

    def __post_init__(self) -> None:
        for name in ("k_hot", "k_warm", "k_rts"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.cold_depth < 1 or not 0 <= self.dead_level < 1:
            raise ValueError(f"cold_depth must be in (0, 1) and dead_level in [0, 1) "
                             f"(got {self.cold_depth}, {self.dead_level})")


@dataclass(frozen=True)
class DefectMap:
    """A defect map: ``mask`` (``uint8`` bit flags, rows × columns), the thresholds used and what was tested."""

    mask: np.ndarray
    thresholds: DefectThresholds = field(default_factory=DefectThresholds)
    tested: frozenset[Defect] = frozenset()
    cards: tuple[tuple[str, object, str], ...] = ()  # extra header cards (how the map was made)

    def count(self, flag: Defect) -> int:
        """Pixels carrying ``flag``."""
        return int(np.count_nonzero(self.mask & np.uint8(flag)))

    @property
    def n_defects(self) -> int:
        """Pixels with any flag."""
        return int(np.count_nonzero(self.mask))

    def positions(self, flags: Defect = Defect(0xFF)) -> np.ndarray:  # noqa: B008 - an immutable enum value
        """0-based ``(x, y)`` pairs of the pixels carrying any of ``flags``, as an ``(N, 2)`` array, row by row."""
        ys, xs = np.nonzero(self.mask & np.uint8(flags))
        return np.column_stack([xs, ys])


def _local_outliers(values: np.ndarray, k_sigma: float) -> np.ndarray:
    """``r = x − med₈(x) > k_sigma · σ_b(r)`` (see the module docstring), on float32 (a full-size map in memory)."""
    x = np.asarray(values, dtype=np.float32)
    residual = x - neighbour_median(x)
    sigma = block_sigma(residual)
    outliers: np.ndarray = residual > k_sigma * np.maximum(sigma, 1e-12)
    return outliers


def hot_pixels(dark_minus_bias: np.ndarray, k_hot: float = 5.0) -> np.ndarray:
    """Boolean map of hot pixels in ``D − B`` (ADU): ``r > k_hot · σ_b(r)``."""
    return _local_outliers(dark_minus_bias, k_hot)


def dark_slope_adu_per_s(exposures_s: Sequence[float], dark_minus_bias: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel least-squares slope (ADU/s) of ``D_t − B`` against exposure ``t``; needs ≥ 2 distinct exposures.

    ``s = Σ(t − t̄)(y_t − ȳ) / Σ(t − t̄)²``, accumulated one frame at a time in float64.
    """
    t = np.asarray(exposures_s, dtype=np.float64)
    if t.size != len(dark_minus_bias) or t.size < 2 or np.ptp(t) <= 0:
        raise ValueError(f"need at least 2 darks at distinct exposures (got exposures {list(t)})")
    t_mean = float(t.mean())
    y_mean = np.mean([np.asarray(y, dtype=np.float64) for y in dark_minus_bias], axis=0)
    numerator = np.zeros_like(y_mean)
    for t_i, y_i in zip(t, dark_minus_bias, strict=True):
        numerator += (t_i - t_mean) * (np.asarray(y_i, dtype=np.float64) - y_mean)
    slope: np.ndarray = numerator / float(np.sum((t - t_mean) ** 2))
    return slope


def warm_pixels(exposures_s: Sequence[float], dark_minus_bias: Sequence[np.ndarray], k_warm: float = 5.0) -> np.ndarray:
    """Boolean map of pixels whose dark signal grows with exposure faster than their neighbours'."""
    return _local_outliers(dark_slope_adu_per_s(exposures_s, dark_minus_bias), k_warm)


def rts_pixels(temporal_std_adu: np.ndarray, k_rts: float = 6.0, exclude: np.ndarray | None = None) -> np.ndarray:
    """Boolean map of flickering pixels: ``σ_t − med₈(σ_t) > k_rts · σ_b`` (``exclude``: not tested)."""
    flagged = _local_outliers(temporal_std_adu, k_rts)
    return flagged if exclude is None else flagged & ~exclude


def temporal_std(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel standard deviation (ADU, ddof = 1) of a stack of frames, accumulated in float64 (Welford)."""
    if len(frames) < 2:
        raise ValueError("the temporal spread needs at least 2 frames")
    mean = np.zeros(np.shape(frames[0]), dtype=np.float64)
    m2 = np.zeros_like(mean)
    for n, frame in enumerate(frames, start=1):
        x = np.asarray(frame, dtype=np.float64)
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    return np.sqrt(m2 / (len(frames) - 1))


def stack_spread_adu(paths: Sequence[str | os.PathLike[str]], *, max_frames: int = SPREAD_FRAMES,
                     band_rows: int = SPREAD_BAND_ROWS) -> tuple[np.ndarray, int]:
    """Per-pixel temporal spread ``σ_t`` (ADU) of a stack without each pixel's highest value; ``(σ_t, n_used)``.

    ``n_used`` ≤ ``max_frames`` frames evenly spaced through ``paths`` (≥ 3 needed), read ``band_rows`` rows at a
    time (memory ``n_used · band_rows · width`` float32). With the ``m = n_used − 1`` values kept per pixel,
    ``σ_t = sqrt((Σx² − m·x̄²) / (m − 1))``, accumulated in float64 around the first frame's value. Dropping the
    highest value biases ``σ_t`` low for a Gaussian pixel (≈ 0.80 σ for 8 frames, 0.85 σ for 12), the same for every
    pixel, so the local RTS test is not affected.
    """
    if len(paths) < 3:
        raise ValueError(f"the stack's spread needs at least 3 frames, got {len(paths)}")
    picks = np.unique(np.rint(np.linspace(0, len(paths) - 1, min(len(paths), max(3, max_frames)))).astype(int))
    sources = open_sources([paths[i] for i in picks])
    try:
        h, w = sources[0].shape
        out = np.empty((h, w), dtype=np.float32)
        stack = np.empty((len(sources), min(band_rows, h), w), dtype=np.float32)
        m = len(sources) - 1
        for r0 in range(0, h, band_rows):
            r1 = min(h, r0 + band_rows)
            band = stack[:, : r1 - r0]
            for source, rows in zip(sources, band, strict=True):
                source.read_rows(r0, r1, rows)
            x = band.astype(np.float64) - band[0]
            top = x.max(axis=0)
            mean = (x.sum(axis=0) - top) / m
            sq = (x * x).sum(axis=0) - top * top
            out[r0:r1] = np.sqrt(np.maximum(sq - m * mean * mean, 0.0) / (m - 1))
        return out, len(sources)
    finally:
        for source in sources:
            source.close()


def flat_defects(normalised_flat: np.ndarray, cold_depth: float = 0.3,
                 dead_level: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``(cold, dead)`` boolean maps from a flat normalised to mean 1 (see the module docstring)."""
    f = np.asarray(normalised_flat, dtype=np.float64)
    dead = f < dead_level
    cold = (f < (1.0 - cold_depth) * neighbour_median(f)) & ~dead
    return cold, dead


def build_defect_map(shape: tuple[int, int], *, dark_minus_bias: np.ndarray | None = None,
                     ladder: tuple[Sequence[float], Sequence[np.ndarray]] | None = None,
                     temporal_std_adu: np.ndarray | None = None, normalised_flat: np.ndarray | None = None,
                     thresholds: DefectThresholds | None = None) -> DefectMap:
    """Combine every test whose input is given into one :class:`DefectMap` of ``shape``.

    ``dark_minus_bias``: ``D − B`` → HOT; ``ladder``: (exposures, ``D_t − B`` per exposure) → WARM;
    ``temporal_std_adu``: per-pixel spread of one stack → RTS; ``normalised_flat`` → COLD and DEAD.
    """
    th = thresholds or DefectThresholds()
    mask = np.zeros(shape, dtype=np.uint8)
    tested: set[Defect] = set()

    def add(flag: Defect, where: np.ndarray) -> None:
        if where.shape != shape:
            raise ValueError(f"{flag.name} test input has shape {where.shape}, the map {shape}")
        mask[where] |= np.uint8(flag)
        tested.add(flag)

    hot = np.zeros(shape, dtype=bool)
    if dark_minus_bias is not None:
        hot = hot_pixels(dark_minus_bias, th.k_hot)
        add(Defect.HOT, hot)
    if ladder is not None:
        add(Defect.WARM, warm_pixels(ladder[0], ladder[1], th.k_warm))
    if temporal_std_adu is not None:
        add(Defect.RTS, rts_pixels(temporal_std_adu, th.k_rts, exclude=hot))
    if normalised_flat is not None:
        cold, dead = flat_defects(normalised_flat, th.cold_depth, th.dead_level)
        add(Defect.COLD, cold)
        add(Defect.DEAD, dead)
    return DefectMap(mask=mask, thresholds=th, tested=frozenset(tested))


def _region(shape: tuple[int, int], header: Mapping[str, object] | None) -> tuple[slice, slice]:
    """Slices of ``DATASEC`` when the header has a valid one inside ``shape``, else the whole image."""
    text = header.get("DATASEC") if header is not None else None
    if isinstance(text, str):
        try:
            section = Section.parse(text)
        except ValueError:
            section = None
        if section is not None and section.fits_in(shape):
            return section.slices
    return slice(0, shape[0]), slice(0, shape[1])


def master_defect_map(kind: str, master: np.ndarray, header: Mapping[str, object] | None = None, *,
                      bias: np.ndarray | None = None, spread_adu: np.ndarray | None = None,
                      thresholds: DefectThresholds | None = None, cards: Sequence[tuple[str, object, str]] = (),
                      exposure_s: float | None = None, ladder: Sequence[tuple[float, np.ndarray]] = ()
                      ) -> DefectMap:
    """The defect map of one master of ``kind`` (bias, dark, flat-dark, flat), tested over ``DATASEC``.

    Which tests run for which kind: see the module docstring. ``bias`` (ADU): the master bias for ``D − B``;
    ``spread_adu``: :func:`stack_spread_adu` of the master's frames (no ``RTS`` test without it). ``ladder`` (a dark
    with ``bias`` and its ``exposure_s``): ``(exposure_s, master dark)`` of the same key at other exposures → ``WARM``.
    """
    data = np.asarray(master, dtype=np.float32)
    ys, xs = _region(data.shape, header)
    region = data[ys, xs]
    shape = (region.shape[0], region.shape[1])
    spread = None if spread_adu is None else np.asarray(spread_adu)[ys, xs]
    reference = "none"
    if kind in ("dark", "flat-dark"):
        if bias is not None:
            if np.shape(bias) != data.shape:
                raise ValueError(f"master bias {np.shape(bias)} and the {kind} {data.shape} differ in shape")
            region = region - np.asarray(bias, dtype=np.float32)[ys, xs]
            reference = "master bias"
        steps: tuple[list[float], list[np.ndarray]] | None = None
        if kind == "dark" and bias is not None and exposure_s is not None and ladder:
            ref = np.asarray(bias, dtype=np.float32)[ys, xs]
            steps = ([float(exposure_s)], [region])
            for t_s, other in ladder:
                if np.shape(other) != data.shape:
                    raise ValueError(f"ladder dark {np.shape(other)} and the dark {data.shape} differ in shape")
                if float(t_s) not in steps[0]:
                    steps[0].append(float(t_s))
                    steps[1].append(np.asarray(other, dtype=np.float32)[ys, xs] - ref)
            if len(steps[0]) < 2:
                steps = None
        found = build_defect_map(shape, dark_minus_bias=region, ladder=steps, temporal_std_adu=spread,
                                 thresholds=thresholds)
        if steps is not None:
            cards = (*cards, ("DFLADDER", " ".join(f"{t:g}" for t in sorted(steps[0]))[:68],
                              "[s] dark exposures of the WARM test"))
    elif kind == "bias":
        found = build_defect_map(shape, temporal_std_adu=spread, thresholds=thresholds)
    elif kind == "flat":
        level = float(region.mean())
        if not level > 0:
            raise ValueError(f"the master flat's mean is {level:g}: cannot normalise it")
        found = build_defect_map(shape, normalised_flat=region / level, thresholds=thresholds)
    else:
        raise ValueError(f"unknown master kind {kind!r}")
    mask = np.zeros(data.shape, dtype=np.uint8)
    mask[ys, xs] = found.mask
    tested_region = f"[{xs.start + 1}:{xs.stop},{ys.start + 1}:{ys.stop}]"
    info = (("DFKIND", kind, "master kind the map was made from"),
            ("DFREGION", tested_region, "section tested (outside: 0)"),
            ("DFREF", reference, "subtracted before the HOT test"), *cards)
    return DefectMap(mask=mask, thresholds=found.thresholds, tested=found.tested, cards=tuple(info))


def defect_stats(defects: DefectMap) -> dict[str, int]:
    """Counts per flag for a master's statistics: ``{"defects_hot": …, "defects_rts": …, "defects_total": …}``."""
    counts = {f"defects_{flag.name.lower()}": defects.count(flag) for flag in Defect if flag in defects.tested
              and flag.name is not None}
    return {**counts, "defects_total": defects.n_defects}


def read_master_defects(path: str | os.PathLike[str]) -> DefectMap | None:
    """The ``MASK`` extension of a master file as a :class:`DefectMap`, or ``None`` when it has none."""
    with fits.open(path, memmap=False) as hdul:
        if MASK_EXTNAME not in hdul:
            return None
        return read_defect_hdu(hdul[MASK_EXTNAME])


@dataclass(frozen=True)
class HotPixelDrift:
    """Hot-pixel counts of two maps of one key (``before`` older) and the verdict (see :func:`hot_pixel_drift`)."""

    before: int
    after: int
    appeared: int
    vanished: int
    change_fraction: float
    limit_fraction: float
    warning: str | None


def hot_pixel_drift(before: DefectMap, after: DefectMap, *, limit_fraction: float = 0.2, min_new: int = 5,
                    flags: Defect = Defect.HOT | Defect.WARM) -> HotPixelDrift:
    """Compare the ``flags`` pixels of two maps of the same key: ``change = (N_after − N_before) / max(N_before, 1)``.

    A warning when ``change > limit_fraction`` and ``N_after − N_before ≥ min_new``. ``appeared``/``vanished``: pixels
    flagged in only one map. Maps of different shapes or hot/warm thresholds are not comparable (``ValueError``).
    """
    if before.mask.shape != after.mask.shape:
        raise ValueError(f"defect maps of different shapes {before.mask.shape} and {after.mask.shape}")
    tb, ta = before.thresholds, after.thresholds
    if (tb.k_hot, tb.k_warm) != (ta.k_hot, ta.k_warm):
        raise ValueError(f"defect maps made with different thresholds (k_hot {tb.k_hot} vs {ta.k_hot}, "
                         f"k_warm {tb.k_warm} vs {ta.k_warm}): counts are not comparable")
    old = (before.mask & np.uint8(flags)) != 0
    new = (after.mask & np.uint8(flags)) != 0
    n_old, n_new = int(old.sum()), int(new.sum())
    change = (n_new - n_old) / max(n_old, 1)
    warning = None
    if change > limit_fraction and n_new - n_old >= min_new:
        warning = (f"hot pixels rose from {n_old} to {n_new} ({100 * change:+.1f} %, limit "
                   f"{100 * limit_fraction:+.0f} %): the sensor is ageing; rebuild the masters of this camera")
    return HotPixelDrift(before=n_old, after=n_new, appeared=int((new & ~old).sum()), vanished=int((old & ~new).sum()),
                         change_fraction=change, limit_fraction=limit_fraction, warning=warning)


def defect_hdu(defects: DefectMap) -> fits.ImageHDU:
    """The map as an image extension ``MASK`` (``uint8``) with its thresholds and counts in the header."""
    header = fits.Header()
    header["EXTNAME"] = MASK_EXTNAME
    header["DFFLAGS"] = ("HOT=1 WARM=2 RTS=4 COLD=8 DEAD=16", "bit flags, 0 = good")
    header["DFTESTED"] = (" ".join(f.name or "" for f in sorted(defects.tested)) or "none", "tests that ran")
    th = defects.thresholds
    for key, value, comment in (("DFKHOT", th.k_hot, "hot: D-B residual > k sigma"),
                                ("DFKWARM", th.k_warm, "warm: dark slope residual > k sigma"),
                                ("DFKRTS", th.k_rts, "RTS: temporal std > median + k sigma"),
                                ("DFCOLD", th.cold_depth, "cold: flat < (1-depth) x neighbours"),
                                ("DFDEAD", th.dead_level, "dead: normalised flat < level")):
        header[key] = (value, comment)
    for flag in Defect:
        header[f"N{flag.name}"] = (defects.count(flag), f"pixels flagged {flag.name}")
    header["NDEFECTS"] = (defects.n_defects, "pixels with any flag")
    for key, card_value, comment in defects.cards:
        header[key] = (card_value, comment)
    return fits.ImageHDU(data=defects.mask.astype(np.uint8), header=header)


def read_defect_hdu(hdu: fits.ImageHDU) -> DefectMap:
    """A :class:`DefectMap` back from :func:`defect_hdu` output."""
    h = hdu.header
    tested = frozenset(Defect[name] for name in str(h.get("DFTESTED", "none")).split() if name in Defect.__members__)
    th = DefectThresholds(k_hot=float(h.get("DFKHOT", 5.0)), k_warm=float(h.get("DFKWARM", 5.0)),
                          k_rts=float(h.get("DFKRTS", 6.0)), cold_depth=float(h.get("DFCOLD", 0.3)),
                          dead_level=float(h.get("DFDEAD", 0.05)))
    return DefectMap(mask=np.asarray(hdu.data, dtype=np.uint8), thresholds=th, tested=tested)


def replace_defects(image: np.ndarray, mask: np.ndarray,
                    flags: Defect = Defect(0xFF)) -> tuple[np.ndarray, int]:  # noqa: B008 - immutable enum value
    """Replace pixels flagged with any of ``flags`` by the median of their good neighbours; ``(image, replaced)``.

    Neighbours are the 3×3 box, or the 5×5 box when none of the 3×3 neighbours is good; a pixel with no good
    neighbour in 5×5 keeps its value and is not counted. The input is not modified; the output is float32.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.shape != mask.shape:
        raise ValueError(f"image {img.shape} and defect map {mask.shape} differ in shape")
    bad = (np.asarray(mask, dtype=np.uint8) & np.uint8(flags)) != 0
    out = img.copy()
    ys, xs = np.nonzero(bad)
    if ys.size == 0:
        return out, 0
    values = np.where(bad, np.nan, img.astype(np.float64))
    replaced = np.zeros(ys.size, dtype=bool)
    for radius in (1, 2):
        todo = ~replaced
        if not todo.any():
            break
        padded = np.pad(values, radius, mode="constant", constant_values=np.nan)
        ty, tx = ys[todo], xs[todo]
        offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                   if (dy, dx) != (0, 0)]
        neighbours = np.stack([padded[ty + radius + dy, tx + radius + dx] for dy, dx in offsets])
        have = np.isfinite(neighbours).any(axis=0)
        if have.any():
            medians = np.nanmedian(neighbours[:, have], axis=0)
            out[ty[have], tx[have]] = medians.astype(np.float32)
            idx = np.flatnonzero(todo)[have]
            replaced[idx] = True
    return out, int(replaced.sum())


def phd2_defect_map_text(defects: DefectMap, info: Mapping[str, object] | None = None,
                         flags: Defect = Defect.HOT | Defect.WARM | Defect.COLD | Defect.DEAD) -> str:
    """PHD2's defect-map text (see the module docstring): header, ``#`` info lines, count, ``x y`` lines."""
    positions = defects.positions(flags)
    lines = ["# PHD2 Defect Map v1", f"# Generated: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} by darkd"]
    lines += [f"# {key}: {value}" for key, value in (info or {}).items()]
    lines.append(f"# Defect count: {len(positions)}")
    lines += [f"{x} {y}" for x, y in positions]
    return "\n".join(lines) + "\n"


def ekos_defect_map(defects: DefectMap, dark: np.ndarray, camera: str) -> str:
    """Ekos's defect-map JSON (see the module docstring): hot = HOT|WARM|RTS pixels, cold = COLD|DEAD pixels."""
    values = np.asarray(dark, dtype=np.float64)
    if values.shape != defects.mask.shape:
        raise ValueError(f"dark {values.shape} and defect map {defects.mask.shape} differ in shape")

    def pixels(flags: Defect) -> list[dict[str, float | int]]:
        return [{"x": int(x), "y": int(y), "value": float(values[y, x])} for x, y in defects.positions(flags)]

    document = {"camera": camera, "median": float(np.median(values)), "standardDeviation": float(np.std(values)),
                "hotAggressiveness": 100, "coldAggressiveness": 100,
                "hot": pixels(Defect.HOT | Defect.WARM | Defect.RTS), "cold": pixels(Defect.COLD | Defect.DEAD)}
    return json.dumps(document, indent=1)
