"""drivers.profiles: the QHY163M geometry from the brief, validation against frame sizes, malformed profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.camera import OverscanMode
from drivers.profiles import (
    ProfileError,
    ProfileMismatch,
    all_profiles,
    detect_profile,
    load_profile,
    parse_section,
    profile_from_dict,
)


def test_qhy163m_full_geometry_matches_the_brief() -> None:
    p = load_profile("qhy163m")
    inc = p.geometry(OverscanMode.INCLUDE)
    assert (inc.width_px, inc.height_px) == (4720, 3540)
    assert inc.datasec == inc.trimsec == "[1:4656,19:3540]"
    assert inc.biassec == "[4657:4720,19:3540]"
    assert inc.obsec == "[1:4656,1:18]"
    ign = p.geometry(OverscanMode.IGNORE)
    assert (ign.width_px, ign.height_px) == (4656, 3522)
    assert ign.biassec is None and ign.datasec == "[1:4656,1:3522]"
    assert p.saturation_adu == 4095 * 16


def test_qhy163m_sim_small_geometry_matches_the_brief() -> None:
    p = load_profile("qhy163m-sim-small")
    inc = p.sections_for("include", (368, 496))
    assert inc.header_cards() == {"DATASEC": "[1:480,9:368]", "TRIMSEC": "[1:480,9:368]",
                                  "BIASSEC": "[481:496,9:368]", "OBSEC": "[1:480,1:8]"}
    ign = p.sections_for(OverscanMode.IGNORE, (360, 480))
    assert ign.header_cards() == {"DATASEC": "[1:480,1:360]", "TRIMSEC": "[1:480,1:360]"}
    assert p.sections_for(None, (360, 480)) == ign


def test_mismatch_names_both_sizes_and_the_mode() -> None:
    p = load_profile("qhy163m-sim-small")
    with pytest.raises(ProfileMismatch) as err:
        p.sections_for(OverscanMode.INCLUDE, (360, 480))
    text = str(err.value)
    assert "expects a 496x368 frame" in text and "sent 480x360" in text and "overscan include" in text


def test_binning_scales_the_sections() -> None:
    geo = load_profile("qhy163m").sections_for(OverscanMode.INCLUDE, (1770, 2360), binning=2)
    assert geo.datasec == "[1:2328,10:1770]"
    assert geo.biassec == "[2329:2360,10:1770]"
    assert parse_section(geo.obsec or "")[3] == 9


def test_unknown_profile_lists_known(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[ignore]\nwidth_px=10\nheight_px=10\ndatasec="[1:10,1:10]"\n')
    with pytest.raises(ProfileError, match="known: a"):
        load_profile("nope", tmp_path)
    assert load_profile("a", tmp_path).ignore.trimsec == "[1:10,1:10]"


@pytest.mark.parametrize(("data", "message"), [
    ({}, "missing \\[ignore\\]"),
    ({"ignore": {"width_px": 10, "height_px": 10}}, "missing key datasec"),
    ({"ignore": {"width_px": 10, "height_px": 10, "datasec": "[1:11,1:10]"}}, "outside the 10x10 frame"),
    ({"ignore": {"width_px": 10, "height_px": 10, "datasec": "1:10,1:10"}}, "not an IRAF section"),
    ({"ignore": {"width_px": 10, "height_px": 10, "datasec": "[1:10,1:10]"},
      "include": {"width_px": 12, "height_px": 10, "datasec": "[1:10,1:10]", "biassec": "[10:12,1:10]"}},
     "overlaps datasec"),
])
def test_malformed_profiles_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(data, "test.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[ignore\n")
    with pytest.raises(ProfileError, match="invalid TOML"):
        load_profile("bad", tmp_path)


def test_profile_without_include_mode() -> None:
    p = profile_from_dict({"ignore": {"width_px": 8, "height_px": 4, "datasec": "[1:8,1:4]"}})
    with pytest.raises(ProfileError, match="no overscan"):
        p.geometry(OverscanMode.INCLUDE)


# ---- detection: from the driver, the model in the device name and CCD_INFO -------------------------------------------
@pytest.mark.parametrize(("driver_exec", "device", "size", "expected"), [
    ("indi_qhy_ccd", "QHY CCD QHY163M-1a2b3c", (4720, 3540), "qhy163m"),
    ("indi_darkd_sim_ccd", "QHY CCD QHY163M-Sim", (4720, 3540), "qhy163m"),
    ("indi_darkd_sim_ccd", "QHY CCD QHY163M-Sim", (496, 368), "qhy163m-sim-small"),
    ("indi_asi_ccd", "ZWO CCD ASI1600MM Pro", (4656, 3520), "asi1600mm-pro"),
    ("indi_asi_ccd", "ZWO CCD ASI294MM Pro", (4144, 2822), "asi294mm-pro"),
    ("indi_asi_ccd", "ZWO CCD ASI294MM Pro", (8288, 5644), "asi294mm-pro"),
    ("indi_asi_ccd", "ZWO CCD ASI2600MM Pro", (6248, 4176), "asi2600mm-pro"),
    ("indi_qhy_ccd", "QHY CCD QHY268M-0001", (6252, 4176), "qhy268m"),
    ("indi_playerone_ccd", "PlayerOne CCD Poseidon-M Pro", (6252, 4176), "poseidon-m"),
    ("indi_simulator_ccd", "CCD Simulator", (1280, 1024), "ccd-simulator"),
])
def test_profile_is_detected(driver_exec: str, device: str, size: tuple[int, int], expected: str) -> None:
    profile, detected = detect_profile(driver_exec, device, *size)
    assert detected and profile.name == expected


def test_same_sensor_different_driver_gets_its_own_profile() -> None:
    # ASI1600MM Pro and QHY163M share the MN34230, but the ZWO SDK frame has no overscan: no QHY geometry for it
    profile, _ = detect_profile("indi_asi_ccd", "ZWO CCD ASI1600MM Pro", 4656, 3520)
    assert profile.name == "asi1600mm-pro" and profile.include is None and profile.adc_bits == 12
    assert detect_profile("indi_asi_ccd", "ZWO CCD QHY163M", 4720, 3540)[0].name == "generic"  # wrong driver


def test_unknown_camera_gets_the_generic_profile_and_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    profile, detected = detect_profile("indi_asi_ccd", "ZWO CCD ASI178MM", 3096, 2080, 2.4, 16)
    assert not detected and profile.name == "generic" and profile.include is None
    assert "no camera profile matches ZWO CCD ASI178MM" in caplog.text
    whole = profile.sections_for(OverscanMode.IGNORE, (2080, 3096))
    assert whole.header_cards() == {"DATASEC": "[1:3096,1:2080]", "TRIMSEC": "[1:3096,1:2080]"}
    with pytest.raises(ProfileError, match="no overscan"):
        profile.sections_for(OverscanMode.INCLUDE, (2080, 3096))
    assert detect_profile("indi_qhy_ccd", "QHY CCD QHY163M", 100, 100)[0].name == "generic"  # size unknown


def test_whole_frame_profile_and_detect_table_parse() -> None:
    p = profile_from_dict({"name": "x", "whole_frame": True,
                           "detect": {"drivers": ["indi_x"], "models": ["X1"], "sizes": [[10, 20]]}})
    assert p.ignore is None and p.match.sizes == ((10, 20),)
    assert p.sections_for(None, (20, 10)).datasec == "[1:10,1:20]"
    with pytest.raises(ProfileError, match="sizes"):
        profile_from_dict({"whole_frame": True, "detect": {"sizes": [["a", 1]]}})


def test_every_shipped_profile_is_valid(tmp_path: Path) -> None:
    names = {p.name for p in all_profiles()}
    assert {"qhy163m", "qhy163m-sim-small", "asi1600mm-pro", "asi294mm-pro", "asi2600mm-pro", "qhy268m",
            "poseidon-m", "ccd-simulator"} <= names
    (tmp_path / "broken.toml").write_text("[ignore\n")
    assert all_profiles(tmp_path) == []  # skipped with a warning, never fatal during detection
