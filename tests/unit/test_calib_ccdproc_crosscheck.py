"""Agreement with astropy/ccdproc where both implement the same algorithm (float32 precision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib.calibration import calibrate_light
from calib.frames import write_frame
from calib.integration import IntegrationParams, integrate

ccdproc = pytest.importorskip("ccdproc")
u = pytest.importorskip("astropy.units")
CCDData = pytest.importorskip("astropy.nddata").CCDData


@pytest.fixture
def stack(tmp_path: Path) -> tuple[list[Path], list[object], np.ndarray]:
    rng = np.random.default_rng(42)
    data = rng.normal(1500.0, 12.0, (11, 37, 29)).astype(np.float32)
    hits = rng.integers(0, data.size, 30)
    data.reshape(-1)[hits] += rng.uniform(300, 5000, hits.size).astype(np.float32)
    data.reshape(-1)[rng.integers(0, data.size, 10)] -= 400.0
    paths = [write_frame(tmp_path / f"s{i:02d}.fits", data[i]) for i in range(data.shape[0])]
    ccds = [CCDData(data[i].astype(np.float64), unit="adu") for i in range(data.shape[0])]
    return paths, ccds, data


def _assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float64), rtol=2e-7, atol=0)


def test_mean_and_median_without_rejection(stack: tuple) -> None:
    paths, ccds, _ = stack
    mean = integrate(paths, IntegrationParams(combine="mean", rejection="none"))
    _assert_close(mean.data, ccdproc.combine(ccds, method="average").data)
    median = integrate(paths, IntegrationParams(combine="median", rejection="none"))
    _assert_close(median.data, ccdproc.combine(ccds, method="median").data)


@pytest.mark.parametrize(("low", "high"), [(3.0, 3.0), (2.0, 2.5)])
def test_sigma_clipping_one_pass(stack: tuple, low: float, high: float) -> None:
    paths, ccds, _ = stack
    ours = integrate(paths, IntegrationParams(rejection="sigma", sigma_low=low, sigma_high=high, max_iterations=1))
    theirs = ccdproc.combine(ccds, method="average", sigma_clip=True, sigma_clip_low_thresh=low,
                             sigma_clip_high_thresh=high, sigma_clip_func=np.ma.median,
                             sigma_clip_dev_func=np.ma.std)
    _assert_close(ours.data, theirs.data)
    combiner = ccdproc.Combiner(ccds)
    combiner.sigma_clipping(low_thresh=low, high_thresh=high, func=np.ma.median, dev_func=np.ma.std)
    rejected = np.asarray(combiner.data_arr.mask).sum(axis=0)
    np.testing.assert_array_equal(ours.rejected_low + ours.rejected_high, rejected)


def test_minmax_clipping(stack: tuple) -> None:
    paths, ccds, _ = stack
    ours = integrate(paths, IntegrationParams(rejection="minmax", n_low=2, n_high=1))
    combiner = ccdproc.Combiner(ccds)
    combiner.clip_extrema(nlow=2, nhigh=1)
    _assert_close(ours.data, combiner.average_combine().data)


def test_calibration_formula_matches_ccdproc() -> None:
    rng = np.random.default_rng(7)
    shape = (30, 40)
    bias = 500.0 + rng.normal(0, 2, shape)
    dark = bias + 30.0 + rng.normal(0, 3, shape)
    flat_minus_bias = 20000.0 * (1.0 - 0.2 * rng.random(shape))
    light = dark + 0.5 * flat_minus_bias / 20000.0 * 3000.0 + rng.normal(0, 10, shape)
    ours = calibrate_light(light, dark, flat=flat_minus_bias + bias, bias=bias)
    exposure = {"exposure_time": "EXPTIME", "exposure_unit": u.s}
    meta = {"EXPTIME": 300.0}
    light_ccd = CCDData(light, unit="adu", meta=meta)
    dark_ccd = CCDData(dark, unit="adu", meta=meta)
    step = ccdproc.subtract_dark(light_ccd, dark_ccd, scale=False, **exposure)
    flat_ccd = ccdproc.subtract_bias(CCDData(flat_minus_bias + bias, unit="adu"), CCDData(bias, unit="adu"))
    theirs = ccdproc.flat_correct(step, flat_ccd, norm_value=float(np.mean(flat_ccd.data)))
    np.testing.assert_allclose(ours, theirs.data, rtol=2e-7, atol=1e-4)
