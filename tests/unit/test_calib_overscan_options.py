"""``overscan=``/``trim=`` in build_master and calibrate_files (``darkd master|calibrate --overscan --trim``).

Frames come from the simulated QHY163M sensor (SMALL geometry, raw readout with OB rows and overscan columns) with a
known ADC reference drift per frame (a fast burst: +3 ADU per readout, saturating at 48 ADU).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.calibration import CalibrationMismatch, calibrate_files
from calib.frames import read_frame, write_frame
from calib.geometry import Preprocessing, prepare_frame
from calib.masters import build_master
from calib.sections import Section
from drivers.sim.electronics import AdcDrift
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel, gain_e_per_adu, read_noise_e

GEOM = SMALL_GEOMETRY
GAIN, OFFSET, TEMP_C = 120, 30, -10.0
RON_ADU = read_noise_e(GAIN) / gain_e_per_adu(GAIN)  # read noise in 16-bit ADU
N_OVERSCAN = Section.parse(GEOM.biassec).shape[0] * Section.parse(GEOM.biassec).shape[1]
N_OB = GEOM.ob_rows * GEOM.effective_width
SECTIONS = {"biassec": GEOM.biassec, "trimsec": GEOM.trimsec}
DARKD = Path(sys.executable).parent / "darkd"


def _header(kind: str, exposure_s: float) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("GAIN", GAIN), ("OFFSET", OFFSET), ("XBINNING", 1),
                       ("YBINNING", 1), ("READMODE", 0), ("SET-TEMP", TEMP_C), ("CCD-TEMP", TEMP_C),
                       ("IMAGETYP", kind)):
        h[key] = value
    return h


def _burst(tmp: Path, name: str, kind: str, n: int, exposure_s: float, drift: AdcDrift,
           seed: int) -> tuple[list[Path], list[float]]:
    """``n`` raw frames read out back to back (the drift grows each readout); returns paths and drifts (ADU)."""
    model = SensorModel(GEOM, seed=7, cosmic_rays=False)
    rng = np.random.default_rng(seed)
    paths, drifts = [], []
    for i in range(n):
        d = drift.readout()
        img = model.expose(kind, exposure_s, TEMP_C, GAIN, OFFSET, adc_drift_adu=d, rng=rng)
        paths.append(write_frame(tmp / f"{name}_{i:02d}.fits", img, _header(kind.capitalize(), exposure_s),
                                 bitpix16=True))
        drifts.append(d)
    return paths, drifts


def _data_mean(data: np.ndarray, section: str | None) -> float:
    region = data[Section.parse(section).slices] if section else data
    return float(region.mean(dtype=np.float64))


def test_median_overscan_removes_adc_drift_between_frames(tmp_path: Path) -> None:
    paths, drifts = _burst(tmp_path, "bias", "bias", 16, 0.0, AdcDrift(), seed=1)
    assert max(drifts) - min(drifts) > 25.0  # the burst drifts by tens of ADU
    prep = Preprocessing("median", trim=True, **SECTIONS)
    raw, corrected = [], []
    for p in paths:
        frame = read_frame(p)
        raw.append(_data_mean(frame.data, GEOM.datasec))
        data, _, _ = prepare_frame(frame.data, frame.header, prep)
        corrected.append(_data_mean(data, None))
    res = build_master("bias", paths, output=tmp_path / "mb.fits", overscan="median", trim=True, **SECTIONS)
    # the overscan level follows the injected drift; the median's error is ~1.25 RON/sqrt(N_overscan)
    bound = RON_ADU / np.sqrt(N_OVERSCAN)
    residual = np.asarray(res.overscan_levels_adu) - np.asarray(drifts)
    assert float(np.std(residual, ddof=1)) < 1.25 * 1.6 * bound
    # data-region levels: the raw spread is the drift's; after correction only the overscan median's noise and the
    # per-frame OB-clamp noise (RON/sqrt(N_OB)) remain
    expected = RON_ADU * np.sqrt(1.25**2 / N_OVERSCAN + 1.0 / N_OB)
    assert float(np.std(raw, ddof=1)) > 10 * expected
    assert float(np.std(corrected, ddof=1)) < 1.6 * expected
    assert float(np.std(corrected, ddof=1)) > 0.4 * expected
    assert res.stats["mean_adu"] == pytest.approx(0.0, abs=2.0)  # pedestal + drift are gone from the master bias


def test_trimmed_master_shape_and_provenance(tmp_path: Path) -> None:
    paths, _ = _burst(tmp_path, "bias", "bias", 4, 0.0, AdcDrift(), seed=2)
    res = build_master("bias", paths, output=tmp_path / "mb.fits", overscan="rows", trim=True, **SECTIONS)
    master = read_frame(res.path)
    assert master.data.shape == Section.parse(GEOM.trimsec).shape == (360, 480)
    h = master.header
    assert h["OVSCMETH"] == "rows" and h["OVSCSEC"] == GEOM.biassec and h["TRIMMED"] == GEOM.trimsec
    assert h["OVSCLMIN"] <= h["OVSCLEV"] <= h["OVSCLMAX"]
    assert h["OVSCLEV"] == pytest.approx(np.mean(res.overscan_levels_adu), abs=1e-3)
    assert "BIASSEC" not in h and h["DATASEC"] == "[1:480,1:360]"
    assert any("overscan rows" in str(line) for line in h["HISTORY"])
    plain = build_master("bias", paths, output=tmp_path / "plain.fits")
    assert read_frame(plain.path).data.shape == GEOM.shape() and plain.header["OVSCMETH"] == "none"
    assert plain.overscan_levels_adu == []


def test_calibration_refuses_other_treatment_and_removes_drift(tmp_path: Path) -> None:
    drift = AdcDrift()
    darks, dark_drifts = _burst(tmp_path, "dark", "dark", 8, 2.0, drift, seed=3)
    lights, light_drifts = _burst(tmp_path, "light", "dark", 2, 2.0, drift, seed=4)  # later in the burst
    md = build_master("dark", darks, output=tmp_path / "md_med.fits", overscan="median", trim=True, **SECTIONS)
    md_raw = build_master("dark", darks, output=tmp_path / "md_raw.fits")
    with pytest.raises(CalibrationMismatch, match=r"overscan/trim treatment.*'none'.*'median'"):
        calibrate_files(lights, dark=md_raw.path, output_dir=tmp_path / "x", overscan="median", trim=True,
                        **SECTIONS)
    with pytest.raises(CalibrationMismatch, match=r"master dark md_med\.fits.*overscan/trim treatment"):
        calibrate_files(lights, dark=md.path, output_dir=tmp_path / "x", overscan="median", **SECTIONS)
    assert not (tmp_path / "x").exists()
    out = calibrate_files(lights, dark=md.path, output_dir=tmp_path / "ok", overscan="median", trim=True,
                          **SECTIONS)
    plain = calibrate_files(lights, dark=md_raw.path, output_dir=tmp_path / "plain")
    ron_mean = RON_ADU * np.sqrt(1.25**2 / N_OVERSCAN + 1.0 / N_OB) * 4  # 4 sigma of a level difference
    for i, (c, p) in enumerate(zip(out, plain, strict=True)):
        cal = read_frame(c)
        assert cal.data.shape == (360, 480) and cal.header["OVSCMETH"] == "median"
        assert cal.header["OVSCLEV"] == pytest.approx(light_drifts[i] + 2080.0, abs=1.0)
        assert _data_mean(cal.data, None) == pytest.approx(0.0, abs=ron_mean)
        # without overscan the light keeps its drift relative to the master's average drift
        offset = light_drifts[i] - float(np.mean(dark_drifts))
        assert offset > 5.0
        assert _data_mean(read_frame(p).data, GEOM.datasec) == pytest.approx(offset, abs=ron_mean + 1.0)


def test_cli_round_trip(tmp_path: Path) -> None:
    drift = AdcDrift()
    darks, _ = _burst(tmp_path, "dark", "dark", 4, 2.0, drift, seed=5)
    lights, _ = _burst(tmp_path, "light", "dark", 1, 2.0, drift, seed=6)
    flags = ["--overscan", "median", "--trim", "--biassec", GEOM.biassec, "--trimsec", GEOM.trimsec]

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DARKD), *map(str, args)], capture_output=True, text=True, timeout=120,
                              check=False)

    made = run("master", "dark", *darks, "--output", tmp_path / "new" / "md.fits", *flags)
    assert made.returncode == 0, made.stderr
    assert sorted(x.name for x in (tmp_path / "new").iterdir()) == ["md.fits"]  # preprocessed inputs removed
    refused = run("calibrate", *lights, "--dark", tmp_path / "new" / "md.fits", "--output-dir", tmp_path / "no")
    assert refused.returncode == 2 and "overscan/trim treatment" in refused.stderr
    done = run("calibrate", *lights, "--dark", tmp_path / "new" / "md.fits", "--output-dir", tmp_path / "cal", *flags)
    assert done.returncode == 0, done.stderr
    cal = read_frame(done.stdout.split()[0])
    assert cal.data.shape == (360, 480) and cal.header["OVSCMETH"] == "median" and cal.header["TRIMMED"]


def test_flat_needs_a_bias_with_the_same_treatment(tmp_path: Path) -> None:
    drift = AdcDrift()
    biases, _ = _burst(tmp_path, "bias", "bias", 3, 0.0, drift, seed=8)
    flats, _ = _burst(tmp_path, "flat", "flat", 3, 1.0, drift, seed=9)
    opts = {"overscan": "median", "trim": True, **SECTIONS}
    mb_raw = build_master("bias", biases, output=tmp_path / "mb_raw.fits")
    with pytest.raises(ValueError, match=r"master bias mb_raw\.fits was made with overscan/trim \('none', ''\)"):
        build_master("flat", flats, output=tmp_path / "mf.fits", bias=mb_raw.path, **opts)  # type: ignore[arg-type]
    mb = build_master("bias", biases, output=tmp_path / "mb.fits", **opts)  # type: ignore[arg-type]
    mf = build_master("flat", flats, output=tmp_path / "mf.fits", bias=mb.path, **opts)  # type: ignore[arg-type]
    assert read_frame(mf.path).data.shape == (360, 480) and mf.header["OVSCMETH"] == "median"
    # bias- and overscan-subtracted flat level: about 40 % of the 16-bit range minus the pedestal, not 0
    assert mf.stats["mean_adu"] > 1000.0
