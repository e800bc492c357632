"""Read noise and measurement statistics on seeded frames from the simulator's sensor model (known truth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from calib.measure.read_noise import measure_read_noise
from calib.measure.stats import (
    RegionError,
    clipped_stats,
    default_region,
    mad_std,
    quantisation_step,
    resolve_region,
)
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

GAIN_SETTING = 120
OFFSET = 30


def _header(model: SensorModel) -> fits.Header:
    g = model.geometry
    h = fits.Header()
    h["EXPTIME"] = 0.0001
    h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
    return h


def _biases(model: SensorModel, n: int) -> list[np.ndarray]:
    return [model.expose("bias", 0.0001, -20.0, GAIN_SETTING, OFFSET) for _ in range(n)]


def test_clipped_stats_rejects_outliers_and_keeps_gaussian_sigma() -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(100.0, 10.0, 200_000)
    v[:200] = 1e5  # hot pixels / cosmic rays
    st = clipped_stats(v, 5.0)
    assert st.n_rejected >= 200
    assert abs(st.std - 10.0) < 3 * st.std_uncertainty + 0.02
    assert math.isclose(st.std_uncertainty, st.std / math.sqrt(2 * (st.n_used - 1)))


def test_quantised_data_biases_mad_not_std() -> None:
    rng = np.random.default_rng(4)
    sigma = 30.0  # ≈ the simulator's bias noise at GAIN 120: 1.9 steps of 16 ADU
    v = np.rint(rng.normal(2000.0, sigma, 300_000) / 16.0) * 16.0
    assert quantisation_step(v) == 16.0
    st = clipped_stats(v)
    assert abs(math.sqrt(st.std**2 - 16.0**2 / 12) - sigma) / sigma < 0.01
    assert abs(mad_std(v) - sigma) / sigma > 0.1  # MAD is a multiple of 16·1.4826: the reason it is not used


def test_default_region_is_central_half_of_datasec() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=1)
    sec = default_region(SMALL_GEOMETRY.shape(), _header(model))
    assert (sec.x1, sec.x2, sec.y1, sec.y2) == (121, 360, 99, 278)


def test_region_over_overscan_or_ob_is_refused() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=1)
    shape = SMALL_GEOMETRY.shape()
    with pytest.raises(RegionError, match="overscan"):
        resolve_region(shape, _header(model), "[400:490,100:200]")
    with pytest.raises(RegionError, match="optical-black"):
        resolve_region(shape, _header(model), "[10:100,1:50]")
    with pytest.raises(RegionError, match="outside"):
        resolve_region(shape, _header(model), "[10:1000,20:50]")
    assert resolve_region(shape, _header(model), "[10:100,20:50]").shape == (31, 91)


@pytest.mark.parametrize("n_frames", [2, 6])
def test_read_noise_matches_model_truth(tmp_path, n_frames: int) -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=11)
    paths = [write_frame(tmp_path / f"b{i}.fits", b, _header(model), bitpix16=True)
             for i, b in enumerate(_biases(model, n_frames))]
    gain = physics.gain_e_per_adu(GAIN_SETTING)
    res = measure_read_noise(paths, gain)
    truth_e = physics.read_noise_e(GAIN_SETTING)
    assert res["n_frames"] == n_frames
    assert res["quantisation_step_adu"] == 16.0
    # the measured σ includes the ADC quantisation (q²/12); Sheppard's correction removes it
    assert abs(res["read_noise_e"] - truth_e) / truth_e < 0.03
    assert abs(res["read_noise_sheppard_adu"] * gain - truth_e) / truth_e < 0.02
    assert res["read_noise_e_uncertainty"] < 0.01 * truth_e
    assert len(res["convergence"]) == n_frames // 2


def test_odd_count_drops_last_frame_with_a_note() -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=12)
    res = measure_read_noise(_biases(model, 3), physics.gain_e_per_adu(GAIN_SETTING))
    assert res["n_frames"] == 2
    assert any("odd number" in n for n in res["notes"])


def test_mismatched_exposure_refused(tmp_path) -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=13)
    h1, h2 = _header(model), _header(model)
    h2["EXPTIME"] = 5.0
    p1 = write_frame(tmp_path / "a.fits", model.expose("bias", 0.0001, -20, GAIN_SETTING, OFFSET), h1, bitpix16=True)
    p2 = write_frame(tmp_path / "b.fits", model.expose("dark", 5.0, -20, GAIN_SETTING, OFFSET), h2, bitpix16=True)
    with pytest.raises(ValueError, match="mismatched exposure"):
        measure_read_noise([p1, p2])
