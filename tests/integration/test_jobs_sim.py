"""The job engine on the real simulated camera: build-library end to end, cancel mid-series, and a daemon killed with
SIGKILL mid-series then restarted. Pause/resume, retakes and an unreachable set point run on the in-process camera
(``tests/unit/test_build_library_job.py``): what is left here is what needs the INDI path itself.

Real parts: indiserver running ``indi_darkd_sim_ccd`` (SMALL sensor, time scale 300; started by
:mod:`daemon.indiserver`), IndiCamera, capture_series, the spawn worker process with calib.masters, SQLite index.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calib.frames import read_frame, read_header
from daemon.events import EventBus
from daemon.indiserver import LocalIndiServer
from daemon.jobs.engine import JobEngine
from daemon.jobs.errors import JobConflict
from daemon.jobs.queue import JobQueue
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import partial_files, verify_library
from daemon.planning import Plan, plan_from_keys
from daemon.settings import CoolingSettings, IndiSettings, LibrarySettings, Settings
from drivers.camera import Camera
from drivers.factory import open_indi_camera
from drivers.profiles import load_profile
from drivers.sim import physics
from tests.conftest import SIM_DEVICE, requires_sim_driver, sim_env

pytestmark = [pytest.mark.integration,
              requires_sim_driver]

REPO = Path(__file__).resolve().parents[2]
PROFILE = "qhy163m-sim-small"
TIME_SCALE = 300  # simulated seconds per wall second: a 60 s dark takes 0.2 s, cooling to -10 °C a few seconds
SET_POINT_C = -10.0
GAIN, OFFSET = 120, 30
KEY = {"camera": SIM_DEVICE, "set_point_c": SET_POINT_C, "gain": GAIN, "offset": OFFSET, "binning": 1,
       "read_mode": 0, "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496,
       "height_px": 368}


def settings_for(root: Path, port: int) -> Settings:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=1.0, timeout_s=60.0, unreachable_window_s=5.0,
                              reconnect_timeout_s=30.0, warm_up_at_end=False)
    return Settings(camera_profile=PROFILE, indi=IndiSettings(port=port, connect_timeout_s=20.0), cooling=cooling,
                    library=LibrarySettings(root=root, frames_bias=6, frames_dark=4))


def make_plan(settings: Settings, keys: list[dict[str, Any]]) -> Plan:
    return plan_from_keys([{**KEY, **k} for k in keys], None, settings, ambient_c=20.0, readout_s=1.0)


def open_camera(port: int) -> Camera:
    return open_indi_camera("127.0.0.1", port, profile=load_profile(PROFILE), reconnect_timeout_s=30.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalIndiServer]:
    with LocalIndiServer(env=sim_env(time_scale=TIME_SCALE), log_path=tmp_path / "indiserver.log") as srv:
        yield srv


@pytest.fixture
def rig(server: LocalIndiServer, tmp_path: Path) -> Iterator[tuple[JobEngine, LibraryIndex, EventBus]]:
    settings = settings_for(tmp_path / "library", server.port)
    index = LibraryIndex.open(settings.library)
    camera = open_camera(server.port)
    bus = EventBus()
    engine = JobEngine(settings, index, lambda: camera, bus, poll_s=0.1).start()
    try:
        yield engine, index, bus
    finally:
        engine.stop(timeout_s=30)
        camera.disconnect()
        index.close()


def frame_names(index: LibraryIndex, entry_id: int) -> list[str]:
    entry = index.get(entry_id)
    assert entry is not None
    return sorted(p.name for p in Path(entry.frames_dir).glob("*.fits"))


def central(data: np.ndarray) -> np.ndarray:
    """A region of the effective area away from the amp-glow corners and the overscan (SMALL geometry)."""
    return data[100:260, 100:380]


def drain(sub: Any) -> list[dict[str, Any]]:
    events = []
    while (event := sub.get(timeout_s=0.2)) is not None:
        events.append(event)
    return events


def test_build_library_end_to_end(rig: tuple[JobEngine, LibraryIndex, EventBus]) -> None:
    engine, index, bus = rig
    plan = make_plan(engine.settings, [{"kind": "bias", "exposure_s": 0}, {"kind": "dark", "exposure_s": 60}])
    with bus.subscribe() as sub:
        row = engine.submit("build-library", {"plan": plan.to_dict()})
        with pytest.raises(JobConflict, match="already uses camera"):
            engine.submit("build-library", {"plan": plan.to_dict()})
        wait_for(lambda: engine.get(row.id).state in FINAL_STATES, 120, "the job to end")
        events = drain(sub)
    job = engine.get(row.id)
    assert job.state == "succeeded", job.error
    assert job.progress_done == job.progress_total == 10
    assert job.result is not None and (job.result["frames_captured"], job.result["masters_built"]) == (10, 2)
    frames = [e for e in events if e["type"] == "frame" and e["job_id"] == row.id]
    assert len(frames) >= 10 and sum(e["ok"] for e in frames) == 10
    done = [e["progress_done"] for e in events if e["type"] == "job" and e["job_id"] == row.id]
    assert done == sorted(done) and done[-1] == 10

    entries = {e.kind: e for e in index.entries()}
    assert set(entries) == {"bias", "dark"}
    for entry in entries.values():
        assert entry.status == "ready" and entry.frames == entry.frames_target and entry.master is not None
        assert int(read_header(entry.master)["NCOMBINE"]) == entry.frames
        assert abs(entry.temperature_mean_c - SET_POINT_C) <= 0.3  # type: ignore[operator]
    report = verify_library(index)
    assert report.ok, report.to_text()
    assert index.select_master(entries["dark"].key).require().id == entries["dark"].id

    # the same (now outdated) plan again: every key is ready, nothing is captured or rebuilt
    again = engine.submit("build-library", {"plan": plan.to_dict()})
    wait_for(lambda: engine.get(again.id).state in FINAL_STATES, 60, "the second job to end")
    assert engine.get(again.id).state == "succeeded"
    assert [(e.id, e.frames, e.master_sha256) for e in index.entries()] == [
        (e.id, e.frames, e.master_sha256) for e in entries.values()]

    # physics: the bias master sits at the pedestal set by OFFSET and averages the read noise down by √N
    bias = entries["bias"]
    master = central(read_frame(bias.master).data.astype(np.float64))
    single = [central(read_frame(f.path).data.astype(np.float64)) for f in index.frames_of(bias.id)[:2]]
    assert abs(np.median(master) - physics.pedestal_adu(OFFSET)) < 20.0
    frame_noise_adu = np.std(single[0] - single[1]) / np.sqrt(2)
    expected_adu = physics.read_noise_e(GAIN) / physics.gain_e_per_adu(GAIN)
    assert 0.85 < frame_noise_adu / expected_adu < 1.2
    ratio = frame_noise_adu / np.std(master)
    assert 0.8 * np.sqrt(bias.frames) < ratio < 1.15 * np.sqrt(bias.frames)


def test_cancel_interrupts_cooling_and_aborts_the_running_exposure(rig: tuple[JobEngine, LibraryIndex,
                                                                                 EventBus]) -> None:
    engine, index, _ = rig
    plan = make_plan(engine.settings, [{"kind": "dark", "exposure_s": 1800, "frames": 3}])  # 6 s per frame
    cooling = engine.submit("build-library", {"plan": plan.to_dict()})
    wait_for(lambda: (engine.get(cooling.id).step or "").startswith("cooling to -10 °C:"), 30, "the cooling wait")
    started = time.monotonic()
    engine.cancel(cooling.id)
    wait_for(lambda: cooling.id not in engine._running, 10, "the job thread to end")
    assert time.monotonic() - started < 2.5  # the stability wait is left at the next temperature sample
    assert engine.get(cooling.id).state == "cancelled"

    row = engine.submit("build-library", {"plan": plan.to_dict()})
    camera = engine.camera()
    wait_for(lambda: camera.state().exposing, 60, "the first exposure")
    time.sleep(0.5)
    started = time.monotonic()
    assert engine.cancel(row.id).state == "cancelled"
    wait_for(lambda: row.id not in engine._running, 10, "the job thread to end")
    assert time.monotonic() - started < 4.0  # the 6 s exposure was aborted, not waited for
    wait_for(lambda: not camera.state().exposing, 3, "the driver to report the abort")
    job = engine.get(row.id)
    assert job.state == "cancelled" and job.progress_done == 0
    (entry,) = index.entries()  # the second job continued the first one's entry
    assert entry.status == "capturing" and entry.frames == 0 and frame_names(index, entry.id) == []
    assert partial_files(index.layout.root) == []
    assert verify_library(index).ok


# ---------------------------------------------------------------------------------------------------- kill -9
DAEMON = ("import json, sys; sys.path.insert(0, {repo!r}); "
          "from {module} import daemon_main; sys.exit(daemon_main(json.loads(sys.argv[1])))")


def daemon_main(cfg: dict[str, Any]) -> int:
    """A minimal daemon (run as a subprocess): index + camera + job engine; submits the plan if the queue is empty,
    resumes whatever is left otherwise, and exits when every job has ended."""
    settings = settings_for(Path(cfg["root"]), int(cfg["port"]))
    index = LibraryIndex.open(settings.library)
    camera = open_camera(int(cfg["port"]))
    engine = JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
    if cfg.get("plan") and not JobQueue(index).jobs():
        engine.submit("build-library", {"plan": cfg["plan"]})
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and any(j.state not in FINAL_STATES for j in JobQueue(index).jobs()):
        time.sleep(0.1)
    engine.stop(timeout_s=30)
    camera.disconnect()
    index.close()
    return 0


def start_daemon(cfg: dict[str, Any], log_path: Path,
                 module: str = "tests.integration.test_jobs_sim") -> subprocess.Popen[bytes]:
    """``module``'s ``daemon_main(cfg)`` in a process of its own session (killable with its workers), output to
    ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", DAEMON.format(repo=str(REPO), module=module), json.dumps(cfg)],
                                cwd=REPO, stdout=log, stderr=log, start_new_session=True)


