"""The one rule for a light's unstated key fields (daemon/light_rule.py): precedence, read-mode names, temperature,
the driver's recorded state (a real SQLite index, the in-process SimCamera), and the refusal that names every field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.library.selection import key_difference, select_for_light
from daemon.light_headers import HeaderKeyError
from daemon.light_rule import LightRule, match_set_point, record_driver_defaults
from daemon.planning import plan_from_lights
from daemon.settings import LibrarySettings, LightCameraSettings, Settings
from drivers.profiles import load_profile
from drivers.sim.inprocess import SimCamera

CAMERA = "QHY CCD QHY163M-Sim"
PROFILE = "qhy163m-sim-small"  # include 496x368, ignore 480x360
DRIVER = {"gain": 120, "offset": 30, "read_mode": 1, "usb_traffic": 30, "amp_glow": "auto", "overscan": "ignore",
          "has_gain": True, "has_offset": True, "profile": PROFILE, "bit_depth": 12}


def header(**cards: Any) -> fits.Header:
    h = fits.Header()
    base = {"NAXIS": 2, "NAXIS1": 496, "NAXIS2": 368, "IMAGETYP": "Light Frame", "EXPTIME": 60.0, "CCD-TEMP": -10.1,
            "INSTRUME": CAMERA}
    for name, value in {**base, **cards}.items():
        if value is not None:
            h[name] = value
    return h


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LibraryIndex]:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib"))
    yield idx
    idx.close()


def settings(**lights: LightCameraSettings) -> Settings:
    return Settings(lights=lights)


def test_each_source_in_its_order(index: LibraryIndex) -> None:
    index.record_camera_defaults(CAMERA, DRIVER, ["Standard", "High Gain"])
    cfg = LightCameraSettings(usb_traffic=50, read_mode=0)

    # the driver fills everything nobody else gives; the frame (496x368 = include) beats the driver's "ignore"
    info = LightRule(settings(), index).light_info(header())
    assert (info.key.gain, info.key.offset, info.key.read_mode, info.key.usb_traffic, info.key.amp_glow) == \
        (120, 30, 1, 30, "auto")
    assert info.key.overscan == "include" and info.sources["overscan"] == "frame size"
    assert info.sources["read_mode"] == "driver state at connect"
    assert info.key.bit_depth is None  # never from the driver

    # the config beats the frame and the driver
    info = LightRule(settings(**{CAMERA: cfg.model_copy(update={"overscan": "ignore", "bit_depth": 12})}),
                     index).light_info(header())
    assert (info.key.usb_traffic, info.key.read_mode, info.key.overscan, info.key.bit_depth) == (50, 0, "ignore", 12)
    assert info.sources["usb_traffic"].startswith("config")

    # an explicit --default beats the config; the header beats everything
    rule = LightRule(settings(**{CAMERA: cfg}), index, overrides={"usb_traffic": 70, "read_mode": 0})
    info = rule.light_info(header(USBTRAF=90, GAIN=200))
    assert (info.key.usb_traffic, info.key.read_mode, info.key.gain) == (90, 0, 200)
    assert "usb_traffic" not in info.sources and info.sources["read_mode"] == "--default"


def test_frame_size_alone_decides_overscan_for_a_known_profile() -> None:
    rule = LightRule(Settings(camera_profile=PROFILE))  # no index: no driver record, the configured profile
    assert rule.light_info(header(NAXIS1=480, NAXIS2=360)).key.overscan == "ignore"
    assert rule.light_info(header()).key.overscan == "include"
    assert rule.light_info(header(NAXIS1=100, NAXIS2=50)).key.overscan is None  # neither geometry: unknown
    assert rule.light_info(header(XBINNING=2, NAXIS1=248, NAXIS2=184)).key.overscan == "include"
    assert LightRule(Settings()).light_info(header()).key.overscan is None  # camera_profile auto, no record


def test_gain_and_offset_from_the_driver_only_when_the_camera_has_the_control(index: LibraryIndex) -> None:
    index.record_camera_defaults(CAMERA, {**DRIVER, "has_gain": False, "has_offset": True}, [])
    key = LightRule(settings(), index).light_info(header()).key
    assert key.gain is None and key.offset == 30


def test_read_mode_names_config_first_then_driver_labels(index: LibraryIndex) -> None:
    index.record_camera_defaults(CAMERA, DRIVER, ["Standard", "High Gain", "Extended Fullwell"])
    rule = LightRule(settings(), index)
    assert rule.light_info(header(READOUTM="High Gain")).key.read_mode == 1
    assert rule.light_info(header(READOUTM="extended fullwell")).key.read_mode == 2
    configured = LightRule(settings(**{CAMERA: LightCameraSettings(read_modes={"High Gain": 7})}), index)
    assert configured.light_info(header(READOUTM="High Gain")).key.read_mode == 7
    assert configured.light_info(header(READOUTM="Standard")).key.read_mode == 0
    with pytest.raises(HeaderKeyError, match="not a known read mode"):
        rule.light_info(header(READOUTM="Turbo"))


def test_match_set_point_nearest_within_tolerance() -> None:
    assert match_set_point(-14.5, [-15.0, -10.0], 0.5) == -15.0  # not -14 (round half to even)
    assert match_set_point(-14.5, [-14.0, -15.0], 0.5) == -15.0  # a tie goes to the colder set point
    assert match_set_point(-14.2, [-14.0, -15.0], 0.5) == -14.0
    assert match_set_point(-14.6, [-14.0], 0.5) is None
    assert match_set_point(-14.6, [], 0.5) is None


def test_light_temperature_matches_library_set_points(index: LibraryIndex) -> None:
    def entry(set_point_c: float, status: str | None = None) -> None:
        e = index.upsert_entry(LibraryKey(camera=CAMERA, kind="dark", exposure_s=60, set_point_c=set_point_c,
                                          gain=120, offset=30, width_px=496, height_px=368), 3)
        if status == "bad":
            index.mark_bad(e.id, "test")

    entry(-15.0)
    entry(-14.0, "bad")  # a bad entry's set point does not count
    rule = LightRule(settings(), index)
    info = rule.light_info(header(**{"CCD-TEMP": -14.5}))
    assert info.key.set_point_c == -15.0 and info.sources["set_point_c"] == "nearest library set point"
    assert rule.light_info(header(**{"CCD-TEMP": -14.5, "SET-TEMP": -12.0})).key.set_point_c == -12.0  # stated
    far = rule.light_info(header(**{"CCD-TEMP": -13.4}))
    assert far.key.set_point_c == -13.0 and far.sources["set_point_c"] == "CCD-TEMP rounded"
    assert LightRule(settings()).light_info(header(**{"CCD-TEMP": -14.5})).key.set_point_c == -14.0  # no library


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown default"):
        LightRule(settings(), overrides={"readmode": 0})


def test_refusal_names_every_differing_field_and_the_fix() -> None:
    light = LibraryKey(camera=CAMERA, kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30,
                       read_mode=None, overscan=None, usb_traffic=20, width_px=496, height_px=368)
    master = LibraryKey(camera=CAMERA, kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30,
                        read_mode=0, overscan="include", usb_traffic=30, width_px=496, height_px=368)
    text = key_difference(light, master, light.matches(master))
    assert "read_mode differs (light None, master 0)" in text and "header READMODE = 0" in text
    assert "overscan differs (light None, master 'include')" in text and "OVSCMODE = 'include'" in text
    assert "usb_traffic differs (light 20, master 30)" in text
    assert f'config [lights."{CAMERA}"] overscan = "include"' in text
    assert text.count("differs") == 3


def test_driver_state_recorded_from_the_simulated_camera(index: LibraryIndex) -> None:
    camera = SimCamera(profile=load_profile(PROFILE))
    caps = camera.connect()
    state = camera.state()
    record_driver_defaults(index, caps, state)
    values, labels = index.camera_defaults(caps.device) or ({}, [])
    assert values["gain"] == round(state.gain or -1) and values["read_mode"] == state.read_mode
    assert values["overscan"] == "ignore" and values["usb_traffic"] == state.usb_traffic
    assert values["profile"] == PROFILE and labels == []
    index.record_camera_defaults(caps.device, {**values, "read_mode": 3}, ["A", "B"])  # replaced, not added
    assert index.camera_defaults(caps.device) == ({**values, "read_mode": 3}, ["A", "B"])
    assert index.camera_defaults("another camera") is None


def _ready_master(index: LibraryIndex, key: LibraryKey) -> int:
    entry = index.upsert_entry(key, 1)
    frame = write_frame(Path(entry.frames_dir) / "dark_0001.fits", np.zeros((4, 4)))
    index.record_frame(entry.id, frame, "0" * 64, 1, key.set_point_c, key.set_point_c, True, [])
    path = write_frame(entry.master_target, np.zeros((4, 4)))
    return index.set_master(entry.id, path, {}, created=datetime.now(UTC), review=False).id


def test_plan_and_selection_say_every_field_that_keeps_a_light_off_the_library(index: LibraryIndex,
                                                                               tmp_path: Path) -> None:
    key = LibraryKey(camera=CAMERA, kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30, read_mode=0,
                     usb_traffic=30, amp_glow="auto", overscan="include", width_px=496, height_px=368)
    entry_id = _ready_master(index, key)
    lights = tmp_path / "lights"
    light = write_frame(lights / "ekos_0001.fits", np.zeros((368, 496)),
                        header(GAIN=120, OFFSET=30, AMPGLOW="Auto", **{"DATE-OBS": datetime.now(UTC).isoformat()}),
                        bitpix16=True)
    plan = plan_from_lights(lights, index, settings(), include_bias=False)
    (item,) = plan.items
    assert item.status == "missing" and item.reason is not None
    assert item.reason.startswith(f"nearest ready entry #{entry_id}: ")
    for name in ("read_mode", "usb_traffic", "overscan"):
        assert f"{name} differs (light None, master " in item.reason
    assert "why not ready: nearest ready entry" in plan.to_text()
    refused = select_for_light(index, light, rule=LightRule(settings(), index)).refused[entry_id]
    assert refused.count("differs") == 3 and "header READMODE = 0" in refused

    # one config table (or the driver's record) is all it takes
    configured = settings(**{CAMERA: LightCameraSettings(read_mode=0, usb_traffic=30, overscan="include")})
    assert plan_from_lights(lights, index, configured, include_bias=False).items[0].status == "ready"
    assert select_for_light(index, light, rule=LightRule(configured, index)).require().id == entry_id


def test_rest_plan_from_lights_uses_the_rule(tmp_path: Path) -> None:
    """``POST /library/plan`` with a lights folder: a N.I.N.A. light's ``READOUTM='Standard'`` maps through the config
    table, its unstated USB traffic comes from the driver's record, its overscan from the frame size."""
    from fastapi.testclient import TestClient

    from daemon.api.app import create_app
    from daemon.runtime import Runtime

    lights = tmp_path / "data" / "lights"
    write_frame(lights / "nina_0001.fits", np.zeros((368, 496)),
                header(READOUTM="Standard", GAIN=120, OFFSET=30, **{"SET-TEMP": -10.0}), bitpix16=True)
    cfg = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}, "camera_profile": PROFILE,
                                   "api": {"allowed_roots": [str(tmp_path / "data")]},
                                   "lights": {CAMERA: {"read_modes": {"Standard": 0}}}})
    runtime = Runtime(cfg, connect_camera=False, start_engine=False, warm_on_shutdown=False)
    runtime.index.record_camera_defaults(CAMERA, {**DRIVER, "usb_traffic": 42}, [])
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as client:
        r = client.post("/api/v1/library/plan", json={"lights_dir": str(lights), "include_bias": False})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert (item["key"]["read_mode"], item["key"]["usb_traffic"], item["key"]["overscan"]) == (0, 42, "include")


def test_a_light_naming_the_camera_otherwise_is_keyed_by_the_configured_names(index: LibraryIndex) -> None:
    """N.I.N.A. (ASCOM) writes INSTRUME = 'QHY163M' where Ekos writes the INDI device name: the config's ``names``
    key such a light to the library's camera, with its config and recorded driver state."""
    index.record_camera_defaults(CAMERA, DRIVER, ["Standard", "High Gain"])
    rule = LightRule(settings(**{CAMERA: LightCameraSettings(names=["qhy163m"], usb_traffic=50)}), index)
    info = rule.light_info(header(INSTRUME="QHY163M", READOUTM="High Gain"))
    assert info.key.camera == CAMERA
    assert (info.key.read_mode, info.key.usb_traffic, info.key.gain) == (1, 50, 120)
    assert info.sources["camera"] == f'config [lights."{CAMERA}"].names'
    # without the alias the same light stays its own camera: nothing recorded, the read-mode name unknown
    with pytest.raises(HeaderKeyError, match="READOUTM"):
        LightRule(settings(), index).light_info(header(INSTRUME="QHY163M", READOUTM="High Gain"))
    assert LightRule(settings(), index).light_info(header(INSTRUME="QHY163M")).key.camera == "QHY163M"
