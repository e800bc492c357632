"""drivers.profiles: the QHY163M geometry from the brief, validation against frame sizes, malformed profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.camera import OverscanMode
from drivers.profiles import ProfileError, ProfileMismatch, load_profile, parse_section, profile_from_dict


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
