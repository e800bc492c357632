"""The disk budget (issue 15): a plan states the bytes it needs; a job is refused at submit, or held in the queue,
without that room plus ``[library] min_free_bytes``; a running capture pauses with a warning and a ``disk`` event
before the disk is full; ``/ready`` says ``library_space``; a full disk during a master write fails cleanly and keeps
the entry's good frames, which a new plan integrates without capturing again.

The disk is never mocked: a margin larger than any disk (``min_free_bytes`` = 1 PiB) makes the real free room too
small, and the full disk of a master write is the kernel's ``/dev/full`` (as in :mod:`tests.full_disk`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import Field

import calib.frames
from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.events import EventBus
from daemon.jobs import build_library
from daemon.jobs.engine import JobContext, JobEngine, NoRoom
from daemon.jobs.params import JobParams
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import verify_library
from daemon.planning import Plan, frame_bytes, master_bytes, plan_from_keys
from daemon.runtime import Runtime
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.profiles import load_profile
from drivers.sim.inprocess import ManualClock, SimCamera
from tests.conftest import SIM_DEVICE
from tests.engines import InThreadEngine

PETABYTE = 1 << 50
PROFILE = "qhy163m-sim-small"
KEY = {"camera": SIM_DEVICE, "set_point_c": -10.0, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0,
       "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496, "height_px": 368}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def settings_for(root: Path, **library: Any) -> Settings:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, warm_up_at_end=False)
    return Settings(camera_profile=PROFILE, cooling=cooling,
                    library=LibrarySettings(root=root, frames_bias=3, frames_dark=3, **library),
                    api={"allowed_roots": [str(root.parent / "data")]})  # type: ignore[arg-type]


# --- the plan states its bytes ---------------------------------------------------------------------------------------
def test_a_plan_states_the_bytes_it_needs_and_a_real_frame_fits_in_its_estimate(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "lib")
    plan = plan_from_keys([{**KEY, "kind": "bias", "exposure_s": 0}, {**KEY, "kind": "dark", "exposure_s": 60,
                                                                      "frames": 5}], None, settings)
    (bias, dark) = sorted(plan.work(), key=lambda i: i.key.kind)
    assert bias.bytes_needed == 3 * frame_bytes(bias.key) + master_bytes(bias.key)
    assert dark.bytes_needed == 5 * frame_bytes(dark.key) + master_bytes(dark.key)
    assert plan.bytes_needed == plan.to_dict()["bytes_needed"] == bias.bytes_needed + dark.bytes_needed
    assert Plan.from_dict(plan.to_dict()).bytes_needed == plan.bytes_needed
    frame = write_frame(tmp_path / "f.fits", np.zeros((368, 496), np.uint16), bitpix16=True)
    assert 496 * 368 * 2 < frame.stat().st_size <= frame_bytes(bias.key)


# --- the engine's budget --------------------------------------------------------------------------------------------
class CapParams(JobParams):
    steps: int = Field(default=1000, le=100_000)
    bytes: int = Field(default=1000, ge=0)


class CaptureLike:
    """A capture kind with a disk budget that waits between "frames" on its stop event."""

    USES_CAMERA = True
    Params = CapParams

    @staticmethod
    def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str]:
        return params, "cam"

    @staticmethod
    def bytes_needed(params: dict[str, Any], index: LibraryIndex, result: dict[str, Any]) -> int:
        return int(params.get("bytes", 1000))

    @staticmethod
    def run(ctx: JobContext) -> dict[str, Any]:
        for i in range(int(ctx.params.get("steps", 1000))):
            ctx.check()
            ctx.stop.wait(0.02)
            ctx.progress(i + 1, 1000)
        return {}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[JobEngine]:
    settings = settings_for(tmp_path / "lib")
    index = LibraryIndex.open(settings.library)
    eng = JobEngine(settings, index, lambda: None, EventBus(), poll_s=0.02,  # type: ignore[arg-type,return-value]
                    kinds={"cap": CaptureLike})
    yield eng
    eng.stop(timeout_s=5)
    index.close()


def test_a_job_without_room_is_refused_at_submit(engine: JobEngine) -> None:
    free = shutil.disk_usage(engine.index.layout.root).free
    with pytest.raises(NoRoom, match=r"needs .* plus a margin .*min_free_bytes"):
        engine.submit("cap", {"bytes": free})  # free room itself: not enough with the margin on top
    assert engine.list() == []
    assert engine.submit("cap", {"bytes": 1000}).state == "queued"


def test_a_queued_job_waits_for_room_and_a_running_one_pauses_before_the_disk_is_full(engine: JobEngine) -> None:
    job = engine.submit("cap", {"bytes": 1000})
    engine.settings.library.min_free_bytes = PETABYTE  # now the disk is short of room
    with engine.bus.subscribe() as sub:
        engine.start()
        wait_for(lambda: (engine.get(job.id).step or "").startswith("waiting for disk space"))
        assert engine.get(job.id).state == "queued" and engine.get(job.id).started_utc is None
        assert engine.disk_problem() is not None and "min_free_bytes" in engine.disk_problem()  # type: ignore[operator]
        engine.settings.library.min_free_bytes = 0
        wait_for(lambda: engine.get(job.id).state == "running")
        engine.settings.library.min_free_bytes = PETABYTE  # the disk fills up while it captures
        wait_for(lambda: engine.get(job.id).state == "paused")
        events = [e for e in iter(lambda: sub.get(0.01), None)]
    row = engine.get(job.id)
    assert any("capture paused: the library disk has" in w for w in row.warnings)
    disk = [e for e in events if e["type"] == "disk"]
    assert len(disk) == 2 and {e["job_id"] for e in disk} == {job.id}  # held once, paused once
    assert row.progress_done < 1000  # it stopped between frames, long before its end


def test_build_library_bytes_needed_counts_what_a_resumed_run_still_needs(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "lib")
    plan = plan_from_keys([{**KEY, "kind": "bias", "exposure_s": 0}], None, settings)
    (item,) = plan.work()
    with LibraryIndex.open(settings.library) as index:
        assert build_library.bytes_needed({"plan": plan.to_dict()}, index, {}) == plan.bytes_needed
        entry = index.upsert_entry(item.key, 3)
        for n in (1, 2):
            path = write_frame(Path(entry.frames_dir) / f"b_{n:04d}.fits", np.zeros((4, 4), np.uint16))
            index.record_frame(entry.id, path, "0" * 64, n)
        left = build_library.bytes_needed({"plan": plan.to_dict()}, index, {"entries": {item.key.slug: entry.id}})
        assert left == frame_bytes(item.key) + master_bytes(item.key)


# --- the REST face: 503 with the reason, /ready names library_space --------------------------------------------------
def test_rest_submit_and_ready_say_the_library_disk_is_short(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "lib", min_free_bytes=PETABYTE)
    runtime = Runtime(settings, connect_camera=False, start_engine=True, warm_on_shutdown=False)
    plan = plan_from_keys([{**KEY, "kind": "bias", "exposure_s": 0}], None, settings)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
        response = client.post("/api/v1/jobs", json={"kind": "build-library", "params": {"plan": plan.to_dict()}})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "library_disk_full"
        assert "min_free_bytes" in response.json()["error"]["message"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["library_space"] is False
        assert "min_free_bytes" in ready.json()["details"]["library_space"]
        planned = client.post("/api/v1/library/plan", json={"keys": [{**KEY, "kind": "bias", "exposure_s": 0}]})
        assert planned.status_code == 200 and planned.json()["bytes_needed"] == plan.bytes_needed


# --- a full disk while the master is written -------------------------------------------------------------------------
def fill_disk_for_masters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like :func:`tests.full_disk.simulate_full_disk`, for master files only (frames still write)."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real_open_part = calib.frames._open_part

    def open_part(tmp: str, fd: int) -> BinaryIO:
        if "master" in Path(tmp).name:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
        return real_open_part(tmp, fd)

    monkeypatch.setattr(calib.frames, "_open_part", open_part)


def test_a_full_disk_during_the_master_write_keeps_the_frames_for_a_later_integration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(tmp_path / "lib")
    index = LibraryIndex.open(settings.library)
    camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE))
    engine = InThreadEngine(settings, index, lambda: camera, EventBus(), poll_s=0.02).start()
    keys = [{**KEY, "kind": "bias", "exposure_s": 0}]

    def run() -> Any:
        job = engine.submit("build-library", {"plan": plan_from_keys(keys, index, settings).to_dict()})
        wait_for(lambda: engine.get(job.id).state in FINAL_STATES)
        return engine.get(job.id)

    try:
        fill_disk_for_masters(monkeypatch)
        failed = run()
        assert failed.state == "failed"
        assert "master not written, the library disk is full" in failed.error and "frames are kept" in failed.error
        (entry,) = index.entries()
        assert entry.status == "integrating" and entry.frames == 3 and entry.master is None
        frames = [(f.path, f.sha256) for f in index.frames_of(entry.id)]
        assert not list(Path(entry.directory).glob("*.part*"))  # nothing half-written left

        plan = plan_from_keys(keys, index, settings)  # re-planned: integrate only, nothing to capture
        (item,) = plan.items
        assert (item.status, item.entry_id, item.frames_needed) == ("in-progress", entry.id, 0)

        monkeypatch.undo()  # room again
        done = run()
        assert done.state == "succeeded", done.error
        (again,) = index.entries()
        assert again.id == entry.id and again.status == "ready" and again.master is not None
        assert [(f.path, f.sha256) for f in index.frames_of(entry.id)] == frames  # the same frames, none taken
        assert verify_library(index).ok
    finally:
        engine.stop(timeout_s=10)
        index.close()


# --- readiness while the camera reconnects ---------------------------------------------------------------------------
def test_ready_is_503_while_the_camera_reconnects_and_says_so(tmp_path: Path) -> None:
    from drivers.sim.inprocess import SimFaults

    settings = settings_for(tmp_path / "lib")
    settings.indi.connect_timeout_s = 0.2
    camera = SimCamera(clock=ManualClock(), profile=load_profile(PROFILE), faults=SimFaults())
    runtime = Runtime(settings, camera_factory=lambda: camera, start_engine=False, monitor_interval_s=0.02,
                      warm_on_shutdown=False).start()
    try:
        wait_for(lambda: runtime.readiness()["ready"])
        camera.faults.refuse_connects = 10_000  # the server is away: every connect fails
        camera.drop_connection()
        wait_for(lambda: runtime.camera_error is not None)
        ready = runtime.readiness()
        assert ready["ready"] is False and ready["checks"]["indi"] is False
        assert ready["details"]["indi"].startswith("camera reconnecting: cannot connect")
        camera.faults.refuse_connects = 0
        wait_for(lambda: runtime.readiness()["ready"])
    finally:
        runtime.stop()
