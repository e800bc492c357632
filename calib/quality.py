"""Per-frame quality checks and overscan statistics (pure NumPy; no camera, no files).

A calibration frame is rejected (and may be retaken) when:

* **temperature** — the sensor temperature at the start or end of the exposure (or the lowest/highest reading during it,
  when known) is more than ``temperature_tolerance_c`` from the set point;
* **light leak** (bias/dark/flat-dark only) — the frame's overscan-corrected mean, ``mean(DATASEC) − mean(BIASSEC)``,
  exceeds what the library predicts (:class:`FrameExpectation`) by more than ``leak_sigma · σ``. Subtracting the
  overscan removes the ADC drift that moves the whole frame by tens of ADU, so only signal on the pixels counts;
* **saturation** — more than ``saturation_max_fraction`` of the data pixels are at or above ``saturation_adu``.

Overscan statistics: mean, median and standard deviation of the ``BIASSEC`` pixels (ADU); the standard deviation is the
read noise plus any column pattern, in ADU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from calib.sections import Section

LEAK_CHECKED_TYPES = ("bias", "dark", "flatdark")


@dataclass(frozen=True)
class OverscanStats:
    """Overscan (``BIASSEC``) level and noise in ADU."""

    mean_adu: float
    median_adu: float
    std_adu: float

    def header_cards(self) -> dict[str, tuple[float, str]]:
        return {"OVERSCAN": (round(self.mean_adu, 3), "[adu] mean overscan (BIASSEC) level"),
                "OVSCMED": (round(self.median_adu, 3), "[adu] median overscan level"),
                "OVSCSTD": (round(self.std_adu, 3), "[adu] overscan standard deviation")}


def _section(sec: str | Section) -> Section:
    return sec if isinstance(sec, Section) else Section.parse(sec)


def _region(data: np.ndarray, sec: str | Section, name: str) -> np.ndarray:
    section = _section(sec)
    if not section.fits_in(data.shape):
        raise ValueError(f"{name} {section.iraf} lies outside the {data.shape[1]}x{data.shape[0]} frame")
    return data[section.slices]


def overscan_stats(data: np.ndarray, biassec: str | Section) -> OverscanStats:
    """Mean, median and standard deviation (ADU) of the overscan region ``biassec`` of ``data``."""
    region = _region(data, biassec, "BIASSEC").astype(np.float64, copy=False)
    return OverscanStats(float(region.mean()), float(np.median(region)), float(region.std()))


def corrected_mean_adu(data: np.ndarray, datasec: str | Section | None, biassec: str | Section | None) -> float:
    """``mean(DATASEC) − mean(BIASSEC)`` (ADU); without a BIASSEC just ``mean(DATASEC)``."""
    region = _region(data, datasec, "DATASEC") if datasec is not None else data
    mean = float(region.mean(dtype=np.float64))
    if biassec is not None:
        mean -= float(_region(data, biassec, "BIASSEC").mean(dtype=np.float64))
    return mean


@dataclass(frozen=True)
class FrameExpectation:
    """What the library predicts for a frame's overscan-corrected mean (ADU) and its frame-to-frame σ (ADU)."""

    mean_adu: float
    sigma_adu: float
    source: str = "library"

    @classmethod
    def from_means(cls, means_adu: Sequence[float], *, min_sigma_adu: float = 1.0, min_sigma_fraction: float = 0.02,
                   source: str = "frames") -> FrameExpectation:
        """From the overscan-corrected means of good frames: median and a robust σ = 1.4826·MAD, at least
        ``min_sigma_adu`` and at least ``min_sigma_fraction``·|median| (dark signal changes ~6 % within ±0.5 °C, so
        5σ never flags a legitimate temperature wobble as a leak)."""
        values = np.asarray(list(means_adu), dtype=np.float64)
        if values.size == 0:
            raise ValueError("FrameExpectation.from_means needs at least one frame mean")
        median = float(np.median(values))
        mad_sigma = 1.4826 * float(np.median(np.abs(values - median))) if values.size >= 3 else 0.0
        return cls(median, max(mad_sigma, min_sigma_adu, min_sigma_fraction * abs(median)), source)


@dataclass(frozen=True)
class QualityThresholds:
    """Limits for :func:`check_frame` (units in the names)."""

    temperature_tolerance_c: float = 0.5
    leak_sigma: float = 5.0
    saturation_adu: float = 65520.0
    saturation_max_fraction: float = 0.001


@dataclass(frozen=True)
class QualityVerdict:
    """``ok`` and the human-readable reasons a frame failed; ``metrics`` holds the measured numbers."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def temperature_reasons(set_point_c: float | None, temperatures_c: Iterable[float | None],
                        tolerance_c: float) -> list[str]:
    """Reasons (empty if fine) for temperatures outside ``set_point_c ± tolerance_c``; nothing to check without one."""
    if set_point_c is None:
        return []
    reasons = []
    for label, temp in zip(("start", "end", "minimum", "maximum"), temperatures_c, strict=False):
        if temp is None:
            if label in ("start", "end"):
                reasons.append(f"temperature: no reading at exposure {label}")
        elif abs(temp - set_point_c) > tolerance_c:
            where = f"at exposure {label}" if label in ("start", "end") else f"{label} during the exposure"
            reasons.append(f"temperature: {temp:.2f} °C {where}, set point {set_point_c:.2f} ± {tolerance_c:.2f} °C")
    return reasons


def check_frame(data: np.ndarray, *, frame_type: str, set_point_c: float | None = None,
                temperature_start_c: float | None = None, temperature_end_c: float | None = None,
                temperature_min_c: float | None = None, temperature_max_c: float | None = None,
                datasec: str | Section | None = None, biassec: str | Section | None = None,
                expected: FrameExpectation | None = None,
                thresholds: QualityThresholds | None = None) -> QualityVerdict:
    """Run the checks in the module docstring on one frame (ADU) and return the verdict with its reasons."""
    limits = thresholds or QualityThresholds()
    reasons = temperature_reasons(set_point_c, (temperature_start_c, temperature_end_c, temperature_min_c,
                                                temperature_max_c), limits.temperature_tolerance_c)
    region = _region(data, datasec, "DATASEC") if datasec is not None else data
    metrics: dict[str, float] = {}
    saturated = float(np.count_nonzero(region >= limits.saturation_adu)) / max(1, region.size)
    metrics["saturated_fraction"] = saturated
    if saturated > limits.saturation_max_fraction:
        reasons.append(f"saturation: {100 * saturated:.3f} % of pixels at or above {limits.saturation_adu:.0f} ADU "
                       f"(limit {100 * limits.saturation_max_fraction:.3f} %)")
    corrected = corrected_mean_adu(data, datasec, biassec)
    metrics["corrected_mean_adu"] = corrected
    if expected is not None and str(frame_type).lower() in LEAK_CHECKED_TYPES:
        excess = corrected - expected.mean_adu
        metrics["excess_adu"] = excess
        limit = limits.leak_sigma * expected.sigma_adu
        if excess > limit or math.isnan(excess):
            reasons.append(f"light leak: mean {corrected:.1f} ADU above overscan is {excess:.1f} ADU over the "
                           f"{expected.source} prediction {expected.mean_adu:.1f} ADU (limit {limit:.1f} = "
                           f"{limits.leak_sigma:g}σ)")
    return QualityVerdict(ok=not reasons, reasons=reasons, metrics=metrics)
