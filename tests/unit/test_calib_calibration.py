"""Light calibration: the formula, master/light checks, provenance, geometry, and amp glow on simulated frames."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.calibration import CalibrationMismatch, calibrate_files, calibrate_light, check_master_matches
from calib.frames import read_frame, write_frame
from calib.geometry import correct_and_trim, overscan_correct, overscan_level, trim
from calib.masters import build_master
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel


def _header(exposure_s: float, image_type: str, *, temp_c: float = -10.0, gain: int = 120,
            shape: tuple[int, int] | None = None) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("GAIN", gain), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", temp_c), ("IMAGETYP", image_type)):
        h[key] = value
    if shape is not None:
        h["NAXIS2"], h["NAXIS1"] = shape
    return h


def test_formula_hand_checked() -> None:
    light = np.array([[1100.0, 1300.0]])
    dark = np.array([[100.0, 100.0]])
    flat = np.array([[600.0, 1100.0]])
    bias = np.array([[100.0, 100.0]])
    # (L − D) / (F − B) × mean(F − B): mean(F − B) = 750
    out = calibrate_light(light, dark, flat=flat, bias=bias, pedestal_adu=10.0)
    np.testing.assert_allclose(out, [[1000.0 / 500.0 * 750.0 + 10.0, 1200.0 / 1000.0 * 750.0 + 10.0]])
    np.testing.assert_allclose(calibrate_light(light, dark), light - dark)
    assert calibrate_light(light, dark).dtype == np.float32
    with pytest.raises(ValueError, match="bias"):
        calibrate_light(light, dark, flat=flat)
    # a darkd master flat is already Flat − Bias: the bias is not subtracted twice
    np.testing.assert_allclose(calibrate_light(light, dark, flat=flat - bias, flat_is_calibrated=True),
                               calibrate_light(light, dark, flat=flat, bias=bias))
    with pytest.raises(CalibrationMismatch, match="sizes"):
        calibrate_light(light, np.zeros((2, 2)))


def test_scaled_formula_only_on_request_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    light, dark, bias = np.full((2, 2), 300.0), np.full((2, 2), 500.0), np.full((2, 2), 100.0)
    with caplog.at_level(logging.WARNING, logger="calib.calibration"):
        out = calibrate_light(light, dark, bias=bias, dark_scale=0.5)
    np.testing.assert_allclose(out, 300.0 - 100.0 - 0.5 * 400.0)
    assert "optical-black clamping" in caplog.text and "amp glow" in caplog.text


def test_check_master_matches_names_each_key() -> None:
    light = _header(300.0, "Light Frame", shape=(10, 20))
    assert check_master_matches(light, _header(300.0, "Master Dark", shape=(10, 20))) == []
    problems = check_master_matches(light, _header(600.0, "Master Dark", temp_c=-9.0, gain=200, shape=(10, 21)))
    text = "; ".join(problems)
    for word in ("exposure", "temperature", "gain", "width"):
        assert word in text
    assert check_master_matches(light, _header(300.0, "x", temp_c=-9.6)) == []  # within 0.5 C


def test_calibrate_files_refuses_mismatch_and_records_provenance(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shape = (20, 30)
    dark = write_frame(tmp_path / "dark.fits", 100.0 + rng.normal(0, 1, shape), _header(300.0, "Master Dark"))
    wrong = write_frame(tmp_path / "dark60.fits", 100.0 + rng.normal(0, 1, shape), _header(60.0, "Master Dark"))
    light = write_frame(tmp_path / "light.fits", 1000.0 + rng.normal(0, 5, shape), _header(300.0, "Light Frame"),
                        bitpix16=True)
    out_dir = tmp_path / "out"
    with pytest.raises(CalibrationMismatch, match="exposure"):
        calibrate_files([light], dark=wrong, output_dir=out_dir)
    assert not out_dir.exists()
    (out,) = calibrate_files([light], dark=dark, output_dir=out_dir, pedestal_adu=50.0)
    frame = read_frame(out)
    expected = read_frame(light).data - read_frame(dark).data + 50.0
    np.testing.assert_allclose(frame.data, expected, atol=1e-3)
    assert frame.header["CALDARK"] == "dark.fits" and frame.header["PEDESTAL"] == 50.0
    assert frame.header["DARKSHA"] == hashlib.sha256(dark.read_bytes()).hexdigest()
    assert "Light - Dark" in str(frame.header["HISTORY"])
    with fits.open(out) as hdul:
        assert hdul[0].header["BITPIX"] == -32


def test_geometry_overscan_and_trim() -> None:
    rows = np.arange(12, dtype=np.float64)[:, None]
    data = np.zeros((12, 10)) + 1000.0 + 2.0 * rows  # a bias ramp along the rows
    data[:, :8] += 50.0  # signal in the data section; columns 9..10 are overscan
    assert float(overscan_level(data, "[9:10,1:12]", "mean")) == pytest.approx(1000.0 + 11.0)
    per_row = overscan_correct(data, "[9:10,1:12]", "median", per_row=True, fit_order=1)
    np.testing.assert_allclose(per_row[:, :8], 50.0, atol=1e-4)
    np.testing.assert_allclose(trim(per_row, "[1:8,1:12]"), 50.0, atol=1e-4)
    header = fits.Header({"BIASSEC": "[9:10,1:12]", "DATASEC": "[1:8,1:12]"})
    out, new = correct_and_trim(data, header, "mean", per_row=True, fit_order=1)
    assert out.shape == (12, 8) and "BIASSEC" not in new and new["DATASEC"] == "[1:8,1:12]"
    with pytest.raises(ValueError, match="outside"):
        overscan_level(data, "[9:11,1:12]")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Masters and lights from the simulated QHY163M (SMALL sensor, amp glow on, OB clamping)."""
    tmp = tmp_path_factory.mktemp("sim")
    model = SensorModel(SMALL_GEOMETRY, seed=3)
    g = SMALL_GEOMETRY
    rng = np.random.default_rng(8)

    def frames(kind: str, exposure_s: float, n: int, image_type: str, **kw: object) -> list[Path]:
        out = []
        for i in range(n):
            data = model.expose(kind, exposure_s, -10.0, 120, 30, amp_glow="on", rng=rng, **kw)  # type: ignore[arg-type]
            header = _header(exposure_s, image_type)
            header["DATASEC"], header["BIASSEC"] = g.datasec, g.biassec
            out.append(write_frame(tmp / f"{kind}{exposure_s:g}_{i:02d}.fits", data, header, bitpix16=True))
        return out

    bias = build_master("bias", frames("bias", 0.0, 12, "Bias Frame"), output=tmp / "mbias.fits").path
    dark = build_master("dark", frames("dark", 300.0, 12, "Dark Frame"), output=tmp / "mdark300.fits").path
    dark600 = build_master("dark", frames("dark", 600.0, 12, "Dark Frame"), output=tmp / "mdark600.fits").path
    flat = build_master("flat", frames("flat", 1.0, 12, "Flat Field"), output=tmp / "mflat.fits", bias=bias).path
    lights = frames("light", 300.0, 2, "Light Frame")
    return {"tmp": tmp, "bias": bias, "dark": dark, "dark600": dark600, "flat": flat, "lights": lights}


