"""The persistent job queue: the ``jobs`` and ``job_log`` tables of the library database, read and written in the
library store's short sessions (:meth:`daemon.library.store.LibraryStore.write_session`: one writer per process).

The queue has no policy of its own beyond the state machine of :mod:`daemon.jobs.states` (a state outside it is
refused) and compare-and-set transitions (:meth:`JobQueue.transition_job`), which make two workers — threads or
processes — claiming the same queued job safe. It returns plain :class:`JobRow` dataclasses, never ORM objects.

Reads are SQLAlchemy Core queries over :mod:`daemon.library.tables` (``darkd jobs list`` never loads
``sqlalchemy.orm``: start-up time); writes use the ORM classes, imported by the first write. Writes go through the
store's write session (SQLite: ``BEGIN IMMEDIATE``; a claim also locks the job's row, which
matters on PostgreSQL). A database error (read-only or malformed file, disk full, lock timeout) becomes
:class:`daemon.jobs.errors.JobStoreError`, so callers see one exception with a plain message instead of SQLAlchemy's.

**Leases: several daemons on one index.** Two darkd hosts may share one index (PostgreSQL) and one library root. A
running job records its ``owner`` — the daemon process that claimed it (:func:`process_owner`: host name, process
id, boot id, PID namespace) — and ``lease_until_utc``, which the owner renews while the job runs
(:meth:`JobQueue.renew_leases`). A ``running`` job is *abandoned* (:func:`is_abandoned`), and only then put back in the
queue by whichever daemon sees it first (:meth:`JobQueue.release_abandoned`, re-checked under the row lock), when

* its lease has run out (the owner stopped renewing it: dead, hung, or cut off from the index), or
* its owner is a process of this same machine, boot and PID namespace that no longer exists (a daemon restarted
  after a crash takes its jobs back at once instead of waiting for the lease), or
* it has no lease at all (a row written before migration 0007, or set ``running`` by hand), or
* at start-up only: its owner is this very process (an earlier engine of it, e.g. stopped before it could record a
  job's end).

A daemon that starts never takes over another live daemon's running job. A daemon whose job was released (its lease
ran out while it was cut off) stops that job, and its end is not recorded over the new owner's
(:meth:`JobQueue.transition_owned_job`).
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Row, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from daemon.jobs.errors import JobConflict, JobNotFound, JobStoreError
from daemon.jobs.states import ACTIVE_STATES, JOB_STATES, JobState, can_transition
from daemon.library.store import iso_utc, jsonable
from daemon.library.tables import job_log as job_log_table
from daemon.library.tables import jobs as jobs_table

if TYPE_CHECKING:  # the ORM is imported by the first write (start-up time of ``darkd jobs list``)
    from sqlalchemy.orm import Session

    from daemon.library.models import Job

log = logging.getLogger(__name__)

#: Columns of a job that :meth:`JobQueue.update_job` may change.
JOB_FIELDS = ("state", "progress_done", "progress_total", "step", "eta_s", "warnings", "error", "started_utc",
              "finished_utc", "result", "params", "camera", "owner", "lease_until_utc")
JSON_FIELDS = ("warnings", "result", "params")


class SessionSource(Protocol):
    """The library database's sessions (:class:`daemon.library.store.LibraryStore`): the queue writes through the
    same one-writer-at-a-time discipline as the entries and frames."""

    def read_connection(self) -> AbstractContextManager[Connection]: ...

    def write_session(self) -> AbstractContextManager[Session]: ...


class _Probe(Exception):
    """Raised inside a write to roll the probe row back."""


@dataclass(frozen=True)
class JobRow:
    """A job of the persistent queue, as stored."""

    id: int
    kind: str
    params: dict[str, Any]
    state: str
    camera: str | None
    progress_done: int
    progress_total: int
    step: str | None
    eta_s: float | None
    warnings: list[str]
    error: str | None
    result: dict[str, Any] | None
    created_utc: datetime
    started_utc: datetime | None
    finished_utc: datetime | None
    updated_utc: datetime
    owner: str | None = None
    lease_until_utc: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("created_utc", "started_utc", "finished_utc", "updated_utc", "lease_until_utc"):
            data[name] = iso_utc(getattr(self, name))
        return data


def _row(j: Job | Row[Any]) -> JobRow:
    """The job's row, from its ORM object (writes) or its Core row of the ``jobs`` table (reads)."""
    return JobRow(id=j.id, kind=j.kind, params=dict(j.params or {}), state=j.state, camera=j.camera,
                  progress_done=j.progress_done, progress_total=j.progress_total, step=j.step, eta_s=j.eta_s,
                  warnings=list(j.warnings or []), error=j.error, result=dict(j.result) if j.result else None,
                  created_utc=j.created_utc, started_utc=j.started_utc, finished_utc=j.finished_utc,
                  updated_utc=j.updated_utc, owner=j.owner, lease_until_utc=j.lease_until_utc)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        return str(Path("/proc/self/ns/pid").stat().st_ino)
    except OSError:
        return "-"


