"""The trend maths of a camera's health (calib/measure/trend.py): pure functions, synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from calib.measure.trend import latest_step, linear_trend, window_change


def test_a_known_slope_is_recovered_within_its_error() -> None:
    rng = np.random.default_rng(18)
    t = np.sort(rng.uniform(0, 365, 40))
    sigma = 0.5
    y = 100.0 + 0.02 * t + rng.normal(0, sigma, t.size)
    weighted = linear_trend(t.tolist(), y.tolist(), [sigma] * t.size)
    plain = linear_trend(t.tolist(), y.tolist())
    for fit in (weighted, plain):
        assert abs(fit.slope_per_day - 0.02) < 3 * fit.slope_uncertainty_per_day
        assert fit.significance > 5
    # the stated error is the textbook one, sigma / sqrt(sum (t - mean t)^2), inflated when the scatter exceeds sigma
    textbook = sigma / np.sqrt(np.sum((t - t.mean()) ** 2))
    assert weighted.reduced_chi2 is not None
    assert weighted.slope_uncertainty_per_day == pytest.approx(textbook * max(1.0, np.sqrt(weighted.reduced_chi2)),
                                                                rel=1e-9)


def test_noise_only_data_has_no_significant_trend_or_step() -> None:
    rng = np.random.default_rng(7)
    significant = 0
    for _ in range(200):
        t = np.arange(12) * 10.0
        y = 50.0 + rng.normal(0, 1.0, t.size)
        fit = linear_trend(t.tolist(), y.tolist(), [1.0] * t.size)
        step = latest_step(y.tolist(), [1.0] * t.size)
        significant += fit.significance > 3 or abs(step.z) > 3
    assert significant <= 3  # 3-sigma: about 0.5 % of 200 pairs of tests by chance


def test_a_step_beyond_the_scatter_is_found() -> None:
    step = latest_step([10.0, 10.1, 9.9, 10.0, 11.0], [0.1] * 5)
    assert step.z > 3 and step.reference == pytest.approx(10.0)
    assert latest_step([10.0, 11.0]).z == 0.0  # two values, no uncertainties: nothing to judge by


def test_two_points_with_uncertainties_and_the_window() -> None:
    fit = linear_trend([0.0, 10.0], [5.0, 6.0], [0.1, 0.1])
    assert fit.slope_per_day == pytest.approx(0.1) and fit.slope_uncertainty_per_day == pytest.approx(0.01414, rel=1e-3)
    assert linear_trend([0.0, 10.0], [5.0, 6.0]).slope_uncertainty_per_day == float("inf")
    assert window_change([0.0, 50.0, 100.0, 200.0], [1.0, 2.0, 3.0, 4.0], 120.0) == (3.0, 4.0)
    assert window_change([0.0, 200.0], [1.0, 4.0], 90.0) is None
    with pytest.raises(ValueError):
        linear_trend([1.0, 1.0], [2.0, 3.0])