def test_daemon_killed_mid_series_resumes_without_loss_or_duplicates(server: LocalIndiServer, tmp_path: Path) -> None:
    root = tmp_path / "library"
    settings = settings_for(root, server.port)
    plan = make_plan(settings, [{"kind": "bias", "exposure_s": 0}, {"kind": "dark", "exposure_s": 180, "frames": 8}])
    cfg = {"root": str(root), "port": server.port, "plan": plan.to_dict()}
    first = start_daemon(cfg, tmp_path / "daemon1.log")
    index = LibraryIndex(settings.library)
    try:
        def dark_frames() -> int:
            darks = index.entries(kind="dark") if (root / "index.sqlite3").exists() else []
            return darks[0].frames if darks else 0

        wait_for(lambda: dark_frames() >= 3 or first.poll() is not None, 120, "three dark frames")
        os.killpg(first.pid, signal.SIGKILL)  # the daemon and its integration worker, mid-series
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        (job,) = JobQueue(index).jobs()
        assert job.state == "running" and 3 <= dark_frames() < 8

        second = start_daemon({**cfg, "plan": None}, tmp_path / "daemon2.log")
        assert second.wait(timeout=180) == 0, (tmp_path / "daemon2.log").read_text()[-3000:]
        job = JobQueue(index).get_job(job.id)  # type: ignore[assignment]
        assert job.state == "succeeded", job.error
        assert any("daemon restarted" in line for _, line in JobQueue(index).job_log(job.id))
        for entry in index.entries():
            names = frame_names(index, entry.id)
            assert names == [f"{entry.kind}_{i:04d}.fits" for i in range(1, entry.frames_target + 1)]
            assert entry.status == "ready" and entry.frames == entry.frames_target
            assert int(read_header(entry.master)["NCOMBINE"]) == entry.frames_target  # type: ignore[arg-type]
        assert partial_files(root) == []
        report = verify_library(index, strict=True)
        assert report.ok, report.to_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        index.close()