def _corner_minus_centre(data: np.ndarray) -> tuple[float, float]:
    """Median of the bottom-right glow corner minus the centre's, and the standard error of that difference."""
    g = SMALL_GEOMETRY
    h, w = data.shape[0], g.effective_width
    corner = data[h - 16:h, w - 16:w]
    centre = data[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8]
    noise = 1.4826 * float(np.median(np.abs(centre - np.median(centre))))
    return float(np.median(corner) - np.median(centre)), 1.25 * noise * np.sqrt(2.0 / corner.size)


def test_amp_glow_removed_by_matched_dark_but_not_by_scaled_dark(simulated: dict) -> None:
    out = calibrate_files(simulated["lights"], dark=simulated["dark"], flat=simulated["flat"],
                          bias=simulated["bias"], output_dir=simulated["tmp"] / "cal", pedestal_adu=100.0)
    glow, _ = _corner_minus_centre(read_frame(simulated["dark"]).data)
    diff, err = _corner_minus_centre(read_frame(out[0]).data)
    assert glow > 20 * err  # the light's glow, as recorded in the matched master dark
    assert abs(diff) < 4 * err, f"glow residual {diff:.1f} ADU, noise {err:.1f} ADU"
    scaled = calibrate_files(simulated["lights"][:1], dark=simulated["dark600"], flat=simulated["flat"],
                             bias=simulated["bias"], output_dir=simulated["tmp"] / "scaled", scale_dark=True)
    s_diff, s_err = _corner_minus_centre(read_frame(scaled[0]).data)
    assert abs(s_diff) > 10 * s_err, f"scaled dark left only {s_diff:.1f} ADU of glow (noise {s_err:.1f})"
    assert read_frame(scaled[0]).header["DARKSCAL"] > 0
