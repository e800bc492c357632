"""Light headers as INDI/Ekos, N.I.N.A., SGP and PixInsight write them, parsed into library keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.light_headers import (
    HeaderKeyError,
    key_from_header,
    light_info_from_file,
    light_info_from_header,
    normalise_image_type,
)

# Representative headers (keyword spellings and value styles of each program; values are our own test values).
EKOS = {"SIMPLE": True, "NAXIS1": 4656, "NAXIS2": 3522, "EXPTIME": 300.0, "DARKTIME": 300.0, "PIXSIZE1": 3.8,
        "XBINNING": 1, "YBINNING": 1, "FRAME": "Light", "IMAGETYP": "Light Frame", "CCD-TEMP": -9.87, "GAIN": 120.0,
        "OFFSET": 30.0, "INSTRUME": "QHY CCD QHY163M-0c6b5a4", "DATE-OBS": "2026-11-20T22:14:05.123"}
NINA = {"NAXIS1": 4656, "NAXIS2": 3522, "IMAGETYP": "LIGHT", "EXPOSURE": 180.0, "EXPTIME": 180.0, "XBINNING": 1,
        "YBINNING": 1, "GAIN": 120, "OFFSET": 30, "EGAIN": 0.84, "SET-TEMP": -10.0, "CCD-TEMP": -10.1,
        "READOUTM": "Standard", "USBLIMIT": 30, "INSTRUME": "QHYCCD-Cameras-Capture",
        "SWCREATE": "N.I.N.A. 3.1.2.9001 (x64)", "DATE-OBS": "2026-11-21T01:02:03.4567"}
NINA_UNSET_SETPOINT = {**NINA, "SET-TEMP": -1.79769313486232e308, "CCD-TEMP": -15.2}
SGP = {"NAXIS1": 4656, "NAXIS2": 3522, "IMAGETYP": "Light Frame", "EXPOSURE": 120.0, "XBINNING": 2, "YBINNING": 2,
       "SET-TEMP": -5.0, "CCD-TEMP": -5.02, "GAIN": 75, "BLKLEVEL": 12, "INSTRUME": "QHY163M",
       "SWCREATE": "Sequence Generator Pro v4.2.0.1007", "DATE-OBS": "2026-11-22T03:04:05"}
PIXINSIGHT = {"NAXIS1": 4656, "NAXIS2": 3522, "IMAGETYP": "LIGHT", "EXPTIME": 600.0, "XBINNING": 1, "YBINNING": 1,
              "SET_TEMP": -20.0, "CCD-TEMP": -19.95, "GAIN": 0, "OFFSET": 10, "READMODE": 1, "USBTRAFF": 20,
              "AMPGLOW": "off", "OVERSCAN": "ignore", "INSTRUME": "QHY163M", "CREATOR": "PixInsight 1.8.9-2"}


def test_ekos_header() -> None:
    info = light_info_from_header(EKOS, defaults={"read_mode": 0, "usb_traffic": 30, "amp_glow": "auto",
                                                  "overscan": "ignore"})
    key = info.key
    assert (key.camera, key.kind, key.exposure_s, key.gain, key.offset, key.binning) == (
        "QHY CCD QHY163M-0c6b5a4", "dark", 300.0, 120, 30, 1)
    assert key.set_point_c == -10.0  # no SET-TEMP: the measured -9.87 °C rounded to the whole degree
    assert info.temperature_c == pytest.approx(-9.87)
    assert (key.read_mode, key.usb_traffic, key.amp_glow, key.overscan) == (0, 30, "auto", "ignore")
    assert (key.width_px, key.height_px) == (4656, 3522)
    assert info.image_type == "light"
    assert info.time_utc == datetime(2026, 11, 20, 22, 14, 5, 123000, tzinfo=UTC)


def test_nina_header_with_textual_read_mode_and_usb_limit() -> None:
    info = light_info_from_header(NINA, camera="QHY163M", read_mode_names={"Standard": 0})
    assert info.program is not None and info.program.startswith("N.I.N.A.")
    assert (info.key.exposure_s, info.key.set_point_c, info.key.gain, info.key.offset) == (180.0, -10.0, 120, 30)
    assert (info.key.read_mode, info.key.usb_traffic) == (0, 30)
    assert info.temperature_c == pytest.approx(-10.1)
    with pytest.raises(HeaderKeyError, match="READOUTM = 'Standard' is not a known read mode"):
        light_info_from_header(NINA, camera="QHY163M")


def test_nina_unset_set_point_sentinel_is_ignored() -> None:
    key = key_from_header(NINA_UNSET_SETPOINT, "QHY163M", read_mode_names={"standard": 0})
    assert key.set_point_c == -15.0


def test_sgp_header_uses_exposure_blklevel_and_binning() -> None:
    key = key_from_header(SGP)
    assert (key.exposure_s, key.set_point_c, key.gain, key.offset, key.binning) == (120.0, -5.0, 75, 12, 2)
    assert key.read_mode is None and key.camera == "QHY163M"


def test_pixinsight_header_uses_set_temp_underscore_and_modes() -> None:
    key = key_from_header(PIXINSIGHT, kind="bias")
    assert (key.kind, key.exposure_s, key.set_point_c, key.gain, key.offset) == ("bias", 0.0, -20.0, 0, 10)
    assert (key.read_mode, key.usb_traffic, key.amp_glow, key.overscan) == (1, 20, "off", "ignore")


@pytest.mark.parametrize(("drop", "attribute", "message"), [
    (("EXPTIME", "DARKTIME"), "exposure_s", "no exposure keyword (looked for EXPTIME, EXPOSURE"),
    (("CCD-TEMP",), "set_point_c", "no sensor temperature keyword"),
    (("INSTRUME",), "camera", "no camera name keyword (looked for INSTRUME, CAMERA)"),
])
def test_missing_keys_name_the_file_and_keyword(drop: tuple[str, ...], attribute: str, message: str) -> None:
    header = {k: v for k, v in EKOS.items() if k not in drop}
    with pytest.raises(HeaderKeyError, match=re.escape(message)) as info:
        key_from_header(header, source="/lights/M31_0001.fits")
    assert info.value.attribute == attribute
    assert str(info.value).startswith("/lights/M31_0001.fits: ")


def test_a_light_without_gain_or_offset_comes_from_a_camera_without_those_controls() -> None:
    """FLI cameras have no gain or offset control, Moravian no offset: their lights state neither, the key says None."""
    key = key_from_header({k: v for k, v in EKOS.items() if k not in ("GAIN", "OFFSET")})
    assert (key.gain, key.offset) == (None, None)
    assert "_g" not in key.slug and "_o" not in key.slug
    assert key_from_header({k: v for k, v in EKOS.items() if k != "OFFSET"}, defaults={"offset": 7}).offset == 7


@pytest.mark.parametrize(("changes", "message"), [
    ({"GAIN": 12.5}, "GAIN = 12.5 is not a whole number"),
    ({"EXPTIME": "long"}, "EXPTIME = 'long' is not a number"),
    ({"YBINNING": 2}, "asymmetric binning"),
    ({"AMPGLOW": "maybe"}, "AMPGLOW"),
])
def test_bad_values_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(HeaderKeyError, match=message):
        key_from_header({**EKOS, **changes}, source="x.fits")


def test_darkd_capture_spellings() -> None:
    header = {**EKOS, "USBTRAF": 30, "AMPGLOW": "auto", "OVSCMODE": "include", "OVERSCAN": 1012.5, "READMODE": 0,
              "CAMERA": "QHY CCD QHY163M-Sim"}
    del header["INSTRUME"]
    key = key_from_header(header)
    assert (key.usb_traffic, key.amp_glow, key.overscan, key.read_mode) == (30, "auto", "include", 0)
    assert key.camera == "QHY CCD QHY163M-Sim"
    assert key_from_header({**EKOS, "OVERSCAN": 1012.5}).overscan is None


@pytest.mark.parametrize(("value", "kind"), [
    ("Light Frame", "light"), ("LIGHT", "light"), ("Dark Frame", "dark"), ("MasterDark", "dark"),
    ("Master Bias", "bias"), ("Offset", "bias"), ("Flat Field", "flat"), ("Flat Dark", "flatdark"),
    ("DARKFLAT", "flatdark"), ("Bias Frame", "bias"),
])
def test_image_type_spellings(value: str, kind: str) -> None:
    assert normalise_image_type(value) == kind


def test_from_fits_file(tmp_path: Path) -> None:
    header = fits.Header()
    for name, value in SGP.items():
        if not name.startswith("NAXIS"):
            header[name] = value
    path = write_frame(tmp_path / "light.fits", np.zeros((36, 48), dtype=np.uint16), header, bitpix16=True)
    info = light_info_from_file(path)
    assert (info.key.width_px, info.key.height_px) == (48, 36)
    assert info.path == path and info.key.binning == 2
