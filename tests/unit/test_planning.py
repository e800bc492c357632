"""Planning from lights and from keys: grouping, library comparison, frame counts, ordering, reachability, time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.planning import Plan, PlanError, load_keys_file, plan_from_keys, plan_from_lights
from daemon.settings import CoolingSettings, LibrarySettings, Settings

CAMERA = "QHY CCD QHY163M-Sim"
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def settings(tmp_path: Path, **cooling: object) -> Settings:
    return Settings(library=LibrarySettings(root=tmp_path / "lib", frames_bias=30, frames_dark=10),
                    cooling=CoolingSettings(hold_s=60.0, warm_up_at_end=False, **cooling))


def write_light(path: Path, exposure_s: float, ccd_temp_c: float, *, set_temp_c: float | None = None,
                gain: int = 120, imagetyp: str = "Light Frame") -> None:
    header = fits.Header()
    header["IMAGETYP"] = imagetyp
    header["EXPTIME"] = exposure_s
    header["CCD-TEMP"] = ccd_temp_c
    if set_temp_c is not None:
        header["SET-TEMP"] = set_temp_c
    header["GAIN"] = gain
    header["OFFSET"] = 30
    header["XBINNING"] = 1
    header["INSTRUME"] = CAMERA
    write_frame(path, np.zeros((12, 16), dtype=np.uint16), header, bitpix16=True)


def key(kind: str, exposure_s: float, set_point_c: float, gain: int = 120) -> LibraryKey:
    return LibraryKey(camera=CAMERA, kind=kind, exposure_s=exposure_s, set_point_c=set_point_c, gain=gain, offset=30,
                      width_px=16, height_px=12)


@pytest.fixture
def lights(tmp_path: Path) -> Path:
    d = tmp_path / "lights"
    d.mkdir()
    for i in range(3):
        write_light(d / f"M31_300s_{i}.fits", 300, -9.9 + 0.05 * i, set_temp_c=-10)
    for i in range(2):
        write_light(d / f"M31_60s_{i}.fit", 60, -10.1)
    write_light(d / "dark_ignored.fits", 60, -10.1, imagetyp="Dark Frame")
    (d / "notes.txt").write_text("not a frame")
    (d / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 10)
    return d


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_plan_from_lights_groups_and_counts(lights: Path, tmp_path: Path) -> None:
    plan = plan_from_lights(lights, None, settings(tmp_path), now=NOW)
    by_slug = {i.key.slug: i for i in plan.items}
    assert by_slug[key("dark", 300, -10).slug].lights == 3
    assert by_slug[key("dark", 60, -10).slug].lights == 2
    assert by_slug[key("bias", 0, -10).slug].frames_target == 30
    assert by_slug[key("dark", 300, -10).slug].frames_target == 10
    assert len(plan.items) == 3 and all(i.status == "missing" for i in plan.items)
    assert [i.key.kind for i in plan.work()] == ["bias", "dark", "dark"]
    assert [i.key.exposure_s for i in plan.work()] == [0.0, 60.0, 300.0]
    assert plan.lights == 5 and plan.total_frames == 50
    assert len(plan.errors) == 1 and plan.errors[0]["path"].endswith("broken.fits")
    assert any("dark frame" in w for w in plan.warnings)


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_plan_compares_with_library(lights: Path, tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    index = LibraryIndex.open(cfg.library)
    ready = index.upsert_entry(key("dark", 300, -10), 10)
    master = Path(ready.master_target)
    master.write_bytes(b"m")
    index.set_master(ready.id, master, {}, created=NOW - timedelta(days=1))
    stale = index.upsert_entry(key("bias", 0, -10), 30)
    Path(stale.master_target).write_bytes(b"m")
    index.set_master(stale.id, Path(stale.master_target), {}, created=NOW - timedelta(days=100))
    partial = index.upsert_entry(key("dark", 60, -10), 10)
    for i in range(4):
        frame = Path(partial.frames_dir) / f"dark_{i:04d}.fits"
        frame.write_bytes(b"f")
        index.record_frame(partial.id, frame, "0" * 64, i + 1, -10, -10, True, [])
    plan = plan_from_lights(lights, index, cfg, now=NOW)
    status = {i.key.slug: (i.status, i.frames_needed) for i in plan.items}
    assert status[key("dark", 300, -10).slug] == ("ready", 0)
    assert status[key("bias", 0, -10).slug] == ("stale", 30)
    assert status[key("dark", 60, -10).slug] == ("in-progress", 6)
    assert [i.key.slug for i in plan.work()] == [key("bias", 0, -10).slug, key("dark", 60, -10).slug]
    index.close()


def test_unreachable_temperature_is_reported_and_not_scheduled(tmp_path: Path) -> None:
    keys = [key("dark", 60, -10), key("dark", 60, -25), key("bias", 0, -25)]
    plan = plan_from_keys(keys, None, settings(tmp_path), ambient_c=15.0, max_cooling_delta_c=38.0, now=NOW)
    assert plan.unreachable_c == [-25.0]
    unreachable = [i for i in plan.items if not i.reachable]
    assert len(unreachable) == 2 and "more than 38 °C below the ambient 15 °C" in (unreachable[0].reason or "")
    assert [i.key.set_point_c for i in plan.work()] == [-10.0]
    assert any("unreachable" in w for w in plan.warnings)
    data = plan.to_dict()
    assert data["unreachable_c"] == [-25.0] and "UNREACHABLE" in plan.to_text()
    assert plan_from_keys(keys, None, settings(tmp_path), ambient_c=15.0, max_cooling_delta_c=40.0).unreachable_c == []


def test_ordering_one_set_point_at_a_time_coldest_first(tmp_path: Path) -> None:
    keys = [key("dark", 300, -5), key("dark", 60, -15), key("bias", 0, -5), key("dark", 60, -5),
            key("bias", 0, -15), key("dark", 120, -10)]
    plan = plan_from_keys(keys, None, settings(tmp_path), ambient_c=20.0, now=NOW)
    order = [(i.key.set_point_c, i.key.kind, i.key.exposure_s) for i in plan.work()]
    assert order == [(-15, "bias", 0), (-15, "dark", 60), (-10, "dark", 120), (-5, "bias", 0), (-5, "dark", 60),
                     (-5, "dark", 300)]
    assert plan.set_points_c == [-15.0, -10.0, -5.0]
    assert [i.order for i in plan.work()] == [1, 2, 3, 4, 5, 6]


def test_time_estimate_uses_documented_assumptions(tmp_path: Path) -> None:
    keys = [key("dark", 100, -10), key("dark", 100, -20)]
    plan = plan_from_keys(keys, None, settings(tmp_path, ramp_c_per_min=2.0), ambient_c=20.0,
                          max_cooling_delta_c=45.0, readout_s=1.5)
    # capture 2 keys × 10 frames × (100 + 1.5) s; cooling 20→−20 at 2 °C/min = 20 min, then −20→−10 = 5 min, 2 holds
    assert plan.estimate_s["capture_s"] == pytest.approx(2030.0)
    assert plan.estimate_s["cooling_s"] == pytest.approx(25 * 60 + 2 * 60)
    assert plan.assumptions["cooling_rate_c_per_min"] == 2.0
    default = plan_from_keys(keys, None, settings(tmp_path), ambient_c=20.0)
    assert default.assumptions["cooling_rate_c_per_min"] == 3.0


def test_plan_roundtrips_through_dict(tmp_path: Path) -> None:
    plan = plan_from_keys([key("dark", 60, -10), key("bias", 0, -10)], None, settings(tmp_path), ambient_c=10.0)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert [i.key for i in again.work()] == [i.key for i in plan.work()]
    assert again.estimate_s == plan.estimate_s


def test_keys_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text(f'[defaults]\ncamera = "{CAMERA}"\ngain = 120\noffset = 30\nwidth_px = 16\nheight_px = 12\n'
                    '[[keys]]\nkind = "dark"\nexposure_s = 60\nset_point_c = -10\nframes = 5\n'
                    '[[keys]]\nkind = "bias"\nexposure_s = 0\nset_point_c = -10\n')
    keys = load_keys_file(toml)
    plan = plan_from_keys(keys, None, settings(tmp_path))
    assert {(i.key.kind, i.frames_target) for i in plan.items} == {("dark", 5), ("bias", 30)}
    js = tmp_path / "keys.json"
    js.write_text(json.dumps([key("dark", 60, -10).to_dict()]))
    assert plan_from_keys(load_keys_file(js), None, settings(tmp_path)).items[0].key == key("dark", 60, -10)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"camera": CAMERA, "kind": "dark"}]))
    with pytest.raises(PlanError, match="key #1: library key: missing attribute"):
        plan_from_keys(load_keys_file(bad), None, settings(tmp_path))
    (tmp_path / "broken.toml").write_text("[[keys]\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_keys_file(tmp_path / "broken.toml")


def test_no_lights_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlanError, match="no light frames found"):
        plan_from_lights(tmp_path / "empty", None, settings(tmp_path))
    with pytest.raises(PlanError, match="not found"):
        plan_from_lights(tmp_path / "nope", None, settings(tmp_path))
