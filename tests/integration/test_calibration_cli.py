"""The real ``darkd`` executable: integrate, master bias/dark/flat, calibrate, and clear failures on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import read_frame, write_frame

pytestmark = pytest.mark.integration

DARKD = Path(sys.executable).parent / "darkd"
SHAPE = (40, 56)


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DARKD), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def _header(exposure_s: float, image_type: str) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("GAIN", 120), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", -10.1), ("IMAGETYP", image_type)):
        h[key] = value
    return h


def _frames(tmp: Path, name: str, n: int, exposure_s: float, image_type: str, level: np.ndarray | float,
            rng: np.random.Generator, noise_adu: float = 5.0) -> list[Path]:
    out = []
    for i in range(n):
        img = level + rng.normal(0, noise_adu, SHAPE)
        img.reshape(-1)[rng.integers(0, img.size, 3)] += 5000.0  # cosmic rays
        out.append(write_frame(tmp / f"{name}_{i:02d}.fits", img, _header(exposure_s, image_type), bitpix16=True))
    return out


def test_cli_masters_integrate_and_calibrate(tmp_path: Path) -> None:
    assert DARKD.exists(), f"{DARKD} not installed"
    rng = np.random.default_rng(12)
    bias_adu, dark_adu = 500.0, 80.0
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    vignetting = 1.0 - 0.25 * (((yy - 20) / 40.0) ** 2 + ((xx - 28) / 56.0) ** 2)
    biases = _frames(tmp_path, "bias", 9, 0.0, "Bias Frame", bias_adu, rng)
    darks = _frames(tmp_path, "dark", 9, 120.0, "Dark Frame", bias_adu + dark_adu, rng)
    flats = _frames(tmp_path, "flat", 9, 2.0, "Flat Field", bias_adu + 20000.0 * vignetting, rng, 30.0)
    sky_adu = 1000.0
    lights = _frames(tmp_path, "light", 2, 120.0, "Light Frame", bias_adu + dark_adu + sky_adu * vignetting, rng)

    r = _run("master", "bias", *biases, "--output", tmp_path / "mbias.fits", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["n_frames"] == 9 and abs(stats["mean_adu"] - bias_adu) < 1.0
    r = _run("master", "dark", *darks, "--output", tmp_path / "mdark.fits")
    assert r.returncode == 0, r.stderr
    assert "Master Dark" in r.stdout
    r = _run("master", "flat", *flats, "--bias", tmp_path / "mbias.fits", "--output", tmp_path / "mflat.fits")
    assert r.returncode == 0, r.stderr
    r = _run("integrate", *darks, "--output", tmp_path / "int.fits", "--rejection", "sigma", "--memory-budget",
             "256MiB", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rejected_high_fraction"] > 0  # the cosmic rays
    with fits.open(tmp_path / "int.fits") as hdul:
        assert hdul[0].header["NCOMBINE"] == 9 and hdul["REJ_HIGH"].data.sum() >= 27

    r = _run("calibrate", *lights, "--dark", tmp_path / "mdark.fits", "--flat", tmp_path / "mflat.fits",
             "--output-dir", tmp_path / "cal", "--pedestal", "100")
    assert r.returncode == 0, r.stderr
    outputs = [Path(line) for line in r.stdout.split()]
    assert len(outputs) == 2
    cal = read_frame(outputs[0])
    # flat-fielded sky: uniform at sky × mean(vignetting) + pedestal
    expected = sky_adu * float(vignetting.mean()) + 100.0
    assert abs(float(np.median(cal.data)) - expected) < 5.0
    robust_sigma = 1.4826 * float(np.median(np.abs(cal.data - np.median(cal.data))))
    assert robust_sigma < 10.0  # no vignetting left (it spans ~150 ADU), only noise of ~6 ADU
    assert cal.header["CALDARK"] == "mdark.fits" and cal.header["CALFLAT"] == "mflat.fits"


def test_cli_bad_input_fails_clearly_without_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    good = _frames(tmp_path, "bias", 3, 0.0, "Bias Frame", 500.0, rng)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good[0].read_bytes()[:3000])
    out = tmp_path / "out.fits"
    r = _run("integrate", *good, truncated, "--output", out)
    assert r.returncode == 2
    assert "truncated.fits" in r.stderr and "trunc" in r.stderr.lower()
    assert not out.exists()
    assert not list(tmp_path.glob(".out.fits*"))  # no temporary left behind

    light = write_frame(tmp_path / "light.fits", 600.0 + rng.normal(0, 5, SHAPE), _header(300.0, "Light Frame"),
                        bitpix16=True)
    dark = write_frame(tmp_path / "dark.fits", np.full(SHAPE, 580.0), _header(120.0, "Master Dark"))
    r = _run("calibrate", light, "--dark", dark, "--output-dir", tmp_path / "cal")
    assert r.returncode == 2 and "exposure" in r.stderr
    assert not (tmp_path / "cal").exists()
    r = _run("master", "dark", *good, tmp_path / "missing.fits", "--output", out)
    assert r.returncode == 2 and "missing.fits" in r.stderr
