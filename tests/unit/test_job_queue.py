"""The persistent job queue against a real SQLite library database: rows, log, warnings, compare-and-set claims, the
state table it enforces, and a database that refuses writes (read-only file, failing connection)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.jobs.errors import JobConflict, JobNotFound, JobStoreError
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.settings import LibrarySettings
from tests.db_faults import DatabaseFault


@pytest.fixture
def index(library_settings: LibrarySettings) -> Iterator[LibraryIndex]:
    """On SQLite and on a real PostgreSQL server (``tests/conftest.py``)."""
    idx = LibraryIndex.open(library_settings)
    yield idx
    idx.close()


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[LibraryIndex]:
    """SQLite only: :class:`tests.db_faults.DatabaseFault` raises SQLite's own errors."""
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib"))
    yield idx
    idx.close()


@pytest.fixture
def queue(index: LibraryIndex) -> JobQueue:
    return JobQueue(index)


def test_job_queue_rows_log_and_warnings(queue: JobQueue) -> None:
    job = queue.add_job("build-library", {"plan": {"items": []}})
    assert job.state == "queued" and job.params == {"plan": {"items": []}}
    started = datetime.now(UTC)
    updated = queue.update_job(job.id, state="running", progress_total=10, progress_done=3, step="dark 300 s",
                               eta_s=42.0, warnings=["cooling slow"], started_utc=started)
    assert (updated.state, updated.progress_done, updated.warnings) == ("running", 3, ["cooling slow"])
    assert updated.started_utc == started
    assert queue.append_job_warning(job.id, "frame 3 retaken").warnings == ["cooling slow", "frame 3 retaken"]
    queue.append_job_log(job.id, "cooling to -10 °C")
    queue.append_job_log(job.id, "frame 1/10")
    assert [line for _, line in queue.job_log(job.id)] == ["cooling to -10 °C", "frame 1/10"]
    assert [j.id for j in queue.jobs("running")] == [job.id] and queue.jobs("queued") == []
    assert [j.id for j in queue.jobs(["queued", "running"])] == [job.id]
    with pytest.raises(ValueError, match="unknown job field"):
        queue.update_job(job.id, colour="red")
    with pytest.raises(ValueError, match="state"):
        queue.update_job(job.id, state="sleeping")
    with pytest.raises(JobNotFound):
        queue.append_job_log(12345, "x")
    with pytest.raises(JobNotFound):
        queue.append_job_warning(12345, "x")
    assert queue.get_job(12345) is None
    assert queue.transition_job(job.id, ["queued"], state="running") is None  # it is running already
    done = queue.transition_job(job.id, ["running"], state="succeeded", progress_done=10)
    assert done is not None and done.state == "succeeded" and done.to_dict()["started_utc"].endswith("Z")
    with pytest.raises(JobNotFound):
        queue.transition_job(12345, ["queued"], state="running")


def test_queue_refuses_state_changes_the_table_does_not_allow(queue: JobQueue) -> None:
    job = queue.add_job("integrate", {"entry_id": 1})
    with pytest.raises(ValueError, match="cannot go from paused to succeeded"):
        queue.transition_job(job.id, ["running", "paused"], state="succeeded")
    with pytest.raises(JobConflict, match="queued to succeeded"):
        queue.update_job(job.id, state="succeeded")
    assert queue.transition_job(job.id, ["queued"], state="cancelled") is not None
    with pytest.raises(JobConflict, match="cancelled to queued"):  # a final state is final
        queue.update_job(job.id, state="queued")
    assert queue.update_job(job.id, state="cancelled", step="still cancelled").step == "still cancelled"


def test_only_one_thread_claims_a_queued_job(queue: JobQueue) -> None:
    job = queue.add_job("integrate", {})
    wins: list[int] = []
    barrier = threading.Barrier(6)

    def claim(n: int) -> None:
        barrier.wait()
        if queue.transition_job(job.id, ["queued"], state="running", step=f"worker {n}") is not None:
            wins.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and queue.get_job(job.id).step == f"worker {wins[0]}"  # type: ignore[union-attr]


def test_failing_writes_raise_job_store_error_with_the_reason(sqlite_index: LibraryIndex) -> None:
    queue = JobQueue(sqlite_index)
    job = queue.add_job("integrate", {"entry_id": 1})
    fault = DatabaseFault(sqlite_index.engine)
    try:
        assert queue.writable_problem() is None
        fault.read_only()
        assert "readonly database" in (queue.writable_problem() or "")
        with pytest.raises(JobStoreError, match="cannot be written: attempt to write a readonly database"):
            queue.add_job("integrate", {"entry_id": 2})
        with pytest.raises(JobStoreError):
            queue.transition_job(job.id, ["queued"], state="running")
        assert queue.get_job(job.id).state == "queued"  # type: ignore[union-attr]  # reads still work
        fault.malformed()
        with pytest.raises(JobStoreError, match="cannot be read: database disk image is malformed"):
            queue.jobs()
        fault.heal()
        assert queue.writable_problem() is None
        assert [j.kind for j in queue.jobs()] == ["integrate"]  # the probe left no row behind
    finally:
        fault.remove()


def test_read_only_database_file(tmp_path: Path) -> None:
    """The library database opened read-only by SQLite itself (as a read-only file or mount is opened)."""
    settings = LibrarySettings(root=tmp_path / "lib")
    with LibraryIndex.open(settings) as index:
        JobQueue(index).add_job("integrate", {"entry_id": 1})
    db = tmp_path / "lib" / "index.sqlite3"
    read_only = LibrarySettings(root=tmp_path / "lib", database_url=f"sqlite:///file:{db}?mode=ro&uri=true")
    index = LibraryIndex(read_only)
    try:
        queue = JobQueue(index)
        assert [j.kind for j in queue.jobs()] == ["integrate"]
        assert "readonly" in (queue.writable_problem() or "")
        with pytest.raises(JobStoreError, match="cannot be written: attempt to write a readonly database"):
            queue.add_job("integrate", {"entry_id": 2})
    finally:
        index.close()
