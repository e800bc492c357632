"""Pure cooling logic: stability, unreachable set points, warm-up ramps. No I/O; times are seconds on any clock.

darkd decides stability itself because the QHY driver's ``CCD_TEMPERATURE`` state can flip to Busy and never return
to OK: the sensor is *stable* once every sample has been within ``±tolerance_c`` of the set point continuously for
``hold_s``. A set point is *unreachable* when the cooler works at (nearly) full power (``≥ power_threshold_pct``) and
the temperature has stopped approaching the set point: over the last ``window_s`` it improved by less than
``min_approach_c``. Without a cooler-power reading the plateau alone decides, over twice the window. A sensor held
flat, far from the set point and below full power is regulated to some other set point (:class:`HeldElsewhereDetector`).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Unreachable:
    """Verdict of :class:`UnreachableDetector`: the coldest temperature reached and the estimated ambient limit."""

    reachable_c: float
    ambient_limit_c: float | None
    cooler_power_pct: float | None

    def message(self, set_point_c: float) -> str:
        limit = (f"; the ambient limit (ambient minus the cooler's maximum delta) is about "
                 f"{self.ambient_limit_c:.1f} °C" if self.ambient_limit_c is not None else "")
        power = f" at {self.cooler_power_pct:.0f} % cooler power" if self.cooler_power_pct is not None else ""
        return (f"set point {set_point_c:.1f} °C is unreachable: the sensor stopped at {self.reachable_c:.1f} °C"
                f"{power}{limit}; choose a set point of {math.ceil(self.reachable_c + 1.0):.0f} °C or warmer")


class StabilityTracker:
    """Feed ``(time_s, temperature_c)``; :attr:`stable` once within ±tolerance continuously for ``hold_s``."""

    def __init__(self, set_point_c: float, tolerance_c: float = 0.2, hold_s: float = 60.0) -> None:
        if tolerance_c <= 0 or hold_s < 0:
            raise ValueError(f"tolerance_c must be > 0 and hold_s >= 0 (got {tolerance_c}, {hold_s})")
        self.set_point_c = set_point_c
        self.tolerance_c = tolerance_c
        self.hold_s = hold_s
        self.within_since_s: float | None = None
        self.last_time_s: float | None = None

    def feed(self, time_s: float, temperature_c: float) -> bool:
        """Add a sample; returns whether the temperature is now stable. Out-of-order samples are ignored."""
        if self.last_time_s is not None and time_s < self.last_time_s:
            return self.stable
        self.last_time_s = time_s
        if abs(temperature_c - self.set_point_c) <= self.tolerance_c:
            if self.within_since_s is None:
                self.within_since_s = time_s
        else:
            self.within_since_s = None
        return self.stable

    @property
    def held_s(self) -> float:
        """How long the temperature has been within tolerance (0 when outside)."""
        if self.within_since_s is None or self.last_time_s is None:
            return 0.0
        return self.last_time_s - self.within_since_s

    @property
    def stable(self) -> bool:
        return self.within_since_s is not None and self.held_s >= self.hold_s


class SampleWindow:
    """The ``(time_s, temperature_c, cooler_power_pct)`` samples of the last ``window_s`` seconds, for the detectors."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, float, float | None]] = collections.deque()
        self._first_time_s: float | None = None

    def add(self, time_s: float, temperature_c: float, cooler_power_pct: float | None, window_s: float) -> bool:
        """Add a sample and drop those older than ``window_s``; True once they span the whole window (≥ 3 samples)."""
        if self._first_time_s is None:
            self._first_time_s = time_s
        self.samples.append((time_s, temperature_c, cooler_power_pct))
        while self.samples and self.samples[0][0] < time_s - window_s:
            self.samples.popleft()
        return time_s - self._first_time_s >= window_s and len(self.samples) >= 3


