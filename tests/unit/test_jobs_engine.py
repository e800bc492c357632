"""The job engine's state machine, persistence, conflicts, cancel/pause/resume, crash recovery and start windows.

The engine runs here with a real library index (SQLite in tmp_path) and a real event bus; the job kinds are small
step jobs defined below (each step waits on the job's stop event, the way a capture waits on an exposure), so the
engine's behaviour can be checked without a camera. The build-library kind on the simulated camera is tested in
tests/integration/test_jobs_sim.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from daemon.events import EventBus
from daemon.jobs.engine import JobContext, JobEngine
from daemon.jobs.errors import JobConflict, JobNotFound
from daemon.jobs.params import JobParams
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.settings import IndiSettings, LibrarySettings, Settings


class StepParams(JobParams):
    steps: int = Field(le=1000)
    step_s: float = Field(default=0.01, ge=0, le=10)
    fail_at: int | None = None
    camera: str | None = None


class StepJob:
    """``steps`` steps of ``step_s`` seconds each; progress after each; optional failure at step ``fail_at``."""

    USES_CAMERA = False
    Params = StepParams

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def validate(self, params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any],
                                                                                                    str | None]:
        if int(params.get("steps", 0)) < 1:
            raise ValueError("steps must be >= 1")
        return params, params.get("camera")

    def run(self, ctx: JobContext) -> dict[str, Any]:
        steps = int(ctx.params["steps"])
        start = ctx.job.progress_done
        self.runs.append({"job_id": ctx.job_id, "start": start, "thread": threading.current_thread().name})
        for i in range(start, steps):
            ctx.check()
            if ctx.stop.wait(float(ctx.params.get("step_s", 0.01))):
                ctx.check()
            if ctx.params.get("fail_at") == i:
                raise RuntimeError(f"step {i} broke")
            ctx.progress(i + 1, steps, step=f"step {i + 1}")
        return {"steps": steps, "resumed_from": start}


class CaptureStepJob(StepJob):
    USES_CAMERA = True


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LibraryIndex]:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "library"))
    yield idx
    idx.close()


def no_camera() -> Any:
    raise AssertionError("these job kinds never use the camera")


def make_engine(index: LibraryIndex, bus: EventBus | None = None) -> JobEngine:
    kinds = {"steps": StepJob(), "capture": CaptureStepJob()}
    return JobEngine(Settings(library=index.settings), index, no_camera, bus or EventBus(), poll_s=0.05, kinds=kinds)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def state_is(engine: JobEngine, job_id: int, *states: str) -> Callable[[], bool]:
    return lambda: engine.get(job_id).state in states


def test_job_runs_to_success_with_progress_events_and_log(index: LibraryIndex) -> None:
    bus = EventBus()
    with bus.subscribe() as sub, make_engine(index, bus) as engine:
        row = engine.submit("steps", {"steps": 4})
        assert row.state == "queued"
        wait_for(state_is(engine, row.id, "succeeded"))
        done = engine.get(row.id)
        assert (done.progress_done, done.progress_total) == (4, 4)
        assert done.result == {"steps": 4, "resumed_from": 0}
        assert done.started_utc is not None and done.finished_utc is not None
        events = []
        while (event := sub.get(timeout_s=0.5)) is not None:
            events.append(event)
    states = [e["state"] for e in events if e["type"] == "job" and e["job_id"] == row.id]
    assert states[0] == "queued" and states[1] == "running" and states[-1] == "succeeded"
    assert [e["progress_done"] for e in events if e["type"] == "job" and e["state"] == "running"][-1] == 4
    assert {"job_id", "state", "progress_done", "progress_total", "step", "eta_s"} <= set(events[-1])
    lines = [line for _, line in JobQueue(index).job_log(row.id)]
    assert lines[0] == "submitted (steps)" and "started" in lines


def test_bad_kind_and_bad_params_are_refused(index: LibraryIndex) -> None:
    engine = make_engine(index)
    with pytest.raises(ValueError, match="unknown job kind"):
        engine.submit("nonsense", {})
    with pytest.raises(ValueError, match="steps"):
        engine.submit("steps", {"steps": 0})
    with pytest.raises(ValueError, match="not_before"):
        engine.submit("steps", {"steps": 1, "not_before": "tomorrow"})
    assert JobQueue(index).jobs() == []
    with pytest.raises(JobNotFound):
        engine.get(12345)
    with pytest.raises(JobNotFound):
        engine.cancel(12345)


def test_second_capture_job_on_a_camera_conflicts_other_kinds_run_alongside(index: LibraryIndex) -> None:
    with make_engine(index) as engine:
        first = engine.submit("capture", {"steps": 100, "step_s": 0.05, "camera": "cam-A"})
        with pytest.raises(JobConflict, match="cam-A"):
            engine.submit("capture", {"steps": 1, "camera": "cam-A"})
        other_camera = engine.submit("capture", {"steps": 100, "step_s": 0.05, "camera": "cam-B"})
        plain = engine.submit("steps", {"steps": 100, "step_s": 0.05, "camera": "cam-A"})
        wait_for(lambda: all(engine.get(j.id).state == "running" for j in (first, other_camera, plain)))
        engine.cancel(first.id)
        wait_for(state_is(engine, first.id, "cancelled"))
        again = engine.submit("capture", {"steps": 1, "camera": "cam-A"})  # the camera is free again
        wait_for(state_is(engine, again.id, "succeeded"))
        for job in (other_camera, plain):
            engine.cancel(job.id)


def test_cancel_stops_a_running_job_promptly_and_final_states_refuse_commands(index: LibraryIndex) -> None:
    with make_engine(index) as engine:
        row = engine.submit("steps", {"steps": 1000, "step_s": 0.5})
        wait_for(state_is(engine, row.id, "running"))
        started = time.monotonic()
        assert engine.cancel(row.id).state == "cancelled"
        wait_for(lambda: row.id not in engine._running)
        assert time.monotonic() - started < 2.0  # the step wait is interrupted, not finished
        final = engine.get(row.id)
        assert final.state == "cancelled" and final.finished_utc is not None and final.progress_done < 1000
        for command in (engine.cancel, engine.pause, engine.resume):
            with pytest.raises(JobConflict, match="cancelled"):
                command(row.id)


def test_pause_and_resume_continue_where_the_job_stopped(index: LibraryIndex) -> None:
    kinds_engine = make_engine(index)
    with kinds_engine as engine:
        row = engine.submit("steps", {"steps": 40, "step_s": 0.05})
        wait_for(lambda: engine.get(row.id).progress_done >= 3)
        engine.pause(row.id)
        wait_for(lambda: engine.get(row.id).state == "paused" and row.id not in engine._running)
        paused_at = engine.get(row.id).progress_done
        time.sleep(0.2)
        assert engine.get(row.id).progress_done == paused_at  # nothing runs while paused
        engine.resume(row.id)
        wait_for(state_is(engine, row.id, "succeeded"))
    runs = [r for r in kinds_engine.kinds["steps"].runs if r["job_id"] == row.id]
    assert len(runs) == 2 and runs[1]["start"] == paused_at > 0
    assert engine.get(row.id).result == {"steps": 40, "resumed_from": paused_at}


def test_a_failing_job_is_failed_with_its_error(index: LibraryIndex) -> None:
    with make_engine(index) as engine:
        row = engine.submit("steps", {"steps": 5, "fail_at": 2})
        wait_for(state_is(engine, row.id, "failed"))
        failed = engine.get(row.id)
    assert failed.error == "RuntimeError: step 2 broke" and failed.progress_done == 2
    assert any(line.startswith("FAILED") for _, line in JobQueue(index).job_log(row.id))


def test_crash_recovery_requeues_running_jobs_and_removes_partial_files(index: LibraryIndex) -> None:
    # What a daemon killed with SIGKILL leaves behind: a job still marked running, half a frame being written.
    orphan = JobQueue(index).add_job("steps", {"steps": 6}, state="running")
    JobQueue(index).update_job(orphan.id, progress_done=2, progress_total=6, started_utc=datetime.now(UTC))
    partial = index.layout.root / "cam" / "dark" / "x" / "frames" / ".dark_0003.fits.abc.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"SIMPLE  = half a frame")
    engine = make_engine(index)
    with engine:
        wait_for(state_is(engine, orphan.id, "succeeded"))
    assert not partial.exists()
    assert engine.kinds["steps"].runs[0]["start"] == 2
    assert engine.get(orphan.id).result == {"steps": 6, "resumed_from": 2}
    assert "daemon restarted" in " ".join(line for _, line in JobQueue(index).job_log(orphan.id))


def test_a_daemon_naming_its_cameras_removes_leftovers_only_in_their_directories(index: LibraryIndex) -> None:
    """Several hosts, one library root (issue 17): a restarting daemon must not delete the temporary file another
    host is writing at that moment (a frame or master of its own camera); it cleans its own cameras' directories."""
    mine = index.layout.camera_dir("QHY CCD QHY163M") / "dark" / "x" / "frames" / ".dark_0003.fits.abc.part"
    theirs = index.layout.camera_dir("ZWO CCD ASI1600MM Pro") / "dark" / "y" / ".master.fits.def.part"
    for path in (mine, theirs):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"SIMPLE  = half a frame")
    named = Settings(library=index.settings, indi=IndiSettings(device="QHY CCD QHY163M"))
    engine = JobEngine(named, index, no_camera, EventBus(), poll_s=0.05, kinds={"steps": StepJob()})
    assert engine.own_library_dirs() == [index.layout.root / "QHY-CCD-QHY163M"]
    with engine:
        pass
    assert not mine.exists() and theirs.exists()
    assert make_engine(index).own_library_dirs() == [index.layout.root]  # no device named: the whole root


