"""The status page rendered by headless Chromium against the real HTTP server (uvicorn in a thread) with a seeded
library, a running job and a cooling curve in the monitor's ring buffer: the DOM the page builds is checked, and the
screenshot is checked for the chart's and the badges' colours (and kept for people to look at)."""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.library.keys import LibraryKey
from daemon.planning import plan_from_keys
from daemon.runtime import Runtime
from daemon.settings import Settings
from drivers.camera import CameraState, OverscanMode
from tests.http_server import serve_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (Debian 'chromium')")]

CAMERA = "QHY CCD QHY163M-Sim"
SET_POINT_C, AMBIENT_C, TAU_S = -10.0, 20.0, 480.0
COLOURS = {"temperature": (0x4F, 0xC3, 0xF7), "power": (0xEF, 0x7A, 0x5A), "ready": (0x66, 0xBB, 0x6A),
           "missing": (0xEF, 0x53, 0x50)}


def key(kind: str, exposure_s: float) -> LibraryKey:
    return LibraryKey(camera=CAMERA, kind=kind, exposure_s=exposure_s, set_point_c=SET_POINT_C, gain=120,
                      offset=30, width_px=496, height_px=368)


def seed(runtime: Runtime) -> None:
    """Library: a ready bias and 60 s dark, a 120 s dark being captured, a plan that also needs a 300 s dark;
    a running job 7/20; 3 h of readings: Newtonian cooling from ambient to the set point (τ = 8 min)."""
    index = runtime.index
    for kind, exposure_s in (("bias", 0), ("dark", 60)):
        entry = index.upsert_entry(key(kind, exposure_s), frames_target=4)
        master = write_frame(Path(entry.directory) / "master.fits", np.full((8, 8), 1000, np.float32),
                             fits.Header())
        index.set_master(entry.id, master, {"mean_adu": 1000.0}, review=False)
    index.set_status(index.upsert_entry(key("dark", 120), frames_target=20).id, "capturing")
    runtime.last_plan = plan_from_keys([key("dark", k) for k in (60, 120, 300)], index, runtime.settings)
    job = runtime.queue.add_job("build-library", {}, camera=CAMERA, state="running")
    runtime.queue.update_job(job.id, progress_done=7, progress_total=20, step="dark 120 s: frame 8/20", eta_s=1500.0,
                             started_utc=datetime.now(UTC) - timedelta(minutes=30))
    rng = np.random.default_rng(3)
    start = datetime.now(UTC) - timedelta(hours=3)
    for i in range(0, 3 * 3600, 30):
        cooling_s = max(0.0, i - 1800.0)  # cooler switched on after 30 min
        temp = SET_POINT_C + (AMBIENT_C - SET_POINT_C) * math.exp(-cooling_s / TAU_S) if i >= 1800 else AMBIENT_C
        power = 0.0 if i < 1800 else min(100.0, 55.0 + 45.0 * math.exp(-cooling_s / (2 * TAU_S)))
        runtime.samples.append({"time": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                                "temperature_c": round(temp + rng.normal(0, 0.05), 3),
                                "set_point_c": SET_POINT_C if i >= 1800 else None,
                                "cooler_power_pct": round(max(0.0, power + rng.normal(0, 1.0)), 1)})
    runtime._record(CameraState(connected=True, device=CAMERA, temperature_c=-10.02, set_point_c=SET_POINT_C,
                                cooler_on=True, cooler_power_pct=56.0, stable=True, gain=120, offset=30, binning=1,
                                read_mode=0, overscan=OverscanMode.INCLUDE, exposing=True, exposure_remaining_s=42.0))


def serve(runtime: Runtime) -> contextlib.AbstractContextManager[str]:
    return serve_app(create_app(runtime), start_timeout_s=20, stop_timeout_s=30)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=8000", "--window-size=1200,1300", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("status")
    settings = Settings.model_validate({"library": {"root": str(tmp / "library")}})
    runtime = Runtime(settings, connect_camera=False, start_engine=False, monitor_interval_s=30.0)
    runtime.start()
    try:
        seed(runtime)
        with serve(runtime) as base:
            assert httpx.get(f"{base}/api/v1/status").status_code == 200
            dom = chromium("--dump-dom", f"{base}/").stdout
            shot = tmp / "status.png"
            chromium(f"--screenshot={shot}", f"{base}/")
    finally:
        runtime.stop()
    keep = Path("/tmp/darkd-status-page.png")  # for a person to look at after the run
    with contextlib.suppress(OSError):
        shutil.copy(shot, keep)
    return dom, shot


