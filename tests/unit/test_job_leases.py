"""Job leases: several daemons on one index (:mod:`daemon.jobs.queue`, the lease part of :mod:`daemon.jobs.engine`).

A starting engine takes back only abandoned ``running`` jobs (expired lease, or an owner process gone from this
machine), never another live daemon's; a running engine renews its claims and stops a job whose claim went to another
daemon without writing its end over theirs; with ``[indi] device`` it claims only that camera's capture jobs. SQLite
in tmp_path and the step kinds of ``test_jobs_engine``; the same on PostgreSQL with two real daemons and two simulated
cameras is ``tests/integration/test_two_hosts.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.events import EventBus
from daemon.jobs.engine import JobEngine
from daemon.jobs.errors import JobConflict
from daemon.jobs.queue import JobQueue, owner_is_dead, process_owner
from daemon.library.catalog import LibraryIndex
from daemon.settings import IndiSettings, Settings
from tests.unit.test_jobs_engine import CaptureStepJob, StepJob, index, no_camera, state_is, wait_for

__all__ = ["index"]  # the fixture


def engine_for(index: LibraryIndex, *, device: str | None = None, lease_s: float = 60.0) -> JobEngine:
    kinds: dict[str, Any] = {"steps": StepJob(), "capture": CaptureStepJob()}
    settings = Settings(library=index.settings, indi=IndiSettings(device=device))
    return JobEngine(settings, index, no_camera, EventBus(), poll_s=0.05, kinds=kinds, lease_s=lease_s)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def with_pid(owner: str, pid: int) -> str:
    host, _, boot, ns = owner.rsplit(":", 3)
    return f"{host}:{pid}:{boot}:{ns}"


def test_an_owner_is_known_dead_only_when_it_is_a_gone_process_of_this_machine_boot_and_namespace() -> None:
    me = process_owner()
    host, _, boot, ns = me.rsplit(":", 3)
    gone = dead_pid()
    assert owner_is_dead(with_pid(me, gone), me)
    assert not owner_is_dead(with_pid(me, os.getppid()), me)  # alive
    assert not owner_is_dead(me, me)
    assert not owner_is_dead(f"{host}-other:{gone}:{boot}:{ns}", me)  # another machine: only its lease tells
    assert not owner_is_dead(f"{host}:{gone}:{'f' * 12}:{ns}", me)  # this machine before a reboot, or a twin
    assert not owner_is_dead(f"{host}:{gone}:{boot}:1", me)  # another PID namespace (a container)
    assert not owner_is_dead("not an owner", me)


def test_a_starting_engine_leaves_a_live_daemons_job_alone_and_resumes_the_abandoned_ones(index: LibraryIndex) -> None:
    queue = JobQueue(index)
    now = datetime.now(UTC)
    me = process_owner()
    hour = timedelta(hours=1)
    jobs = {name: queue.add_job("steps", {"steps": 3}, state="running") for name in ("live", "dead", "expired", "old")}
    queue.update_job(jobs["live"].id, owner="other-host:4242:0123456789ab:4026531836", lease_until_utc=now + hour)
    queue.update_job(jobs["dead"].id, owner=with_pid(me, dead_pid()), lease_until_utc=now + hour)
    queue.update_job(jobs["expired"].id, owner="other-host:4243:0123456789ab:4026531836",
                     lease_until_utc=now - timedelta(seconds=1))
    # "old": no owner, no lease (a row from before migration 0007): abandoned, as before leases
    engine = engine_for(index)
    with engine:
        for name in ("dead", "expired", "old"):
            wait_for(state_is(engine, jobs[name].id, "succeeded"))
        live = engine.get(jobs["live"].id)
        assert live.state == "running" and live.owner == "other-host:4242:0123456789ab:4026531836"
    assert sorted(run["job_id"] for run in engine.kinds["steps"].runs) == sorted(
        jobs[n].id for n in ("dead", "expired", "old"))
    for name in ("dead", "expired"):
        assert any("was run by" in line for _, line in queue.job_log(jobs[name].id))
        done = queue.get_job(jobs[name].id)
        assert done is not None and done.owner == engine.owner and done.lease_until_utc is None


def test_a_running_engine_renews_its_claim_and_releases_a_dead_hosts_job_when_its_lease_lapses(
        index: LibraryIndex) -> None:
    queue = JobQueue(index)
    engine = engine_for(index, lease_s=0.6)
    with engine:
        row = engine.submit("steps", {"steps": 30, "step_s": 0.05})
        wait_for(lambda: engine.get(row.id).lease_until_utc is not None)
        first = engine.get(row.id).lease_until_utc
        assert first is not None
        wait_for(lambda: (engine.get(row.id).lease_until_utc or first) > first + timedelta(seconds=0.3))
        assert engine.get(row.id).owner == engine.owner
        # another host's job, its lease about to lapse while this engine runs: queued again, then run here
        other = queue.add_job("steps", {"steps": 2}, state="running")
        queue.update_job(other.id, owner="other-host:1:0123456789ab:1",
                         lease_until_utc=datetime.now(UTC) + timedelta(seconds=0.3))
        wait_for(state_is(engine, other.id, "succeeded"))
        assert any("claim ran out" in line for _, line in queue.job_log(other.id))
        wait_for(state_is(engine, row.id, "succeeded"))
    assert engine.get(row.id).lease_until_utc is None


def test_a_job_claimed_by_another_daemon_is_stopped_here_and_its_end_not_written_over_theirs(
        index: LibraryIndex) -> None:
    queue = JobQueue(index)
    with engine_for(index) as engine:
        row = engine.submit("steps", {"steps": 1000, "step_s": 0.05})
        wait_for(state_is(engine, row.id, "running"))
        # what another daemon did after this one's lease ran out (cut off from the index): it owns the job now
        queue.update_job(row.id, owner="other-host:7:0123456789ab:1",
                         lease_until_utc=datetime.now(UTC) + timedelta(hours=1))
        wait_for(lambda: row.id not in engine._running)
        job = engine.get(row.id)
    assert job.state == "running" and job.owner == "other-host:7:0123456789ab:1"


def test_with_its_device_named_an_engine_claims_only_that_cameras_capture_jobs(index: LibraryIndex) -> None:
    with engine_for(index, device="Cam A") as engine:
        theirs = engine.submit("capture", {"steps": 2, "camera": "Cam B"})
        mine = engine.submit("capture", {"steps": 2, "camera": "Cam A"})
        plain = engine.submit("steps", {"steps": 2})  # no camera: any daemon may run it
        wait_for(state_is(engine, mine.id, "succeeded"))
        wait_for(state_is(engine, plain.id, "succeeded"))
        assert engine.get(theirs.id).state == "queued" and not engine.serves("Cam B") and engine.serves("Cam A")


def test_one_capture_job_per_camera_is_checked_in_the_insert_transaction(index: LibraryIndex) -> None:
    """The conflict check of a submit runs in the transaction that adds the job (PostgreSQL: under an advisory lock
    per camera), so two hosts submitting for one camera at once cannot both get in."""
    queue = JobQueue(index)
    capture = lambda j: j.kind == "capture"  # noqa: E731
    first = queue.add_job("capture", {}, camera="Cam A", conflicts=capture)
    with pytest.raises(JobConflict, match=f"capture job {first.id} \\(queued\\) already uses camera 'Cam A'"):
        queue.add_job("capture", {}, camera="Cam A", conflicts=capture)
    queue.add_job("capture", {}, camera="Cam B", conflicts=capture)  # another camera
    queue.add_job("steps", {}, camera="Cam A")  # no conflict rule: not a capture
    queue.update_job(first.id, state="running")
    queue.update_job(first.id, state="succeeded")
    queue.add_job("capture", {}, camera="Cam A", conflicts=capture)  # the first one ended
