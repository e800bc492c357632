"""Gain by photon transfer on seeded frames from the simulator's sensor model (known gain and full well)."""

from __future__ import annotations

import pytest
from astropy.io import fits

from calib.frames import Frame
from calib.measure.gain import measure_gain, measure_ptc
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

GAIN_SETTING = 120
OFFSET = 30


def _frame(model: SensorModel, kind: str, exposure_s: float, level_e: float | None = None) -> Frame:
    g = model.geometry
    h = fits.Header()
    h["EXPTIME"] = exposure_s
    h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
    data = model.expose(kind, exposure_s, -20.0, GAIN_SETTING, OFFSET, flat_level_e=level_e)
    return Frame(data, h)


@pytest.mark.parametrize("gain_setting", [0, 120])
def test_pair_gain_matches_model(gain_setting: int) -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=21)
    flats = [Frame(model.expose("flat", 2.0, -20, gain_setting, OFFSET), fits.Header()) for _ in range(2)]
    biases = [Frame(model.expose("bias", 0.0001, -20, gain_setting, OFFSET), fits.Header()) for _ in range(2)]
    res = measure_gain(flats, biases)
    truth = physics.gain_e_per_adu(gain_setting)
    assert abs(res["gain_e_per_adu"] - truth) / truth < 0.05
    assert res["gain_e_per_adu_uncertainty"] < 0.03 * truth
    assert abs(res["read_noise_e"] - physics.read_noise_e(gain_setting)) / physics.read_noise_e(gain_setting) < 0.1


def test_gain_refuses_biases_given_as_flats() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=22)
    biases = [_frame(model, "bias", 0.0001) for _ in range(4)]
    with pytest.raises(ValueError, match="no photon signal"):
        measure_gain(biases[:2], biases[2:])


def test_ptc_gain_full_well_and_linearity() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=23, cosmic_rays=False)
    full_e = physics.saturation_e(GAIN_SETTING, OFFSET)  # the ADC clips first at GAIN 120
    levels_e = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.15]
    pairs = [[_frame(model, "flat", 10.0 * f, f * full_e) for _ in range(2)] for f in levels_e]
    biases = [_frame(model, "bias", 0.0001) for _ in range(2)]
    res = measure_ptc(pairs, biases)
    truth = physics.gain_e_per_adu(GAIN_SETTING)
    assert abs(res["gain_e_per_adu"] - truth) / truth < 0.05
    assert res["full_well_reached"]
    assert abs(res["full_well_e"] - full_e) / full_e < 0.2
    assert res["linearity_max_deviation_pct"] is not None
    assert res["linearity_max_deviation_pct"] < 2.0


def test_ptc_single_exposure_reports_no_linearity() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=24, cosmic_rays=False)
    pairs = [[_frame(model, "flat", 1.0, lvl) for _ in range(2)] for lvl in (500.0, 1000.0, 1500.0)]
    res = measure_ptc(pairs, [_frame(model, "bias", 0.0001) for _ in range(2)])
    assert res["linearity_max_deviation_pct"] is None
    assert not res["full_well_reached"]
    assert any("lower bound" in n for n in res["notes"])
