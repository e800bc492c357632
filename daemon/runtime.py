"""The running daemon: settings, library index, event bus, camera connections and monitors, job engine, metrics.

Several cameras (``[[cameras]]``, :meth:`daemon.settings.Settings.camera_configs`): each has a :class:`CameraSlot` —
its own connection (one :class:`Camera` object shared by its monitor and its capture jobs), monitor thread, snapshot,
history, error and cooling state — so capture jobs on different cameras run concurrently (the engine allows one per
camera) and a camera that hangs or disappears holds up no other. The first camera is the default one: ``GET /camera``,
the status page, MQTT, the unlabelled metrics and jobs naming no configured camera use it.

Threads (all daemon threads, stopped by :meth:`Runtime.stop`):

* ``camera-monitor`` (the default camera; ``camera-monitor-<id>`` for the others): connects the camera (retrying with
  back-off while the INDI server is away), then every ``monitor_interval_s`` reads :meth:`Camera.state` — a read of
  cached INDI properties, no round trip — keeps the snapshot that ``GET /cameras/{id}`` returns, appends a sample to a
  ring buffer (the status page chart, ``history_s`` long) and publishes a ``temperature`` event ``{camera,
  temperature_c, set_point_c, cooler_power_pct, stable, exposing}``. While a capture job runs on that camera its
  monitor never reconnects it: the capture loop owns recovery.
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
from collections.abc import Callable, Mapping
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
from daemon.settings import CameraConfig, Settings
from daemon.watch import ClosedLoop
from drivers.camera import Camera, CameraCapabilities, CameraState

log = logging.getLogger(__name__)

#: Niceness of the job engine's worker processes (integration). On a 2-core machine an integration at normal priority
#: takes both cores and the API's p99 latency rises from ~30 ms to 90-160 ms (bench/bench_api.py, docs/bench/api.md).
WORKER_NICENESS = 10


class UnknownCamera(ValueError):
    """A camera id or name that no configured camera has."""


class CameraSlot:
    """One configured camera: its connection, monitor snapshot and history, last error and cooling state.

    ``camera()`` makes the camera object on first use (the same object for the monitor and every job on this
    camera); ``connected_camera()`` connects it first, under this slot's lock only.
    """

    def __init__(self, config: CameraConfig, factory: Callable[[], Camera], *, history_len: int) -> None:
        self.config = config
        self.id = config.id
        self._factory = factory
        self._camera: Camera | None = None
        self._camera_lock = threading.Lock()
        self._connect_lock = threading.Lock()  # the monitor and a job must not connect the same camera twice
        self._state = CameraState(connected=False)
        self._state_time: datetime | None = None
        self._state_lock = threading.Lock()
        self.was_connected = False  # connected once: a later drop is a reconnection
        self.error: str | None = None
        self.defaults_recorded = False  # the driver's state on the first connection is recorded (light rule)
        self.samples: deque[dict[str, Any]] = deque(maxlen=history_len)

    def camera(self) -> Camera:
        with self._camera_lock:
            if self._camera is None:
                self._camera = self._factory()
            return self._camera

    @property
    def made(self) -> Camera | None:
        """The camera object if it was made already (no side effect)."""
        return self._camera

    def connected_camera(self) -> Camera:
        """The camera, connected if it was not (a capture job's ``ctx.camera()``)."""
        cam = self.camera()
        with self._connect_lock:
            if not cam.state().connected:
                cam.connect(self.config.indi.connect_timeout_s)
        return cam

    def connect(self) -> Any:
        """Connect (the monitor); returns the capabilities."""
        cam = self.camera()
        with self._connect_lock:
            return cam.connect(timeout_s=self.config.indi.connect_timeout_s)

    def matches(self, name: str | None) -> bool:
        """Whether ``name`` (a job's or a key's camera) is this camera: its id, configured or reported device."""
        return self.config.matches(name) or (name is not None and name == self.state()[0].device)

    def state(self) -> tuple[CameraState, datetime | None]:
        with self._state_lock:
            return self._state, self._state_time

    def set_state(self, state: CameraState) -> datetime:
        now = datetime.now(UTC)
        with self._state_lock:
            self._state, self._state_time = state, now
        self.was_connected = self.was_connected or state.connected
        return now

    def snapshot(self) -> dict[str, Any]:
        """The snapshot as a JSON-safe dict (``GET /cameras/{id}``)."""
        state, when = self.state()
        data = asdict(state)
        data["overscan"] = str(state.overscan) if state.overscan is not None else None
        data["updated_utc"] = when.isoformat().replace("+00:00", "Z") if when else None
        data["age_s"] = round((datetime.now(UTC) - when).total_seconds(), 3) if when else None
        cam = self._camera
        data["reconnects"] = cam.reconnects if cam is not None else 0
        data["last_error"] = self.error
        data["id"] = self.id
        data["indi_host"] = self.config.indi.host
        data["indi_port"] = self.config.indi.port
        data["indi_device"] = self.config.indi.device
        data["profile"] = self.config.profile
        return data

    def disconnect(self) -> None:
        with self._camera_lock:
            if self._camera is not None:
                with contextlib.suppress(Exception):
                    self._camera.disconnect()


class Runtime:
    """Owns every long-lived part of the daemon. ``start()`` then ``stop()``; the API reads from it.

    ``camera_factory`` makes the default (first) camera, ``camera_factories`` the cameras by id (tests inject
    in-process simulated cameras); any other camera is opened on its ``[[cameras]]`` INDI connection.
    """

    def __init__(self, settings: Settings, *, camera_factory: Callable[[], Camera] | None = None,
                 camera_factories: Mapping[str, Callable[[], Camera]] | None = None,
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
        self._connect_camera = connect_camera
        self._start_engine = start_engine
        factories = dict(camera_factories or {})
        history_len = max(10, int(history_s / monitor_interval_s) + 1)
        configs = settings.camera_configs()
        if camera_factory is not None:
            factories.setdefault(configs[0].id, camera_factory)
        unknown = sorted(set(factories) - {c.id for c in configs})
        if unknown:
            raise UnknownCamera(f"camera factories for unconfigured camera(s): {', '.join(unknown)}")
        #: the configured cameras by id, in configuration order (the first is the default camera)
        self.cameras: dict[str, CameraSlot] = {
            c.id: CameraSlot(c, factories.get(c.id) or self._indi_camera_factory(c), history_len=history_len)
            for c in configs}
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
                                      camera_states=self.camera_snapshots, camera_ids=list(self.cameras),
                                      count_by_status=self.index.count_by_status).start()
        if self._start_engine:
            self._start_job_engine()
        if self._connect_camera:
            for n, slot in enumerate(self.cameras.values()):
                self._spawn("camera-monitor" if n == 0 else f"camera-monitor-{slot.id}", self._monitor, slot)
        if self.watch is not None:
            self.watch.engine = self.engine
            self.watch.start()
        self.running = True
        log.info("runtime started (library %s)", self.index.layout.root)
        return self

    def _start_job_engine(self) -> None:
        self.engine = JobEngine(self.settings, self.index, self.camera, self.bus, worker_niceness=self.worker_niceness,
                                camera_for=self.camera_for, camera_name=self.job_camera)
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
            for slot in self.cameras.values():
                self._warm_camera(slot)
        for thread in self._threads:
            thread.join(timeout=max(5.0, self.monitor_interval_s * 2))
        self._threads.clear()
        for slot in self.cameras.values():
            slot.disconnect()
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        self.index.close()
        log.info("runtime stopped")

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ cameras
    def _indi_camera_factory(self, config: CameraConfig) -> Callable[[], Camera]:
        def open_camera() -> Camera:
            from drivers.factory import open_indi_camera

            indi = config.indi
            return open_indi_camera(indi.host, indi.port, indi.device, profile=config.profile, reconnect=True,
                                    reconnect_timeout_s=self.settings.cooling.reconnect_timeout_s)

        return open_camera

    @property
    def default_camera(self) -> CameraSlot:
        """The first configured camera (``GET /camera``, the status page, jobs naming no configured camera)."""
        return next(iter(self.cameras.values()))

    def slot(self, name: str | None = None) -> CameraSlot:
        """The camera a job or key names (its id, configured or reported INDI device name); ``None``: the default.

        With one camera configured every name is that camera (a single-camera daemon serves whatever its keys call
        it, as before ``[[cameras]]``); with several an unknown name raises :class:`UnknownCamera`.
        """
        if name is None:
            return self.default_camera
        if name in self.cameras:
            return self.cameras[name]
        for slot in self.cameras.values():
            if slot.matches(name):
                return slot
        if len(self.cameras) == 1:
            return self.default_camera
        raise UnknownCamera(f"no configured camera {name!r} (configured: {', '.join(self.cameras)}; a camera is named "
                            "by its [[cameras]] id or its INDI device)")

    def job_camera(self, name: str | None) -> str | None:
        """The camera a capture job records (``jobs.camera``): with one camera the name its params give (as before
        ``[[cameras]]``); with several the id of the camera it names (so the engine's one-capture-job-per-camera
        rule holds whatever alias a plan uses), :class:`UnknownCamera` for a camera not configured."""
        return name if len(self.cameras) == 1 else self.slot(name).id

    def submit_job(self, kind: str, params: Mapping[str, Any], camera_id: str | None = None) -> Any:
        """Queue a job (``POST /jobs``); ``camera_id``: the configured camera a capture job runs on (default: the one
        its plan names). :class:`UnknownCamera` for an id not configured; the engine's errors otherwise."""
        if self.engine is None:
            raise RuntimeError(self.engine_error or "the job engine is not running")
        if camera_id is not None and camera_id not in self.cameras:
            raise UnknownCamera(f"no configured camera {camera_id!r} (configured: {', '.join(self.cameras)})")
        return self.engine.submit(kind, params, camera=camera_id)

    def camera(self) -> Camera:
        """The default camera's object (created on first use, not necessarily connected yet)."""
        return self.default_camera.camera()

    def camera_for(self, name: str | None) -> Camera:
        """The connected camera of a job (``camera`` of the job row): the engine's ``camera_for``. Each camera has
        one object, so its monitor's readings and its capture share one INDI connection."""
        return self.slot(name).connected_camera()

    def camera_state(self, camera_id: str | None = None) -> tuple[CameraState, datetime | None]:
        """The latest snapshot taken by a camera's monitor (default camera) and when (UTC). Never blocks on it."""
        return self.slot(camera_id).state()

    def camera_snapshot(self, camera_id: str | None = None) -> dict[str, Any]:
        """A camera's snapshot (default camera) as a JSON-safe dict (``GET /camera``, ``GET /cameras/{id}``).
        :class:`UnknownCamera` for an id that is not configured."""
        if camera_id is not None and camera_id not in self.cameras:
            raise UnknownCamera(f"no configured camera {camera_id!r} (configured: {', '.join(self.cameras)})")
        return self.slot(camera_id).snapshot()

    def camera_snapshots(self) -> list[dict[str, Any]]:
        """Every configured camera's snapshot, in configuration order (``GET /cameras``)."""
        return [slot.snapshot() for slot in self.cameras.values()]

    @property
    def samples(self) -> deque[dict[str, Any]]:
        """The default camera's temperature history (the status page chart)."""
        return self.default_camera.samples

    @property
    def camera_error(self) -> str | None:
        """Why the default camera is not connected (``None``: no error)."""
        return self.default_camera.error

    def capture_running(self, camera_id: str | None = None) -> bool:
        """Whether a capture job runs (on the camera ``camera_id``, or on any camera when ``None``)."""
        if self.engine is None:
            return False
        try:
            running = [j for j in self.engine.list(state=JobState.RUNNING) if j.kind in CAPTURE_KINDS]
        except Exception:
            log.exception("cannot list running jobs")
            return False
        if camera_id is None:
            return bool(running)
        return any(self._job_slot_id(j.camera) == camera_id for j in running)

    def _job_slot_id(self, name: str | None) -> str | None:
        try:
            return self.slot(name).id
        except UnknownCamera:
            return None

    def _monitor(self, slot: CameraSlot) -> None:
        backoff_s = 1.0
        next_connect = 0.0
        where = f"camera {slot.id} ({slot.config.indi.host}:{slot.config.indi.port})"
        while not self._stop.is_set():
            try:
                state = slot.camera().state()
            except Exception as exc:  # a broken connection (or factory) must not end the monitor
                state = CameraState(connected=False)
                slot.error = str(exc)
            if not state.connected and time.monotonic() >= next_connect and not self.capture_running(slot.id):
                try:
                    caps = slot.connect()
                    state = slot.camera().state()
                    if isinstance(caps, CameraCapabilities) and not slot.defaults_recorded:
                        self._record_driver_defaults(slot, caps, state)
                    slot.error = None
                    backoff_s = 1.0
                except Exception as exc:
                    slot.error = (f"cannot connect to {slot.config.indi.host}:{slot.config.indi.port}: {exc}"
                                  if len(self.cameras) == 1 else f"cannot connect to {where}: {exc}")
                    log.warning("%s (retry in %.0f s)", slot.error, backoff_s)
                    next_connect = time.monotonic() + backoff_s
                    backoff_s = min(backoff_s * 2, 30.0)
            self._record_slot(slot, state)
            self._stop.wait(self.monitor_interval_s)

    def _record_driver_defaults(self, slot: CameraSlot, caps: CameraCapabilities, state: CameraState) -> None:
        """The driver's state as darkd found it on its first connection: what lights shot with the driver's defaults
        were taken with (:mod:`daemon.light_rule`). Once per camera and daemon run, before any job (the monitor
        connects only when no capture runs on it); later reconnections may carry settings darkd applied, so they
        are not recorded."""
        slot.defaults_recorded = True
        try:
            record_driver_defaults(self.index, caps, state)
        except Exception:  # a failed record only costs lights their driver defaults
            log.exception("cannot record the driver's state of %s", caps.device)

    def _record(self, state: CameraState) -> None:
        """Record a reading of the default camera (tests feed readings this way)."""
        self._record_slot(self.default_camera, state)

    def _record_slot(self, slot: CameraSlot, state: CameraState) -> None:
        now = slot.set_state(state)
        # one series per camera: by id with several cameras (their jobs' frames carry the id), else by device
        self.metrics.observe_camera(state, slot.id if len(self.cameras) > 1 else None)
        if not state.connected or state.temperature_c is None:
            return
        sample = {"time": now.isoformat().replace("+00:00", "Z"), "temperature_c": state.temperature_c,
                  "set_point_c": state.set_point_c, "cooler_power_pct": state.cooler_power_pct}
        slot.samples.append(sample)
        self.bus.publish("temperature", {"camera": slot.id, "temperature_c": state.temperature_c,
                                         "set_point_c": state.set_point_c, "cooler_power_pct": state.cooler_power_pct,
                                         "stable": state.stable, "exposing": state.exposing})

    def _warm_camera(self, slot: CameraSlot) -> None:
        """Hand a gentle warm-up to the driver (``CCD_TEMP_RAMP``) or step it within a bounded time."""
        cam = slot.made
        state, _ = slot.state()
        if cam is None or not state.connected or not state.cooler_on:
            return
        cooling = self.settings.cooling
        try:
            if cam.capabilities.has_temp_ramp:
                cam.set_temperature(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min)
                log.info("camera %s: warm-up to %.1f °C at %.1f °C/min handed to the driver", slot.id,
                         cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min)
            else:
                cam.warm_up(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min, timeout_s=60.0)
        except Exception as exc:
            log.warning("camera %s: warm-up at shutdown failed: %s", slot.id, exc)

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
        down = [slot for slot in self.cameras.values() if not slot.state()[0].connected]
        root = Path(self.index.layout.root)
        index_problem = self.queue.writable_problem()
        if index_problem is None and self.engine is not None and self.engine.unfinished():
            index_problem = (f"job end(s) not recorded yet for job(s) {', '.join(map(str, self.engine.unfinished()))}: "
                             f"{self.engine.store_problem or 'retrying'}")
        space_problem = self._space_problem()
        checks = {"indi": not down, "database": self.index.ping(), "index_writable": index_problem is None,
                  "library_writable": _writable(root), "library_space": space_problem is None,
                  "job_engine": self.engine is not None or not self._start_engine}
        details: dict[str, str] = {}
        if index_problem is not None:
            details["index_writable"] = index_problem
        if space_problem is not None:
            details["library_space"] = space_problem
        if down:  # every camera not connected, each on its own (one camera: as it was before [[cameras]])
            details["indi"] = "; ".join(_camera_down(slot, named=len(self.cameras) > 1) for slot in down)
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


def _camera_down(slot: CameraSlot, *, named: bool) -> str:
    """Why a camera is not connected, for ``/ready``."""
    if slot.was_connected:  # it was connected and dropped: the monitor or the capture reconnects it
        text = f"camera reconnecting: {slot.error or 'connection lost'}"
    else:
        text = slot.error or "camera not connected yet"
    return f"{slot.id}: {text}" if named else text


def _writable(root: Path) -> bool:
    """True when a file can be created in ``root`` (a real write, not just permission bits)."""
    probe = root / f".darkd-ready-{threading.get_ident()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False
