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
  stack exceeds ``median(σ_t) + k_rts · 1.4826·MAD(σ_t)``. Hot pixels are excluded, since their shot noise alone
  raises ``σ_t``.
* ``COLD`` (8): in a flat normalised to mean 1, ``f < (1 − cold_depth) · med₈(f)``: the pixel responds less than
  its neighbours by more than ``cold_depth``.
* ``DEAD`` (16): ``f < dead_level``: (almost) no response at all.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from astropy.io import fits

from calib.compare import MAD_TO_SIGMA
from calib.measure.amp_glow import block_sigma, neighbour_median

MASK_EXTNAME = "MASK"


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
    """``r = x − med₈(x) > k_sigma · σ_b(r)`` (see the module docstring), on float64."""
    x = np.asarray(values, dtype=np.float64)
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
    """Boolean map of flickering pixels: ``σ_t > median(σ_t) + k_rts · 1.4826·MAD(σ_t)`` (``exclude``: not tested)."""
    s = np.asarray(temporal_std_adu, dtype=np.float64)
    candidates = s if exclude is None else s[~exclude]
    centre = float(np.median(candidates))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(candidates - centre)))
    flagged = s > centre + k_rts * max(spread, 1e-12)
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
