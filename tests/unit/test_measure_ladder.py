"""Dark ladder verdict and doubling temperature on seeded sensor-model frames (with / without optical-black clamp)."""

from __future__ import annotations

import pytest
from astropy.io import fits

from calib.frames import Frame
from calib.measure.ladder import fit_doubling_temperature, measure_dark_ladder, measure_dark_vs_temperature
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

GAIN_SETTING = 120
LADDER_S = (1.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _frame(model: SensorModel, kind: str, exposure_s: float, temperature_c: float = -20.0) -> Frame:
    g = model.geometry
    h = fits.Header()
    h["EXPTIME"], h["CCD-TEMP"] = exposure_s, temperature_c
    h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
    return Frame(model.expose(kind, exposure_s, temperature_c, GAIN_SETTING, 30), h)


def _ladder(model: SensorModel) -> dict:
    biases = [_frame(model, "bias", 0.0001) for _ in range(2)]
    darks = [_frame(model, "dark", t) for t in LADDER_S for _ in range(2)]
    return measure_dark_ladder(darks, biases, gain_e_per_adu=physics.gain_e_per_adu(GAIN_SETTING))


def test_qhy163m_like_ladder_says_scaling_invalid() -> None:
    res = _ladder(SensorModel(SMALL_GEOMETRY, seed=41))
    assert not res["scaling_valid"]
    assert res["verdict"].startswith("dark scaling is not valid for this camera")
    assert res["model"] == "quadratic"
    assert res["below_bias"]
    long = next(p for p in res["points"] if p["exposure_s"] == 600.0)
    assert long["below_bias"] and long["level_adu"] < res["points"][0]["level_adu"]
    assert any("over-correction" in e for e in res["evidence"])
    assert res["fits"]["quadratic"]["coefficients"][2] < 0


def test_unclamped_linear_glow_ladder_says_scaling_valid() -> None:
    res = _ladder(SensorModel(SMALL_GEOMETRY, seed=41, ob_clamping=False, glow_exponent=1.0))
    assert res["scaling_valid"], res["evidence"]
    assert res["model"] == "linear"
    assert not res["below_bias"]
    assert res["evidence"] == []
    # the mean rises at least at the typical pixel's dark current (hot pixels and glow add to the mean)
    assert res["mean_dark_rate_e_per_s"] > physics.dark_current_e_per_s(-20.0)


def test_ladder_needs_two_exposures() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=43)
    with pytest.raises(ValueError, match=">= 2 exposures"):
        measure_dark_ladder([_frame(model, "dark", 60.0) for _ in range(2)])


def test_doubling_temperature_from_frames() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=42)
    biases = [_frame(model, "bias", 0.0001) for _ in range(4)]
    darks = [_frame(model, "dark", 300.0, t) for t in (-20.0, -10.0, 0.0, 10.0) for _ in range(4)]
    res = measure_dark_vs_temperature(darks, biases, physics.gain_e_per_adu(GAIN_SETTING))
    assert abs(res["doubling_temperature_c"] - physics.DOUBLING_C) < 0.3
    assert len(res["points"]) == 4
    for p in res["points"]:
        truth = physics.dark_current_e_per_s(p["temperature_c"])
        assert abs(p["dark_current_e_per_s"] - truth) / truth < 0.15


def test_doubling_fit_drops_non_positive_points() -> None:
    res = fit_doubling_temperature([-20, -10, 0, 5], [0.005, 0.01, 0.02, -0.001])
    assert abs(res["doubling_temperature_c"] - 10.0) < 1e-6
    assert res["notes"]
    with pytest.raises(ValueError, match=">= 2 temperatures"):
        fit_doubling_temperature([-20, -10], [0.005, 0.0])
