"""The real HTTP server (``darkd serve`` in a subprocess) against the real indiserver + simulated QHY163M (SMALL
sensor, time scale 100): readiness, the camera snapshot, live SSE temperature events, metrics, bearer tokens over
HTTP, and a capture job started, followed (SSE job/frame events) and cancelled through the API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.jobs.queue import JobQueue
from tests.conftest import SIM_DEVICE
from tests.indi_server import IndiServer, free_port

pytestmark = pytest.mark.integration

DARKD = Path(sys.executable).parent / "darkd"
READ, CONTROL = "it-read-token", "it-control-token"
AMBIENT_C = 20.0  # tests/conftest.py sim_env: DARKD_SIM_AMBIENT_C
KEY = {"camera": SIM_DEVICE, "set_point_c": -5.0, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0,
       "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496, "height_px": 368}


def write_config(tmp_path: Path, indi_port: int, api_port: int, *, warm_up: bool = False) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    config = tmp_path / "darkd.toml"
    config.write_text(f"""camera_profile = "qhy163m-sim-small"
[indi]
port = {indi_port}
connect_timeout_s = 20.0
[cooling]
tolerance_c = 0.3
hold_s = 1.0
timeout_s = 120.0
unreachable_window_s = 5.0
reconnect_timeout_s = 30.0
warm_up_at_end = {"true" if warm_up else "false"}
warm_up_target_c = 15.0
warm_up_rate_c_per_min = 5.0
[library]
root = "{tmp_path / 'library'}"
frames_bias = 4
frames_dark = 4
[api]
port = {api_port}
read_tokens = ["{READ}"]
control_tokens = ["{CONTROL}"]
allowed_roots = ["{data}"]
""")
    return config


@contextlib.contextmanager
def darkd_serve(tmp_path: Path, indi_port: int, *, warm_up: bool = False) -> Iterator[str]:
    """``darkd serve`` on a free port; yields the base URL once ``/health`` answers; SIGTERM and wait at the end."""
    port = free_port()
    config = write_config(tmp_path, indi_port, port, warm_up=warm_up)
    log = (tmp_path / "darkd.log").open("wb")
    proc = subprocess.Popen([str(DARKD), "serve", "--config", str(config)], stdout=log, stderr=log,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "darkd.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "darkd serve did not answer /health within 30 s"
            time.sleep(0.1)
        yield base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(base: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{base}/ready", timeout=5)
        if r.status_code == 200:
            return dict(r.json())
        assert time.monotonic() < deadline, f"not ready within {timeout_s} s: {r.text}"
        time.sleep(0.2)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sse_events(base: str, query: str, *, timeout_s: float = 60) -> Iterator[dict[str, Any]]:
    with httpx.stream("GET", f"{base}/api/v1/events?{query}", headers=auth(READ),
                      timeout=httpx.Timeout(timeout_s, connect=5)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} missing from /metrics"
    return values[0]


def test_server_on_the_simulated_camera(sim_server: IndiServer, tmp_path: Path) -> None:
    with darkd_serve(tmp_path, sim_server.port) as base:
        ready = wait_ready(base)
        assert ready["checks"] == {"indi": True, "database": True, "index_writable": True, "library_writable": True,
                                   "library_space": True, "job_engine": True}

        assert httpx.get(f"{base}/api/v1/camera").status_code == 401
        cam = httpx.get(f"{base}/api/v1/camera", headers=auth(READ)).json()
        assert cam["connected"] and cam["device"] == SIM_DEVICE
        assert abs(cam["temperature_c"] - AMBIENT_C) < 3.0  # cooler off: the sensor sits at ambient
        assert cam["age_s"] < 5 and cam["overscan"] in ("include", "ignore")

        started = time.monotonic()
        temps = []
        for event in sse_events(base, "types=temperature&limit=2"):
            temps.append(event)
        assert [e["type"] for e in temps] == ["temperature", "temperature"]
        assert all(abs(e["temperature_c"] - AMBIENT_C) < 3.0 for e in temps)
        assert temps[0]["time"] < temps[1]["time"] and time.monotonic() - started < 10

        text = httpx.get(f"{base}/metrics", headers=auth(READ)).text
        assert metric(text, f'darkd_camera_connected{{camera="{SIM_DEVICE}"}}') == 1.0
        assert abs(metric(text, f'darkd_sensor_temperature_celsius{{camera="{SIM_DEVICE}"}}') - AMBIENT_C) < 3.0
        assert 'darkd_library_entries{status="ready"} 0.0' in text

        status = httpx.get(f"{base}/api/v1/status", headers=auth(READ)).json()
        assert len(status["samples"]) >= 2 and status["camera"]["connected"]
        assert httpx.get(f"{base}/api/v1/openapi.json").json()["info"]["title"] == "darkd"


def test_capture_job_through_the_api(sim_server: IndiServer, tmp_path: Path) -> None:
    """Plan → POST /jobs → frame events over SSE → cancel → the job ends cancelled, with fewer frames than planned."""
    with darkd_serve(tmp_path, sim_server.port) as base:
        wait_ready(base)
        plan = httpx.post(f"{base}/api/v1/library/plan", headers=auth(READ), timeout=30,
                          json={"keys": [{**KEY, "kind": "dark", "exposure_s": 200, "frames": 20}],
                                "include_bias": False, "ambient_c": AMBIENT_C}).json()
        assert plan["total_frames"] == 20
        events: list[dict[str, Any]] = []
        subscribed = threading.Event()

        def follow() -> None:
            stream = sse_events(base, "types=job,frame,temperature", timeout_s=120)
            for event in stream:
                subscribed.set()
                events.append(event)
                if event["type"] == "job" and event["state"] in ("succeeded", "failed", "cancelled"):
                    return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert subscribed.wait(15), "no event on the SSE stream within 15 s"  # the monitor's temperature events
        r = httpx.post(f"{base}/api/v1/jobs", headers=auth(READ), json={"kind": "build-library",
                                                                        "params": {"plan": plan}})
        assert r.status_code == 403
        r = httpx.post(f"{base}/api/v1/jobs", headers=auth(CONTROL), json={"kind": "build-library",
                                                                           "params": {"plan": plan}}, timeout=30)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        again = httpx.post(f"{base}/api/v1/jobs", headers=auth(CONTROL), timeout=30,
                           json={"kind": "build-library", "params": {"plan": plan}})
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_conflict"

        deadline = time.monotonic() + 120
        while not any(e["type"] == "frame" for e in events):
            assert time.monotonic() < deadline, f"no frame event within 120 s: {events[-5:]}"
            time.sleep(0.1)
        cam = httpx.get(f"{base}/api/v1/camera", headers=auth(READ)).json()
        assert abs(cam["temperature_c"] - KEY["set_point_c"]) < 1.0 and cam["set_point_c"] == KEY["set_point_c"]
        r = httpx.post(f"{base}/api/v1/jobs/{job_id}/cancel", headers=auth(CONTROL), timeout=30)
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        follower.join(timeout=60)
        assert not follower.is_alive()
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=auth(READ)).json()
        assert job["state"] == "cancelled"
        frames = [e for e in events if e["type"] == "frame" and e["job_id"] == job_id]
        assert 1 <= len(frames) < 20
        assert all(Path(f["path"]).is_relative_to(tmp_path / "library") for f in frames)
        running = [e for e in events if e["type"] == "job" and e["state"] == "running"]
        assert running and running[0]["job_id"] == job_id
        text = httpx.get(f"{base}/metrics", headers=auth(READ)).text
        captured = sum(metric(text, f'darkd_frames_captured_total{{camera="{SIM_DEVICE}",result="{r}"}}')
                       for r in ("accepted", "rejected"))
        assert captured == len(frames)


def test_sigterm_keeps_the_job_and_warms_the_camera(sim_server: IndiServer, tmp_path: Path) -> None:
    """SIGTERM mid-capture: exit 0, the exposure aborted, no partial file, the job persisted as queued (it resumes at
    the next start) and, with warm_up_at_end, the camera handed a gentle warm-up (the driver's ramp) to 15 °C."""
    from daemon.library.catalog import LibraryIndex
    from daemon.library.verify import partial_files
    from daemon.settings import LibrarySettings
    from drivers.factory import open_indi_camera

    with darkd_serve(tmp_path, sim_server.port, warm_up=True) as base:  # leaving the block: SIGTERM, exit 0
        wait_ready(base)
        plan = httpx.post(f"{base}/api/v1/library/plan", headers=auth(READ), timeout=30,
                          json={"keys": [{**KEY, "kind": "dark", "exposure_s": 300, "frames": 20}],
                                "include_bias": False, "ambient_c": AMBIENT_C}).json()
        r = httpx.post(f"{base}/api/v1/jobs", headers=auth(CONTROL), json={"kind": "build-library",
                                                                           "params": {"plan": plan}}, timeout=30)
        job_id = r.json()["id"]
        for event in sse_events(base, "types=frame", timeout_s=120):
            assert event["job_id"] == job_id
            break  # one frame captured: the camera is cold and exposing the next one
    root = tmp_path / "library"
    assert partial_files(root) == []
    with LibraryIndex.open(LibrarySettings(root=root)) as index:
        job = JobQueue(index).get_job(job_id)
        assert job is not None and job.state == "queued"
    camera = open_indi_camera("127.0.0.1", sim_server.port, reconnect=False)
    camera.connect(timeout_s=20)
    try:
        deadline = time.monotonic() + 60
        while (temp := camera.state().temperature_c) is None or temp < 10.0:
            assert time.monotonic() < deadline, f"camera not warming after shutdown: {temp} °C"
            time.sleep(0.2)
    finally:
        camera.disconnect()