def test_stop_puts_running_jobs_back_in_the_queue_and_the_next_engine_resumes_them(index: LibraryIndex) -> None:
    first = make_engine(index).start()
    row = first.submit("steps", {"steps": 30, "step_s": 0.05})
    wait_for(lambda: first.get(row.id).progress_done >= 2)
    first.stop(timeout_s=5)
    stopped = JobQueue(index).get_job(row.id)
    assert stopped is not None and stopped.state == "queued" and 2 <= stopped.progress_done < 30
    second = make_engine(index)
    with second:
        wait_for(state_is(second, row.id, "succeeded"))
    assert second.kinds["steps"].runs[0]["start"] == stopped.progress_done


def test_commands_written_to_the_index_by_another_process_reach_the_running_job(index: LibraryIndex) -> None:
    with make_engine(index) as engine:
        row = engine.submit("steps", {"steps": 1000, "step_s": 0.05})
        wait_for(state_is(engine, row.id, "running"))
        # e.g. `darkd jobs pause` from a shell: it only changes the index
        assert JobQueue(index).transition_job(row.id, {"running"}, state="paused") is not None
        wait_for(lambda: row.id not in engine._running)
        assert engine.get(row.id).state == "paused"
        JobQueue(index).transition_job(row.id, {"paused"}, state="queued")
        wait_for(state_is(engine, row.id, "running"))
        engine.cancel(row.id)
        wait_for(lambda: row.id not in engine._running)
        assert engine.get(row.id).state == "cancelled"


