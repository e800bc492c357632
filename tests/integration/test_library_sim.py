"""The library loop on the real simulated camera: capture lights, plan from their headers, capture the planned bias and
dark into the library layout, record them, make masters, verify, and select the master for each light.

Real parts: indiserver running ``indi_darkd_sim_ccd`` (SMALL sensor, time scale 100), IndiCamera, capture_series.
The masters here are plain per-pixel medians (the CALIB engine's masters are exercised by the JOBS tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from calib.frames import read_frame, write_frame
from daemon.capture import SeriesRequest, capture_series
from daemon.library.catalog import LibraryIndex
from daemon.library.selection import select_for_light
from daemon.library.verify import verify_library
from daemon.planning import plan_from_lights
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from tests.conftest import SIM_DEVICE, SIM_DRIVER, requires_sim_driver, sim_env
from tests.indi_server import IndiServer

pytestmark = [pytest.mark.integration,
              requires_sim_driver]

PROFILE = load_profile("qhy163m-sim-small")
COOLING = CoolingSettings(tolerance_c=0.2, hold_s=1.0, timeout_s=60.0, unreachable_window_s=2.0,
                          reconnect_timeout_s=30.0, warm_up_at_end=False)
SETTINGS = CaptureSettings(gain=120, offset=30, binning=1, read_mode=0, amp_glow="auto", overscan=OverscanMode.INCLUDE)
SET_POINT_C = -10.0
LIGHT_EXPOSURE_S = 60.0



@pytest.fixture
def camera(tmp_path: Path) -> Iterator[object]:
    from drivers.indi.camera import IndiCamera

    server = IndiServer([SIM_DRIVER], env=sim_env(), log_path=tmp_path / "indiserver.log").start()
    cam = IndiCamera(port=server.port, profile=PROFILE, reconnect_timeout_s=30.0, sample_interval_s=0.2)
    try:
        cam.connect(20)
        yield cam
    finally:
        cam.disconnect()
        server.stop()


def median_master(paths: list[Path], out: Path, n_combine: int) -> Path:
    first = read_frame(paths[0])
    data = np.median([read_frame(p).data for p in paths], axis=0)
    header = first.header.copy()
    header["NCOMBINE"] = n_combine
    return write_frame(out, data, header)


def test_plan_capture_record_verify_select(camera, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lights_dir = tmp_path / "lights"
    capture_series(camera, SeriesRequest(FrameType.LIGHT, LIGHT_EXPOSURE_S, 2, SET_POINT_C, SETTINGS, "M42"),
                   lights_dir, cooling=COOLING)
    settings = Settings(library=LibrarySettings(root=tmp_path / "lib", frames_bias=3, frames_dark=3),
                        cooling=COOLING)
    with LibraryIndex(settings.library) as index:
        plan = plan_from_lights(lights_dir, index, settings, ambient_c=20.0,
                                max_cooling_delta_c=PROFILE.max_cooling_delta_c or 35.0)
        assert plan.errors == [] and plan.lights == 2
        work = plan.work()
        assert [(i.key.kind, i.key.exposure_s, i.key.set_point_c) for i in work] == [
            ("bias", 0.0, SET_POINT_C), ("dark", LIGHT_EXPOSURE_S, SET_POINT_C)]
        dark_key = work[1].key
        assert (dark_key.camera, dark_key.gain, dark_key.offset, dark_key.read_mode, dark_key.amp_glow,
                dark_key.overscan, dark_key.width_px, dark_key.height_px) == (
            SIM_DEVICE, 120, 30, 0, "auto", "include", 496, 368)

        for item in work:
            entry = index.upsert_entry(item.key, item.frames_target)
            index.set_status(entry.id, "capturing")
            frame_type = FrameType.BIAS if item.key.kind == "bias" else FrameType.DARK
            result = capture_series(camera, SeriesRequest(frame_type, item.key.exposure_s, item.frames_target,
                                                          item.key.set_point_c, item.key.capture_settings(),
                                                          item.key.kind), Path(entry.frames_dir), cooling=COOLING)
            index.record_frames(entry.id, result.frames + result.rejected)
            index.set_status(entry.id, "integrating")
            accepted = [r.path for r in result.frames]
            master = median_master(accepted, Path(entry.master_target), len(accepted))
            ready = index.set_master(entry.id, master, {"n_frames": len(accepted)})
            assert ready.status == "ready" and ready.frames == item.frames_target
            assert ready.temperature_mean_c is not None and abs(ready.temperature_mean_c - SET_POINT_C) <= 0.5

        report = verify_library(index)
        assert report.ok, report.to_text()
        assert report.frames >= 6 and report.masters == 2

        again = plan_from_lights(lights_dir, index, settings, ambient_c=20.0)
        assert again.work() == [] and {i.status for i in again.items} == {"ready"}
        lights = sorted(lights_dir.glob("M42_*.fits"))
        assert len(lights) == 2
        for light in lights:
            dark = select_for_light(index, light).require()
            bias = select_for_light(index, light, kind="bias").require()
            assert (dark.kind, dark.exposure_s, bias.kind) == ("dark", LIGHT_EXPOSURE_S, "bias")
