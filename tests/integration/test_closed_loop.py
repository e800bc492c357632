"""Issue 18 part 1 "Done when": a watched folder receives lights at two exposures from a separate process; the first
is calibrated at once (its master exists), the second's darks are built in the next window in which the camera cannot
image, and then it is calibrated — without a person, each output's header naming its master (CALDARK, DARKSHA).

Real parts: the watcher (:class:`daemon.watch.ClosedLoop`, inotify through watchdog), the job engine
(``build-library``), the SQLite index with the standing plan, the light rule, the selection rule and the calibration;
the camera is the in-process :class:`drivers.sim.inprocess.SimCamera` (simulated time: exposures cost nothing) and
integration runs in a thread (:class:`tests.engines.InThreadEngine`). The lights are written by a subprocess in slow
chunks, pausing longer than the completeness interval, so a half-written light sits still on disk and only the FITS
check keeps it from being taken.

"The camera cannot image" comes two ways: the stock INDI weather simulator (``indi_simulator_weather`` in a real
``indiserver``; the test makes it rain, the watcher's weather gate sees the sky closed and the build job gets the same
device), and the ``build_window`` (22:00-05:00 local) with the watcher's clock set by the test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from sqlalchemy import select

from daemon.capture import SeriesRequest, capture_series
from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.models import WatchKey, WatchLight
from daemon.light_rule import record_driver_defaults
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, LibrarySettings, Settings, WatchSettings
from daemon.watch import ClosedLoop
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.conftest import SIM_DEVICE, requires
from tests.engines import InThreadEngine, wait_for
from tests.indi_server import IndiServer
from tests.integration.test_weather_sim import WEATHER_DEVICE, WEATHER_DRIVER, Weather

PROFILE = "qhy163m-sim-small"
SET_POINT_C = -10.0
READY_S, MISSING_S = 60.0, 30.0
COOLING = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, unreachable_window_s=120.0,
                          warm_up_at_end=False)
#: the "separate process": copies each light in 5 chunks, pausing longer than the completeness interval between them
WRITER = """
import sys, time
chunks, pause_s = 5, float(sys.argv[1])
for src, dst in zip(sys.argv[2::2], sys.argv[3::2]):
    data = open(src, "rb").read()
    step = -(-len(data) // chunks)
    with open(dst, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step]); fh.flush()
            time.sleep(pause_s)
