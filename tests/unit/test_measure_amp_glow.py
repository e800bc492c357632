"""Amp-glow map, location, growth exponent and hot pixels on seeded sensor-model frames (known glow and hot pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import Frame, read_frame
from calib.measure.amp_glow import fit_power_law, measure_amp_glow
from drivers.sim import physics
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

EXPOSURES_S = (60.0, 150.0, 300.0, 600.0)


def _frame(model: SensorModel, kind: str, exposure_s: float) -> Frame:
    g = model.geometry
    h = fits.Header()
    h["EXPTIME"], h["CCD-TEMP"] = exposure_s, -20.0
    h["DATASEC"], h["BIASSEC"], h["OBSEC"] = g.datasec, g.biassec, g.obsec
    return Frame(model.expose(kind, exposure_s, -20.0, 120, 30, amp_glow="on"), h)


def _run(model: SensorModel, tmp_path) -> dict:
    biases = [_frame(model, "bias", 0.0001) for _ in range(2)]
    darks = [_frame(model, "dark", t) for t in EXPOSURES_S for _ in range(2)]
    return measure_amp_glow(darks, biases, gain_e_per_adu=physics.gain_e_per_adu(120),
                            glow_map_path=tmp_path / "glow.fits", hot_map_path=tmp_path / "hot.fits")


def test_quadratic_right_edge_glow_and_hot_pixels(tmp_path) -> None:
    model = SensorModel(SMALL_GEOMETRY, seed=51)
    res = _run(model, tmp_path)
    assert res["location"] in ("top-right", "bottom-right")
    assert set(res["glow_locations"]) == {"top-right", "bottom-right"}
    assert res["growth"]["verdict"] == "faster than linear"
    assert abs(res["growth"]["exponent"] - physics.GLOW_EXPONENT) < 0.2
    assert res["profile_x_adu"][-1] > 5 * abs(res["profile_x_adu"][0])  # rises towards the amplifier edge
    # hot pixels: the model's pixels with ≥ 20× the typical dark current inside DATASEC
    g = SMALL_GEOMETRY
    truth = model._fixed.dark_rel[g.ob_rows:, : g.effective_width] >= physics.HOT_PIXEL_FACTOR_MIN
    hot_map = read_frame(tmp_path / "hot.fits", dtype=None).data.astype(bool)
    assert hot_map.shape == truth.shape
    assert res["hot_pixels"] == int(hot_map.sum())
    assert (hot_map & truth).sum() >= 0.95 * truth.sum()
    assert (hot_map & ~truth).sum() <= 0.05 * truth.sum() + 1
    glow = read_frame(tmp_path / "glow.fits").data
    assert glow.shape == truth.shape and glow[:, -5:].mean() > 10 * abs(float(np.median(glow)))
    assert "_glow_map" in res


def test_linear_glow_is_reported_linear(tmp_path) -> None:
    res = _run(SensorModel(SMALL_GEOMETRY, seed=52, glow_exponent=1.0), tmp_path)
    assert res["growth"]["verdict"] == "linear"
    assert abs(res["growth"]["exponent"] - 1.0) < 0.15


def test_power_law_fit_and_refusal() -> None:
    fit = fit_power_law([10, 20, 40], [3.0, 12.0, 48.0])
    assert abs(fit["exponent"] - 2.0) < 1e-9
    assert fit_power_law([10, 20], [0.0, 5.0])["exponent"] is None
    model = SensorModel(SMALL_GEOMETRY, seed=53)
    with pytest.raises(ValueError, match="bias"):
        measure_amp_glow([_frame(model, "dark", 60.0)], [])