class UnreachableDetector:
    """Feed samples; :meth:`feed` returns an :class:`Unreachable` verdict once the set point cannot be reached.

    ``ambient_c`` (the sensor temperature with the cooler off, if known) and ``max_delta_c`` (the cooler's maximum
    difference to ambient, from the camera profile) give ``ambient_limit_c = ambient_c − max_delta_c``.
    """

    def __init__(self, set_point_c: float, *, tolerance_c: float = 0.2, window_s: float = 120.0,
                 power_threshold_pct: float = 95.0, min_approach_c: float = 0.1, ambient_c: float | None = None,
                 max_delta_c: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.set_point_c = set_point_c
        self.tolerance_c = tolerance_c
        self.window_s = window_s
        self.power_threshold_pct = power_threshold_pct
        self.min_approach_c = min_approach_c
        self.ambient_c = ambient_c
        self.max_delta_c = max_delta_c
        self._window = SampleWindow()

    def feed(self, time_s: float, temperature_c: float, cooler_power_pct: float | None) -> Unreachable | None:
        have_power = cooler_power_pct is not None
        window_s = self.window_s if have_power else 2 * self.window_s
        if not self._window.add(time_s, temperature_c, cooler_power_pct, window_s):
            return None
        if temperature_c <= self.set_point_c + self.tolerance_c:
            return None  # reached (or cooling below): never unreachable
        samples = self._window.samples
        if have_power and any(p is None or p < self.power_threshold_pct for _, _, p in samples):
            return None
        temps = [t for _, t, _ in samples]
        gap_start = max(temps[: max(1, len(temps) // 4)]) - self.set_point_c  # distance at the start of the window
        gap_now = temperature_c - self.set_point_c
        if gap_start - gap_now >= self.min_approach_c:
            return None  # still approaching
        reachable_c = min(temps)
        limit = (self.ambient_c - self.max_delta_c
                 if self.ambient_c is not None and self.max_delta_c is not None else None)
        return Unreachable(reachable_c=reachable_c, ambient_limit_c=limit, cooler_power_pct=cooler_power_pct)


class HeldElsewhereDetector:
    """Feed samples; :meth:`feed` returns the temperature the sensor is held at once it has stayed flat, away from the
    set point and below full cooler power, for ``window_s``: the driver regulates to some other set point.

    That happens when another INDI client on the same server changes ``CCD_TEMPERATURE`` (Ekos and darkd on one
    host), or when the driver replaces the set point itself (QHY: ``COOLER_ON`` regulates to min(current, 0 °C),
    indi-qhy/qhy_ccd.cpp). *Flat* means the samples of the window span at most ``max(2·tolerance_c, 0.2)`` °C; *away*
    means their mean is more than ``max(5·tolerance_c, 1.0)`` °C from the set point. A sensor still approaching along
    a 120 s time constant changes by more than that band over a 120 s window while it is that far away. The cooler
    must be working (power above 0 and below ``power_threshold_pct`` in every sample) and, where ``ambient_c`` is
    known, hold the sensor at least that distance below it. At (nearly) full power the set point is unreachable instead
    (:class:`UnreachableDetector`); at 0 % the cooler is off, which is not a set point.
    """

    def __init__(self, set_point_c: float, *, tolerance_c: float = 0.2, window_s: float = 120.0,
                 power_threshold_pct: float = 95.0, ambient_c: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.set_point_c = set_point_c
        self.window_s = window_s
        self.power_threshold_pct = power_threshold_pct
        self.ambient_c = ambient_c
        self.flat_c = max(2 * tolerance_c, 0.2)
        self.away_c = max(5 * tolerance_c, 1.0)
        self._window = SampleWindow()

    def feed(self, time_s: float, temperature_c: float, cooler_power_pct: float | None) -> float | None:
        """Add a sample; returns the mean temperature of the window when the sensor is held elsewhere, else None."""
        if not self._window.add(time_s, temperature_c, cooler_power_pct, self.window_s):
            return None
        samples = self._window.samples
        temps = [t for _, t, _ in samples]
        held_c = sum(temps) / len(temps)
        if max(temps) - min(temps) > self.flat_c or abs(held_c - self.set_point_c) <= self.away_c:
            return None
        if any(p is None or not 0.0 < p < self.power_threshold_pct for _, _, p in samples):
            return None  # off, or at its limit (unreachable), or no power reading to tell them apart
        if self.ambient_c is not None and held_c > self.ambient_c - self.away_c:
            return None  # not held below ambient: the readings do not show a cooler regulating
        return held_c


@dataclass(frozen=True)
class RampStep:
    """Set ``set_point_c`` at ``at_s`` seconds after the ramp starts."""

    at_s: float
    set_point_c: float


def warm_up_plan(current_c: float, target_c: float, rate_c_per_min: float, step_c: float = 1.0) -> list[RampStep]:
    """Set-point steps that warm from ``current_c`` to ``target_c`` at ``rate_c_per_min`` (°C per minute).

    Steps of ``step_c`` (the last one may be shorter) spaced ``60 · step_c / rate`` seconds apart; empty when already
    at or above the target. Used when the driver has no ``CCD_TEMP_RAMP``.
    """
    if rate_c_per_min <= 0 or step_c <= 0:
        raise ValueError(f"rate_c_per_min and step_c must be > 0 (got {rate_c_per_min}, {step_c})")
    if current_c >= target_c:
        return []
    steps: list[RampStep] = []
    temp = current_c
    at_s = 0.0
    while temp < target_c - 1e-9:
        delta = min(step_c, target_c - temp)
        temp += delta
        at_s += 60.0 * delta / rate_c_per_min
        steps.append(RampStep(at_s=at_s - 60.0 * delta / rate_c_per_min, set_point_c=round(temp, 3)))
    return steps
