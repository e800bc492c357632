"""The files darkd writes, checked by the real tools other programs' users run (docs/interop.md).

* NASA's ``fitsverify`` (Debian ``fitsverify``) finds 0 errors and 0 warnings on every kind of file darkd writes:
  a captured frame (``capture_series`` on the in-process simulated camera), master bias, dark, flat-dark and flat, a
  calibrated light (trimmed, the default, and ``full_frame``).
* ``ccdproc``/astropy ``CCDData.read`` reads every master without ``unit=``, and ccdproc's own ``subtract_dark`` +
  ``flat_correct`` (its default whole-frame flat normalisation) give darkd's calibrated light.
* Siril 1.0.6 (Debian ``siril``, ``siril-cli -s script``) calibrating the same light with darkd's master dark and
  flat (``preprocess`` without ``-bias``: the dark already holds it) agrees with ``darkd calibrate`` inside DATASEC
  up to Siril's flat normalisation constant, which it logs ("Normalisation value auto evaluated") — Siril takes the
  flat's level from the central part of the frame, darkd from the whole DATASEC — and except the pixels Siril's
  default cosmetic correction replaces (hot in the master dark; the amp-glow corner counts as hot). Measured on this
  data: constant 1.1755 (Siril logs 1.176), 18 of 3065 pixels corrected by Siril (it reports 32 over the frame), all
  others equal to 2e-7 relative; residual p99.9 0.0026 ADU, max 0.005 ADU on ~7000 ADU (float32 rounding).
  The test allows p99.9 < 0.01 ADU.

Frames are tiny (64x48 data area + 8 overscan columns + 4 optical-black rows) and few, so the module runs in a few
seconds. A tool that is not installed skips its test, naming the package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.calibration import calibrate_files
from calib.frames import fits_checksum_problems, read_frame, write_frame
from calib.masters import build_master
from daemon.capture import SeriesRequest, capture_series
from daemon.settings import CoolingSettings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from drivers.sim.inprocess import SimCamera
from drivers.sim.physics import SensorGeometry, SensorModel

TINY = SensorGeometry(64, 48, 8, 4, "TINY")  # full frame 72x52; DATASEC [1:64,5:52], BIASSEC [65:72,5:52]
DATA = (slice(TINY.ob_rows, TINY.full_height), slice(0, TINY.effective_width))  # numpy view of DATASEC
SKY_ADU = 4000  # a bright sky keeps Light - Dark well above 0 (Siril's float range is [0, 1] x 65535 ADU)
START = datetime(2026, 12, 1, 22, 0, 0)


def _header(exposure_s: float, image_type: str, index: int) -> fits.Header:
    h = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("GAIN", 120), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                       ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", -10.0), ("IMAGETYP", image_type),
                       ("DATASEC", TINY.datasec), ("BIASSEC", TINY.biassec),
                       ("DATE-OBS", (START + timedelta(seconds=400 * index)).isoformat(timespec="milliseconds"))):
        h[key] = value
    return h


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every kind of file darkd writes, from the simulated QHY163M (tiny sensor, amp glow on, OB clamping)."""
    tmp = tmp_path_factory.mktemp("interop")
    model = SensorModel(TINY, seed=5)
    rng = np.random.default_rng(7)

    def frames(kind: str, exposure_s: float, n: int, image_type: str) -> list[Path]:
        out = []
        for i in range(n):
            data = model.expose(kind, exposure_s, -10.0, 120, 30, amp_glow="on", rng=rng)
            if kind == "light":
                data = data + np.uint16(SKY_ADU)
            out.append(write_frame(tmp / "raw" / f"{kind}{exposure_s:g}_{i:02d}.fits", data,
                                   _header(exposure_s, image_type, i), bitpix16=True))
        return out

    long_key = "qhy-ccd-qhy163m-sim_dark_300s_m10c_g120_o30_b1_rm0_usb30_glowauto_ovinclude_72x52_16bit"
    made = {
        "bias": build_master("bias", frames("bias", 0.0, 5, "Bias Frame"), output=tmp / "master_bias.fits").path,
        "dark": build_master("dark", frames("dark", 300.0, 5, "Dark Frame"), output=tmp / "master_dark.fits",
                             extra_header={"DKKEY": long_key}).path,  # a library key: longer than one card
        "flat-dark": build_master("flat-dark", frames("dark", 1.0, 3, "Dark Frame"),
                                  output=tmp / "master_flatdark.fits").path,
    }
    made["flat"] = build_master("flat", frames("flat", 1.0, 5, "Flat Field"), output=tmp / "master_flat.fits",
                                bias=made["bias"]).path
    lights = frames("light", 300.0, 2, "Light Frame")
    made["light"], made["light2"] = lights
    made["calibrated"] = calibrate_files(lights[:1], dark=made["dark"], flat=made["flat"], output_dir=tmp / "cal")[0]
    made["calibrated-full"] = calibrate_files(lights[:1], dark=made["dark"], flat=made["flat"],
                                              output_dir=tmp / "calfull", full_frame=True)[0]
    made["frame"] = _captured_frame(tmp / "captured")
    return made


