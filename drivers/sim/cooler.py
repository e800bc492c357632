"""Thermoelectric cooler (TEC) model of the QHY163M: first-order approach to the set point, limited ΔT, power %.

All times are *simulated* seconds (the driver multiplies wall time by ``TIME_SCALE``).

Constants (assumptions, documented in drivers/sim/README.md)
    MAX_DELTA_C = 38 °C          the most the two-stage TEC holds below ambient (QHY quotes 35–40 °C below ambient).
    TIME_CONSTANT_S = 120 s      first-order time constant: 20 °C → −10 °C to within 0.2 °C in ≈ 10 minutes.
    power % = 100 · (ambient − T)/MAX_DELTA_C to hold, plus GAIN_PCT_PER_C · (T − target) while pulling down,
              clipped to 0..100 (an unreachable set point leaves the sensor at ambient − MAX_DELTA_C at 100 %).
    readings carry Gaussian noise: TEMP_NOISE_C = 0.02 °C, POWER_NOISE_PCT = 0.3 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_DELTA_C = 38.0
TIME_CONSTANT_S = 120.0
GAIN_PCT_PER_C = 8.0
TEMP_NOISE_C = 0.02
POWER_NOISE_PCT = 0.3


@dataclass
class CoolerReading:
    """What the camera reports: sensor temperature (°C) and cooler power (%)."""

    temperature_c: float
    power_pct: float


@dataclass
class TecCooler:
    """State of the sensor temperature and the TEC. ``step`` advances it by simulated seconds."""

    ambient_c: float = 20.0
    temperature_c: float = 20.0
    set_point_c: float = 0.0
    cooler_on: bool = False
    ramp_c_per_min: float = 0.0
    max_delta_c: float = MAX_DELTA_C
    time_constant_s: float = TIME_CONSTANT_S
    _target_c: float | None = None  # ramped set point currently commanded

    @property
    def floor_c(self) -> float:
        """Lowest temperature the TEC can hold at this ambient: ambient − max ΔT."""
        return self.ambient_c - self.max_delta_c

    def set_point(self, set_point_c: float) -> None:
        """New set point; turns the cooler on (as the QHY driver does)."""
        if self._target_c is None or not self.cooler_on:
            self._target_c = self.temperature_c
        self.set_point_c = float(set_point_c)
        self.cooler_on = True

    def switch(self, on: bool) -> None:
        if on and not self.cooler_on:
            self._target_c = self.temperature_c
        self.cooler_on = on

    def commanded_c(self) -> float:
        """Set point after the ramp limit (°C)."""
        if not self.cooler_on:
            return self.ambient_c
        return self.set_point_c if self._target_c is None else self._target_c

    def step(self, dt_s: float) -> None:
        """Advance by ``dt_s`` simulated seconds: ramp the commanded point, relax T toward what the TEC can reach."""
        if dt_s <= 0:
            return
        if self.cooler_on:
            current = self.temperature_c if self._target_c is None else self._target_c
            if self.ramp_c_per_min > 0:
                max_move = self.ramp_c_per_min * dt_s / 60.0
                delta = self.set_point_c - current
                current += math.copysign(min(abs(delta), max_move), delta)
            else:
                current = self.set_point_c
            self._target_c = current
            goal = max(current, self.floor_c)
            goal = min(goal, self.ambient_c)  # a Peltier used as a cooler does not heat above ambient
        else:
            goal = self.ambient_c
        self.temperature_c = goal + (self.temperature_c - goal) * math.exp(-dt_s / self.time_constant_s)

    def power_pct(self) -> float:
        """Cooler effort (%): holding power ∝ ΔT below ambient plus a pull-down term, clipped 0..100."""
        if not self.cooler_on:
            return 0.0
        hold = 100.0 * (self.ambient_c - self.temperature_c) / self.max_delta_c
        pull = GAIN_PCT_PER_C * (self.temperature_c - self.commanded_c())
        return float(min(100.0, max(0.0, hold + pull)))

    def reading(self, rng: np.random.Generator) -> CoolerReading:
        """Noisy reading as the camera reports it (temperature to 0.01 °C, power to 0.1 %)."""
        t = self.temperature_c + float(rng.normal(0.0, TEMP_NOISE_C))
        p = self.power_pct()
        if p > 0:
            p = min(100.0, max(0.0, p + float(rng.normal(0.0, POWER_NOISE_PCT))))
        return CoolerReading(round(t, 2), round(p, 1))
