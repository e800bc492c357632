"""Issue 15 items 4 and 8: a library database that refuses writes (read-only) or everything (malformed) mid-job.

The job must end ``failed`` — recorded once the index takes writes again — instead of showing ``running`` forever;
the capture slot is freed; ``/ready`` says not ready while the index cannot be written and names why; submits return
503 ``index_unavailable`` with the reason, not a generic 500; ``darkd jobs`` prints the reason and exits 2.

The database is a real SQLite file; :class:`tests.db_faults.DatabaseFault` makes its engine raise SQLite's own errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.events import EventBus
from daemon.jobs.engine import JobContext, JobEngine
from daemon.jobs.errors import JobStoreError
from daemon.jobs.params import JobParams
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.runtime import Runtime
from daemon.settings import LibrarySettings, Settings
from tests.db_faults import DatabaseFault

LOCAL = ("127.0.0.1", 50000)


class CaptureParams(JobParams):
    steps: int
    camera: str


class CaptureSteps:
    """A capture kind (holds its camera): ``steps`` steps of 20 ms, progress stored after each."""

    USES_CAMERA = True
    Params = CaptureParams

    def validate(self, params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any],
                                                                                                    str | None]:
        return params, params["camera"]

    def run(self, ctx: JobContext) -> dict[str, Any]:
        for i in range(ctx.job.progress_done, int(ctx.params["steps"])):
            ctx.check()
            ctx.stop.wait(0.02)
            ctx.progress(i + 1, int(ctx.params["steps"]), step=f"step {i + 1}")
        return {"steps": ctx.params["steps"]}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LibraryIndex]:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "library"))
    yield idx
    idx.close()


def test_a_read_only_index_mid_job_fails_the_job_frees_the_slot_and_never_wedges(index: LibraryIndex) -> None:
    engine = JobEngine(Settings(library=index.settings), index, lambda: None, EventBus(), poll_s=0.05,  # type: ignore[arg-type,return-value]
                       kinds={"capture": CaptureSteps()})
    fault = DatabaseFault(index.engine)
    with engine:
        row = engine.submit("capture", {"steps": 10_000, "camera": "cam-A"})
        wait_for(lambda: engine.get(row.id).progress_done >= 3)
        fault.read_only()  # the index turns read-only for a while mid-job
        wait_for(lambda: engine.unfinished() == [row.id])
        assert row.id not in engine._running  # the job thread has ended and let go of the camera
        assert engine.get(row.id).state == "running"  # … but its end cannot be written yet
        assert "readonly database" in (engine.store_problem or "")
        time.sleep(0.3)  # several dispatcher ticks fail to write it; none may crash the dispatcher
        assert engine._dispatcher is not None and engine._dispatcher.is_alive()
        fault.heal()
        wait_for(lambda: engine.get(row.id).state == "failed")
        failed = engine.get(row.id)
        assert failed.finished_utc is not None and failed.step == "failed"
        assert "JobStoreError" in (failed.error or "") and "readonly database" in (failed.error or "")
        # the dispatcher clears the problem on its next tick after the outcome is written (not in the same instant)
        wait_for(lambda: engine.unfinished() == [] and engine.store_problem is None)
        again = engine.submit("capture", {"steps": 3, "camera": "cam-A"})  # the capture slot is free again
        wait_for(lambda: engine.get(again.id).state == "succeeded")
    fault.remove()


def test_a_job_that_ends_while_the_index_is_read_only_is_recorded_later(index: LibraryIndex) -> None:
    class EndsWhileReadOnly(CaptureSteps):
        def run(self, ctx: JobContext) -> dict[str, Any]:
            fault.read_only()  # nothing stored during the run: its end is the first write that fails
            return {"done": True}

    fault = DatabaseFault(index.engine)
    engine = JobEngine(Settings(library=index.settings), index, lambda: None, EventBus(), poll_s=0.05,  # type: ignore[arg-type,return-value]
                       kinds={"capture": EndsWhileReadOnly()})
    with engine:
        row = engine.submit("capture", {"steps": 1, "camera": "cam-A"})
        wait_for(lambda: engine.unfinished() == [row.id])
        fault.heal()
        wait_for(lambda: engine.get(row.id).state == "succeeded")
        assert engine.get(row.id).result == {"done": True}
    fault.remove()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    rt = Runtime(settings, connect_camera=False, start_engine=True, warm_on_shutdown=False)
    yield rt
    rt.stop()


def _plan(client: TestClient) -> dict[str, Any]:
    key = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30)
    r = client.post("/api/v1/library/plan", json={"keys": [key.to_dict()], "include_bias": False})
    assert r.status_code == 200, r.text
    return r.json()


def test_ready_and_submit_report_a_read_only_then_malformed_index(runtime: Runtime) -> None:
    with TestClient(create_app(runtime), client=LOCAL, raise_server_exceptions=False) as client:
        plan = _plan(client)
        fault = DatabaseFault(runtime.index.engine)
        try:
            assert client.get("/api/v1/ready").json()["checks"]["index_writable"] is True
            fault.read_only()
            r = client.get("/api/v1/ready")
            assert r.status_code == 503
            assert r.json()["checks"]["index_writable"] is False and r.json()["checks"]["database"] is True
            assert "readonly database" in r.json()["details"]["index_writable"]
            r = client.post("/api/v1/jobs", json={"kind": "build-library", "params": {"plan": plan}})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "index_unavailable"
            assert "attempt to write a readonly database" in r.json()["error"]["message"]
            fault.malformed()
            r = client.post("/api/v1/jobs", json={"kind": "build-library", "params": {"plan": plan}})
            assert r.status_code == 503 and "malformed" in r.json()["error"]["message"], r.text
            r = client.get("/api/v1/jobs")
            assert r.status_code == 503 and r.json()["error"]["code"] == "index_unavailable"
            ready = client.get("/api/v1/ready").json()
            assert ready["checks"]["database"] is False and ready["checks"]["index_writable"] is False
            fault.heal()
            assert client.get("/api/v1/ready").json()["checks"]["index_writable"] is True
            r = client.post("/api/v1/jobs", json={"kind": "build-library",
                                                  "params": {"plan": plan, "not_before": "2999-01-01T00:00:00Z"}})
            assert r.status_code == 201, r.text
        finally:
            fault.remove()


def test_jobs_cli_reports_an_unusable_index_and_exits_2(index: LibraryIndex, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from daemon.cli import jobs as jobs_cli
    from daemon.jobs.queue import JobQueue

    def unusable(self: JobQueue, *args: Any, **kwargs: Any) -> Any:
        raise JobStoreError("the job queue cannot be read: database disk image is malformed")

    monkeypatch.setattr(JobQueue, "jobs", unusable)
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{index.settings.root}"\n', encoding="utf-8")
    parser = argparse.ArgumentParser(prog="darkd")
    jobs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["jobs", "--config", str(config), "list"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "database disk image is malformed" in err and "Traceback" not in err


def test_an_end_still_unrecorded_at_stop_is_resumed_at_the_next_start(index: LibraryIndex) -> None:
    runs: list[int] = []

    class EndsWhileReadOnlyOnce(CaptureSteps):
        def run(self, ctx: JobContext) -> dict[str, Any]:
            runs.append(ctx.job_id)
            if len(runs) == 1:
                fault.read_only()
            return {"runs": len(runs)}

    fault = DatabaseFault(index.engine)
    kinds = {"capture": EndsWhileReadOnlyOnce()}
    settings = Settings(library=index.settings)
    first = JobEngine(settings, index, lambda: None, EventBus(), poll_s=0.05, kinds=kinds).start()  # type: ignore[arg-type,return-value]
    row = first.submit("capture", {"steps": 1, "camera": "cam-A"})
    wait_for(lambda: first.unfinished() == [row.id])
    first.stop(timeout_s=5)  # the index is still read-only: the end is not recorded …
    assert first.get(row.id).state == "running" and first.unfinished() == []
    fault.heal()
    with JobEngine(settings, index, lambda: None, EventBus(), poll_s=0.05, kinds=kinds) as second:  # type: ignore[arg-type,return-value]
        wait_for(lambda: second.get(row.id).state == "succeeded")  # … so the next start runs it again
        assert second.get(row.id).result == {"runs": 2} and runs == [row.id, row.id]
    fault.remove()
