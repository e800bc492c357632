"""ADC reference drift of the uncooled camera electronics (16-bit ADU), driven by the readout duty cycle.

Each readout heats the electronics; the bias level follows with HEAT_ADU_PER_READOUT per frame, saturating at
MAX_DRIFT_ADU and relaxing with RELAX_TIME_S (simulated seconds) when the camera idles. A burst of fast bias frames
therefore drifts by tens of ADU (16-bit scale), which the overscan follows (assumption after the paper, part 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEAT_ADU_PER_READOUT = 3.0
MAX_DRIFT_ADU = 48.0
RELAX_TIME_S = 90.0


@dataclass
class AdcDrift:
    """Current drift (16-bit ADU) of the ADC reference above its cold value."""

    drift_adu: float = 0.0

    def idle(self, dt_s: float) -> None:
        """Relax toward zero over ``dt_s`` simulated seconds."""
        if dt_s > 0:
            self.drift_adu *= math.exp(-dt_s / RELAX_TIME_S)

    def readout(self) -> float:
        """One readout: the electronics warm a little; returns the drift to apply to this frame."""
        self.drift_adu += HEAT_ADU_PER_READOUT * (1.0 - self.drift_adu / MAX_DRIFT_ADU)
        return self.drift_adu