def test_daemon_killed_while_integrating_rebuilds_the_master_on_restart(server: LocalIndiServer,
                                                                        tmp_path: Path) -> None:
    root = tmp_path / "library"
    settings = settings_for(root, server.port)
    plan = make_plan(settings, [{"kind": "dark", "exposure_s": 30, "frames": 4}])
    cfg = {"root": str(root), "port": server.port, "plan": plan.to_dict()}
    first = start_daemon(cfg, tmp_path / "daemon1.log")
    index = LibraryIndex(settings.library)
    try:
        def status() -> str | None:
            entries = index.entries() if (root / "index.sqlite3").exists() else []
            return entries[0].status if entries else None

        wait_for(lambda: status() == "integrating" or first.poll() is not None, 120, "the integration to start")
        os.killpg(first.pid, signal.SIGKILL)  # daemon + worker process, after capture, before the master is recorded
        first.wait(timeout=10)
        assert status() == "integrating"  # the kill came before the master was recorded
        (entry,) = index.entries()
        assert entry.master is None and entry.frames == 4

        second = start_daemon({**cfg, "plan": None}, tmp_path / "daemon2.log")
        assert second.wait(timeout=120) == 0, (tmp_path / "daemon2.log").read_text()[-3000:]
        (job,) = JobQueue(index).jobs()
        assert job.state == "succeeded", job.error
        ready = index.get(entry.id)
        assert ready is not None and ready.status == "ready" and ready.master is not None
        assert frame_names(index, entry.id) == [f"dark_{i:04d}.fits" for i in range(1, 5)]  # nothing retaken
        assert int(read_header(ready.master)["NCOMBINE"]) == 4
        assert partial_files(root) == []
        report = verify_library(index, strict=True)
        assert report.ok, report.to_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        index.close()