def process_owner() -> str:
    """This process as a job owner: ``<host>:<pid>:<boot id>:<pid namespace>`` (the boot id and namespace tell two
    machines with one host name, or two containers on one machine, apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_boot_id()}:{_pid_namespace()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def owner_is_dead(owner: str, me: str) -> bool:
    """True only when ``owner`` is a process of this machine, boot and PID namespace (as ``me``) that is gone. A
    process elsewhere is never known dead: its lease decides."""
    theirs, mine = owner.rsplit(":", 3), me.rsplit(":", 3)
    if len(theirs) != 4 or len(mine) != 4 or theirs[0] != mine[0] or theirs[2:] != mine[2:] or "-" in theirs[2:]:
        return False
    try:
        pid = int(theirs[1])
    except ValueError:
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def is_abandoned(owner: str | None, lease_until_utc: datetime | None, now: datetime, me: str, *,
                 at_start: bool = False) -> bool:
    """Whether a ``running`` job with this owner and lease may be queued again (see the module docstring)."""
    if owner is None:
        return True
    if owner == me:  # this process's own job: running here unless this engine is just starting
        return at_start
    if lease_until_utc is None or lease_until_utc < now:
        return True
    return owner_is_dead(owner, me)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _check_state(state: str) -> None:
    if state not in JOB_STATES:
        raise ValueError(f"job state {state!r} is not one of {', '.join(JOB_STATES)}")


class JobQueue:
    """The job queue of one library database (see the module docstring). Safe to share between threads."""

    def __init__(self, source: SessionSource) -> None:
        self._source = source

    # --- sessions ----------------------------------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._source.read_connection() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise JobStoreError(f"the job queue cannot be read: {describe_db_error(exc)}") from exc

    @contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with self._source.write_session() as session:
                yield session
        except SQLAlchemyError as exc:
            raise JobStoreError(f"the job queue cannot be written: {describe_db_error(exc)}") from exc

    def writable_problem(self) -> str | None:
        """``None`` when a job can be written now, else why not. Writes a job row and rolls it back (for ``/ready``)."""
        from daemon.library.models import Job

        try:
            with self._source.write_session() as session:
                session.add(Job(kind="probe", params={}, state=JobState.CANCELLED.value, progress_done=0,
                                progress_total=0, warnings=[]))
                session.flush()
                raise _Probe  # rolls the write back
        except _Probe:
            return None
        except SQLAlchemyError as exc:
            return f"the library index cannot be written: {describe_db_error(exc)}"

    # --- writes ------------------------------------------------------------------------------------------------------
    def add_job(self, kind: str, params: Mapping[str, Any], *, camera: str | None = None,
                state: str = JobState.QUEUED, conflicts: Callable[[JobRow], bool] | None = None) -> JobRow:
        """Add a job. With ``conflicts``: in the same write transaction, refuse (:class:`JobConflict`) when an active
        job of the same camera is one (one capture job per camera across every daemon sharing the index: on
        PostgreSQL a transaction-scoped advisory lock per camera serialises two hosts submitting at once; SQLite's
        ``BEGIN IMMEDIATE`` already does)."""
        _check_state(state)
        from daemon.library.models import Job

        with self._write() as s:
            if conflicts is not None and camera is not None:
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                              {"k": zlib.crc32(f"darkd-camera:{camera}".encode())})
                active = s.scalars(select(Job).where(Job.camera == camera, Job.state.in_(
                    [st.value for st in ACTIVE_STATES])).order_by(Job.id)).all()
                busy = [r for r in map(_row, active) if conflicts(r)]
                if busy:
                    raise JobConflict(f"capture job {busy[0].id} ({busy[0].state}) already uses camera {camera!r}")
            job = Job(kind=kind, params=jsonable(dict(params)), state=state, camera=camera, progress_done=0,
                      progress_total=0, warnings=[])
            s.add(job)
            s.flush()
            return _row(job)

    def update_job(self, job_id: int, **fields: Any) -> JobRow:
        """Update any of :data:`JOB_FIELDS`. Unknown names raise ``ValueError``, an unknown id :class:`JobNotFound`, a
        state change that :data:`daemon.jobs.states.TRANSITIONS` does not allow :class:`JobConflict`."""
        row = self._update_job(job_id, None, fields)
        assert row is not None
        return row

    def transition_job(self, job_id: int, from_states: Iterable[str], **fields: Any) -> JobRow | None:
        """Compare-and-set in one write transaction: apply ``fields`` only if the job's state is in ``from_states``.

        Returns the updated row, or ``None`` when the job was in another state (two workers claiming the same queued
        job: exactly one gets it, across processes too). Raises :class:`JobNotFound` for an unknown id.
        """
        return self.transition_owned_job(job_id, from_states, None, **fields)

    def transition_owned_job(self, job_id: int, from_states: Iterable[str], owned_by: str | None,
                             **fields: Any) -> JobRow | None:
        """:meth:`transition_job`, and only while the job's owner is ``owned_by`` or none (a daemon recording the
        end of a job must not overwrite the state of another daemon that has claimed it since)."""
        sources = {str(s) for s in from_states}
        if "state" in fields:
            _check_state(fields["state"])
            illegal = sorted(s for s in sources if not can_transition(s, fields["state"]))
            if illegal:
                raise ValueError(f"a job cannot go from {', '.join(illegal)} to {fields['state']}")
        return self._update_job(job_id, sources, fields, owned_by)

    def renew_leases(self, owner: str, job_ids: Iterable[int], until: datetime) -> list[int]:
        """Extend the lease of the given jobs that are still ``running`` and owned by ``owner``; returns their ids
        (a job missing from the answer was released, ended or changed state meanwhile)."""
        ids = sorted({int(i) for i in job_ids})
        if not ids:
            return []
        from daemon.library.models import Job

        with self._write() as s:
            jobs = s.scalars(select(Job).where(Job.id.in_(ids), Job.state == JobState.RUNNING.value,
                                               Job.owner == owner).with_for_update()).all()
            for job in jobs:
                job.lease_until_utc = until
            return [j.id for j in jobs]

    def release_abandoned(self, me: str, *, at_start: bool = False, step: str, log_line: str) -> list[JobRow]:
        """Put every abandoned ``running`` job (:func:`is_abandoned`) back in the queue, each re-checked under its row
        lock; returns the released rows (owner and lease cleared, ``step`` set, ``log_line`` appended)."""
        from daemon.library.models import Job, JobLog

        now = utc_now()
        job_ = jobs_table.c
        with self._read() as conn:
            rows = conn.execute(select(job_.id, job_.owner, job_.lease_until_utc)
                                .where(job_.state == JobState.RUNNING.value)).all()
        candidates = [r.id for r in rows if is_abandoned(r.owner, r.lease_until_utc, now, me, at_start=at_start)]
        released = []
        for job_id in candidates:
            with self._write() as s:
                job = s.get(Job, int(job_id), with_for_update=True)
                if job is None or job.state != JobState.RUNNING.value or \
                        not is_abandoned(job.owner, job.lease_until_utc, now, me, at_start=at_start):
                    continue
                previous = job.owner
                job.state, job.step, job.owner, job.lease_until_utc = JobState.QUEUED.value, step, None, None
                s.add(JobLog(job_id=job.id, line=f"{log_line} (was run by {previous or 'an unknown daemon'})"))
                s.flush()
                released.append(_row(job))
        return released

    def _update_job(self, job_id: int, from_states: set[str] | None, fields: Mapping[str, Any],
                    owned_by: str | None = None) -> JobRow | None:
        unknown = sorted(set(fields) - set(JOB_FIELDS))
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(unknown)}")
        if "state" in fields:
            _check_state(fields["state"])
        with self._write() as s:
            job = self._job(s, job_id)
            if from_states is not None and job.state not in from_states:
                return None
            if owned_by is not None and job.owner not in (None, owned_by):
                return None
            if "state" in fields and not can_transition(job.state, fields["state"]):
                raise JobConflict(f"job {job_id} cannot go from {job.state} to {fields['state']}")
            for name, value in fields.items():
                setattr(job, name, jsonable(value) if name in JSON_FIELDS else
                        str(value) if name == "state" else value)
            s.flush()
            return _row(job)

    def append_job_warning(self, job_id: int, warning: str) -> JobRow:
        """Add one warning to the job's list (atomically; concurrent appends are not lost)."""
        with self._write() as s:
            job = self._job(s, job_id)
            job.warnings = [*(job.warnings or []), str(warning)]
            s.flush()
            return _row(job)

    def append_job_log(self, job_id: int, line: str) -> None:
        from daemon.library.models import JobLog

        with self._write() as s:
            self._job(s, job_id)
            s.add(JobLog(job_id=int(job_id), line=str(line)))

    @staticmethod
    def _job(s: Session, job_id: int) -> Job:
        """The job's row, locked until the write commits (``SELECT … FOR UPDATE``: on PostgreSQL a second claimer
        waits and then sees the new state; SQLite serialises writers with ``BEGIN IMMEDIATE`` instead)."""
        from daemon.library.models import Job

        job = s.get(Job, int(job_id), with_for_update=True)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    # --- reads -------------------------------------------------------------------------------------------------------
    def get_job(self, job_id: int) -> JobRow | None:
        with self._read() as conn:
            job = conn.execute(select(jobs_table).where(jobs_table.c.id == int(job_id))).first()
            return _row(job) if job is not None else None

    def jobs(self, state: str | Iterable[str] | None = None) -> list[JobRow]:
        """Jobs ordered by id, all or those in ``state`` (a name or several)."""
        job = jobs_table.c
        query = select(jobs_table).order_by(job.id)
        if state is not None:
            query = query.where(job.state.in_([str(state)] if isinstance(state, str) else [str(s) for s in state]))
        with self._read() as conn:
            return [_row(j) for j in conn.execute(query).all()]

    def job_log(self, job_id: int) -> list[tuple[datetime, str]]:
        line = job_log_table.c
        with self._read() as conn:
            rows = conn.execute(select(line.time_utc, line.line).where(line.job_id == int(job_id))
                                .order_by(line.id)).all()
            return [(r.time_utc, r.line) for r in rows]


def describe_db_error(exc: SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's statement dump (e.g. ``attempt to write a readonly database``)."""
    return str(exc.orig) if isinstance(exc, DBAPIError) else str(exc).split("\n", 1)[0]
