"""Lights as every acquisition program our users run writes them parse into the right library key.

One fixture header a program (``tests/fixtures/headers/<program>.hdr``, each citing the source its spellings were
taken from): INDI/Ekos, N.I.N.A., SGP, MaxIm DL, SharpCap, ASIAIR, APT, PixInsight, POCS. The known defects of issue 14
are pinned: POCS/Huntsman ZWO lights carry ``CAM-GAIN`` and no ``GAIN``; N.I.N.A. writes ``READOUTM = 'Standard'``
(a name, passed on as text for the name → index rule).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daemon.light_headers import (
    ALIASES,
    HeaderKeyError,
    light_info_from_file,
    light_info_from_header,
    normalise_image_type,
    read_mode_text,
)
from tests.fixtures.headers import PROGRAMS, citation, load_header, write_fits

#: read-mode names the two programs that write names use in the fixtures (N.I.N.A. 'Standard', MaxIm 'Monochrome')
MODE_NAMES = {"Standard": 0, "Monochrome": 0}

#: what each fixture must parse to: key fields, the measured temperature, the program named in the header
EXPECTED: dict[str, dict[str, Any]] = {
    "ekos": dict(camera="QHY CCD QHY163M-0c6b5a4", exposure_s=300.0, set_point_c=None, gain=120, offset=30,
                 binning=1, read_mode=0, usb_traffic=None, amp_glow="auto", size=(4656, 3522), measured=-10.02,
                 program=None),
    "nina": dict(camera="QHY163M", exposure_s=180.0, set_point_c=-10.0, gain=120, offset=30, binning=1, read_mode=0,
                 usb_traffic=30, amp_glow=None, size=(4656, 3522), measured=-10.1, program="N.I.N.A."),
    "sgp": dict(camera="ZWO ASI294MM Pro", exposure_s=120.0, set_point_c=-5.0, gain=120, offset=30, binning=2,
                read_mode=None, usb_traffic=None, amp_glow=None, size=(2072, 1411), measured=-4.9,
                program="Sequence Generator Pro"),
    "maximdl": dict(camera="QHYCCD-Cameras-Capture", exposure_s=600.0, set_point_c=-20.0, gain=None, offset=None,
                    binning=1, read_mode=0, usb_traffic=None, amp_glow=None, size=(4656, 3522), measured=-19.95,
                    program="MaxIm DL"),
    "sharpcap": dict(camera="ZWO ASI294MM Pro", exposure_s=60.0, set_point_c=-10.0, gain=120, offset=30, binning=1,
                     read_mode=None, usb_traffic=None, amp_glow=None, size=(4144, 2822), measured=-10.2,
                     program="SharpCap"),
    "asiair": dict(camera="ZWO ASI294MM Pro", exposure_s=300.0, set_point_c=-10.0, gain=120, offset=30, binning=1,
                   read_mode=None, usb_traffic=None, amp_glow=None, size=(4144, 2822), measured=-10.0,
                   program="ZWO ASIAIR"),
    "apt": dict(camera="ZWO ASI294MM Pro", exposure_s=240.0, set_point_c=-15.0, gain=120, offset=None, binning=1,
                read_mode=None, usb_traffic=None, amp_glow=None, size=(4144, 2822), measured=None,
                program="Astro Photography Tool"),
    "pixinsight": dict(camera="QHY163M", exposure_s=300.0, set_point_c=-20.0, gain=0, offset=10, binning=1,
                       read_mode=None, usb_traffic=20, amp_glow=None, size=(4656, 3522), measured=-19.9,
                       program="N.I.N.A."),
    "pocs": dict(camera="361d420013090900", exposure_s=120.0, set_point_c=-10.0, gain=100, offset=None, binning=1,
                 read_mode=None, usb_traffic=None, amp_glow=None, size=(5496, 3672), measured=-10.1,
                 program="POCS"),
}


def test_every_program_has_a_cited_fixture() -> None:
    assert set(EXPECTED) == set(PROGRAMS)
    for program in PROGRAMS:
        text = citation(program)
        assert re.search(r"Looked up \d{4}-\d{2}-\d{2}", text), program
        assert "Source" in text, program


@pytest.mark.parametrize("program", PROGRAMS)
def test_fixture_parses_to_the_expected_key(program: str) -> None:
    want = EXPECTED[program]
    info = light_info_from_header(load_header(program), read_mode_names=MODE_NAMES, source=f"{program}.fits")
    key = info.key
    assert (key.camera, key.kind, key.exposure_s, key.gain, key.offset, key.binning) == (
        want["camera"], "dark", want["exposure_s"], want["gain"], want["offset"], want["binning"])
    assert (key.read_mode, key.usb_traffic, key.amp_glow) == (want["read_mode"], want["usb_traffic"],
                                                             want["amp_glow"])
    assert (key.width_px, key.height_px) == want["size"]
    if want["set_point_c"] is not None:  # stated set point (lights without one: the temperature rule's business)
        assert key.set_point_c == want["set_point_c"]
    if want["measured"] is None:
        assert info.temperature_c is None
    else:
        assert info.temperature_c == pytest.approx(want["measured"])
    assert info.image_type == "light"
    assert info.time_utc is not None and info.time_utc.year == 2026
    if want["program"] is None:
        assert info.program is None
    else:
        assert info.program is not None and info.program.startswith(want["program"])


@pytest.mark.parametrize("program", PROGRAMS)
def test_fixture_as_a_fits_file_gives_the_same_key(program: str, tmp_path: Path) -> None:
    path = write_fits(program, tmp_path / f"{program}.fits")
    from_file = light_info_from_file(path, read_mode_names=MODE_NAMES)
    assert from_file.key == light_info_from_header(load_header(program), read_mode_names=MODE_NAMES).key
    assert from_file.path == path
    assert path.stat().st_size % 2880 == 0


def test_pocs_zwo_light_with_cam_gain_and_no_gain_is_read() -> None:
    """Issue 14: POCS/Huntsman write the ZWO gain as CAM-GAIN ('Internal units') and no GAIN — used to be refused."""
    header = load_header("pocs")
    assert "GAIN" not in header and header["CAM-GAIN"] == 100
    assert light_info_from_header(header).key.gain == 100
    del header["CAM-GAIN"]
    assert light_info_from_header(header).key.gain is None  # EGAIN (1.0 e-/ADU) is still there and never read


@pytest.mark.parametrize("program", [p for p in PROGRAMS if "EGAIN" in load_header(p)])
def test_egain_is_never_taken_for_the_gain_setting(program: str) -> None:
    header = load_header(program)
    for name in ALIASES["gain"]:
        header.remove(name, ignore_missing=True)
    assert "EGAIN" in header
    assert light_info_from_header(header, read_mode_names=MODE_NAMES).key.gain is None


def test_nina_readout_mode_name_is_passed_on_as_text() -> None:
    """Issue 14: READOUTM = 'Standard' made the whole folder fail. The name reaches the mapping rule as text."""
    header = load_header("nina")
    assert read_mode_text(header) == ("READOUTM", "Standard")
    info = light_info_from_header(header, read_mode_names={"standard": 2})
    assert (info.key.read_mode, info.read_mode_name) == (2, "Standard")
    spaced = light_info_from_header(header, read_mode_names={"  STANDARD ": 1})  # case- and spacing-blind
    assert spaced.key.read_mode == 1
    with pytest.raises(HeaderKeyError, match="READOUTM = 'Standard' is not a known read mode") as refused:
        light_info_from_header(header, source="nina.fits")
    assert (refused.value.attribute, refused.value.keyword, refused.value.value) == ("read_mode", "READOUTM",
                                                                                       "Standard")


def test_maxim_readout_mode_name_and_indi_mode_index() -> None:
    maxim = load_header("maximdl")
    assert read_mode_text(maxim) == ("READOUTM", "Monochrome")
    assert light_info_from_header(maxim, read_mode_names={"Monochrome": 3}).key.read_mode == 3
    ekos = load_header("ekos")  # the INDI QHY driver writes the index, READMODE = 0.0E+00
    assert read_mode_text(ekos) is None
    info = light_info_from_header(ekos)
    assert (info.key.read_mode, info.read_mode_name) == (0, None)


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_light_without_exposure_names_the_keywords_looked_for(program: str) -> None:
    header = load_header(program)
    for name in ALIASES["exposure_s"]:
        header.remove(name, ignore_missing=True)
    with pytest.raises(HeaderKeyError, match=re.escape("no exposure keyword (looked for EXPTIME, EXPOSURE")) as err:
        light_info_from_header(header, read_mode_names=MODE_NAMES, source=f"/lights/{program}_0001.fits")
    assert err.value.attribute == "exposure_s"
    assert str(err.value).startswith(f"/lights/{program}_0001.fits: ")


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_light_without_camera_names_the_keywords_looked_for(program: str) -> None:
    header = load_header(program)
    for name in ALIASES["camera"]:
        header.remove(name, ignore_missing=True)
    with pytest.raises(HeaderKeyError, match=re.escape("no camera name keyword (looked for INSTRUME, CAMERA)")) as err:
        light_info_from_header(header, read_mode_names=MODE_NAMES, source="x.fits")
    assert err.value.attribute == "camera"
    # the camera can still be named by the caller (POCS writes a serial number in INSTRUME anyway)
    assert light_info_from_header(header, camera="QHY163M", read_mode_names=MODE_NAMES).key.camera == "QHY163M"


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_programs_frame_type_spelling_is_light(program: str) -> None:
    header = load_header(program)
    for name in ("IMAGETYP", "FRAME"):
        if name in header:
            assert normalise_image_type(header[name]) == "light", (program, name, header[name])


@pytest.mark.parametrize(("value", "kind"), [
    ("Light Frame", "light"), ("LIGHT", "light"), ("Light", "light"), ("light", "light"), ("Dark Frame", "dark"),
    ("DARK", "dark"), ("Bias Frame", "bias"), ("BIAS", "bias"), ("Flat Frame", "flat"), ("Flat Field", "flat"),
    ("FLAT", "flat"), ("Dark Flat", "flatdark"), ("DARKFLAT", "flatdark"), ("FLATDARK", "flatdark"),
])
def test_image_type_values_of_every_program(value: str, kind: str) -> None:
    assert normalise_image_type(value) == kind


def test_sharpcap_writes_no_image_type_and_both_offset_spellings() -> None:
    header = load_header("sharpcap")
    assert "IMAGETYP" not in header and header["OFFSET"] == header["BLKLEVEL"] == 30
    assert light_info_from_header(header).image_type == "light"
    del header["OFFSET"]
    assert light_info_from_header(header).key.offset == 30  # BLKLEVEL alone


def test_sgp_and_asiair_ccdxbin_and_binning_strings() -> None:
    header = load_header("sgp")
    del header["XBINNING"], header["YBINNING"]
    assert light_info_from_header(header).key.binning == 2  # CCDXBIN / CCDYBIN
    for text in ("2x2", "2*2", "2 x 2", "2X2"):
        plain: dict[str, object] = {**dict(load_header("asiair")), "BINNING": text}
        for name in ("XBINNING", "YBINNING", "CCDXBIN", "CCDYBIN"):
            del plain[name]
        assert light_info_from_header(plain).key.binning == 2, text
    with pytest.raises(HeaderKeyError, match="asymmetric binning BINNING = '2x1'"):
        light_info_from_header({**plain, "BINNING": "2x1"})


def test_sgp_older_temperat_spelling() -> None:
    """SGP's documentation names TEMPERAT for the cooler temperature (older versions)."""
    header = load_header("sgp")
    header.rename_keyword("CCD-TEMP", "TEMPERAT")
    assert light_info_from_header(header).temperature_c == pytest.approx(-4.9)


def test_fractional_gain_is_refused_with_the_egain_hint() -> None:
    header = load_header("apt")
    header["GAIN"] = 1.00224268436432  # e-/ADU under the GAIN name, as some programs write it
    with pytest.raises(HeaderKeyError, match=r"GAIN = 1\.00224268436432 is not a whole number .*e⁻/ADU") as err:
        light_info_from_header(header)
    assert (err.value.attribute, err.value.keyword) == ("gain", "GAIN")
