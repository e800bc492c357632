"""The closed loop: watch lights folders, calibrate each new light on arrival, build the darks that are missing when
the camera cannot image, then calibrate the lights that waited for them — without a person (docs/watch.md).

**Taking a light.** The folders of ``[watch] folders`` are watched through inotify (the ``watchdog`` library), or
polled (``[watch] poll = true``, for network shares where inotify sees nothing). Every FITS file that appears or
changes becomes a *candidate*; files already there at start are candidates too. A candidate is taken only once it is
**complete**: its size and modification time held for ``interval_s`` **and** :func:`fits_problem` finds a whole FITS
file (every header ends with ``END`` and every HDU's data, as its header declares it, is on disk). A file still being
written (Ekos, N.I.N.A. and SGP write in place) fails one or the other and is looked at again later. Files under an
output folder, hidden files and ``.part``/``.tmp`` files are never candidates. A light is taken **once**: its path is
recorded in the index (table ``watch_lights``), so nothing is redone after a restart.

**Matching.** The light's key comes from the one rule (:class:`daemon.light_rule.LightRule`), its master from the
one usable-master rule (:func:`daemon.library.selection.select_for_light`). With a master, the light is calibrated at
once — :func:`calib.calibration.calibrate_files` in the watcher's own thread, never on the event loop — into the
output folder (``[watch] output``: relative to the watched folder, default ``<folder>/calibrated``, the light's
sub-folders kept; or one absolute folder); the output's header names the master (``CALDARK`` and its SHA-256).
With ``[watch] cosmetic`` the pixels of the master's defect map are replaced by the median of their good neighbours
(``COSMETIC`` in the header, :mod:`calib.cosmetic`).
Without one, the dark's key goes on the **standing plan** (table ``watch_keys``) and the light waits (``waiting``).
A key whose set point the cooler cannot reach (colder than ``ambient_c − max_cooling_delta_c``, the planner's rule,
:func:`daemon.planning.plan_from_keys`) is ``unbuildable`` with that reason, and so are its lights: never retried.

**Building.** The standing plan is built when the camera is free (no capture job active) and cannot image: inside
``build_window`` (local time, ``"22:00-05:00"``; may wrap midnight), while the weather device says imaging is
impossible (:class:`daemon.jobs.weather_gate.WeatherGate`; the build job then gets the same ``weather`` param, so it
yields the camera if the sky opens), or once the imaging program has let go of the camera: ``idle_s`` seconds in which
the camera took no exposure for anyone (INDI shows darkd every client's exposures on the device; a program that
disconnected, or stopped its sequence, takes none). With none of them configured, it is built as soon as the camera
is free. One
``build-library`` job takes every missing key; **nothing is built twice**: a key already in a queued, running or
paused build job is not submitted again, and a key the library has ready is taken off the plan. When the job ends,
each of its keys is either ready (``built``: its waiting lights are calibrated) or counted as a failed attempt; after
``max_attempts`` failed builds, or at once when the build found the set point unreachable (the job's result lists it
in ``unreachable_c``), the key is ``unbuildable`` with the job's reason for it.

Everything the loop does is published as ``watch`` events (``{action, ...}``) and summed up by :func:`watch_status`
(``GET /api/v1/watch``: waiting lights, missing keys, the estimated build time).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from daemon.events import EventBus
from daemon.jobs.engine import JobEngine
from daemon.jobs.states import ACTIVE_STATES, CAPTURE_KINDS, FINAL_STATES, JobKind, JobState
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.library.models import WatchKey, WatchLight
from daemon.planning import DEFAULT_MAX_COOLING_DELTA_C, FITS_SUFFIXES, Plan, PlanError, plan_from_keys
from daemon.settings import Settings
from drivers.camera import CameraState

log = logging.getLogger(__name__)

FITS_BLOCK = 2880
CARD = 80
#: light statuses (``watch_lights.status``) and key statuses (``watch_keys.status``)
LIGHT_STATUSES = ("waiting", "calibrated", "unbuildable", "failed")
KEY_STATUSES = ("missing", "building", "built", "unbuildable")
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")
WEATHER_RETRY_S = 30.0
RECHECK_S = 30.0


# --------------------------------------------------------------------------------------------------- completeness
def fits_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a whole FITS file yet, or ``None`` when it is.

    Walks the HDUs: each header is read 2880-byte block by block until its ``END`` card (a file cut inside a header
    is incomplete); its data occupy ``|BITPIX|/8 · GCOUNT · (PCOUNT + NAXIS1 · … · NAXISn)`` bytes (FITS 4.0 §4.4.1,
    0 when ``NAXIS = 0``), padded to whole blocks. The file is whole when the last HDU's data are all there (its final
    padding may be missing: some writers omit it) and nothing but further HDUs follows.
    """
    try:
        size = Path(path).stat().st_size
        with Path(path).open("rb") as fh:
            offset = 0
            hdu = 0
            while True:
                cards: dict[str, str] = {}
                ended = False
                while not ended:
                    block = fh.read(FITS_BLOCK)
                    if len(block) < FITS_BLOCK:
                        return f"HDU {hdu}: header cut short at byte {offset + len(block)}"
                    if offset == 0 and not block.startswith(b"SIMPLE  ="):
                        return "not a FITS file (no SIMPLE card)"
                    offset += FITS_BLOCK
                    for i in range(0, FITS_BLOCK, CARD):
                        card = block[i:i + CARD].decode("ascii", "replace")
                        name = card[:8].strip()
                        if name == "END":
                            ended = True
                            break
                        if card[8:10] == "= ":
                            cards[name] = card[10:].split("/", 1)[0].strip()
                try:
                    bitpix = int(cards["BITPIX"])
                    naxis = int(cards["NAXIS"])
                    axes = [int(cards[f"NAXIS{n}"]) for n in range(1, naxis + 1)]
                    pcount = int(cards.get("PCOUNT", "0") or 0)
                    gcount = int(cards.get("GCOUNT", "1") or 1)
                except (KeyError, ValueError) as exc:
                    return f"HDU {hdu}: header lacks a valid {exc}"
                n_data = 0
                if naxis > 0:
                    n_pix = 1
                    for n in axes:
                        n_pix *= n
                    n_data = abs(bitpix) // 8 * gcount * (pcount + n_pix)
                if offset + n_data > size:
                    return f"HDU {hdu}: data cut short ({size - offset} of {n_data} bytes)"
                offset += -(-n_data // FITS_BLOCK) * FITS_BLOCK
                if offset >= size:
                    return None
                fh.seek(offset)
                hdu += 1
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    since: float


class Completeness:
    """Candidates and the "complete" verdict of the module docstring: size (and mtime) unchanged for ``interval_s``
    and :func:`fits_problem` clean. Not thread-safe: one watcher thread calls it."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = float(interval_s)
        self._clock = clock
        self._pending: dict[Path, _Candidate | None] = {}
        self.problems: dict[Path, str] = {}

    def add(self, path: Path) -> None:
        """(Re)start watching ``path``: it changed."""
        self._pending[path] = None

    @property
    def pending(self) -> list[Path]:
        return sorted(self._pending)

    def complete(self) -> list[Path]:
        """The candidates that are complete now (each returned once, then forgotten)."""
        now = self._clock()
        done: list[Path] = []
        for path, seen in list(self._pending.items()):
            try:
                st = path.stat()
            except OSError:  # removed or renamed: its new name arrives as its own candidate
                del self._pending[path]
                continue
            if seen is None or (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                self._pending[path] = _Candidate(st.st_size, st.st_mtime_ns, now)
                continue
            if now - seen.since < self.interval_s:
                continue
            problem = fits_problem(path)
            if problem is None:
                del self._pending[path]
                self.problems.pop(path, None)
                done.append(path)
            else:  # stable but not whole (a writer that pauses, or a broken file): look again after an interval
                if self.problems.get(path) != problem:
                    log.info("%s: not taken yet: %s", path, problem)
                self.problems[path] = problem
                seen.since = now
        return done


# --------------------------------------------------------------------------------------------------- build window
def parse_window(text: str) -> tuple[clock_time, clock_time]:
    """``"22:00-05:00"`` → (start, end) local times; ``ValueError`` says what is wrong."""
    try:
        start, end = (clock_time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as exc:
        raise ValueError(f'build_window {text!r}: expected "HH:MM-HH:MM" ({exc})') from exc
    if start == end:
        raise ValueError(f"build_window {text!r}: start and end are equal")
    return start, end


def in_window(now_local: datetime, window: tuple[clock_time, clock_time]) -> bool:
    """Whether the local wall time of ``now_local`` is inside ``[start, end)`` (wrapping midnight when end < start)."""
    t = now_local.time().replace(tzinfo=None)
    start, end = window
    return start <= t < end if start < end else (t >= start or t < end)


# --------------------------------------------------------------------------------------------------- status
def _light_dict(row: WatchLight) -> dict[str, Any]:
    return {"path": row.path, "camera": row.camera, "slug": row.slug, "status": row.status, "reason": row.reason,
            "output": row.output, "master": row.master,
            "seen_utc": row.seen_utc.isoformat().replace("+00:00", "Z")}


def _key_dict(row: WatchKey) -> dict[str, Any]:
    return {"camera": row.camera, "slug": row.slug, "status": row.status, "reason": row.reason,
            "job_id": row.job_id, "attempts": row.attempts, "key": dict(row.key)}


def watch_status(index: LibraryIndex, settings: Settings, *, running: bool = False) -> dict[str, Any]:
    """What ``GET /api/v1/watch`` shows: the folders, the lights waiting or put aside, the standing plan's keys and
    the estimated time to build the missing ones (:func:`daemon.planning.plan_from_keys`). Blocking (database)."""
    with index.read_session() as s:
        lights = list(s.scalars(select(WatchLight).where(WatchLight.status != "calibrated").order_by(WatchLight.id)))
        keys = list(s.scalars(select(WatchKey).where(WatchKey.status != "built").order_by(WatchKey.id)))
        calibrated = s.scalar(select(func.count()).select_from(WatchLight).where(WatchLight.status == "calibrated"))
    missing = [k for k in keys if k.status in ("missing", "building")]
    estimate: dict[str, float] = {}
    if missing:
        try:
            estimate = _plan([LibraryKey.from_dict(k.key) for k in missing], index, settings).estimate_s
        except PlanError as exc:
            log.warning("no estimate for the standing plan: %s", exc)
    return {"running": running, "folders": [str(f) for f in settings.watch.folders],
            "build_window": settings.watch.build_window,
            "weather_device": (settings.watch.weather or {}).get("device"),
            "waiting": [_light_dict(r) for r in lights if r.status == "waiting"],
            "unbuildable": [_light_dict(r) for r in lights if r.status == "unbuildable"],
            "failed": [_light_dict(r) for r in lights if r.status == "failed"],
            "calibrated": int(calibrated or 0),
            "keys": [_key_dict(k) for k in keys],
            "missing_keys": [_key_dict(k) for k in missing],
            "estimate_s": estimate}


def _plan(keys: list[LibraryKey], index: LibraryIndex, settings: Settings) -> Plan:
    w = settings.watch
    delta_c = w.max_cooling_delta_c if w.max_cooling_delta_c is not None else DEFAULT_MAX_COOLING_DELTA_C
    return plan_from_keys(keys, index, settings, ambient_c=w.ambient_c, max_cooling_delta_c=delta_c,
                          readout_s=w.readout_s)


# --------------------------------------------------------------------------------------------------- the loop
class ClosedLoop:
    """The watcher and the standing plan of the module docstring. ``start()`` / ``stop()``; one thread (``watch``)
    does all the work, the file-system observer only hands it paths.

    ``engine``: the job engine the builds go to (``None``: lights are calibrated, missing keys wait). ``sky_closed``:
    overrides the weather gate (a callable returning True while imaging is impossible). ``clock``: the local time
    for ``build_window`` (aware ``datetime``). ``camera_state``: the camera's latest state (the runtime's monitor) for
    ``idle_s``; ``monotonic``: the clock of that idle time."""

    def __init__(self, settings: Settings, index: LibraryIndex, engine: JobEngine | None, bus: EventBus, *,
                 sky_closed: Callable[[], bool] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now().astimezone(),
                 camera_state: Callable[[], CameraState | None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.index = index
        self.engine = engine
        self.bus = bus
        self.folders = [Path(f).resolve() for f in settings.watch.folders]
        self.window = parse_window(settings.watch.build_window) if settings.watch.build_window else None
        self.weather_params: dict[str, Any] | None = None
        if settings.watch.weather:
            from daemon.jobs.weather_gate import validate_weather

            self.weather_params = validate_weather(settings.watch.weather)
        self._sky_closed = sky_closed
        self.camera_state = camera_state
        self._monotonic = monotonic
        self._last_exposure = monotonic()  # the last moment the camera was seen exposing (for anyone), or the start
        self._gate: Any = None
        self._gate_retry = 0.0
        self._clock = clock
        self.tick_s = min(1.0, settings.watch.interval_s / 2)
        self.completeness = Completeness(settings.watch.interval_s)
        self._changed: set[Path] = set()
        self._changed_lock = threading.Lock()
        self._tick_lock = threading.Lock()  # one tick at a time (the thread's, or a caller's)
        self._known: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._last_recheck = 0.0
        self.running = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ClosedLoop:
        """Start the observer and the watcher thread (files already in the folders are candidates)."""
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        with self.index.read_session() as s:
            self._known = set(s.scalars(select(WatchLight.path)))
        self._observer = self._make_observer()
        self._observer.start()
        for folder in self.folders:
            for path in folder.rglob("*"):
                self.notice(path)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self._thread.start()
        self.running = True
        log.info("watching %s (%s, light complete after %.3g s)", ", ".join(map(str, self.folders)),
                 "polling" if self.settings.watch.poll else "inotify", self.settings.watch.interval_s)
        return self

    def stop(self) -> None:
        """Stop the observer and the thread (a calibration in progress finishes first). Idempotent."""
        if not self.running:
            return
        self.running = False
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        log.info("watcher stopped")

    def _make_observer(self) -> Any:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        loop = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        loop.notice(Path(os.fsdecode(raw)))

        observer: Any = (PollingObserver(timeout=self.settings.watch.interval_s) if self.settings.watch.poll
                         else Observer())
        for folder in self.folders:
            observer.schedule(Handler(), str(folder), recursive=True)
        return observer

    # ------------------------------------------------------------------ candidates
    def output_dir(self, light: Path) -> Path:
        """Where ``light``'s calibrated file goes: ``output`` under its watched folder (its sub-folders kept), or the
        one absolute ``output`` folder."""
        out = self.settings.watch.output
        folder = self.folder_of(light)
        if out.is_absolute() or folder is None:
            return out if out.is_absolute() else light.parent / out
        return folder / out / light.parent.relative_to(folder)

    def folder_of(self, path: Path) -> Path | None:
        return next((f for f in self.folders if path.is_relative_to(f)), None)

    def _outputs(self) -> list[Path]:
        out = self.settings.watch.output
        return [out] if out.is_absolute() else [f / out for f in self.folders]

    def is_candidate(self, path: Path) -> bool:
        """A FITS file in a watched folder, not hidden, not partial, not in an output folder."""
        name = path.name.lower()
        if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES) or not name.endswith(FITS_SUFFIXES):
            return False
        if self.folder_of(path) is None or any(path.is_relative_to(o) for o in self._outputs()):
            return False
        return str(path) not in self._known

    def notice(self, path: Path) -> None:
        """A file changed (observer thread or the start-up scan): look at it on the next tick."""
        path = path.absolute()
        if self.is_candidate(path):
            with self._changed_lock:
                self._changed.add(path)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad light or a database hiccup must not end the watcher
                log.exception("watcher tick failed")
            self._stop.wait(self.tick_s)

    def tick(self) -> None:
        """One round: take complete lights, follow the build jobs, submit a build when allowed."""
        with self._tick_lock:
            self.idle_for_s()  # note whether the camera is exposing (for anyone) at every tick
            with self._changed_lock:
                changed, self._changed = self._changed, set()
            for path in changed:
                self.completeness.add(path)
            for path in self.completeness.complete():
                if self._stop.is_set():
                    return
                self.take(path)
            self._follow_builds()
            self._maybe_build()

    # ------------------------------------------------------------------ one light
    def take(self, path: Path) -> str | None:
        """Take one complete light: calibrate it, or put its key on the standing plan. Returns the light's status
        (``None``: not a light, or already taken)."""
        from calib.frames import FrameError
        from daemon.light_headers import HeaderKeyError
        from daemon.light_rule import LightRule

        if str(path) in self._known:
            return None
        rule = LightRule(self.settings, self.index)
        try:
            info = rule.light_info(path)
        except (HeaderKeyError, FrameError) as exc:
            log.warning("%s: not taken, no library key: %s", path, exc)
            self._record(path, "", "", "failed", f"no library key: {exc}")
            return "failed"
        if info.image_type != "light":
            log.info("%s: a %s frame, not a light: left alone", path, info.image_type)
            self._known.add(str(path))
            return None
        key = info.key.with_kind("dark") if info.key.kind != "dark" else info.key
        status = self._calibrate(path, info, rule)
        if status is not None:
            return status
        return self._stand(path, key)

    def _calibrate(self, path: Path, info: Any, rule: Any) -> str | None:
        """Calibrate ``path`` (its resolved :class:`LightInfo`) with its usable master ("calibrated" / "failed");
        ``None`` when there is none."""
        from calib.calibration import calibrate_files
        from daemon.library.selection import select_for_light

        selection = select_for_light(self.index, info, rule=rule)
        if selection.entry is None or not selection.entry.master:
            return None
        master = selection.entry.master
        out_dir = self.output_dir(path)
        try:
            (output,) = calibrate_files([str(path)], dark=master, output_dir=out_dir,
                                        cosmetic=self.settings.watch.cosmetic)
        except Exception as exc:  # a mismatch or an unwritable output: reported on the light, not retried
            log.warning("%s: calibration failed: %s", path, exc)
            self._record(path, info.key.camera, info.key.slug, "failed", f"calibration failed: {exc}")
            return "failed"
        self._record(path, info.key.camera, info.key.slug, "calibrated", None, output=str(output), master=master)
        log.info("%s: calibrated with %s into %s", path, master, output)
        self.bus.publish("watch", {"action": "calibrated", "path": str(path), "output": str(output),
                                   "master": master, "entry_id": selection.entry.id})
        return "calibrated"

    def _stand(self, path: Path, key: LibraryKey) -> str:
        """No master: put the key on the standing plan (or report it unbuildable) and let the light wait."""
        try:
            item = _plan([key], self.index, self.settings).items[0]
        except PlanError as exc:
            item = None
            reason: str | None = str(exc)
        if item is not None and not item.reachable:
            reason = item.reason
        elif item is not None:
            reason = None
        with self.index.write_session() as s:
            row = s.scalars(select(WatchKey).where(WatchKey.camera == key.camera, WatchKey.slug == key.slug)).first()
            if row is None:
                row = WatchKey(camera=key.camera, slug=key.slug, key=key.to_dict(), attempts=0,
                               status="unbuildable" if reason else "missing", reason=reason)
                s.add(row)
            elif row.status == "built":  # built, yet this light found no usable master (expired, bad): again
                row.status, row.reason, row.job_id = "missing", None, None
            status = "unbuildable" if row.status == "unbuildable" else "waiting"
            light_reason = row.reason if status == "unbuildable" else f"waiting for {key.describe()}"
        self._record(path, key.camera, key.slug, status, light_reason)
        log.info("%s: %s (%s)", path, status, light_reason)
        self.bus.publish("watch", {"action": status, "path": str(path), "slug": key.slug, "camera": key.camera,
                                   "reason": light_reason})
        return status

    def _record(self, path: Path, camera: str, slug: str, status: str, reason: str | None, *,
                output: str | None = None, master: str | None = None) -> None:
        folder = self.folder_of(path)
        with self.index.write_session() as s:
            row = s.scalars(select(WatchLight).where(WatchLight.path == str(path))).first()
            if row is None:
                row = WatchLight(path=str(path), folder=str(folder or path.parent), camera=camera, slug=slug,
                                 status=status)
                s.add(row)
            row.camera, row.slug, row.status, row.reason = camera or row.camera, slug or row.slug, status, reason
            row.output, row.master = output, master
            if status in ("calibrated", "unbuildable", "failed"):
                row.done_utc = datetime.now(UTC)
        self._known.add(str(path))

    # ------------------------------------------------------------------ the standing plan
    def keys(self, *statuses: str) -> list[WatchKey]:
        with self.index.read_session() as s:
            return list(s.scalars(select(WatchKey).where(WatchKey.status.in_(statuses)).order_by(WatchKey.id)))

    def may_build(self) -> str | None:
        """Why the camera cannot image now (``"build window …"``, ``"sky closed …"``, ``"camera idle …"``), else
        ``None``. With no window, weather device or ``idle_s`` configured: ``"always"``."""
        idle_s = self.settings.watch.idle_s
        if self.window is None and self.weather_params is None and self._sky_closed is None and idle_s is None:
            return "always"
        if idle_s is not None:
            idle_for_s = self.idle_for_s()
            if idle_for_s >= idle_s:
                return f"camera idle for {idle_for_s:.0f} s (no exposure by any client)"
        if self.window is not None and in_window(self._clock(), self.window):
            return f"build window {self.settings.watch.build_window}"
        if self._sky_closed is not None:
            return "sky closed" if self._sky_closed() else None
        if self.weather_params is not None:
            gate = self._weather_gate()
            if gate is not None and gate.imaging_impossible():
                return f"sky closed ({gate.describe()})"
        return None

    def idle_for_s(self) -> float:
        """Seconds since the camera was last seen exposing (for darkd or any other client; the start counts as
        activity). Read from ``camera_state`` at every tick."""
        state = self.camera_state() if self.camera_state is not None else None
        now = self._monotonic()
        if state is not None and state.exposing:
            self._last_exposure = now
        return now - self._last_exposure

    def _weather_gate(self) -> Any:
        if self._gate is None and time.monotonic() >= self._gate_retry:
            from daemon.jobs.weather_gate import WeatherGate

            try:
                self._gate = WeatherGate.from_params(self.weather_params or {})
            except Exception as exc:  # the device may come later: the plan waits, retried
                log.warning("weather device %s not reachable: %s (retry in %.0f s)",
                            (self.weather_params or {}).get("device"), exc, WEATHER_RETRY_S)
                self._gate_retry = time.monotonic() + WEATHER_RETRY_S
        return self._gate

    def camera_busy(self) -> str | None:
        """Why the camera is not free: no engine, or an active capture job."""
        if self.engine is None:
            return "no job engine"
        for job in self.engine.list():
            if job.kind in CAPTURE_KINDS and JobState(job.state) in ACTIVE_STATES:
                return f"capture job {job.id} is {job.state}"
        return None

    def _building(self) -> dict[str, int]:
        """slug → id of the active build job that already has it (nothing is built twice)."""
        found: dict[str, int] = {}
        for job in self.engine.list() if self.engine is not None else []:
            if job.kind == JobKind.BUILD_LIBRARY.value and JobState(job.state) in ACTIVE_STATES:
                for item in job.params.get("plan", {}).get("items", []):
                    if item.get("status") != "ready" and item.get("reachable", True):
                        found[f"{item['key']['camera']}/{item['slug']}"] = job.id
        return found

    def _maybe_build(self) -> None:
        missing = self.keys("missing")
        if not missing:
            return
        now = time.monotonic()
        recheck = now - self._last_recheck >= RECHECK_S
        why = self.may_build()
        if why is None and not recheck:
            return
        self._last_recheck = now
        self._drop_ready(missing)
        building = self._building()
        todo: list[WatchKey] = []
        for row in self.keys("missing"):
            job_id = building.get(f"{row.camera}/{row.slug}")
            if job_id is not None:  # someone's build already has it: follow that job instead
                self._set_key(row.id, status="building", job_id=job_id)
            else:
                todo.append(row)
        if why is None or self.camera_busy() is not None:
            return
        if not todo:
            return
        plan = _plan([LibraryKey.from_dict(r.key) for r in todo], self.index, self.settings)
        if not plan.work():
            return
        params: dict[str, Any] = {"plan": plan.to_dict()}
        if why.startswith("sky closed") and self.weather_params is not None:
            params["weather"] = self.weather_params
        from daemon.jobs.errors import JobConflict

        assert self.engine is not None
        try:
            job = self.engine.submit(JobKind.BUILD_LIBRARY.value, params)
        except (JobConflict, OSError, ValueError) as exc:  # camera taken meanwhile, no room: the plan waits
            log.warning("standing plan not submitted: %s", exc)
            return
        slugs = {i.key.slug for i in plan.work()}
        for row in todo:
            if row.slug in slugs:
                self._set_key(row.id, status="building", job_id=job.id)
        log.info("standing plan: build job %s for %d key(s) (%s)", job.id, len(slugs), why)
        self.bus.publish("watch", {"action": "build-submitted", "job_id": job.id, "keys": sorted(slugs),
                                   "why": why, "estimate_s": plan.estimate_s.get("total_s")})

    def _drop_ready(self, rows: Iterable[WatchKey]) -> None:
        """Keys the library now has ready (built by anyone): off the plan, their lights calibrated."""
        from daemon.planning import library_status

        now = datetime.now(UTC)
        for row in rows:
            status, _entry = library_status(LibraryKey.from_dict(row.key), self.index, now)
            if status == "ready":
                self._built(row)

    def _follow_builds(self) -> None:
        if self.engine is None:
            return
        from daemon.planning import library_status

        for row in self.keys("building"):
            try:
                job = self.engine.get(row.job_id) if row.job_id is not None else None
            except LookupError:  # the job is gone from the queue: its keys count as not built
                job = None
            if job is not None and JobState(job.state) not in FINAL_STATES:
                continue
            status, _entry = library_status(LibraryKey.from_dict(row.key), self.index, datetime.now(UTC))
            if status == "ready":
                self._built(row)
                continue
            attempts = row.attempts + 1
            result = (job.result if job is not None else None) or {}
            set_point_c = float(row.key["set_point_c"])
            never = any(abs(float(t) - set_point_c) < 1e-9 for t in result.get("unreachable_c", []))
            failure = next((f for f in result.get("failures", []) if f.startswith(f"{row.slug}:")), None)
            reason = (failure or (job.error if job is not None else None)
                      or f"build job {row.job_id} ended without the master")
            if never:
                reason = f"set point {set_point_c:g} °C unreachable by the cooler: {reason}"
            if never or attempts >= self.settings.watch.max_attempts:
                why = reason if never else f"{attempts} build(s) failed, last: {reason}"
                self._set_key(row.id, status="unbuildable", reason=why, attempts=attempts, job_id=None)
                self._give_up_lights(row, why)
            else:
                self._set_key(row.id, status="missing", reason=reason, attempts=attempts, job_id=None)
                log.warning("key %s: build %s failed (%s): will be tried again", row.slug, row.job_id, reason)

    def _built(self, row: WatchKey) -> None:
        self._set_key(row.id, status="built", reason=None)
        self.bus.publish("watch", {"action": "built", "slug": row.slug, "camera": row.camera, "job_id": row.job_id})
        from daemon.light_rule import LightRule

        with self.index.read_session() as s:
            waiting = list(s.scalars(select(WatchLight.path).where(
                WatchLight.status == "waiting", WatchLight.camera == row.camera, WatchLight.slug == row.slug)))
        rule = LightRule(self.settings, self.index)
        for path in waiting:
            try:
                info = rule.light_info(path)
            except Exception as exc:  # the file went away or changed since it was taken
                self._record(Path(path), row.camera, row.slug, "failed", f"unreadable when its dark landed: {exc}")
                continue
            if self._calibrate(Path(path), info, rule) is None:
                log.warning("%s: its key %s was built but no usable master selects it", path, row.slug)

    def _give_up_lights(self, row: WatchKey, reason: str) -> None:
        with self.index.write_session() as s:
            for light in s.scalars(select(WatchLight).where(
                    WatchLight.status == "waiting", WatchLight.camera == row.camera, WatchLight.slug == row.slug)):
                light.status, light.reason, light.done_utc = "unbuildable", reason, datetime.now(UTC)
        log.warning("key %s of %s can not be built: %s", row.slug, row.camera, reason)
        self.bus.publish("watch", {"action": "unbuildable", "slug": row.slug, "camera": row.camera, "reason": reason})

    def _set_key(self, key_id: int, **values: Any) -> None:
        with self.index.write_session() as s:
            row = s.get(WatchKey, key_id)
            if row is not None:
                for name, value in values.items():
                    setattr(row, name, value)

    def status(self) -> dict[str, Any]:
        return watch_status(self.index, self.settings, running=self.running)