def test_stale_key_rebuilt_under_a_light_leak_is_refused_with_reasons(tmp_path: Path) -> None:
    """A stale dark is rebuilt while light leaks in: every frame fails the leak check against the previous entry's
    frames, is retaken up to the limit and recorded with its reason; the job fails, nothing bad becomes ready."""
    root = tmp_path / "library"
    keys = [{"kind": "dark", "exposure_s": 30, "frames": 3}]
    with LocalIndiServer(env=sim_env(time_scale=TIME_SCALE), log_path=tmp_path / "indiserver1.log") as clean:
        settings = settings_for(root, clean.port)
        index = LibraryIndex.open(settings.library)
        camera = open_camera(clean.port)
        with JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1) as engine:
            first = engine.submit("build-library", {"plan": make_plan(settings, keys).to_dict()})
            wait_for(lambda: engine.get(first.id).state in FINAL_STATES, 90, "the first build")
            assert engine.get(first.id).state == "succeeded"
        camera.disconnect()
    (old,) = index.entries()
    assert index.mark_stale(now=old.valid_until_utc + timedelta(days=1)) == [old.id]  # type: ignore[operator]

    leak_env = sim_env(time_scale=TIME_SCALE, light_leak=5.0)
    with LocalIndiServer(env=leak_env, log_path=tmp_path / "indiserver2.log") as leaky:
        settings = settings_for(root, leaky.port)
        camera = open_camera(leaky.port)
        plan = plan_from_keys([{**KEY, **k} for k in keys], index, settings, ambient_c=20.0, readout_s=1.0)
        assert [i.status for i in plan.work()] == ["stale"]
        with JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1) as engine:
            job = engine.submit("build-library", {"plan": plan.to_dict(), "max_retakes": 1})
            wait_for(lambda: engine.get(job.id).state in FINAL_STATES, 90, "the rebuild")
            failed = engine.get(job.id)
        camera.disconnect()
    try:
        assert failed.state == "failed" and "rejected 2 times" in (failed.error or "")
        assert any("light leak" in w and f"library entry {old.id}" in w for w in failed.warnings)
        new = next(e for e in index.entries() if e.id != old.id)
        assert new.status == "capturing" and new.frames == 0 and new.frames_rejected == 2 and new.master is None
        rejected = index.frames_of(new.id)
        assert all(not f.quality_ok and "light leak" in f.reasons[0] for f in rejected)
        assert sorted(Path(f.path).name for f in rejected) == ["dark_0001_try1.fits", "dark_0001_try2.fits"]
        assert not index.select_master(new.key).ok  # neither the stale master nor the leaky entry is selected
        report = verify_library(index)
        assert report.ok, report.to_text()
    finally:
        index.close()