def _captured_frame(directory: Path) -> Path:
    """One dark written by darkd's capture pipeline (stamped header, quality keys) from the in-process camera."""
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, ramp_c_per_min=None,
                              unreachable_window_s=120.0, reconnect_timeout_s=60.0)
    camera = SimCamera(profile=load_profile("qhy163m-sim-small"), reconnect_timeout_s=cooling.reconnect_timeout_s)
    camera.connect()
    try:
        settings = CaptureSettings(gain=120, offset=30, read_mode=0, usb_traffic=30, amp_glow="auto",
                                   overscan=OverscanMode.INCLUDE)
        request = SeriesRequest(frame_type=FrameType.DARK, exposure_s=60.0, count=1, set_point_c=-10.0,
                                settings=settings, name_prefix="dark")
        result = capture_series(camera, request, directory, cooling=cooling)
    finally:
        camera.disconnect()
    assert result.complete
    return result.frames[0].path


WRITTEN = ("frame", "bias", "dark", "flat-dark", "flat", "calibrated", "calibrated-full")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; `make apt` installs it)")
    return path


@pytest.mark.parametrize("kind", WRITTEN)
def test_fitsverify_finds_no_error_and_no_warning(products: dict[str, Path], kind: str) -> None:
    fitsverify = _tool("fitsverify", "fitsverify")
    run = subprocess.run([fitsverify, str(products[kind])], capture_output=True, text=True, timeout=60, check=False)
    summary = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", run.stdout)
    assert summary is not None, run.stdout + run.stderr
    assert summary.groups() == ("0", "0"), run.stdout
    assert run.returncode == 0


@pytest.mark.parametrize("kind", WRITTEN)
def test_every_file_carries_a_valid_fits_checksum(products: dict[str, Path], kind: str) -> None:
    with fits.open(products[kind]) as hdul:
        assert all("CHECKSUM" in hdu.header and "DATASUM" in hdu.header for hdu in hdul)
    assert fits_checksum_problems(products[kind]) == []