def test_page_builds_job_and_coverage(rendered: tuple[str, Path]) -> None:
    dom, _ = rendered
    assert "#1 build-library — running" in dom
    assert "7/20 frames (35 %)" in dom and "dark 120 s: frame 8/20" in dom
    assert dom.count('class="badge ready"') == 2
    assert dom.count('class="badge in-progress"') == 1
    assert dom.count('class="badge missing"') == 1  # the 300 s dark of the plan
    assert dom.count(f"<tr><td>{CAMERA}</td><td>") == 4  # each coverage row names its camera (a fleet shares one index)
    assert "QHY CCD QHY163M-Sim: -10.02 °C → -10.0 °C, cooler 56 %, stable, exposing" in dom
    assert "(last 6 h, 361 readings)" in dom  # 360 seeded + the current snapshot
    assert 'class="temp"' in dom and 'class="power"' in dom
    assert "cannot load status" not in dom


def test_screenshot_shows_chart_and_badges(rendered: tuple[str, Path]) -> None:
    from PIL import Image

    _, shot = rendered
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (1300, 1200)

    def pixels(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(image - np.array(rgb)).sum(axis=2) < 40).sum())

    assert pixels(COLOURS["temperature"]) > 500  # the temperature curve
    assert pixels(COLOURS["power"]) > 300  # the cooler power curve
    assert pixels(COLOURS["ready"]) > 100  # ready badges and the progress bar
    assert pixels(COLOURS["missing"]) > 50  # the missing badge


def test_several_cameras_each_get_their_own_chart(tmp_path: Path) -> None:
    """With two configured cameras the page draws one chart per camera from that camera's own readings
    (``histories`` of ``GET /api/v1/status``), each captioned with its id, device and number of readings."""
    settings = Settings.model_validate({
        "library": {"root": str(tmp_path / "library")},
        "cameras": [{"id": "main", "device": CAMERA, "port": 7624}, {"id": "guide", "device": "ZWO CCD ASI120MM Mini",
                                                                     "port": 7625}]})
    runtime = Runtime(settings, connect_camera=False, start_engine=False, monitor_interval_s=30.0)
    runtime.start()
    try:
        start = datetime.now(UTC) - timedelta(hours=2)
        for camera_id, readings, temperature_c in (("main", 120, -10.0), ("guide", 45, 5.0)):
            for i in range(readings):
                runtime.cameras[camera_id].samples.append({
                    "time": (start + timedelta(seconds=60 * i)).isoformat().replace("+00:00", "Z"),
                    "temperature_c": temperature_c + 0.1 * math.sin(i / 5), "set_point_c": temperature_c,
                    "cooler_power_pct": 40.0 + 10 * math.cos(i / 7)})
        with serve(runtime) as base:
            status = httpx.get(f"{base}/api/v1/status").json()
            assert list(status["histories"]) == ["main", "guide"]
            assert [len(status["histories"][c]) for c in ("main", "guide")] == [120, 45]
            assert status["samples"] == status["histories"]["main"]
            dom = chromium("--dump-dom", f"{base}/").stdout
            shot = tmp_path / "status.png"
            chromium(f"--screenshot={shot}", f"{base}/")
    finally:
        runtime.stop()
    with contextlib.suppress(OSError):
        shutil.copy(shot, "/tmp/darkd-status-page-cameras.png")  # for a person to look at after the run
    assert "cannot load status" not in dom
    assert 'data-camera="main"' in dom and 'data-camera="guide"' in dom
    assert f"main · {CAMERA} (120 readings)" in dom and "guide · ZWO CCD ASI120MM Mini (45 readings)" in dom
    assert 'id="chart"' in dom and 'id="chart-guide"' in dom
    assert dom.count('class="temp"') == 2 and dom.count('class="power"') == 2
    assert "(last 6 h, 2 cameras)" in dom
