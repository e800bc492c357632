"""Every vendor vocabulary end to end through the real indiserver: the simulated twin of each driver
(``DARKD_SIM_VENDOR``), darkd's vendor adapter chosen by ``DRIVER_EXEC`` and a profile it detects itself.

For each twin: a light is captured (as a light with the vendor's own header keywords), ``plan_from_lights`` plans its
dark, a ``build-library`` job cools, captures and integrates it, the usable-master rule selects it for the light, and
the light is calibrated with it (master integration in a thread: the worker process is tested in ``test_jobs_sim``).
Plus Debian's stock ``indi_simulator_ccd`` with a warm-up ramp request outside the
range its driver advertises (clamped, never refused).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from calib.calibration import calibrate_files
from calib.frames import read_frame
from calib.sections import Section
from daemon.capture import SeriesRequest, capture_series
from daemon.events import EventBus
from daemon.indiserver import LocalIndiServer
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.selection import select_for_light
from daemon.planning import plan_from_lights
from daemon.settings import CoolingSettings, IndiSettings, LibrarySettings, Settings
from drivers.camera import Camera, CaptureSettings, FrameType
from drivers.factory import open_indi_camera
from tests.conftest import requires_indi, requires_sim_driver, sim_env
from tests.engines import InThreadEngine
from tests.indi_server import IndiServer
from tests.integration.test_jobs_sim import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_sim_driver]

SET_POINT_C = -5.0
EXPOSURE_S = 20.0


@dataclass(frozen=True)
class Twin:
    """What the light is taken with on one vendor's twin: only the settings that driver offers."""

    vendor: str
    settings: CaptureSettings
    driver_exec: str


TWINS = [
    Twin("qhy", CaptureSettings(gain=120, offset=30), "indi_qhy_ccd"),
    Twin("asi", CaptureSettings(gain=139, offset=21), "indi_asi_ccd"),
    Twin("playerone", CaptureSettings(gain=120, offset=12), "indi_playerone_ccd"),
    Twin("toupcam", CaptureSettings(gain=100, offset=30), "indi_toupcam_ccd"),
    Twin("svbony", CaptureSettings(gain=120, offset=30), "indi_svbony_ccd"),
    Twin("atik", CaptureSettings(gain=30, offset=100), "indi_atik_ccd"),
    Twin("mi", CaptureSettings(gain=0), "indi_mi_ccd"),
    Twin("fli", CaptureSettings(), "indi_fli_ccd"),
]


def settings_for(root: Path, port: int, warm_up_target_c: float = 10.0) -> Settings:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=1.0, timeout_s=120.0, unreachable_window_s=5.0,
                              reconnect_timeout_s=30.0, warm_up_at_end=True, warm_up_target_c=warm_up_target_c,
                              warm_up_rate_c_per_min=60.0)
    return Settings(camera_profile="auto", indi=IndiSettings(port=port, connect_timeout_s=20.0), cooling=cooling,
                    library=LibrarySettings(root=root, frames_bias=3, frames_dark=3))


@pytest.fixture
def twin_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Twin, LocalIndiServer]]:
    twin: Twin = request.param
    with LocalIndiServer(env=sim_env(vendor=twin.vendor, time_scale=300), log_path=tmp_path / "indiserver.log") as srv:
        yield twin, srv


def take_light(camera: Camera, twin: Twin, lights: Path) -> Path:
    """One light at the set point with the twin's settings, written by the capture pipeline."""
    request = SeriesRequest(FrameType.LIGHT, EXPOSURE_S, 1, set_point_c=SET_POINT_C, settings=twin.settings,
                            name_prefix="light")
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=1.0, timeout_s=120.0, unreachable_window_s=5.0)
    (record,) = capture_series(camera, request, lights, cooling=cooling).frames
    return record.path


#: the twins whose read mode is a one-of-many switch, and its labels (the others' read mode, if any, is a number)
READ_MODE_LABELS = {"mi": ("Photo", "Fast"), "playerone": ("Normal", "LowNoise"), "fli": ("2.0 MHz", "8.0 MHz")}


