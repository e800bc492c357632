"""The job engine: a persistent queue in the library database, one thread per running job, clean stop/pause/cancel.

States, allowed transitions and kinds are defined in :mod:`daemon.jobs.states`; the queue
(:class:`daemon.jobs.queue.JobQueue`, the ``jobs`` table, so ``darkd jobs`` and the REST API see the same thing)
refuses any other state change. Each kind's module (:data:`daemon.jobs.states.KIND_MODULES`) provides ``Params`` (a
pydantic model: the typed params, checked first), ``validate`` (checks against the library) and ``run``.

* **One capture job per camera**: :meth:`JobEngine.submit` raises :class:`JobConflict` while a capture job
  (build-library) for the same camera is queued, running or paused; other kinds run alongside.
* **The index is the control channel**: :meth:`cancel`/:meth:`pause`/:meth:`resume` (or ``darkd jobs …`` from another
  process) change the job's state in the index; a dispatcher thread polls every ``poll_s`` seconds, starts queued jobs
  whose start window is open (params ``not_before``/``not_after``, ISO 8601) and tells running jobs that were paused or
  cancelled to stop. A stopped job aborts its current exposure (``capture_series`` gets the job's stop event) and ends
  between frames, so nothing half-written is left.
* **Crash safety**: :meth:`start` removes leftovers of interrupted atomic writes and puts jobs left ``running`` by a
  dead daemon back in the queue; the job resumes from what is on disk (the capture code never retakes a complete
  frame). :meth:`stop` puts running jobs back to ``queued`` the same way.
* **Several daemons, one index** (two camera hosts sharing a PostgreSQL index and a library root): a job is claimed
  with a compare-and-set that records the claiming process as its ``owner`` with a lease of ``lease_s`` seconds, which
  the dispatcher renews while the job runs (every ``lease_s / 3``). "Left running by a dead daemon" means an
  abandoned lease (:func:`daemon.jobs.queue.is_abandoned`: expired, or its process gone from this machine): a daemon
  that starts, or any dispatcher tick, queues such jobs again, never another live daemon's. A job whose lease was
  released meanwhile (this daemon was cut off longer than ``lease_s``) is stopped here and its end is not written
  over the new owner's. With ``[indi] device`` set, the engine claims only capture jobs for that camera, so each
  host builds its own camera's keys; non-capture jobs go to whichever daemon claims them first. Two daemons never
  build the same key twice: one capture job per camera (:meth:`JobEngine.submit`, checked in the transaction that
  adds the job, under a per-camera lock on PostgreSQL) and one entry per key (unique ``entries.directory``).
* **The engine survives its own storage**: a database error while a job runs fails that job; when the job's end
  cannot be recorded (read-only, malformed or locked index) the engine frees its slot at once, keeps the outcome and
  writes it on every dispatcher tick until the index takes it, so no job stays ``running`` forever.
  :attr:`JobEngine.store_problem` says what is wrong meanwhile (``/ready`` reports it).
* **A disk budget**: a kind whose module has ``bytes_needed(params, index, result)`` (build-library: the frames
  still to capture and the masters) is refused at submit (:class:`NoRoom`), and not started from the queue, while the
  library disk has less free room than that plus ``library.min_free_bytes``; a queued job waits with the step
  ``waiting for disk space`` and a ``disk`` event. A running one is paused, with a warning and a ``disk`` event, as
  soon as the free room falls below the margin, between two frames and before the disk is full.
  :meth:`JobEngine.disk_problem` says the same for ``/ready``.
* CPU-heavy work (integration) goes to a ``spawn`` process pool (:attr:`JobEngine.pool`) so capture overlaps it.
* A build-library job watching the weather (param ``weather``, :mod:`daemon.jobs.weather_gate`) stays ``running``
  while the sky is clear and it has yielded the camera: only its ``step`` says so (``sky clear: camera yielded``, with
  a ``warning`` event); ``paused`` remains reserved for a user's (or the start window's) pause.

Events on the bus: ``job`` {job_id, kind, state, progress_done, progress_total, step, eta_s} on every change,
``frame`` {job_id, camera, path, ok, reasons}, ``warning`` {job_id, message}.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import BaseModel, ValidationError

from daemon.events import EventBus
from daemon.jobs.errors import JobConflict, JobInterrupted, JobNotFound, JobStoreError
from daemon.jobs.queue import JobQueue, JobRow, process_owner
from daemon.jobs.states import COMMANDS, KIND_MODULES, JobState
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import remove_partial_files
from daemon.settings import Settings
from drivers.camera import Camera

log = logging.getLogger(__name__)

#: A job asked to stop that is still running after this long is reported (log and ``warning`` event).
STOP_GRACE_S = 30.0

__all__ = ["JobContext", "JobEngine", "JobHandler", "NoRoom", "handler_module"]

#: How long a claim on a running job holds without renewal (s): after a crash on another host, its jobs wait this long.
LEASE_S = 60.0

#: ``step`` of a queued job held back because the library disk is short of room.
WAITING_FOR_DISK_STEP = "waiting for disk space"


class NoRoom(OSError):
    """The library disk has less free room than the job needs plus ``library.min_free_bytes``; says how much (an
    ``OSError``, like the ``ENOSPC`` it prevents)."""


def human_bytes(n: float) -> str:
    """``1.5 GiB`` etc. (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class JobHandler(Protocol):
    """What a job kind provides (a module of :data:`KIND_MODULES`, or any object with these attributes).

    ``USES_CAMERA``: a capture kind (one at a time per camera). ``Params``: the typed params (pydantic; checked
    before ``validate``). ``validate(params, settings, index) -> (params, camera)`` checks against the library and
    the file system. ``run(ctx) -> result``.
    """

    USES_CAMERA: bool
    Params: type[BaseModel]

    def validate(self, params: dict[str, Any], settings: Settings,
                 index: LibraryIndex) -> tuple[dict[str, Any], str | None]: ...

    def run(self, ctx: JobContext) -> dict[str, Any]: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def handler_module(kind: str, kinds: Mapping[str, str | Any] | None = None) -> JobHandler:
    """The handler of ``kind``: a module path from ``kinds`` (default :data:`KIND_MODULES`) imported, or an object
    with ``validate``/``run`` given directly. ``ValueError`` for an unknown kind."""
    table = KIND_MODULES if kinds is None else kinds
    if kind not in table:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(table)}")
    handler = table[kind]
    return cast(JobHandler, importlib.import_module(handler) if isinstance(handler, str) else handler)