def test_start_window(index: LibraryIndex) -> None:
    now = datetime.now(UTC)
    with make_engine(index) as engine:
        later = engine.submit("steps", {"steps": 1, "not_before": (now + timedelta(hours=1)).isoformat()})
        missed = engine.submit("steps", {"steps": 1, "not_after": (now - timedelta(minutes=1)).isoformat()})
        soon = engine.submit("steps", {"steps": 1, "not_before": (now + timedelta(seconds=0.3)).isoformat()})
        wait_for(state_is(engine, missed.id, "cancelled"))
        wait_for(state_is(engine, soon.id, "succeeded"))
        assert engine.get(soon.id).started_utc >= now + timedelta(seconds=0.3)
        time.sleep(0.2)
        assert engine.get(later.id).state == "queued"
        assert "start window" in (engine.get(missed.id).error or "")
        closing = engine.submit("steps", {"steps": 1000, "step_s": 0.05,
                                          "not_after": (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()})
        wait_for(state_is(engine, closing.id, "paused"))
        assert engine.get(closing.id).step == "paused (start window ended)"


def test_build_library_and_integrate_params_are_validated(index: LibraryIndex) -> None:
    from daemon.planning import plan_from_keys

    settings = Settings(library=index.settings)
    engine = JobEngine(settings, index, no_camera, EventBus())  # the real job kinds, not started
    key = {"camera": "cam-A", "kind": "dark", "exposure_s": 60, "set_point_c": -10, "gain": 120, "offset": 30}
    plan = plan_from_keys([key], index, settings, ambient_c=20.0).to_dict()
    cases = [
        ({}, "params.plan"),
        ({"plan": plan, "bogus": 1}, "params.bogus: Extra inputs are not permitted"),
        ({"plan": plan_from_keys([{**key, "kind": "flat"}], index, settings).to_dict()}, "needs a light source"),
        ({"plan": plan_from_keys([key, {**key, "camera": "cam-B"}], index, settings).to_dict()}, "one camera"),
        ({"plan": plan_from_keys([{**key, "set_point_c": -40}], index, settings, ambient_c=20.0).to_dict()},
         "nothing to build"),
        ({"plan": plan, "max_retakes": -1}, "max_retakes"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            engine.submit("build-library", params)
    with pytest.raises(ValueError, match="entry_id"):
        engine.submit("integrate", {})
    with pytest.raises(ValueError, match="no library entry"):
        engine.submit("integrate", {"entry_id": 99})
    assert JobQueue(index).jobs() == []
    row = engine.submit("build-library", {"plan": plan})
    assert (row.state, row.camera, row.kind) == ("queued", "cam-A", "build-library")
    with pytest.raises(JobConflict):
        engine.submit("build-library", {"plan": plan})


def run_cli(*argv: str) -> int:
    import argparse

    from daemon.cli import jobs as jobs_cli

    parser = argparse.ArgumentParser(prog="darkd")
    jobs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_jobs_cli_controls_a_running_engine_through_the_index(index: LibraryIndex, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{index.settings.root}"\n', encoding="utf-8")
    with make_engine(index) as engine:
        row = engine.submit("steps", {"steps": 1000, "step_s": 0.05})
        wait_for(state_is(engine, row.id, "running"))
        assert run_cli("jobs", "--config", str(config), "pause", str(row.id)) == 0
        assert "running -> paused" in capsys.readouterr().out
        wait_for(lambda: row.id not in engine._running)
        assert run_cli("jobs", "resume", str(row.id), "--config", str(config)) == 0
        assert "paused -> queued" in capsys.readouterr().out
        wait_for(state_is(engine, row.id, "running"))
        assert run_cli("jobs", "list", "--config", str(config)) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].split()[:3] == ["id", "kind", "state"] and listing[1].split()[:3] == [str(row.id), "steps",
                                                                                                "running"]
        assert run_cli("jobs", "cancel", str(row.id), "--config", str(config)) == 0
        wait_for(lambda: row.id not in engine._running)
        assert engine.get(row.id).state == "cancelled"
    capsys.readouterr()
    assert run_cli("jobs", "pause", str(row.id), "--config", str(config)) == 1
    assert "it is cancelled" in capsys.readouterr().err
    assert run_cli("jobs", "show", "424242", "--config", str(config)) == 1
    assert run_cli("jobs", "show", str(row.id), "--config", str(config)) == 0
    shown = capsys.readouterr().out
    assert '"state": "cancelled"' in shown and "pause requested (darkd jobs)" in shown


def test_a_job_slow_to_stop_after_cancel_is_reported(index: LibraryIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that does not reach a stop check (as capture's scan of a huge series did) keeps its slot: the engine says
    so once instead of staying silent, and the job ends cancelled when it finally stops."""
    from daemon.jobs import engine as engine_module

    monkeypatch.setattr(engine_module, "STOP_GRACE_S", 0.2)
    release = threading.Event()

    class Deaf(StepJob):
        def run(self, ctx: JobContext) -> dict[str, Any]:
            release.wait(10)  # ignores ctx.stop until released
            ctx.check()
            return {}

    bus = EventBus()
    engine = JobEngine(Settings(library=index.settings), index, no_camera, bus, poll_s=0.05, kinds={"deaf": Deaf()})
    with bus.subscribe() as sub, engine:
        row = engine.submit("deaf", {"steps": 1})
        wait_for(state_is(engine, row.id, "running"))
        assert engine.cancel(row.id).state == "cancelled"
        warnings = []
        deadline = time.monotonic() + 5
        while not warnings and time.monotonic() < deadline:
            event = sub.get(timeout_s=0.1)
            if event is not None and event["type"] == "warning":
                warnings.append(event["message"])
        assert warnings and "asked to stop (cancel)" in warnings[0] and "still running" in warnings[0]
        assert row.id in engine._running
        release.set()
        wait_for(lambda: row.id not in engine._running)
        assert engine.get(row.id).state == "cancelled"
