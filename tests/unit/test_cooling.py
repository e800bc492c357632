"""drivers.cooling: stability, unreachable set points and warm-up plans, fed with synthetic sample streams."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from drivers.cooling import HeldElsewhereDetector, StabilityTracker, UnreachableDetector, warm_up_plan


def approach(t_s: np.ndarray, start_c: float, final_c: float, tau_s: float) -> np.ndarray:
    """Newtonian approach of a TEC-cooled sensor: T(t) = final + (start − final)·exp(−t/τ)."""
    return final_c + (start_c - final_c) * np.exp(-t_s / tau_s)


def first_stable_time(tracker: StabilityTracker, times: np.ndarray, temps: np.ndarray) -> float | None:
    for t, temp in zip(times, temps, strict=True):
        if tracker.feed(float(t), float(temp)):
            return float(t)
    return None


def test_stable_after_hold_under_noise() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(0.0, 1200.0, 1.0)
    temps = approach(times, 20.0, -10.0, 120.0) + rng.normal(0.0, 0.03, times.size)
    tracker = StabilityTracker(-10.0, tolerance_c=0.2, hold_s=60.0)
    t_stable = first_stable_time(tracker, times, temps)
    assert t_stable is not None
    inside = np.abs(temps - (-10.0)) <= 0.2
    # the last time the stream was outside tolerance before t_stable, + 60 s hold, is exactly when it became stable
    last_out = times[(~inside) & (times < t_stable)].max()
    assert t_stable == pytest.approx(last_out + 1.0 + 60.0)
    assert np.all(inside[(times > last_out) & (times <= t_stable)])


def test_noise_wider_than_tolerance_is_never_stable() -> None:
    rng = np.random.default_rng(4)
    times = np.arange(0.0, 1200.0, 1.0)
    temps = -10.0 + rng.normal(0.0, 0.3, times.size)  # σ 0.3 °C: leaves ±0.2 °C every few seconds
    assert first_stable_time(StabilityTracker(-10.0, 0.2, 60.0), times, temps) is None


def test_single_excursion_restarts_the_hold() -> None:
    tracker = StabilityTracker(-10.0, tolerance_c=0.2, hold_s=10.0)
    for t in range(0, 9):
        assert not tracker.feed(float(t), -10.0)
    assert not tracker.feed(9.0, -9.5)  # out of tolerance: hold restarts
    assert tracker.held_s == 0.0
    for t in range(10, 20):
        assert not tracker.feed(float(t), -10.1)
    assert tracker.feed(20.0, -10.0)
    assert tracker.held_s == pytest.approx(10.0)


def test_out_of_order_sample_is_ignored() -> None:
    tracker = StabilityTracker(0.0, 0.2, 5.0)
    tracker.feed(10.0, 0.0)
    tracker.feed(5.0, 3.0)
    assert tracker.within_since_s == 10.0


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="tolerance_c"):
        StabilityTracker(0.0, tolerance_c=0.0)
    with pytest.raises(ValueError, match="window_s"):
        UnreachableDetector(0.0, window_s=0.0)


def feed_all(detector: UnreachableDetector | HeldElsewhereDetector, times: np.ndarray, temps: np.ndarray,
             powers: np.ndarray | None) -> tuple[float, Any] | None:
    """The first (time, answer) for which ``detector.feed`` answers something, else None."""
    for i, (t, temp) in enumerate(zip(times, temps, strict=True)):
        verdict = detector.feed(float(t), float(temp), None if powers is None else float(powers[i]))
        if verdict is not None:
            return float(t), verdict
    return None


def test_unreachable_set_point_reports_reachable_and_ambient_limit() -> None:
    # ambient 20 °C, the cooler stalls 32 °C below: plateau at −12 °C, set point −20 °C, power pinned at 100 %
    rng = np.random.default_rng(5)
    times = np.arange(0.0, 2400.0, 2.0)
    temps = approach(times, 20.0, -12.0, 150.0) + rng.normal(0.0, 0.02, times.size)
    powers = np.full(times.size, 100.0)
    detector = UnreachableDetector(-20.0, window_s=120.0, ambient_c=20.0, max_delta_c=35.0)
    found = feed_all(detector, times, temps, powers)
    assert found is not None
    t_found, verdict = found
    assert verdict.reachable_c == pytest.approx(-12.0, abs=0.3)
    assert verdict.ambient_limit_c == pytest.approx(-15.0)
    # not before the approach has slowed to < 0.1 °C per 2-minute window (|dT/dt|·90 s ≈ 0.1 °C → t ≈ τ·ln(…))
    rate_at_found = (20.0 + 12.0) / 150.0 * math.exp(-t_found / 150.0)  # °C/s
    assert rate_at_found * 90.0 < 0.2
    message = verdict.message(-20.0)
    assert "-20.0 °C is unreachable" in message
    assert f"stopped at {verdict.reachable_c:.1f} °C" in message and "about -15.0 °C" in message


def test_still_approaching_at_full_power_is_not_unreachable() -> None:
    times = np.arange(0.0, 600.0, 2.0)
    temps = 0.0 - 0.01 * times  # steady 0.6 °C/min towards −20 °C
    detector = UnreachableDetector(-20.0, window_s=120.0)
    assert feed_all(detector, times, temps, np.full(times.size, 100.0)) is None


def test_plateau_below_power_threshold_is_not_unreachable() -> None:
    times = np.arange(0.0, 600.0, 2.0)
    temps = np.full(times.size, -5.0)
    detector = UnreachableDetector(-10.0, window_s=120.0)
    assert feed_all(detector, times, temps, np.full(times.size, 80.0)) is None


def test_reached_set_point_is_never_unreachable() -> None:
    times = np.arange(0.0, 600.0, 2.0)
    detector = UnreachableDetector(-10.0, window_s=120.0)
    assert feed_all(detector, times, np.full(times.size, -10.1), np.full(times.size, 99.0)) is None


def test_without_cooler_power_the_plateau_decides_over_twice_the_window() -> None:
    times = np.arange(0.0, 600.0, 1.0)
    temps = np.full(times.size, -8.0)
    found = feed_all(UnreachableDetector(-15.0, window_s=100.0), times, temps, None)
    assert found is not None
    assert found[0] >= 200.0
    assert found[1].ambient_limit_c is None and found[1].cooler_power_pct is None


def test_warm_up_plan_steps_at_the_rate() -> None:
    plan = warm_up_plan(-20.0, 15.0, rate_c_per_min=5.0, step_c=1.0)
    assert len(plan) == 35
    assert plan[0].at_s == 0.0 and plan[0].set_point_c == -19.0
    assert plan[-1].set_point_c == 15.0
    assert plan[-1].at_s == pytest.approx(34 * 12.0)  # 1 °C every 12 s at 5 °C/min
    assert all(b.set_point_c > a.set_point_c and b.at_s > a.at_s for a, b in itertools.pairwise(plan))


def test_warm_up_plan_partial_last_step_and_nothing_to_do() -> None:
    plan = warm_up_plan(-2.5, 0.0, rate_c_per_min=1.0)
    assert [s.set_point_c for s in plan] == [-1.5, -0.5, 0.0]
    assert plan[2].at_s == pytest.approx(120.0)
    assert warm_up_plan(5.0, 0.0, 1.0) == []
    with pytest.raises(ValueError):
        warm_up_plan(0.0, 5.0, 0.0)


def test_a_sensor_held_flat_far_from_the_set_point_below_full_power_is_held_elsewhere() -> None:
    # another client set 0 °C: the sensor comes down from 20 °C and holds 0 °C at 53 % power; darkd wants −10 °C
    rng = np.random.default_rng(7)
    times = np.arange(0.0, 1200.0, 2.0)
    temps = approach(times, 20.0, 0.0, 120.0) + rng.normal(0.0, 0.02, times.size)
    found = feed_all(HeldElsewhereDetector(-10.0, window_s=120.0), times, temps, np.full(times.size, 53.0))
    assert found is not None
    t_found, held_c = found
    assert held_c == pytest.approx(0.0, abs=0.5)  # flagged while the last of the approach fits in the flat band
    # not while it still comes down: over the window before t_found it moved by at most the flat band, 0.4 °C
    assert 20.0 * math.exp(-(t_found - 120.0) / 120.0) * (1 - math.exp(-1.0)) <= 0.4 + 0.1


def test_an_approach_towards_the_set_point_is_never_held_elsewhere() -> None:
    rng = np.random.default_rng(8)
    times = np.arange(0.0, 3000.0, 2.0)
    temps = approach(times, 20.0, -10.0, 120.0) + rng.normal(0.0, 0.02, times.size)
    assert feed_all(HeldElsewhereDetector(-10.0, window_s=120.0), times, temps, np.full(times.size, 70.0)) is None


def test_held_elsewhere_needs_a_power_reading_below_the_threshold() -> None:
    times = np.arange(0.0, 600.0, 2.0)
    temps = np.full(times.size, -5.0)
    assert feed_all(HeldElsewhereDetector(-15.0, window_s=120.0), times, temps, np.full(times.size, 99.0)) is None
    assert feed_all(HeldElsewhereDetector(-15.0, window_s=120.0), times, temps, None) is None
    assert feed_all(HeldElsewhereDetector(-15.0, window_s=120.0), times, temps, np.zeros(times.size)) is None  # off
    # held below ambient is required where ambient is known: at ambient with power drawn the readings disagree
    assert feed_all(HeldElsewhereDetector(-15.0, window_s=120.0, ambient_c=-5.5), times, temps,
                      np.full(times.size, 60.0)) is None
    assert feed_all(HeldElsewhereDetector(-15.0, window_s=120.0, ambient_c=20.0), times, temps,
                      np.full(times.size, 60.0)) is not None
    # close to the set point (within max(5·tolerance, 1 °C)) is the StabilityTracker's business
    assert feed_all(HeldElsewhereDetector(-5.8, window_s=120.0), times, temps, np.full(times.size, 60.0)) is None
    with pytest.raises(ValueError, match="window_s"):
        HeldElsewhereDetector(0.0, window_s=0.0)