def test_a_changed_byte_breaks_the_fits_checksum(products: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.fits"
    payload = bytearray(products["dark"].read_bytes())
    payload[2880 * 4 + 100] ^= 0x40  # inside the primary data unit (the header is a few 2880-byte blocks)
    damaged.write_bytes(bytes(payload))
    assert any("datasum" in p.lower() or "checksum" in p.lower() for p in fits_checksum_problems(damaged))


def test_headers_other_tools_read(products: dict[str, Path]) -> None:
    types = {kind: fits.getheader(products[kind])["IMAGETYP"] for kind in ("bias", "dark", "flat-dark", "flat")}
    # PixInsight WBPP (BPP-Helper.js imageTypeFromKeyword): lower-case, first space removed, must be one of these
    assert {k: v.lower().replace(" ", "", 1) for k, v in types.items()} == {
        "bias": "masterbias", "dark": "masterdark", "flat-dark": "masterdark", "flat": "masterflat"}
    assert fits.getheader(products["flat-dark"])["DKMASTER"] == "flat-dark"
    for kind in ("bias", "dark", "flat-dark", "flat"):
        header = fits.getheader(products[kind])
        assert header["DATE-OBS"] == "2026-12-01T22:00:00.000"  # the first input's start
        assert header["DATE-END"] > header["DATE-OBS"]
    assert fits.getheader(products["dark"])["DATE-END"] == "2026-12-01T22:31:40.000"  # 5th dark: +1600 s + 300 s
    assert "LONGSTRN" in fits.getheader(products["dark"])  # DKKEY needs CONTINUE cards


def test_calibrated_light_is_the_data_area_unless_full_frame_is_asked(products: dict[str, Path]) -> None:
    cal, full = read_frame(products["calibrated"]), read_frame(products["calibrated-full"])
    assert cal.shape == (TINY.effective_height, TINY.effective_width)
    assert cal.header["TRIM"] == TINY.datasec and cal.header["DATASEC"] == "[1:64,1:48]"
    assert (cal.header["LTV1"], cal.header["LTV2"]) == (0, -TINY.ob_rows) and "BIASSEC" not in cal.header
    assert full.shape == (TINY.full_height, TINY.full_width) and full.header["NDFILL"] == 0.0
    np.testing.assert_array_equal(full.data[DATA], cal.data)
    outside = np.ones(full.shape, dtype=bool)
    outside[DATA] = False
    assert np.all(full.data[outside] == 0.0)  # the pedestal, never 1e12
    assert cal.header["BUNIT"] == "adu" and SKY_ADU < float(np.median(cal.data)) < 2 * SKY_ADU  # sky + signal


def test_flat_normalised_over_the_data_area_keeps_calibration_in_adu(products: dict[str, Path]) -> None:
    flat = read_frame(products["flat"])
    assert float(flat.data[DATA].mean(dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)
    assert float(flat.data.mean(dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)  # strips are 1
    norm = flat.header["FLATNORM"]
    light, dark = read_frame(products["light"]), read_frame(products["dark"])
    # darkd's documented formula with the un-normalised flat (F - B) = flat * FLATNORM
    expected = (light.data[DATA] - dark.data[DATA]) / (flat.data[DATA] * norm) * norm
    np.testing.assert_allclose(read_frame(products["calibrated"]).data, expected, rtol=2e-6, atol=2e-3)


@pytest.mark.filterwarnings("ignore:'datfix' made the change")  # astropy.wcs derives MJD-OBS/MJD-END: harmless
def test_ccdproc_reads_every_master_without_a_unit_and_agrees(products: dict[str, Path]) -> None:
    ccdproc = pytest.importorskip("ccdproc")
    import astropy.units as u
    from astropy.nddata import CCDData

    units = {kind: CCDData.read(products[kind]).unit for kind in ("bias", "dark", "flat-dark", "flat")}
    assert units == {"bias": u.adu, "dark": u.adu, "flat-dark": u.adu, "flat": u.dimensionless_unscaled}
    light = CCDData.read(products["light"], unit="adu")  # the raw light here is our generator's, not a capture
    dark, flat = CCDData.read(products["dark"]), CCDData.read(products["flat"])
    result = ccdproc.flat_correct(ccdproc.subtract_dark(light, dark, exposure_time="EXPTIME", exposure_unit=u.s),
                                  flat)  # ccdproc's default: the flat normalised by its whole-frame mean
    result = ccdproc.trim_image(result, fits_section=light.header["DATASEC"])  # darkd trims by default
    calibrated = CCDData.read(products["calibrated"])
    assert result.unit == calibrated.unit == u.adu and result.shape == calibrated.shape
    diff = np.abs(result.data - calibrated.data)
    assert float(np.percentile(diff, 99.9)) < 0.01, f"ccdproc vs darkd p99.9 {np.percentile(diff, 99.9)} ADU"


SIRIL_SCRIPT = """requires 1.0.0
set32bits
setext fits
cd {work}
convert light -out={work}/seq
cd {work}/seq
preprocess light_ -dark={dark} -flat={flat}
"""


def test_siril_calibration_with_darkd_masters_agrees(products: dict[str, Path], tmp_path: Path) -> None:
    siril = _tool("siril-cli", "siril")
    work = tmp_path / "siril"
    work.mkdir()
    for i, kind in enumerate(("light", "light2"), start=1):  # Siril 1.0.6 finds no sequence in a single file
        shutil.copy(products[kind], work / f"light{i}.fits")
    script = work / "calibrate.ssf"
    script.write_text(SIRIL_SCRIPT.format(work=work, dark=products["dark"], flat=products["flat"]))
    run = subprocess.run([siril, "-s", str(script)], capture_output=True, text=True, timeout=120, check=False,
                         cwd=work)
    log = run.stdout + run.stderr
    assert "Script execution finished successfully" in log, log[-3000:]
    level = re.search(r"Normalisation value auto evaluated: ([0-9.]+)", log)
    assert level is not None, log[-3000:]
    first = sorted((work / "seq").glob("pp_light_*.fits"))[0]
    siril_adu = fits.getdata(first).astype(np.float64)[DATA] * 65535.0  # Siril's float range [0, 1] is 0..65535
    ours = read_frame(products["calibrated"]).data.astype(np.float64)
    inside = (siril_adu > 0.0) & (siril_adu < 65535.0 * 0.999)  # not clipped by Siril's [0, 1] range
    assert inside.mean() > 0.95
    ratio = siril_adu[inside] / ours[inside]
    scale = float(np.median(ratio))
    # one constant: Siril's flat level relative to darkd's (mean 1 over DATASEC), as Siril logs it (3 decimals)
    assert scale == pytest.approx(float(level.group(1)), abs=6e-4)
    # Siril 1.0.6 also replaces the pixels its cosmetic correction finds hot in the master dark by their neighbours
    # (it logs "N corrected pixels"; the amp-glow corner counts as hot); darkd does not. Every other pixel agrees.
    corrected = re.search(r"(\d+) corrected pixels", log)
    n_corrected = int(corrected.group(1)) if corrected else 0
    agree = np.abs(ratio / scale - 1.0) < 1e-5
    assert int(np.count_nonzero(~agree)) <= n_corrected
    residual = np.abs(siril_adu[inside][agree] / scale - ours[inside][agree])
    assert float(np.percentile(residual, 99.9)) < 0.01, f"p99.9 {np.percentile(residual, 99.9):.4f} ADU"