def describe_invalid(kind: str, exc: ValidationError, limit: int = 5) -> str:
    """``build-library: params.plan.items.0.frames_target: Input should be less than or equal to 10000; …``"""
    parts = [f"params.{'.'.join(str(p) for p in err['loc']) or '(all)'}: {err['msg']}" for err in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return f"{kind}: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@dataclass
class _Running:
    job_id: int
    kind: str
    camera: str | None
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # cancel | pause | shutdown | window | lease (released to another daemon)
    thread: threading.Thread | None = None
    stop_requested_s: float | None = None  # time.monotonic() of the first stop request
    slow_stop_warned: bool = False


class JobContext:
    """What a running job sees: its row, the stop event, progress/log/warning/frame reporting, camera and pool."""

    def __init__(self, engine: JobEngine, job: JobRow, running: _Running) -> None:
        self.engine = engine
        self.job = job
        self.job_id = job.id
        self.params: dict[str, Any] = dict(job.params)
        self.settings = engine.settings
        self.index = engine.index
        self.queue = engine.queue
        self.bus = engine.bus
        self.stop = running.stop
        self._running = running
        self._done = job.progress_done
        self._total = job.progress_total
        self._step = job.step

    # --- control -----------------------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    @property
    def stop_reason(self) -> str | None:
        """Why the job is stopping: ``cancel``, ``pause``, ``window`` or ``shutdown`` (``None`` while it runs)."""
        return self._running.reason if self.stop.is_set() else None

    def check(self) -> None:
        """Raise :class:`JobInterrupted` when the job has been asked to stop."""
        if self.stop.is_set():
            raise JobInterrupted(self._running.reason or "stop")

    def camera(self) -> Camera:
        return self.engine.camera(self.job.camera)

    @property
    def pool(self) -> ProcessPoolExecutor:
        return self.engine.pool

    # --- reporting ---------------------------------------------------------------------------------------------------
    def progress(self, done: int | None = None, total: int | None = None, *, step: str | None = None,
                 eta_s: float | None = None) -> None:
        """Store progress (frames done/total), the current step and the ETA (seconds), and publish a ``job`` event."""
        if done is not None:
            self._done = int(done)
        if total is not None:
            self._total = int(total)
        if step is not None:
            self._step = step
        row = self.queue.update_job(self.job_id, progress_done=self._done, progress_total=self._total,
                                    step=self._step, eta_s=None if eta_s is None else round(float(eta_s), 1))
        self.engine.publish_job(row)

    def step(self, text: str, *, eta_s: float | None = None) -> None:
        self.progress(step=text, eta_s=eta_s)
        self.log(text)

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        self.queue.append_job_log(self.job_id, line)

    def warn(self, message: str) -> None:
        log.warning("job %s: %s", self.job_id, message)
        self.queue.append_job_warning(self.job_id, message)
        self.queue.append_job_log(self.job_id, f"WARNING: {message}")
        self.bus.publish("warning", {"job_id": self.job_id, "message": message})

    def frame(self, path: str, ok: bool, reasons: list[str]) -> None:
        self.bus.publish("frame", {"job_id": self.job_id, "camera": self.job.camera, "path": str(path), "ok": bool(ok),
                                   "reasons": list(reasons)})

    def save_result(self, result: Mapping[str, Any]) -> None:
        """Persist partial results (e.g. which entry each plan item uses) so a resumed run can find them."""
        self.queue.update_job(self.job_id, result=dict(result))


class JobEngine:
    """Runs the jobs of one library index (see the module docstring).

    ``camera_factory`` is called once, on the first capture job; the engine connects the camera when it is not
    connected but leaves disconnecting to its owner unless ``disconnect_camera_on_stop``. With ``camera_for`` (the
    daemon's runtime, several cameras) a job gets ``camera_for(job.camera)`` instead: its owner makes, caches and
    connects each camera, so jobs on different cameras never wait for each other. ``camera_name`` turns the camera a
    capture job names into the one name its owner knows it by (``ValueError`` for a camera it does not have).
    """

    def __init__(self, settings: Settings, index: LibraryIndex, camera_factory: Callable[[], Camera],
                 bus: EventBus | None = None, *, poll_s: float = 1.0, integration_workers: int = 1,
                 disconnect_camera_on_stop: bool = False, kinds: Mapping[str, str | Any] | None = None,
                 worker_niceness: int = 0, lease_s: float = LEASE_S,
                 camera_for: Callable[[str | None], Camera] | None = None,
                 camera_name: Callable[[str | None], str | None] | None = None) -> None:
        self.settings = settings
        self.index = index
        self.queue = JobQueue(index)
        self.camera_factory = camera_factory
        self.camera_for = camera_for
        self.camera_name = camera_name
        self.bus = bus or EventBus()
        self.poll_s = poll_s
        self.integration_workers = integration_workers
        self.worker_niceness = worker_niceness  # > 0: worker processes run at lower CPU priority (os.nice)
        self.disconnect_camera_on_stop = disconnect_camera_on_stop
        self.kinds: dict[str, str | Any] = dict(KIND_MODULES if kinds is None else kinds)
        self._lock = threading.RLock()
        self._running: dict[int, _Running] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._camera: Camera | None = None
        self._camera_lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._unfinished: dict[int, dict[str, Any]] = {}  # job id → its outcome, not yet written to the index
        self._held_for_room: set[int] = set()  # queued jobs already told they wait for disk space
        #: Why the job queue cannot be written right now (``None``: it can, as far as the engine knows).
        self.store_problem: str | None = None
        #: this daemon process as the ``owner`` of the jobs it runs, and how long its claims hold (see the docstring)
        self.owner = process_owner()
        self.lease_s = float(lease_s)
        self._renew_due_s = 0.0  # time.monotonic() of the next lease renewal

    def own_library_dirs(self) -> list[Path]:
        """Where this daemon alone writes, so where it may delete the leftovers of interrupted writes when it starts:
        its cameras' directories (:meth:`Layout.camera_dir`) when every configured camera names its INDI device —
        another host sharing the library root may be writing in its own cameras' directories at this moment — else
        the whole library root (one daemon, one camera: the usual set-up)."""
        devices = [c.indi.device for c in self.settings.camera_configs()]
        if not all(devices):
            return [self.index.layout.root]
        return [self.index.layout.camera_dir(device) for device in devices if device]

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> JobEngine:
        """Clean up after a crash and start the dispatcher: jobs left ``running`` are queued again and resumed."""
        if self._dispatcher is not None:
            return self
        self.index.create()
        for directory in self.own_library_dirs():
            for path in remove_partial_files(directory):
                log.warning("removed leftover of an interrupted write: %s", path)
        if (not self.settings.library.resolved_database_url().startswith("sqlite")
                and not any(c.indi.device for c in self.settings.camera_configs())):
            log.warning("shared index without [indi] device: this daemon may claim capture jobs of other hosts' "
                        "cameras; name this daemon's camera to keep each host to its own")
        for row in self.queue.release_abandoned(self.owner, at_start=True, step="resuming after restart",
                                                log_line="daemon restarted: job queued again, resuming from the "
                                                         "files on disk"):
            self.publish_job(row)
        self._stopping.clear()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="darkd-jobs", daemon=True)
        self._dispatcher.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the dispatcher and every running job (they go back to ``queued``), then the worker pool."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        if self._dispatcher is not None:  # first: it must not launch a job after the snapshot below
            self._dispatcher.join(max(0.1, deadline - time.monotonic()))
            self._dispatcher = None
        with self._lock:
            running = list(self._running.values())
        for run in running:
            self._request_stop(run, "shutdown")
        for run in running:
            if run.thread is not None:
                run.thread.join(max(0.1, deadline - time.monotonic()))
        self._retry_unfinished_quietly()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._camera_lock:
            camera, self._camera = self._camera, None
        if camera is not None and self.disconnect_camera_on_stop:
            try:
                camera.disconnect()
            except Exception:  # disconnecting is best effort at shutdown
                log.exception("camera disconnect failed")

    def __enter__(self) -> JobEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- shared resources --------------------------------------------------------------------------------------------
    def camera(self, name: str | None = None) -> Camera:
        """The camera of a job named ``name`` (made by the factory on first use, connected if it is not)."""
        if self.camera_for is not None:
            return self.camera_for(name)
        with self._camera_lock:  # held while connecting: two jobs must not connect the same camera twice
            if self._camera is None:
                self._camera = self.camera_factory()
            camera = self._camera
            if not camera.state().connected:
                camera.connect(self.settings.indi.connect_timeout_s)
        return camera

    @property
    def pool(self) -> ProcessPoolExecutor:
        """The worker processes for CPU-heavy steps (``spawn``: no inherited threads, locks or DB connections)."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.integration_workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_priority, initargs=(self.worker_niceness,))
            return self._pool

    def publish_job(self, row: JobRow) -> None:
        self.bus.publish("job", {"job_id": row.id, "kind": row.kind, "state": row.state,
                                 "progress_done": row.progress_done, "progress_total": row.progress_total,
                                 "step": row.step, "eta_s": row.eta_s})

    def handler(self, kind: str) -> JobHandler:
        return handler_module(kind, self.kinds)

    def uses_camera(self, kind: str) -> bool:
        """Whether ``kind`` captures (one such job per camera at a time); unknown kinds do not."""
        try:
            return bool(self.handler(kind).USES_CAMERA)
        except (ValueError, ImportError):
            return False

    def unfinished(self) -> list[int]:
        """Jobs that have ended but whose end could not be written to the index yet (retried every tick)."""
        with self._lock:
            return sorted(self._unfinished)

    # --- disk budget -------------------------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Free room on the library disk (bytes, for this user)."""
        return shutil.disk_usage(self.index.layout.root).free

    def _estimator(self, kind: str) -> Callable[..., int] | None:
        try:
            return cast(Callable[..., int] | None, getattr(self.handler(kind), "bytes_needed", None))
        except (ValueError, ImportError):
            return None

    def bytes_needed(self, kind: str, params: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> int | None:
        """Bytes the job still needs on the library disk, or ``None`` for a kind without a disk budget."""
        estimate = self._estimator(kind)
        return None if estimate is None else int(estimate(dict(params), self.index, dict(result or {})))

    def room_problem(self, kind: str, params: Mapping[str, Any], result: Mapping[str, Any] | None = None, *,
                     free_bytes: int | None = None) -> str | None:
        """Why the job may not start for lack of disk room (``None``: it may, or it has no disk budget)."""
        need = self.bytes_needed(kind, params, result)
        if need is None:
            return None
        margin = self.settings.library.min_free_bytes
        free = self.free_bytes() if free_bytes is None else free_bytes
        if free >= need + margin:
            return None
        return (f"the library disk ({self.index.layout.root}) has {human_bytes(free)} free; this {kind} job needs "
                f"{human_bytes(need)} plus a margin of {human_bytes(margin)} ([library] min_free_bytes)")

    def disk_problem(self) -> str | None:
        """Why the library disk cannot take the next job (``/ready``): free room under the margin, or under what the
        first running or queued job with a disk budget still needs plus the margin; ``None`` when there is room."""
        free = self.free_bytes()
        margin = self.settings.library.min_free_bytes
        if free < margin:
            return (f"the library disk ({self.index.layout.root}) has {human_bytes(free)} free, less than the "
                    f"margin of {human_bytes(margin)} ([library] min_free_bytes)")
        for job in self.queue.jobs([JobState.RUNNING, JobState.QUEUED]):
            problem = self.room_problem(job.kind, job.params, job.result, free_bytes=free)
            if problem is not None:
                return f"job {job.id}: {problem}"
            if self.bytes_needed(job.kind, job.params, job.result) is not None:
                break  # the next job with a disk budget fits
        return None

    def _disk_warning(self, job_id: int, message: str, needed_bytes: int | None, free_bytes: int) -> None:
        log.warning("job %s: %s", job_id, message)
        self.queue.append_job_warning(job_id, message)
        self.bus.publish("warning", {"job_id": job_id, "message": message})
        self.bus.publish("disk", {"job_id": job_id, "free_bytes": free_bytes, "needed_bytes": needed_bytes,
                                  "message": message})

    def _pause_if_disk_low(self, job_id: int, run: _Running) -> None:
        """Pause a running job with a disk budget when the free room falls under the margin (before it is full)."""
        if run.stop.is_set() or self._estimator(run.kind) is None:
            return
        free = self.free_bytes()
        margin = self.settings.library.min_free_bytes
        if free >= margin:
            return
        self._disk_warning(job_id, f"capture paused: the library disk has {human_bytes(free)} free, under the margin "
                           f"of {human_bytes(margin)} ([library] min_free_bytes); free some room and resume the job",
                           None, free)
        with contextlib.suppress(JobConflict):  # it ended or was paused meanwhile
            self.command(job_id, "pause")

    def _held_back_for_room(self, job: JobRow) -> bool:
        """True when a queued job must wait for disk room (told once with a warning, a step and a ``disk`` event)."""
        problem = self.room_problem(job.kind, job.params, job.result)
        if problem is None:
            self._held_for_room.discard(job.id)
            return False
        if job.id not in self._held_for_room:
            self._held_for_room.add(job.id)
            free = self.free_bytes()
            self._disk_warning(job.id, f"not started: {problem}", self.bytes_needed(job.kind, job.params, job.result),
                               free)
            row = self.queue.update_job(job.id, step=f"{WAITING_FOR_DISK_STEP}: {problem}")
            self.publish_job(row)
        return True

    # --- queries -----------------------------------------------------------------------------------------------------
    def list(self, state: str | None = None) -> list[JobRow]:
        return self.queue.jobs(state)

    def get(self, job_id: int) -> JobRow:
        row = self.queue.get_job(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return row

    # --- commands ----------------------------------------------------------------------------------------------------
    def submit(self, kind: str, params: Mapping[str, Any] | None = None, *, camera: str | None = None) -> JobRow:
        """Validate and queue a job. ``ValueError`` for bad params (a pydantic ``ValidationError`` names the field),
        :class:`JobConflict` when a capture job already holds the camera, :class:`JobStoreError` when the index cannot
        be written. ``camera``: the camera a capture job runs on, when not the one its params name."""
        module = self.handler(kind)
        try:
            typed = module.Params.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise ValueError(describe_invalid(kind, exc)) from exc
        clean, named = module.validate(typed.model_dump(mode="json", exclude_unset=True), self.settings, self.index)
        camera = camera if camera is not None and self.uses_camera(kind) else named
        if self.camera_name is not None and self.uses_camera(kind):
            camera = self.camera_name(camera)
        for name in ("not_before", "not_after"):
            if name in clean:
                try:
                    clean[name] = _parse_time(clean[name]).isoformat() if clean[name] else None  # type: ignore[union-attr]
                except ValueError as exc:
                    raise ValueError(f"{name}: not an ISO 8601 time ({exc})") from exc
        room = self.room_problem(kind, clean)
        if room is not None:
            raise NoRoom(room)
        with self._lock:  # the check and the insert in one transaction: hosts sharing the index submit safely too
            row = self.queue.add_job(kind, clean, camera=camera,
                                     conflicts=(lambda j: self.uses_camera(j.kind)) if self.uses_camera(kind) else None)
        self._log_quietly(row.id, f"submitted ({kind})")
        self.publish_job(row)
        self._wake.set()
        return row

    def cancel(self, job_id: int) -> JobRow:
        """Cancel a queued, paused or running job (a running exposure is aborted)."""
        return self.command(job_id, "cancel")

    def pause(self, job_id: int) -> JobRow:
        """Pause a queued or running job; :meth:`resume` queues it again and it continues where it stopped."""
        return self.command(job_id, "pause")

    def resume(self, job_id: int) -> JobRow:
        return self.command(job_id, "resume")

    def command(self, job_id: int, what: str) -> JobRow:
        """Apply a user command of :data:`daemon.jobs.states.COMMANDS` (``cancel``, ``pause``, ``resume``)."""
        command = COMMANDS[what]
        fields: dict[str, Any] = {"state": command.to_state.value, "step": command.step}
        if command.finishes:
            fields["finished_utc"] = _now()
        row = self.queue.transition_job(job_id, command.from_states, **fields)
        return self._after_command(job_id, row, what)

    def _after_command(self, job_id: int, row: JobRow | None, what: str) -> JobRow:
        if row is None:
            current = self.get(job_id)
            raise JobConflict(f"cannot {what} job {job_id}: it is {current.state}")
        self._log_quietly(job_id, f"{what} requested")
        with self._lock:
            run = self._running.get(job_id)
        if run is not None and what in ("cancel", "pause"):
            self._request_stop(run, what)
        self.publish_job(row)
        self._wake.set()
        return row

    @staticmethod
    def _request_stop(run: _Running, reason: str) -> None:
        if run.reason is None:
            run.reason = reason
            run.stop_requested_s = time.monotonic()
        run.stop.set()

    def _warn_slow_stop(self, run: _Running) -> None:
        """Say so (log, ``warning`` event) when a job asked to stop is still running after :data:`STOP_GRACE_S`:
        it holds its slot (and camera) until its thread ends, so a stuck job must be visible, not silent."""
        if run.slow_stop_warned or run.stop_requested_s is None:
            return
        waited_s = time.monotonic() - run.stop_requested_s
        if waited_s < STOP_GRACE_S:
            return
        run.slow_stop_warned = True
        message = (f"job {run.job_id} was asked to stop ({run.reason}) {waited_s:.0f} s ago and is still running; "
                   "it keeps its slot until it reaches its next stop check")
        log.warning(message)
        self.bus.publish("warning", {"job_id": run.job_id, "message": message})

    # --- dispatcher --------------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            recorded = self._survive(self._retry_unfinished)  # a failed retry must not keep commands from acting
            leased = self._survive(self._keep_leases)
            if self._survive(self._tick) and recorded and leased and not self.unfinished():
                self.store_problem = None
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _survive(self, step: Callable[[], None]) -> bool:
        """Run one dispatcher step; the dispatcher survives any error (a database one is logged once, not per poll)."""
        try:
            step()
            return True
        except JobStoreError as exc:
            if str(exc) != self.store_problem:
                log.error("job dispatcher: %s", exc)
            self.store_problem = str(exc)
        except Exception:
            log.exception("job dispatcher step %s failed", getattr(step, "__name__", step))
        return False

    def _keep_leases(self) -> None:
        """Extend this daemon's claims on the jobs it runs (and on those whose end is not recorded yet), every
        ``lease_s / 3``; then queue again the jobs whose daemon died (here or on another host)."""
        if time.monotonic() >= self._renew_due_s:
            with self._lock:
                ids = set(self._running) | set(self._unfinished)
            self.queue.renew_leases(self.owner, ids, _now() + timedelta(seconds=self.lease_s))
            self._renew_due_s = time.monotonic() + self.lease_s / 3
        for row in self.queue.release_abandoned(self.owner, step="resuming: its daemon stopped renewing its claim",
                                                log_line="job queued again: its daemon's claim ran out"):
            self.publish_job(row)

    def serves(self, camera: str | None) -> bool:
        """Whether this engine may claim a capture job for ``camera``: any camera unless this daemon's cameras are
        named (``[indi] device``, or the ``device`` of every ``[[cameras]]`` entry); then only theirs, by id or INDI
        device (several daemons on one index each build their own cameras' keys)."""
        configs = self.settings.camera_configs()
        if not any(c.indi.device for c in configs):
            return True
        return any(c.matches(camera) for c in configs)

    def _tick(self) -> None:
        now = _now()
        with self._lock:
            running = dict(self._running)
        for job_id, run in running.items():  # commands from other processes arrive through the index
            self._warn_slow_stop(run)
            self._pause_if_disk_low(job_id, run)
            row = self.queue.get_job(job_id)
            if row is None or row.state in (JobState.PAUSED, JobState.CANCELLED):
                self._request_stop(run, "cancel" if row is None or row.state == JobState.CANCELLED else "pause")
            elif row.state == JobState.QUEUED or row.owner not in (None, self.owner):
                if run.reason is None:
                    log.warning("job %s: this daemon's claim was released (now %s); stopping it here", job_id,
                                row.owner or "queued")
                self._request_stop(run, "lease")
            elif (end := _parse_time(row.params.get("not_after"))) is not None and now > end and not run.stop.is_set():
                self.queue.append_job_log(job_id, "start window ended: pausing")
                self._request_stop(run, "window")
        if self._stopping.is_set():
            return
        for job in self.queue.jobs(JobState.QUEUED):
            if job.id in running:
                continue  # still winding down after a pause/resume
            begin = _parse_time(job.params.get("not_before"))
            end = _parse_time(job.params.get("not_after"))
            if begin is not None and now < begin:
                continue
            if end is not None and now > end:
                row = self.queue.transition_job(job.id, {JobState.QUEUED}, state=JobState.CANCELLED,
                                                finished_utc=now, error="its start window ended before it could run")
                if row is not None:
                    self.queue.append_job_log(job.id, "start window ended before the job could run")
                    self.publish_job(row)
                continue
            if self.uses_camera(job.kind):
                if not self.serves(job.camera):
                    continue  # another daemon's camera
                with self._lock:
                    if any(r.camera == job.camera and self.uses_camera(r.kind) for r in self._running.values()):
                        continue
            if self._held_back_for_room(job):
                continue
            self._launch(job, now)

    def _launch(self, job: JobRow, now: datetime) -> None:
        fields: dict[str, Any] = {"state": JobState.RUNNING, "finished_utc": None, "error": None,
                                  "owner": self.owner, "lease_until_utc": now + timedelta(seconds=self.lease_s)}
        if job.started_utc is None:
            fields["started_utc"] = now
        row = self.queue.transition_job(job.id, {JobState.QUEUED}, **fields)
        if row is None:
            return  # someone else changed it meanwhile
        run = _Running(job_id=row.id, kind=row.kind, camera=row.camera)
        run.thread = threading.Thread(target=self._run_job, args=(run, row), name=f"darkd-job-{row.id}", daemon=True)
        with self._lock:
            self._running[row.id] = run
        self.publish_job(row)
        run.thread.start()

    def _run_job(self, run: _Running, row: JobRow) -> None:
        """The job thread: run the handler, then record how it ended (never raises, always frees the slot)."""
        outcome = self._execute(run, row)
        try:
            self._write_outcome(row.id, outcome)
        except Exception as exc:  # typically JobStoreError: keep the outcome, the dispatcher writes it later
            log.error("job %s ended %s but that cannot be recorded yet (%s); retrying until the index takes it",
                      row.id, outcome["state"], exc)
            with self._lock:
                self._unfinished[row.id] = outcome
            self.store_problem = str(exc)
        finally:  # only now may the dispatcher start this job again (e.g. paused and resumed meanwhile)
            with self._lock:
                self._running.pop(row.id, None)
            self._wake.set()

    def _execute(self, run: _Running, row: JobRow) -> dict[str, Any]:
        """Run the job's handler; returns the fields of its final state (a failure is an outcome, not an error)."""
        ctx = JobContext(self, row, run)
        try:
            ctx.log("resumed" if row.progress_done or (row.result or {}) else "started")
            result = self.handler(row.kind).run(ctx)
            if run.stop.is_set():
                raise JobInterrupted(run.reason or "stop")
            saved = self.queue.get_job(row.id)
            partial = (saved.result if saved is not None else None) or {}
            return {"state": JobState.SUCCEEDED, "finished_utc": _now(), "eta_s": 0.0, "step": "done",
                    "result": {**partial, **(result or {})}}
        except Exception as exc:
            if isinstance(exc, JobInterrupted) or run.stop.is_set():
                self._log_quietly(row.id, f"stopped ({run.reason or 'stop'})")
                return self._interrupted_outcome(run)
            log.exception("job %s (%s) failed", row.id, row.kind)
            self._log_quietly(row.id, "FAILED: " + "".join(traceback.format_exception_only(exc)).strip())
            return {"state": JobState.FAILED, "finished_utc": _now(), "error": f"{type(exc).__name__}: {exc}",
                    "eta_s": None, "step": "failed"}

    def _log_quietly(self, job_id: int, line: str) -> None:
        """Append to the job's log; a database that refuses it must not stop the job from ending."""
        try:
            self.queue.append_job_log(job_id, line)
        except JobStoreError as exc:
            log.warning("job %s: log line not stored (%s): %s", job_id, exc, line)

    def _write_outcome(self, job_id: int, outcome: dict[str, Any]) -> None:
        final = self.queue.transition_owned_job(job_id, {JobState.RUNNING}, self.owner, lease_until_utc=None,
                                                **outcome)
        if final is None:  # already paused/cancelled by a command: keep that state
            current = self.queue.get_job(job_id)
            if current is not None and current.owner not in (None, self.owner):
                log.warning("job %s is run by %s now; its end here (%s) is not recorded", job_id, current.owner,
                            outcome["state"])
                return
            final = self.queue.update_job(job_id, eta_s=None)
        self.publish_job(final)

    def _retry_unfinished_quietly(self) -> None:
        """At stop: a last try to record job ends; jobs still unrecorded stay ``running`` in the index, so the next
        start queues them again and they resume from their files (the retry the index could not take now)."""
        try:
            self._retry_unfinished()
        except JobStoreError as exc:
            log.error("job(s) %s: end not recorded at stop (%s); they resume at the next start",
                      ", ".join(map(str, self.unfinished())), exc)
        with self._lock:
            self._unfinished.clear()

    def _retry_unfinished(self) -> None:
        """Write the outcomes that could not be recorded when their jobs ended (oldest first)."""
        with self._lock:
            pending = sorted(self._unfinished.items())
        for job_id, outcome in pending:
            try:
                self._write_outcome(job_id, outcome)
            except JobNotFound:
                log.warning("job %s disappeared before its end (%s) could be recorded", job_id, outcome["state"])
            with self._lock:
                self._unfinished.pop(job_id, None)
            log.info("job %s: its end (%s) is recorded now", job_id, outcome["state"])

    @staticmethod
    def _interrupted_outcome(run: _Running) -> dict[str, Any]:
        reason = run.reason or "shutdown"
        if reason == "cancel":
            return {"state": JobState.CANCELLED, "finished_utc": _now(), "step": "cancelled", "eta_s": None}
        if reason in ("pause", "window"):
            step = "paused (start window ended)" if reason == "window" else "paused"
            return {"state": JobState.PAUSED, "step": step, "eta_s": None}
        return {"state": JobState.QUEUED, "step": "interrupted by daemon stop; will resume", "eta_s": None}


def _lower_priority(niceness: int) -> None:
    """Worker-process initializer: run CPU-heavy steps ``niceness`` steps below the daemon (capture keeps its pace)."""
    if niceness > 0:
        os.nice(niceness)
