"""calib.quality (per-frame checks behind the capture service): overscan statistics, temperature, leak, saturation."""

from __future__ import annotations

import numpy as np
import pytest

from calib.quality import FrameExpectation, QualityThresholds, check_frame, corrected_mean_adu, overscan_stats

DATASEC = "[1:48,3:40]"
BIASSEC = "[49:56,3:40]"


def synthetic_dark(rng: np.random.Generator, *, pedestal_adu: float = 1000.0, signal_adu: float = 20.0,
                   noise_adu: float = 8.0, drift_adu: float = 0.0) -> np.ndarray:
    """56×40 frame: 2 OB rows, 48 data columns with dark signal, 8 overscan columns with pedestal + noise only."""
    data = rng.normal(pedestal_adu + drift_adu, noise_adu, (40, 56))
    data[2:, :48] += signal_adu
    return np.clip(np.rint(data), 0, 65535).astype(np.uint16)


def test_overscan_stats_recover_pedestal_and_noise() -> None:
    data = synthetic_dark(np.random.default_rng(1))
    stats = overscan_stats(data, BIASSEC)
    assert stats.mean_adu == pytest.approx(1000.0, abs=1.5)
    assert stats.median_adu == pytest.approx(1000.0, abs=2.0)
    assert stats.std_adu == pytest.approx(8.0, rel=0.1)
    cards = stats.header_cards()
    assert set(cards) == {"OVERSCAN", "OVSCMED", "OVSCSTD"}


def test_corrected_mean_removes_adc_drift() -> None:
    rng = np.random.default_rng(2)
    a = corrected_mean_adu(synthetic_dark(rng), DATASEC, BIASSEC)
    b = corrected_mean_adu(synthetic_dark(rng, drift_adu=40.0), DATASEC, BIASSEC)
    assert a == pytest.approx(20.0, abs=1.5) and b == pytest.approx(20.0, abs=1.5)


def test_section_outside_frame_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"BIASSEC .* outside"):
        overscan_stats(np.zeros((10, 10), np.uint16), "[9:12,1:10]")


def test_good_dark_passes() -> None:
    data = synthetic_dark(np.random.default_rng(3), drift_adu=30.0)
    verdict = check_frame(data, frame_type="dark", set_point_c=-10.0, temperature_start_c=-10.1,
                          temperature_end_c=-9.9, datasec=DATASEC, biassec=BIASSEC,
                          expected=FrameExpectation(20.0, 1.0))
    assert verdict.ok and verdict.reasons == []
    assert verdict.metrics["excess_adu"] == pytest.approx(0.0, abs=1.5)


def test_light_leak_is_caught_with_the_numbers() -> None:
    data = synthetic_dark(np.random.default_rng(4), signal_adu=35.0)
    verdict = check_frame(data, frame_type="dark", datasec=DATASEC, biassec=BIASSEC,
                          expected=FrameExpectation(20.0, 1.0, source="library"))
    assert not verdict.ok
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("light leak")
    assert "library prediction 20.0 ADU" in verdict.reasons[0]
    # lights are never leak-checked
    assert check_frame(data, frame_type="light", datasec=DATASEC, biassec=BIASSEC,
                       expected=FrameExpectation(20.0, 1.0)).ok


def test_temperature_outside_tolerance_and_missing_reading() -> None:
    data = synthetic_dark(np.random.default_rng(5))
    verdict = check_frame(data, frame_type="bias", set_point_c=-10.0, temperature_start_c=-10.2,
                          temperature_end_c=-9.2, thresholds=QualityThresholds(temperature_tolerance_c=0.5))
    assert verdict.reasons == ["temperature: -9.20 °C at exposure end, set point -10.00 ± 0.50 °C"]
    verdict = check_frame(data, frame_type="bias", set_point_c=-10.0, temperature_start_c=None,
                          temperature_end_c=-10.0)
    assert verdict.reasons == ["temperature: no reading at exposure start"]
    assert check_frame(data, frame_type="bias").ok  # no set point: nothing to check
    verdict = check_frame(data, frame_type="dark", set_point_c=-10.0, temperature_start_c=-10.0,
                          temperature_end_c=-10.0, temperature_min_c=-10.1, temperature_max_c=-9.3)
    assert verdict.reasons == ["temperature: -9.30 °C maximum during the exposure, set point -10.00 ± 0.50 °C"]


def test_saturation_fraction() -> None:
    data = synthetic_dark(np.random.default_rng(6))
    data[10:20, 10:20] = 65520  # 100 px of 48×38 = 5.5 %
    verdict = check_frame(data, frame_type="flat", datasec=DATASEC, biassec=BIASSEC)
    assert not verdict.ok and verdict.reasons[0].startswith("saturation: 5.482 %")
    data[10:20, 10:20] = 1000
    data[5, 5] = 65520  # a single hot pixel is fine
    assert check_frame(data, frame_type="flat", datasec=DATASEC, biassec=BIASSEC).ok


def test_expectation_from_means_is_robust() -> None:
    exp = FrameExpectation.from_means([20.0, 20.2, 19.9, 20.1, 45.0])
    assert exp.mean_adu == pytest.approx(20.1)
    assert exp.sigma_adu == pytest.approx(1.0)  # MAD·1.4826 = 0.15 < floor of 1 ADU
    assert FrameExpectation.from_means([5.0]).sigma_adu == 1.0
    assert FrameExpectation.from_means([5000.0, 5010.0, 4990.0]).sigma_adu == pytest.approx(100.0)  # 2 % floor
    with pytest.raises(ValueError):
        FrameExpectation.from_means([])
