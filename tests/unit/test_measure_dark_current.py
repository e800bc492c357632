"""Dark current by the pair / N-frame / slope methods on seeded sensor-model frames (truth: physics module)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import Frame
from calib.measure.dark_current import measure_dark_current, measure_dark_current_exposures
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

GAIN_SETTING = 120
OFFSET = 30
TEMP_C = -20.0


def _frame(model: SensorModel, kind: str, exposure_s: float) -> Frame:
    g = model.geometry
    h = fits.Header()
    h["EXPTIME"], h["CCD-TEMP"] = exposure_s, TEMP_C
    h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
    return Frame(model.expose(kind, exposure_s, TEMP_C, GAIN_SETTING, OFFSET), h)


@pytest.fixture(scope="module")
def model() -> SensorModel:
    return SensorModel(SMALL_GEOMETRY, seed=31)


@pytest.fixture(scope="module")
def biases(model: SensorModel) -> list[Frame]:
    return [_frame(model, "bias", 0.0001) for _ in range(6)]


@pytest.mark.parametrize("n_darks", [2, 8])
def test_pair_and_n_frame_recover_truth_and_naive_goes_negative(model, biases, n_darks: int) -> None:
    darks = [_frame(model, "dark", 600.0) for _ in range(n_darks)]
    gain = physics.gain_e_per_adu(GAIN_SETTING)
    res = measure_dark_current(darks, biases, gain)
    truth = physics.dark_current_e_per_s(TEMP_C)
    assert abs(res["dark_current_e_per_s"] - truth) / truth < 0.15
    lo, hi = res["dark_current_ci_e_per_s"]
    assert lo < res["dark_current_e_per_s"] < hi
    assert hi - lo < 0.3 * truth
    assert res["n_frames"] == n_darks and res["exposure_s"] == 600.0
    assert [c["n"] for c in res["convergence"]] == list(range(2, n_darks + 1, 2))
    # black-point over-correction: the naive mean method is a negative "dark current"
    assert res["dark_current_naive_e_per_s"] < 0
    assert res["naive_negative"] and res["naive_understated"]
    assert res["dark_mean_adu"] < res["bias_mean_adu"]
    assert res["temperature_c"] == TEMP_C


def test_given_read_noise_is_used_and_noted(model, biases) -> None:
    darks = [_frame(model, "dark", 600.0) for _ in range(4)]
    gain = physics.gain_e_per_adu(GAIN_SETTING)
    res = measure_dark_current(darks, [], gain, read_noise_e=physics.read_noise_e(GAIN_SETTING))
    assert res["read_noise_source"] == "given"
    assert res["dark_current_naive_e_per_s"] is None
    assert any("quantisation" in n for n in res["notes"])
    # the datasheet RON lacks q²/12: the result is higher than with the measured RON, still within 15 %
    truth = physics.dark_current_e_per_s(TEMP_C)
    assert abs(res["dark_current_e_per_s"] - truth) / truth < 0.15


def test_short_darks_report_unmeasurable_not_a_number_that_looks_right(model, biases) -> None:
    darks = [_frame(model, "dark", 1.0) for _ in range(2)]
    res = measure_dark_current(darks, biases, physics.gain_e_per_adu(GAIN_SETTING))
    lo, hi = res["dark_current_ci_e_per_s"]
    assert hi - lo > 10 * physics.dark_current_e_per_s(TEMP_C)  # 1 s darks cannot pin it down
    assert any("RON²" in n for n in res["notes"])


def test_refusals(model, biases) -> None:
    gain = physics.gain_e_per_adu(GAIN_SETTING)
    with pytest.raises(ValueError, match="mismatched exposure"):
        measure_dark_current([_frame(model, "dark", 600.0), _frame(model, "dark", 300.0)], biases, gain)
    with pytest.raises(ValueError, match="at least 2"):
        measure_dark_current([_frame(model, "dark", 600.0)], biases, gain)
    with pytest.raises(ValueError, match="overscan"):
        measure_dark_current([_frame(model, "dark", 60.0) for _ in range(2)], biases, gain, region="[400:490,20:300]")
    with pytest.raises(ValueError, match="bias frames"):
        measure_dark_current([_frame(model, "dark", 60.0) for _ in range(2)], [], gain)
    with pytest.raises(ValueError, match="gain"):
        measure_dark_current([_frame(model, "dark", 60.0) for _ in range(2)], biases, 0.0)
    odd = measure_dark_current([_frame(model, "dark", 60.0) for _ in range(3)], biases, gain)
    assert odd["n_frames"] == 2 and any("odd number" in n for n in odd["notes"])
    with pytest.raises(ValueError, match="no EXPTIME"):
        measure_dark_current([np.zeros((20, 20)), np.ones((20, 20))], [], gain, read_noise_e=1.0)


def test_slope_over_exposures(model, biases) -> None:
    darks = [_frame(model, "dark", t) for t in (120.0, 300.0, 600.0) for _ in range(4)]
    res = measure_dark_current_exposures(darks, biases, physics.gain_e_per_adu(GAIN_SETTING))
    truth = physics.dark_current_e_per_s(TEMP_C)
    assert abs(res["dark_current_e_per_s"] - truth) / truth < 0.15
    assert res["exposures_s"] == [120.0, 300.0, 600.0]
    assert abs(res["read_noise_from_intercept_e"] - physics.read_noise_e(GAIN_SETTING)) < 0.2
    assert res["naive_negative"]
    assert res["dark_current_noise_ratio_e_per_s"] is not None
