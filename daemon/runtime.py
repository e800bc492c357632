"""The running daemon: settings, library index, event bus, camera connection and monitor, job engine, metrics.

Threads (all daemon threads, stopped by :meth:`Runtime.stop`):

* ``camera-monitor``: connects the camera (retrying with back-off while the INDI server is away), then every
  ``monitor_interval_s`` reads :meth:`Camera.state` — a read of cached INDI properties, no round trip — keeps the
  snapshot that ``GET /camera`` returns, appends a sample to a ring buffer (the status page chart, ``history_s`` long)
  and publishes a ``temperature`` event ``{temperature_c, set_point_c, cooler_power_pct, stable, exposing}``.
  While a capture job runs the monitor never reconnects itself: the capture loop owns recovery.
* ``metrics-events``: feeds bus events (frames, jobs, warnings) into :class:`daemon.metrics.DaemonMetrics`.
* ``watch`` (with ``[watch] folders``): the closed loop, :class:`daemon.watch.ClosedLoop` — calibrates new lights,
  builds their missing darks when the camera cannot image.

Integrity on use: when the library finds a master changed on disk (and marks it ``bad``), the runtime publishes an
``integrity`` event (counted as ``darkd_master_integrity_failures_total``) and queues an ``integrate`` job for that
entry, so the key is rebuilt from its good frames already on disk, never recaptured; until then nothing selects it.

The HTTP layer only reads these snapshots, so no request waits on the camera.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.events import EventBus
from daemon.health import camera_health
from daemon.jobs.engine import JobEngine
from daemon.jobs.queue import JobQueue
from daemon.jobs.states import CAPTURE_KINDS, JobKind, JobState
from daemon.library.catalog import LibraryIndex
from daemon.library.store import EntryView
from daemon.light_rule import record_driver_defaults
from daemon.metrics import DaemonMetrics
from daemon.mqtt import MqttPublisher
from daemon.settings import Settings
from daemon.watch import ClosedLoop
from drivers.camera import Camera, CameraCapabilities, CameraState

log = logging.getLogger(__name__)

#: Niceness of the job engine's worker processes (integration). On a 2-core machine an integration at normal priority
#: takes both cores and the API's p99 latency rises from ~30 ms to 90-160 ms (bench/bench_api.py, docs/bench/api.md).
WORKER_NICENESS = 10


class Runtime:
    """Owns every long-lived part of the daemon. ``start()`` then ``stop()``; the API reads from it."""

    def __init__(self, settings: Settings, *, camera_factory: Callable[[], Camera] | None = None,
                 connect_camera: bool = True, start_engine: bool = True, monitor_interval_s: float = 2.0,
                 history_s: float = 6 * 3600.0, warm_on_shutdown: bool | None = None,
                 worker_niceness: int = WORKER_NICENESS) -> None:
        self.settings = settings
        self.bus = EventBus()
        self.index = LibraryIndex(settings.library)
        self.index.integrity_listeners.append(self._master_corrupt)
        self.queue = JobQueue(self.index)
        self.metrics = DaemonMetrics(count_by_status=self.index.count_by_status, job_times=self._job_times,
                                     health_report=lambda: camera_health(self.index, self.settings.health))
        self.engine: JobEngine | None = None
        self.engine_error: str | None = None if start_engine else "the job engine is not started in this runtime"
        self.mqtt: MqttPublisher | None = None  # [mqtt] enabled: publishing to a broker (daemon/mqtt.py)
        self.watch: ClosedLoop | None = None  # [watch] folders: the closed loop (daemon/watch.py)
        self.last_plan: Any = None  # daemon.planning.Plan of the latest POST /library/plan (status page coverage)
        self.monitor_interval_s = monitor_interval_s
        self.worker_niceness = worker_niceness
        self.warm_on_shutdown = settings.cooling.warm_up_at_end if warm_on_shutdown is None else warm_on_shutdown
        self._camera_factory = camera_factory or self._default_camera
        self._connect_camera = connect_camera
        self._start_engine = start_engine
        self._camera: Camera | None = None
        self._camera_lock = threading.Lock()
        self._state = CameraState(connected=False)
        self._state_time: datetime | None = None
        self._was_connected = False  # the camera has been connected once: a later drop is a reconnection
        self._state_lock = threading.Lock()
        self.camera_error: str | None = None
        self._defaults_recorded = False  # the driver's state on the first connection is recorded (light rule)
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(10, int(history_s / monitor_interval_s) + 1))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_monotonic = time.monotonic()
        self.running = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Runtime:
        """Open the index, start the job engine (resuming interrupted jobs) and the background threads."""
        if self.settings.watch.folders:  # checks [watch] (build window, weather) before anything starts
            self.watch = ClosedLoop(self.settings, self.index, None, self.bus,
                                    camera_state=lambda: self.camera_state()[0])
        self.index.create()
        self._stop.clear()
        sub = self.bus.subscribe(maxsize=10_000)
        self._spawn("metrics-events", self._pump_metrics, sub)
        if self.settings.mqtt.enabled:
            self.mqtt = MqttPublisher(self.settings.mqtt, self.bus, camera_state=self.camera_snapshot,
                                      count_by_status=self.index.count_by_status).start()
        if self._start_engine:
            self._start_job_engine()
        if self._connect_camera:
            self._spawn("camera-monitor", self._monitor)
        if self.watch is not None:
            self.watch.engine = self.engine
            self.watch.start()
        self.running = True
        log.info("runtime started (library %s)", self.index.layout.root)
        return self

    def _start_job_engine(self) -> None:
        self.engine = JobEngine(self.settings, self.index, self.camera, self.bus, worker_niceness=self.worker_niceness)
        self.engine.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the engine (it aborts or finishes the current exposure and persists its state), warm the camera if
        configured, stop the threads and close the index. Idempotent."""
        if not self.running:
            return
        self.running = False
        self._stop.set()
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self.engine is not None:
            try:
                self.engine.stop(timeout_s=timeout_s)
            except Exception:
                log.exception("job engine did not stop cleanly")
        if self.warm_on_shutdown:
            self._warm_camera()
        for thread in self._threads:
            thread.join(timeout=max(5.0, self.monitor_interval_s * 2))
        self._threads.clear()
        with self._camera_lock:
            if self._camera is not None:
                with contextlib.suppress(Exception):
                    self._camera.disconnect()
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        self.index.close()
        log.info("runtime stopped")

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ camera
    def _default_camera(self) -> Camera:
        from drivers.factory import open_indi_camera

        indi = self.settings.indi
        return open_indi_camera(indi.host, indi.port, indi.device, profile=self.settings.camera_profile,
                                reconnect=True, reconnect_timeout_s=self.settings.cooling.reconnect_timeout_s)

    def camera(self) -> Camera:
        """The one camera object of the daemon (created on first use, not necessarily connected yet).

        This is the ``camera_factory`` handed to the job engine: every job uses the same object, so the monitor's
        readings and the capture share one INDI connection.
        """
        with self._camera_lock:
            if self._camera is None:
                self._camera = self._camera_factory()
            return self._camera

    def camera_state(self) -> tuple[CameraState, datetime | None]:
        """The latest snapshot taken by the monitor and when (UTC). Never blocks on the camera."""
        with self._state_lock:
            return self._state, self._state_time

    def camera_snapshot(self) -> dict[str, Any]:
        """The snapshot as a JSON-safe dict (``GET /camera``)."""
        state, when = self.camera_state()
        data = asdict(state)
        data["overscan"] = str(state.overscan) if state.overscan is not None else None
        data["updated_utc"] = when.isoformat().replace("+00:00", "Z") if when else None
        data["age_s"] = round((datetime.now(UTC) - when).total_seconds(), 3) if when else None
        cam = self._camera
        data["reconnects"] = cam.reconnects if cam is not None else 0
        data["last_error"] = self.camera_error
        return data

    def capture_running(self) -> bool:
        if self.engine is None:
            return False
        try:
            return any(j.kind in CAPTURE_KINDS for j in self.engine.list(state=JobState.RUNNING))
        except Exception:
            log.exception("cannot list running jobs")
            return False

    def _monitor(self) -> None:
        backoff_s = 1.0
        next_connect = 0.0
        while not self._stop.is_set():
            cam = self.camera()
            try:
                state = cam.state()
            except Exception as exc:  # a broken connection must not end the monitor
                state = CameraState(connected=False)
                self.camera_error = str(exc)
            if not state.connected and time.monotonic() >= next_connect and not self.capture_running():
                try:
                    caps = cam.connect(timeout_s=self.settings.indi.connect_timeout_s)
                    state = cam.state()
                    if isinstance(caps, CameraCapabilities) and not self._defaults_recorded:
                        self._record_driver_defaults(caps, state)
                    self.camera_error = None
                    backoff_s = 1.0
                except Exception as exc:
                    self.camera_error = f"cannot connect to {self.settings.indi.host}:{self.settings.indi.port}: {exc}"
                    log.warning("%s (retry in %.0f s)", self.camera_error, backoff_s)
                    next_connect = time.monotonic() + backoff_s
                    backoff_s = min(backoff_s * 2, 30.0)
            self._record(state)
            self._stop.wait(self.monitor_interval_s)

    def _record_driver_defaults(self, caps: CameraCapabilities, state: CameraState) -> None:
        """The driver's state as darkd found it on its first connection: what lights shot with the driver's defaults
        were taken with (:mod:`daemon.light_rule`). Once per daemon run, before any job (the monitor connects only
        when no capture runs); later reconnections may carry settings darkd applied, so they are not recorded."""
        self._defaults_recorded = True
        try:
            record_driver_defaults(self.index, caps, state)
        except Exception:  # a failed record only costs lights their driver defaults
            log.exception("cannot record the driver's state of %s", caps.device)

    def _record(self, state: CameraState) -> None:
        now = datetime.now(UTC)
        with self._state_lock:
            self._state, self._state_time = state, now
        self._was_connected = self._was_connected or state.connected
        self.metrics.observe_camera(state)
        if not state.connected or state.temperature_c is None:
            return
        sample = {"time": now.isoformat().replace("+00:00", "Z"), "temperature_c": state.temperature_c,
                  "set_point_c": state.set_point_c, "cooler_power_pct": state.cooler_power_pct}
        self.samples.append(sample)
        self.bus.publish("temperature", {"temperature_c": state.temperature_c, "set_point_c": state.set_point_c,
                                         "cooler_power_pct": state.cooler_power_pct, "stable": state.stable,
                                         "exposing": state.exposing})

    def _warm_camera(self) -> None:
        """Hand a gentle warm-up to the driver (``CCD_TEMP_RAMP``) or step it within a bounded time."""
        cam = self._camera
        state, _ = self.camera_state()
        if cam is None or not state.connected or not state.cooler_on:
            return
        cooling = self.settings.cooling
        try:
            if cam.capabilities.has_temp_ramp:
                cam.set_temperature(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min)
                log.info("warm-up to %.1f °C at %.1f °C/min handed to the driver", cooling.warm_up_target_c,
                         cooling.warm_up_rate_c_per_min)
            else:
                cam.warm_up(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min, timeout_s=60.0)
        except Exception as exc:
            log.warning("warm-up at shutdown failed: %s", exc)

    # ------------------------------------------------------------------ integrity on use
    def _master_corrupt(self, entry: EntryView, reason: str) -> None:
        """A master failed its check on use and is marked bad: event, metric (through the event) and re-integration
        of the entry's accepted frames (an ``integrate`` job, unless one is already queued for it)."""
        job_id = None
        if self.engine is not None and entry.frames > 0:
            try:
                job_id = self._queue_reintegration(entry.id)
            except Exception as exc:  # the refusal stands; the event still says what happened
                log.warning("entry %s: re-integration not queued: %s", entry.id, exc)
        if job_id is not None:
            log.warning("entry %s: master corrupt, re-integrating its %d good frames (job %s)", entry.id,
                        entry.frames, job_id)
        self.bus.publish("integrity", {"entry_id": entry.id, "slug": entry.slug, "reason": reason,
                                       "reintegration_job_id": job_id})

    def _queue_reintegration(self, entry_id: int) -> int:
        assert self.engine is not None
        for job in self.queue.jobs([JobState.QUEUED, JobState.RUNNING]):
            if job.kind == JobKind.INTEGRATE and int(job.params.get("entry_id", -1)) == entry_id:
                return job.id
        return self.engine.submit(JobKind.INTEGRATE.value, {"entry_id": entry_id}).id

    # ------------------------------------------------------------------ events → metrics
    def _pump_metrics(self, sub: Any) -> None:
        with sub:
            while not self._stop.is_set():
                event = sub.get(timeout_s=0.1)
                if event is not None:
                    self.metrics.observe_event(event)

    def _job_times(self, job_id: int) -> tuple[str, datetime | None, datetime | None] | None:
        job = self.queue.get_job(job_id)
        return (job.kind, job.started_utc, job.finished_utc) if job is not None else None

    # ------------------------------------------------------------------ readiness
    def readiness(self) -> dict[str, Any]:
        """``{"checks": {indi, database, index_writable, library_writable, library_space, job_engine}, "details":
        {...}}``; blocking (a database ping and a write probe rolled back). ``index_writable`` is false while the job
        queue cannot be written (read-only or malformed index, full disk) or the engine still holds job ends it could
        not record; ``library_space`` while the library disk has less room than the next job needs plus
        ``[library] min_free_bytes`` (:meth:`daemon.jobs.engine.JobEngine.disk_problem`)."""
        state, _ = self.camera_state()
        root = Path(self.index.layout.root)
        index_problem = self.queue.writable_problem()
        if index_problem is None and self.engine is not None and self.engine.unfinished():
            index_problem = (f"job end(s) not recorded yet for job(s) {', '.join(map(str, self.engine.unfinished()))}: "
                             f"{self.engine.store_problem or 'retrying'}")
        space_problem = self._space_problem()
        checks = {"indi": bool(state.connected), "database": self.index.ping(), "index_writable": index_problem is None,
                  "library_writable": _writable(root), "library_space": space_problem is None,
                  "job_engine": self.engine is not None or not self._start_engine}
        details: dict[str, str] = {}
        if index_problem is not None:
            details["index_writable"] = index_problem
        if space_problem is not None:
            details["library_space"] = space_problem
        if not checks["indi"]:
            if self._was_connected:  # it was connected and dropped: the monitor or the capture reconnects it
                details["indi"] = f"camera reconnecting: {self.camera_error or 'connection lost'}"
            else:
                details["indi"] = self.camera_error or "camera not connected yet"
        if not checks["library_writable"]:
            details["library_writable"] = f"cannot write to {root}"
        if not checks["job_engine"]:
            details["job_engine"] = self.engine_error or "job engine not started"
        return {"ready": all(checks.values()), "checks": checks, "details": details}

    def _space_problem(self) -> str | None:
        try:
            if self.engine is not None:
                return self.engine.disk_problem()
            free = shutil.disk_usage(self.index.layout.root).free
        except Exception as exc:  # an unreadable index or disk: not ready, and say why
            return f"free room on the library disk unknown: {exc}"
        margin = self.settings.library.min_free_bytes
        return None if free >= margin else (f"the library disk has {free} bytes free, less than the margin of "
                                            f"{margin} bytes ([library] min_free_bytes)")


def _writable(root: Path) -> bool:
    """True when a file can be created in ``root`` (a real write, not just permission bits)."""
    probe = root / f".darkd-ready-{threading.get_ident()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False
