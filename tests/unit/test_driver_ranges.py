"""Values checked against the range a driver advertises before they are sent (drivers/indi/camera.py)."""

from __future__ import annotations

import logging

import pytest

from drivers.indi.camera import clamp_to_range


def test_ramp_above_the_range_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Debian's indi_simulator_ccd advertises CCD_TEMP_RAMP.RAMP_SLOPE 0..30 °C/min and refuses 60 with an Alert
    with caplog.at_level(logging.WARNING):
        assert clamp_to_range(60.0, (0.0, 30.0, 1.0), "CCD Simulator: RAMP_SLOPE") == 30.0
    assert "outside the driver's range 0..30; using 30" in caplog.text


def test_ramp_below_the_range_is_raised_to_its_minimum() -> None:
    assert clamp_to_range(0.05, (0.1, 2.0, 0.1), "ramp") == 0.1


@pytest.mark.parametrize("limits", [None, (0.0, 0.0, 0.0), (5.0, 5.0, 0.0)])
def test_no_advertised_range_sends_the_value_unchanged(limits: tuple[float, float, float] | None) -> None:
    assert clamp_to_range(60.0, limits, "ramp") == 60.0


def test_a_value_inside_the_range_is_not_touched(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert clamp_to_range(3.0, (0.0, 30.0, 1.0), "ramp") == 3.0
    assert caplog.text == ""
