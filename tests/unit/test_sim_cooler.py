"""TEC model (drivers.sim.cooler) and ADC drift (drivers.sim.electronics) in simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.cooler import MAX_DELTA_C, TIME_CONSTANT_S, TecCooler
from drivers.sim.electronics import MAX_DRIFT_ADU, AdcDrift


def _run(cooler: TecCooler, seconds: float, dt_s: float = 5.0) -> None:
    for _ in range(int(seconds / dt_s)):
        cooler.step(dt_s)


def test_first_order_approach_and_hold() -> None:
    cooler = TecCooler(ambient_c=20.0, temperature_c=20.0)
    cooler.set_point(-10.0)
    assert cooler.cooler_on
    cooler.step(TIME_CONSTANT_S)
    assert cooler.temperature_c == pytest.approx(-10.0 + 30.0 / np.e, abs=0.01)  # one time constant: 1/e left
    _run(cooler, 10 * TIME_CONSTANT_S)
    assert cooler.temperature_c == pytest.approx(-10.0, abs=0.01)
    assert cooler.power_pct() == pytest.approx(100 * 30 / MAX_DELTA_C, abs=1.0)  # holding power ∝ ΔT


def test_unreachable_set_point_sits_at_the_limit_at_full_power() -> None:
    cooler = TecCooler(ambient_c=20.0, temperature_c=20.0)
    cooler.set_point(-30.0)
    _run(cooler, 20 * TIME_CONSTANT_S)
    assert cooler.temperature_c == pytest.approx(20.0 - MAX_DELTA_C, abs=0.05)
    assert cooler.power_pct() == 100.0


def test_ramp_limits_the_rate_and_warm_up_returns_to_ambient() -> None:
    cooler = TecCooler(ambient_c=15.0, temperature_c=15.0, ramp_c_per_min=2.0)
    cooler.set_point(-5.0)
    _run(cooler, 300.0)  # 5 minutes at 2 °C/min: the commanded point is only 10 °C down
    assert cooler.commanded_c() == pytest.approx(5.0, abs=0.1)
    assert cooler.temperature_c > 5.0
    cooler.switch(False)
    assert cooler.power_pct() == 0.0
    _run(cooler, 20 * TIME_CONSTANT_S)
    assert cooler.temperature_c == pytest.approx(15.0, abs=0.05)


def test_readings_are_noisy_but_close() -> None:
    cooler = TecCooler(ambient_c=20.0, temperature_c=-10.0, set_point_c=-10.0, cooler_on=True)
    rng = np.random.default_rng(0)
    temps = [cooler.reading(rng).temperature_c for _ in range(200)]
    assert 0.005 < float(np.std(temps)) < 0.05 and abs(float(np.mean(temps)) + 10.0) < 0.01


def test_adc_drift_grows_in_bursts_and_relaxes() -> None:
    drift = AdcDrift()
    values = [drift.readout() for _ in range(30)]
    assert values[0] > 0 and values[-1] > values[0]
    assert 20.0 < values[-1] <= MAX_DRIFT_ADU  # tens of ADU after a fast burst
    drift.idle(3600.0)
    assert drift.drift_adu < 1.0
