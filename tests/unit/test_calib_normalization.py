"""calib.normalization: the robust frame level (median, 1.4826·MAD)."""

from __future__ import annotations

import numpy as np
import pytest

from calib.normalization import MAD_TO_SIGMA, robust_level


def _numpy_level(sample: np.ndarray) -> tuple[float, float]:
    values = np.asarray(sample, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    median = float(np.median(values))
    return median, MAD_TO_SIGMA * float(np.median(np.abs(values - median)))


@pytest.mark.parametrize("case", ["float32 odd", "float32 even", "float64", "uint16", "non-finite", "strided"])
def test_robust_level_is_numpys_median_and_mad_in_float64(case: str) -> None:
    """The in-place partitions give exactly NumPy's float64 median and MAD, skip NaN/inf, and leave the sample
    as it was."""
    rng = np.random.default_rng(5)
    sample = {
        "float32 odd": rng.normal(2000.0, 30.0, (7, 4657)).astype(np.float32),
        "float32 even": rng.normal(2000.0, 30.0, (8, 4656)).astype(np.float32),
        "float64": rng.normal(0.5, 0.01, (9, 11)),
        "uint16": rng.integers(0, 65535, (3, 7)).astype(np.uint16),
        "non-finite": np.array([[1.0, np.nan, 3.0, np.inf, 2.0, 8.0, -np.inf]], dtype=np.float32),
        "strided": rng.normal(2000.0, 30.0, (64, 400)).astype(np.float32)[::4, ::4],
    }[case]
    before = sample.copy()
    level = robust_level(sample)
    assert (level.location_adu, level.scale_adu) == _numpy_level(sample)
    np.testing.assert_array_equal(sample, before)


def test_robust_level_of_no_finite_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="no finite values"):
        robust_level(np.array([np.nan, np.inf], dtype=np.float32))
