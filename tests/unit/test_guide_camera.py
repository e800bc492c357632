"""Uncooled guide cameras (issue 17): a build-library job on a camera without a cooler, then its PHD2 dark library.

Real parts: the job engine (integration in a thread, :class:`tests.engines.InThreadEngine`), ``capture_series``,
``calib.masters``, the SQLite index and ``darkd library export-phd2``; the camera is the in-process simulated camera
with ``has_cooler=False`` (no cooler, no cooler power, a sensor at ambient, no ``CCD-TEMP`` in its frames, as an INDI
driver without a cooler writes them).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits

from calib.export_phd2 import read_dark_library
from daemon.cli import main
from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.selection import refusal
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.camera import SettingNotApplied
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.engines import InThreadEngine

PROFILE = "qhy163m-sim-small"
DEVICE = "ZWO CCD ASI120MM Mini"
AMBIENT_C = 18.0
KEY = {"camera": DEVICE, "kind": "dark", "set_point_c": AMBIENT_C, "gain": 120, "offset": 30, "binning": 1,
       "read_mode": 0, "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496,
       "height_px": 368}
GUIDE_EXPOSURES_S = (1.0, 0.5)


def test_the_simulator_can_be_a_camera_without_a_cooler() -> None:
    camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE), device=DEVICE, has_cooler=False,
                       ambient_c=AMBIENT_C)
    caps = camera.connect()
    assert not caps.has_cooler and not caps.has_cooler_power and not caps.has_temp_ramp
    state = camera.state()
    assert state.cooler_power_pct is None and state.cooler_on is None and state.set_point_c is None
    assert state.temperature_c is not None and abs(state.temperature_c - AMBIENT_C) < 1.0  # follows ambient
    with pytest.raises(SettingNotApplied, match="no cooler"):
        camera.set_temperature(-10.0)


def test_an_uncooled_guide_camera_builds_darks_and_exports_them_for_phd2(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, warm_up_at_end=False)
    settings = Settings(camera_profile=PROFILE, cooling=cooling,
                        library=LibrarySettings(root=tmp_path / "library", frames_dark=3))
    index = LibraryIndex.open(settings.library)
    camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE), device=DEVICE, has_cooler=False,
                       ambient_c=AMBIENT_C)
    engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.02).start()
    try:
        plan = plan_from_keys([{**KEY, "exposure_s": s} for s in GUIDE_EXPOSURES_S], None, settings,
                              ambient_c=None, readout_s=1.0)
        job_id = engine.submit("build-library", {"plan": plan.to_dict()}).id
        deadline = time.monotonic() + 60
        while engine.get(job_id).state not in FINAL_STATES:
            assert time.monotonic() < deadline, "the build-library job did not end"
            time.sleep(0.02)
        assert engine.get(job_id).state == "succeeded", engine.get(job_id).error
        entries = index.entries(camera=DEVICE, kind="dark")
        assert sorted(e.exposure_s for e in entries) == [0.5, 1.0]
        assert all(e.status == "ready" and e.set_point_c == AMBIENT_C for e in entries)
        # never cooled: the plan's set point is recorded in the key but not enforced; the entry's temperature is
        # the measured mean of its frames (the sensor at ambient), and selection's tolerance compares that one
        assert not camera.cooler.cooler_on and camera.state().set_point_c is None
        now = datetime.now(UTC)
        for entry in entries:
            assert entry.temperature_mean_c is not None and abs(entry.temperature_mean_c - AMBIENT_C) < 0.5
            assert entry.master is not None and "CCD-TEMP" not in fits.getheader(entry.master)
            assert refusal(entry.key, entry, light_temperature_c=None, light_time=now, tolerance_c=0.5,
                           validity_days=30) is None
            warmer = refusal(entry.key, entry, light_temperature_c=AMBIENT_C + 3, light_time=now, tolerance_c=0.5,
                             validity_days=30)
            assert warmer is not None and warmer.startswith(f"temperature {entry.temperature_mean_c:.2f} °C")
    finally:
        engine.stop(timeout_s=10)
        index.close()
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{settings.library.root}"\n', encoding="utf-8")
    out = tmp_path / "phd2"
    assert main(["library", "export-phd2", "--config", str(config), "--camera", DEVICE, "--profile", "2",
                 "--out", str(out)]) == 0
    assert "2 dark(s), 496x368 px, exposures 0.5, 1 s" in capsys.readouterr().out
    assert [d.exposure_ms for d in read_dark_library(out / "PHD2_dark_lib_2.fit")] == [500, 1000]