@pytest.mark.parametrize("twin_server", TWINS, ids=[t.vendor for t in TWINS], indirect=True)
def test_build_select_and_calibrate_on_every_vendor_vocabulary(twin_server: tuple[Twin, LocalIndiServer],
                                                               tmp_path: Path) -> None:
    twin, server = twin_server
    settings = settings_for(tmp_path / "library", server.port)
    camera = open_indi_camera("127.0.0.1", server.port, profile=None, reconnect_timeout_s=30.0)  # detected
    caps = camera.connect(20.0)
    assert caps.driver_exec == twin.driver_exec and caps.adapter
    assert caps.profile  # a profile was detected (or the generic one), never a failure
    # read-mode names for lights' READOUTM: the labels of a read-mode switch (drivers/sim/vendors.py), else none
    assert caps.read_mode_labels == READ_MODE_LABELS.get(twin.vendor, ())
    light = take_light(camera, twin, tmp_path / "lights")

    index = LibraryIndex.open(settings.library)
    engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
    try:
        plan = plan_from_lights(tmp_path / "lights", index, settings, include_bias=False, ambient_c=20.0,
                                readout_s=1.0)
        assert not plan.errors, plan.errors
        (item,) = plan.work()
        assert item.key.kind == "dark" and item.key.exposure_s == EXPOSURE_S
        row = engine.submit("build-library", {"plan": plan.to_dict()})
        wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 240, "the build-library job to end")
        job = engine.get(row.id)
        assert job.state == "succeeded", job.error
        master = select_for_light(index, light).require()
        assert master.status == "ready" and master.frames == 3
        (calibrated,) = calibrate_files([light], dark=master.master, output_dir=tmp_path / "calibrated")
    finally:
        engine.stop(timeout_s=30)
        index.close()
    state = camera.state()
    camera.disconnect()
    out = read_frame(calibrated)
    raw = read_frame(light)
    data_area = Section.parse(raw.header["DATASEC"]).shape if "DATASEC" in raw.header else raw.data.shape
    assert out.data.shape == data_area and np.isfinite(out.data).all()  # calibrate cuts to DATASEC by default
    assert abs(float(np.median(out.data))) < abs(float(np.median(raw.data)))  # the dark's pedestal came off
    assert state.temperature_c is not None and state.temperature_c >= 9.0  # warmed up at the end


@requires_indi
def test_stock_ccd_simulator_builds_with_a_ramp_outside_its_range(tmp_path: Path) -> None:
    """Debian's stock CCD Simulator advertises RAMP_SLOPE 0..30 °C/min: a 60 °C/min warm-up is clamped, not refused."""
    server = IndiServer(["indi_simulator_ccd"], log_path=tmp_path / "indiserver.log").start()
    try:
        # the stock simulator warms in real time at the clamped 30 °C/min: a short warm-up keeps the test short
        settings = settings_for(tmp_path / "library", server.port, warm_up_target_c=2.0)
        camera = open_indi_camera("127.0.0.1", server.port, profile=None, reconnect_timeout_s=20.0)
        camera.connect(15.0)
        twin = Twin("stock", CaptureSettings(gain=40), "indi_simulator_ccd")
        request = SeriesRequest(FrameType.LIGHT, 1.0, 1, set_point_c=0.0, settings=twin.settings, name_prefix="light")
        cooling = CoolingSettings(tolerance_c=0.3, hold_s=0.5, timeout_s=60.0, unreachable_window_s=5.0)
        (light,) = capture_series(camera, request, tmp_path / "lights", cooling=cooling).frames
        index = LibraryIndex.open(settings.library)
        engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
        try:
            plan = plan_from_lights(tmp_path / "lights", index, settings, include_bias=False, ambient_c=20.0,
                                    readout_s=1.0)
            assert not plan.errors, plan.errors
            row = engine.submit("build-library", {"plan": plan.to_dict()})
            wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 180, "the build-library job to end")
            job = engine.get(row.id)
            assert job.state == "succeeded", job.error
            assert select_for_light(index, light.path).require().status == "ready"
            assert not [w for w in (job.warnings or []) if "warm-up" in w], job.warnings  # not refused: clamped
        finally:
            engine.stop(timeout_s=30)
            index.close()
        state = camera.state()
        camera.disconnect()
        assert state.temperature_c is not None and state.temperature_c >= 1.5  # warmed up to 2 °C at the end
        ramp = subprocess.run(["indi_getprop", "-p", str(server.port), "-t", "2",
                               "CCD Simulator.CCD_TEMP_RAMP.RAMP_SLOPE"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        assert ramp.endswith("=30"), ramp  # 60 °C/min asked, clamped to the driver's maximum (it ignores 60)
    finally:
        server.stop()


@pytest.mark.parametrize("twin_server", [TWINS[1]], ids=["asi"], indirect=True)
def test_darkd_capture_on_a_twin_without_naming_a_profile(twin_server: tuple[Twin, LocalIndiServer],
                                                          tmp_path: Path) -> None:
    """A newcomer's first command on a ZWO camera: no --profile, no config; the adapter and profile are detected."""
    _twin, server = twin_server
    darkd = str(Path(sys.executable).parent / "darkd")
    env = {**os.environ, "DARKD_CONFIG": str(tmp_path / "absent.toml")}
    status = subprocess.run([darkd, "camera", "status", "--json", "--port", str(server.port)], capture_output=True,
                            text=True, timeout=60, check=False, env=env)
    assert status.returncode == 0, status.stderr
    caps = json.loads(status.stdout)["capabilities"]
    assert caps["driver_exec"] == "indi_asi_ccd" and caps["adapter"] == "asi"
    assert caps["profile"]  # the twin is an ASI1600MM Pro with a small sensor: no shipped profile fits, generic one
    out = tmp_path / "darks"
    run = subprocess.run([darkd, "capture", "--type", "dark", "--exposure", "10", "--count", "2", "--temperature", "-5",
                          "--gain", "139", "--offset", "21", "--out", str(out), "--hold", "1", "--no-warm-up",
                          "--port", str(server.port)], capture_output=True, text=True, timeout=120, check=False,
                         env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("2/2 frames")
    assert len(list(out.glob("*.fits"))) == 2
