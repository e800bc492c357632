"""Cloudy-night operation against real parts: one ``indiserver`` running our simulated camera *and* Debian's stock
``indi_simulator_weather``; the test plays the weather by setting the simulator's ``WEATHER_CONTROL.Precip`` (rain
above 0 mm/h puts ``WEATHER_STATUS.WEATHER_RAIN_HOUR`` in Alert) and refreshing it.

Rain (unsafe) → the build-library job captures; dry (safe) → it stops after the frame in progress and takes nothing
while the sky stays clear; rain again → it resumes and ends with exactly the planned frames.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits

from daemon.events import EventBus
from daemon.jobs.build_library import SKY_CLEAR_STEP
from daemon.jobs.engine import JobEngine
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import verify_library
from drivers.indi.client import IndiClient
from tests.conftest import SIM_DRIVER, requires, requires_sim_driver, sim_env
from tests.indi_server import IndiServer
from tests.integration.test_jobs_sim import (
    TIME_SCALE,
    frame_names,
    make_plan,
    open_camera,
    settings_for,
    wait_for,
)

WEATHER_DRIVER = "indi_simulator_weather"
WEATHER_DEVICE = "Weather Simulator"
FRAMES = 8
EXPOSURE_S = 240  # 0.8 s wall at time scale 300

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              requires_sim_driver, requires(WEATHER_DRIVER)]


class Weather:
    """The test's hand on the stock weather simulator (a separate INDI client, as a weather station would be)."""

    def __init__(self, port: int) -> None:
        self.client = IndiClient("127.0.0.1", port)
        self.client.open(10.0)
        connection = self.client.wait_property(WEATHER_DEVICE, "CONNECTION", 10.0)
        if not connection.values.get("CONNECT"):
            self.client.send_switch(WEATHER_DEVICE, "CONNECTION", ["CONNECT"])
        self.client.wait_property(WEATHER_DEVICE, "WEATHER_CONTROL", 10.0)

    def rain(self, mm_per_h: float) -> None:
        """Set the simulated rain and refresh; wait until WEATHER_STATUS reports it (Alert iff raining)."""
        want = "Alert" if mm_per_h > 0 else "Ok"
        before = self.client.send_number(WEATHER_DEVICE, "WEATHER_CONTROL", {"Precip": mm_per_h})
        self.client.send_switch(WEATHER_DEVICE, "WEATHER_REFRESH", ["REFRESH"])
        self.client.wait_update(WEATHER_DEVICE, "WEATHER_STATUS", before, 10.0,
                                lambda s: s.values.get("WEATHER_RAIN_HOUR") == want)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[JobEngine, LibraryIndex, Weather, int]]:
    server = IndiServer([SIM_DRIVER, WEATHER_DRIVER], env=sim_env(time_scale=TIME_SCALE),
                        log_path=tmp_path / "indiserver.log").start()
    try:
        settings = settings_for(tmp_path / "library", server.port)
        index = LibraryIndex.open(settings.library)
        camera = open_camera(server.port)
        weather = Weather(server.port)
        engine = JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
        try:
            yield engine, index, weather, server.port
        finally:
            engine.stop(timeout_s=30)
            weather.close()
            camera.disconnect()
            index.close()
    finally:
        server.stop()


def test_build_only_while_it_rains(rig: tuple[JobEngine, LibraryIndex, Weather, int]) -> None:
    engine, index, weather, port = rig
    weather.rain(5.0)  # unsafe: imaging impossible, build darks
    plan = make_plan(engine.settings, [{"kind": "dark", "exposure_s": EXPOSURE_S, "frames": FRAMES}])
    watch = {"device": WEATHER_DEVICE, "port": port, "hold_s": 0.3, "poll_s": 0.05}
    with engine.bus.subscribe() as sub:
        row = engine.submit("build-library", {"plan": plan.to_dict(), "weather": watch})
        wait_for(lambda: engine.get(row.id).progress_done >= 2, 60, "two frames while it rains")

        weather.rain(0.0)  # the sky clears
        cleared = time.monotonic()
        (entry,) = index.entries()
        at_clear = len(frame_names(index, entry.id))
        wait_for(lambda: engine.get(row.id).step == SKY_CLEAR_STEP, 5, "the job to yield the camera")
        yielded_s = time.monotonic() - cleared
        camera = engine.camera()
        wait_for(lambda: not camera.state().exposing, 3, "the camera to be idle")
        held = frame_names(index, entry.id)
        # the frame in progress is finished (not aborted); one more may start within the 0.3 s hold-off
        assert at_clear <= len(held) <= at_clear + 2 and len(held) < FRAMES, (at_clear, held)
        time.sleep(3.0)  # ~3 frame times with a clear sky: nothing is taken, the job keeps running
        assert frame_names(index, entry.id) == held
        assert not camera.state().exposing
        job = engine.get(row.id)
        assert job.state == "running" and job.step == SKY_CLEAR_STEP
        assert any(w.startswith(SKY_CLEAR_STEP) and "safe" in w for w in job.warnings)

        weather.rain(5.0)  # clouds/rain again: resume
        wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 60, "the job to end")
        events = []
        while (event := sub.get(timeout_s=0.2)) is not None:
            events.append(event)
    job = engine.get(row.id)
    assert job.state == "succeeded", job.error
    assert frame_names(index, entry.id) == [f"dark_{i:04d}.fits" for i in range(1, FRAMES + 1)]
    done = index.get(entry.id)
    assert done is not None and done.status == "ready" and done.frames == FRAMES and done.frames_rejected == 0
    assert job.progress_done == job.progress_total == FRAMES
    warnings = [e for e in events if e["type"] == "warning" and e["job_id"] == row.id]
    assert sum(SKY_CLEAR_STEP in e["message"] for e in warnings) == 1
    steps = [e["step"] for e in events if e["type"] == "job" and e["job_id"] == row.id]
    assert SKY_CLEAR_STEP in steps and steps.index(SKY_CLEAR_STEP) < len(steps) - 1
    assert yielded_s < 3.0
    assert verify_library(index).ok
    # the weather device's ambient temperature (the stock simulator's WEATHER_TEMPERATURE, 15 °C) is on every frame
    for name in frame_names(index, entry.id):
        assert fits.getheader(Path(done.frames_dir) / name)["AMBTEMP"] == 15.0


def test_unreachable_weather_device_fails_the_job(rig: tuple[JobEngine, LibraryIndex, Weather, int]) -> None:
    engine, index, _, port = rig
    plan = make_plan(engine.settings, [{"kind": "dark", "exposure_s": EXPOSURE_S, "frames": 2}])
    watch = {"device": "No Such Station", "port": port, "connect_timeout_s": 1.0}
    row = engine.submit("build-library", {"plan": plan.to_dict(), "weather": watch})
    wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 30, "the job to end")
    job = engine.get(row.id)
    assert job.state == "failed" and "cannot watch weather device 'No Such Station'" in (job.error or "")
    assert index.entries() == []  # nothing captured