"""



@pytest.mark.integration
@requires("indiserver", WEATHER_DRIVER)
def test_missing_darks_are_built_when_the_weather_simulator_says_the_sky_is_closed(tmp_path: Path) -> None:
    server = IndiServer([WEATHER_DRIVER], log_path=tmp_path / "indiserver.log").start()
    try:
        weather = Weather(server.port)
        try:
            weather.rain(5.0)
            weather.rain(0.0)  # a clear sky (status Ok, not just unknown): the camera may image, nothing is built
            closed_loop(tmp_path, {"weather": {"device": WEATHER_DEVICE, "port": server.port, "hold_s": 0.0,
                                               "poll_s": 0.05}},
                        close_sky=lambda _now: weather.rain(5.0))
        finally:
            weather.close()
    finally:
        server.stop()


def test_missing_darks_are_built_in_the_build_window(tmp_path: Path) -> None:
    def night(now: list[datetime]) -> None:
        now[0] = datetime(2026, 12, 2, 23, 0).astimezone()

    closed_loop(tmp_path, {"build_window": "22:00-05:00", "cosmetic": True}, close_sky=night)


def closed_loop(tmp_path: Path, when: dict[str, Any], close_sky: Callable[[list[datetime]], None]) -> None:
    """The scenario of the module docstring; ``close_sky(now)`` makes the camera unable to image (``now``: the
    watcher's local clock, a one-element list)."""
    lights = tmp_path / "lights"
    settings = Settings(camera_profile=PROFILE, cooling=COOLING,
                        library=LibrarySettings(root=tmp_path / "library", frames_bias=3, frames_dark=3),
                        watch=WatchSettings(folders=[lights], interval_s=0.2, ambient_c=20.0, **when))
    camera = SimCamera(clock=ManualClock(start_utc=datetime.now(UTC)), profile=load_profile(PROFILE))
    index = LibraryIndex.open(settings.library)
    bus = EventBus()
    events = bus.subscribe(maxsize=100_000)
    engine = InThreadEngine(settings, index, lambda: camera, bus, poll_s=0.02).start()
    local_now = [datetime(2026, 12, 2, 12, 0).astimezone()]  # noon: outside the build window
    loop = None
    try:
        caps = camera.connect()
        record_driver_defaults(index, caps, camera.state())
        key = {"camera": SIM_DEVICE, "set_point_c": SET_POINT_C, "gain": 120, "offset": 30, "overscan": "include",
               "kind": "dark"}
        job = engine.submit("build-library", {"plan": plan_from_keys([{**key, "exposure_s": READY_S}], None, settings,
                                                                     readout_s=1.0).to_dict()})
        wait_for(lambda: engine.get(job.id).state in FINAL_STATES, 60, "the first dark", poll_s=0.02)
        assert engine.get(job.id).state == "succeeded", engine.get(job.id).error
        user = CaptureSettings(gain=120, offset=30, overscan=OverscanMode.INCLUDE)
        shots = [capture_series(camera, SeriesRequest(FrameType.LIGHT, exposure_s, 1, SET_POINT_C, user, "light"),
                                tmp_path / f"shot{exposure_s:g}", cooling=COOLING).frames[0].path
                 for exposure_s in (READY_S, MISSING_S)]

        loop = ClosedLoop(settings, index, engine, bus, clock=lambda: local_now[0]).start()
        light_ready, light_missing = lights / "M42_60s_0001.fits", lights / "night2" / "M42_30s_0001.fits"
        light_missing.parent.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", WRITER, "0.3", str(shots[0]), str(light_ready), str(shots[1]),
                        str(light_missing)], check=True, timeout=30)

        def lights_by_path() -> dict[str, WatchLight]:
            with index.read_session() as s:
                return {row.path: row for row in s.scalars(select(WatchLight))}

        wait_for(lambda: len(lights_by_path()) == 2, 20, "both lights taken", poll_s=0.02)
        taken = lights_by_path()
        assert taken[str(light_ready)].status == "calibrated", taken[str(light_ready)].reason
        assert taken[str(light_missing)].status == "waiting"
        (first_dark,) = index.entries(kind="dark", status="ready")
        out_ready = Path(taken[str(light_ready)].output or "")
        assert out_ready.parent == lights / "calibrated"
        header = fits.getheader(out_ready)
        assert header["CALDARK"] == Path(first_dark.master or "").name and header["DARKSHA"] == first_dark.master_sha256
        assert header["EXPTIME"] == READY_S
        # [watch] cosmetic: the master's defect-map pixels replaced, and counted
        assert ("COSMETIC" in header) == bool(when.get("cosmetic")) and header.get("COSMETIC", 1) > 0

        # while the camera may image nothing is built; the standing plan (in the index) holds the missing key
        with index.read_session() as s:
            (standing,) = s.scalars(select(WatchKey))
        assert standing.status == "missing" and f"{MISSING_S:g}s" in standing.slug
        loop.tick()
        assert [j.kind for j in engine.list()] == ["build-library"]
        status = loop.status()
        assert [w["path"] for w in status["waiting"]] == [str(light_missing)]
        assert status["estimate_s"]["capture_s"] == 3 * (MISSING_S + settings.watch.readout_s)

        # the camera cannot image now, so the standing plan is built; then the waiting light is calibrated
        close_sky(local_now)
        wait_for(lambda: lights_by_path()[str(light_missing)].status == "calibrated", 60, "the second light",
                 poll_s=0.02)
        builds = [j for j in engine.list() if j.kind == "build-library"]
        assert len(builds) == 2 and all(j.state == "succeeded" for j in builds)
        if "weather" in when:  # the build watches the same device: it yields the camera if the sky opens
            assert builds[1].params["weather"]["device"] == when["weather"]["device"]
        else:
            assert "weather" not in builds[1].params
        second_dark = next(e for e in index.entries(kind="dark", status="ready") if e.exposure_s == MISSING_S)
        header = fits.getheader(lights_by_path()[str(light_missing)].output or "")
        assert header["DARKSHA"] == second_dark.master_sha256 and header["EXPTIME"] == MISSING_S
        assert Path(lights_by_path()[str(light_missing)].output or "").parent == lights / "calibrated" / "night2"
        loop.tick()  # nothing left: no third build, nothing waiting
        assert len([j for j in engine.list() if j.kind == "build-library"]) == 2
        assert loop.status()["waiting"] == [] and loop.status()["missing_keys"] == []
        assert loop.status()["calibrated"] == 2
        seen = []
        while (event := events.get(timeout_s=0)) is not None:
            if event["type"] == "watch":
                seen.append((event["action"], event.get("path")))
        assert seen == [("calibrated", str(light_ready)), ("waiting", str(light_missing)), ("build-submitted", None),
                        ("built", None), ("calibrated", str(light_missing))]
    finally:
        if loop is not None:
            loop.stop()
        events.close()
        engine.stop(timeout_s=10)
        index.close()
