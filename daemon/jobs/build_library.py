"""The ``build-library`` job: capture and integrate every key of a :class:`daemon.planning.Plan`, unattended.

For each plan item in build order (one set point at a time, coldest first): find or create its library entry, cool
and wait for stability, capture the missing frames into the entry's ``frames/`` directory (each one quality-checked,
failures retaken; ``capture_series`` resumes from the frames already on disk), record every frame in the index, then
hand the integration to the engine's worker process and go on capturing the next key while it runs. The master is
reviewed against the previous master of the same key (``ready``, or held for review). At the end the camera is warmed
up (``cooling.warm_up_at_end``; param ``warm_up`` overrides).

Params (:class:`BuildLibraryParams`, with the bounds ``POST /library/plan`` applies to keys and at most
:data:`daemon.library.keys.MAX_FRAMES_PER_KEY` frames per key): ``plan`` (``Plan.to_dict()``, required), ``max_retakes``
(default ``library.max_retakes``), ``warm_up`` (bool), ``library_expectation`` (bool, default true: a rebuilt key's
frames are checked for light leaks against the previous entry's frames), ``not_before``/``not_after`` (ISO 8601 start
window), ``weather`` (optional ``{"device", "host", "port", "hold_s", "poll_s"}``: capture only while that INDI
weather/safety device says imaging is impossible, yield the camera between frames while the sky is clear — see
:mod:`daemon.jobs.weather_gate`). The job's ``result`` maps each key slug to its entry (``entries``), so a resumed run
continues the same entries instead of starting new ones.

A set point that turns out unreachable skips its items (warning); a series that fails its retakes leaves its entry
``capturing`` for a later run; either makes the job end ``failed`` after the other keys were built.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from calib.frames import DiskFullError, FrameError, read_header
from calib.quality import FrameExpectation
from daemon.capture import FrameRecord, SeriesFailed, SeriesRequest, capture_series
from daemon.jobs.errors import JobInterrupted
from daemon.jobs.integrate_job import build_entry_master
from daemon.jobs.params import Id, JobParams
from daemon.jobs.states import CAPTURE_KINDS, JobKind
from daemon.jobs.weather_gate import WeatherGate, validate_weather
from daemon.library.catalog import LibraryIndex
from daemon.library.integrity import damaged_master, sha256_file
from daemon.library.keys import MAX_FRAMES_PER_KEY, LibraryKey
from daemon.library.layout import Layout
from daemon.library.store import EntryView
from daemon.planning import Plan, PlanItem, library_status
from daemon.settings import Settings
from drivers.camera import (
    Camera,
    CameraError,
    CameraTimeout,
    FrameType,
    OverscanMode,
    SetPointUnreachable,
    TemperatureSample,
)
from drivers.profiles import CameraProfile

if TYPE_CHECKING:
    from daemon.jobs.engine import JobContext

log = logging.getLogger(__name__)

KIND = JobKind.BUILD_LIBRARY
USES_CAMERA = KIND in CAPTURE_KINDS  # one capture job per camera at a time (the engine refuses a second one)
FRAME_TYPES = {"bias": FrameType.BIAS, "dark": FrameType.DARK, "flatdark": FrameType.DARK}
SKY_CLEAR_STEP = "sky clear: camera yielded"
DEFAULT_READOUT_S = 2.0
TEMPERATURE_REPORT_S = 2.0
EXPECTATION_FRAMES = 10
#: At most this many frames per key (a bigger target would tie the camera up for months; capture scans the series).
MAX_PLAN_ITEMS = 1000
MAX_RETAKES = 100


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class PlanKeyParams(LibraryKey):
    """The key of a plan item: :class:`daemon.library.keys.LibraryKey`'s fields and bounds, validated by pydantic."""


class PlanItemParams(BaseModel):
    """One item of a plan; fields derived from the others (``slug``, ``frames_needed`` …) are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    key: PlanKeyParams
    status: str = Field(max_length=40, description="missing, stale, in-progress or ready")
    frames_target: int = Field(ge=0, le=MAX_FRAMES_PER_KEY)
    frames_have: int = Field(default=0, ge=0, le=1_000_000)
    entry_id: Id | None = None
    lights: int = Field(default=0, ge=0, le=1_000_000_000)
    reachable: bool = True
    reason: str | None = Field(default=None, max_length=4000)
    order: int | None = Field(default=None, ge=0, le=1_000_000)


class PlanParams(BaseModel):
    """A plan as ``POST /library/plan`` or ``darkd plan --json`` returns it; derived fields are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    items: list[PlanItemParams] = Field(max_length=MAX_PLAN_ITEMS)
    created_utc: str | None = Field(default=None, max_length=64)
    estimate_s: dict[str, float] = Field(default_factory=dict)
    assumptions: dict[str, Any] = Field(default_factory=dict)
    set_points_c: list[float] = Field(default_factory=list, max_length=MAX_PLAN_ITEMS)
    unreachable_c: list[float] = Field(default_factory=list, max_length=MAX_PLAN_ITEMS)
    lights: int = Field(default=0, ge=0, le=1_000_000_000)
    errors: list[dict[str, str]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class BuildLibraryParams(JobParams):
    """Params of a ``build-library`` job (see the module docstring)."""

    plan: PlanParams
    max_retakes: int | None = Field(default=None, ge=0, le=MAX_RETAKES,
                                    description="retakes per frame (default: library.max_retakes)")
    warm_up: bool | None = Field(default=None, description="warm the camera up at the end (default: configured)")
    library_expectation: bool = Field(default=True, description="check a rebuilt key's frames for light leaks")
    weather: dict[str, Any] | None = Field(default=None, description='{"device", "host", "port", "hold_s", "poll_s"}')


Params = BuildLibraryParams


def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str | None]:
    """Check typed params (:class:`BuildLibraryParams`) for what a plan must be; returns (params, camera).
    ``ValueError`` says what is wrong."""
    params = {k: v for k, v in params.items() if v is not None}
    if "weather" in params:
        params = {**params, "weather": validate_weather(params["weather"])}
    try:
        plan = Plan.from_dict(params["plan"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"build-library: invalid plan ({exc})") from exc
    work = plan.work()
    if not work:
        raise ValueError("build-library: the plan has nothing to build (every key is ready or unreachable)")
    kinds = sorted({i.key.kind for i in work} - set(FRAME_TYPES))
    if kinds:
        raise ValueError(f"build-library: cannot capture {', '.join(kinds)} unattended (needs a light source)")
    cameras = sorted({i.key.camera for i in work})
    if len(cameras) != 1:
        raise ValueError(f"build-library: a job builds for one camera, the plan names {', '.join(cameras)}")
    return {**params, "plan": plan.to_dict()}, cameras[0]


def bytes_needed(params: dict[str, Any], index: LibraryIndex, result: dict[str, Any]) -> int:
    """Disk room the job still needs (:attr:`daemon.planning.PlanItem.bytes_needed` of each item to build), counting
    the accepted frames its entries already hold (``result["entries"]`` of a resumed run). The engine's disk budget."""
    entries = {str(k): int(v) for k, v in (result.get("entries") or {}).items()}
    total = 0
    for item in Plan.from_dict(params["plan"]).work():
        entry = index.get(entries[item.key.slug]) if item.key.slug in entries else None
        if entry is not None:
            if entry.status == "ready":
                continue
            item.frames_have = max(item.frames_have, entry.frames)
        total += item.bytes_needed
    return total


class _Eta:
    """ETA = (nominal time of the frames still to take) × (observed wall time per nominal second).

    Nominal time of a frame = exposure + readout (camera profile). Before a frame was timed the ratio is 1.
    """

    def __init__(self, items: list[PlanItem], readout_s: float) -> None:
        self.readout_s = readout_s
        self.remaining_s = {i.key.slug: i.frames_target * (i.key.exposure_s + readout_s) for i in items}
        self.wall_s = 0.0
        self.nominal_s = 0.0

    def frame(self, item: PlanItem, wall_s: float | None) -> None:
        nominal = item.key.exposure_s + self.readout_s
        self.remaining_s[item.key.slug] = max(0.0, self.remaining_s[item.key.slug] - nominal)
        if wall_s is not None:
            self.wall_s += wall_s
            self.nominal_s += nominal

    def set_have(self, item: PlanItem, frames: int) -> None:
        left = max(item.frames_target - frames, 0)
        self.remaining_s[item.key.slug] = left * (item.key.exposure_s + self.readout_s)

    def eta_s(self) -> float:
        ratio = self.wall_s / self.nominal_s if self.nominal_s > 0 else 1.0
        return sum(self.remaining_s.values()) * ratio


def adopt_rejected(index: LibraryIndex, entry: EntryView) -> int:
    """Record rejected frames written before a crash but not yet in the index (``frames/rejected/*.fits``)."""
    rejected_dir = Path(entry.frames_dir) / "rejected"
    if not rejected_dir.is_dir():
        return 0
    known = {Path(f.path).resolve() for f in index.frames_of(entry.id)}
    adopted = 0
    for path in sorted(rejected_dir.glob("*.fits")):
        if path.resolve() in known:
            continue
        try:
            header = read_header(path)
        except FrameError:
            continue  # verify reports it; never record an unreadable file
        reason = str(header.get("QCREASON", "rejected by the quality check (recorded after a restart)"))
        index.record_frame(entry.id, path, sha256_file(path), int(header.get("FRAMENUM", 0)),
                           header.get("CCDTEMP1"), header.get("CCDTEMP2"), quality_ok=False, reasons=[reason])
        adopted += 1
    return adopted


def complete_key(key: LibraryKey, camera: Camera) -> LibraryKey:
    """A partial key (no frame size: typed by hand, e.g. ``POST /library/plan`` with camera, kind, exposure, set
    point, gain and offset only) completed from the camera's read-back state just before capture, so the entry
    records what its frames will really be: the frame size for its overscan mode and binning (camera profile, else
    the sensor size), the read mode and overscan mode the camera reports, and USB traffic / amp-glow mode when the
    camera reports them. Given fields are kept (capture applies them); ``bit_depth`` is left as given (light headers
    do not carry it, so filling it in would keep lights from matching).
    """
    state = camera.state()
    overscan = key.overscan or (OverscanMode(state.overscan).value if state.overscan is not None else None)
    binning = key.binning or 1
    profile: CameraProfile | None = getattr(camera, "profile", None)
    whole_frame = overscan is None or OverscanMode(overscan) is not OverscanMode.INCLUDE
    if profile is not None and not (whole_frame and profile.ignore is None):  # a generic profile: the frame received
        geometry = profile.geometry(overscan).binned(binning)
        width_px, height_px = geometry.width_px, geometry.height_px
    else:
        capabilities = camera.capabilities
        caps = capabilities() if callable(capabilities) else capabilities
        width_px, height_px = caps.width_px // binning, caps.height_px // binning
    read_back = {"read_mode": state.read_mode, "overscan": overscan, "usb_traffic": state.usb_traffic,
                 "amp_glow": state.amp_glow}
    filled: dict[str, Any] = {name: value for name, value in read_back.items()
                              if getattr(key, name) is None and value is not None}
    return replace(key.key_only(), width_px=width_px, height_px=height_px, **filled)


class _Builder:
    """One run of a build-library job (a resumed job makes a new run that continues the same entries)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.index = ctx.index
        self.settings = ctx.settings
        self.plan = Plan.from_dict(ctx.params["plan"])
        self.items = self.plan.work()
        saved = dict(ctx.job.result or {})
        self.entries: dict[str, int] = {str(k): int(v) for k, v in (saved.get("entries") or {}).items()}
        self.masters: dict[str, dict[str, Any]] = dict(saved.get("masters") or {})
        self.failures: list[str] = []
        self.unreachable_c: list[float] = []
        self.pending: list[tuple[PlanItem, int, Future[dict[str, Any]]]] = []
        self.max_retakes = int(ctx.params.get("max_retakes", self.settings.library.max_retakes))
        self.total = sum(i.frames_target for i in self.items)
        self.done = 0
        self.eta: _Eta | None = None
        self._last_temperature_report = 0.0
        self.gate: WeatherGate | None = None
        self._weather_unknown_warned = False

    # --- entries -----------------------------------------------------------------------------------------------------
    def entry_for(self, item: PlanItem) -> EntryView:
        entry_id = self.entries.get(item.key.slug)
        entry = self.index.get(entry_id) if entry_id is not None else None
        if entry is None:
            key = item.key
            if key.is_partial:
                key = complete_key(key, self.ctx.camera())
                self.ctx.log(f"{item.key.slug}: key completed from the camera: {key.slug}")
            status, existing = library_status(key, self.index, datetime.now(UTC))
            if status == "ready" and existing is not None:  # built since the plan was made: nothing to do
                self.ctx.log(f"{key.slug}: already ready in the library (entry {existing.id})")
                return existing
            if existing is not None and existing.status == "bad" and damaged_master(existing.note):
                self.entries[item.key.slug] = existing.id  # its master changed on disk: re-integrate its frames
                self.ctx.save_result(self._result())
                return existing
            entry = self.index.upsert_entry(key, item.frames_target)
            self.entries[item.key.slug] = entry.id
            self.ctx.save_result(self._result())
        return entry

    def _result(self) -> dict[str, Any]:
        views = [v for v in (self.index.get(i) for i in self.entries.values()) if v is not None]
        return {"entries": self.entries, "masters": self.masters, "failures": self.failures,
                "unreachable_c": self.unreachable_c, "frames_captured": sum(v.frames for v in views),
                "frames_rejected": sum(v.frames_rejected for v in views),
                "masters_built": sum(1 for v in views if v.status == "ready" and v.master),
                "held_for_review": sorted(v.id for v in views if v.review)}

    # --- progress ----------------------------------------------------------------------------------------------------
    def report(self, step: str | None = None) -> None:
        self.ctx.progress(self.done, self.total, step=step, eta_s=self.eta.eta_s() if self.eta else None)

    def on_temperature(self, item: PlanItem, sample: TemperatureSample) -> None:
        self.ctx.check()  # a cancel/pause interrupts a cooling wait too
        now = time.monotonic()
        if now - self._last_temperature_report >= TEMPERATURE_REPORT_S:
            self._last_temperature_report = now
            power = f", cooler {sample.cooler_power_pct:.0f} %" if sample.cooler_power_pct is not None else ""
            self.report(f"cooling to {item.key.set_point_c:g} °C: {sample.temperature_c:.2f} °C{power}")

    def expectation(self, item: PlanItem, entry: EntryView) -> FrameExpectation | None:
        """The library's prediction of a frame's overscan-corrected mean for the light-leak check: the accepted
        frames (``QCMEAN``) of the last master that was usable for the same key (the one usable-master rule, expired
        ones accepted: a stale key is being rebuilt); ``None`` when there is none (the series then predicts from its
        own first frames)."""
        prev = self.index.usable_master(entry.key, exclude_id=entry.id, expired_ok=True)
        if prev is None or not prev.frames:
            return None
        means = []
        for frame in self.index.frames_of(prev.id, accepted_only=True)[:EXPECTATION_FRAMES]:
            try:
                value = read_header(frame.path).get("QCMEAN")
            except FrameError:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                means.append(float(value))
        return FrameExpectation.from_means(means, source=f"library entry {prev.id}") if means else None

    # --- capture -----------------------------------------------------------------------------------------------------
    def capture(self, item: PlanItem, entry: EntryView) -> bool:
        """Capture the missing frames of ``item`` with its entry's key (completed from the camera when the plan's key
        was partial, so the frames are what the entry says); True when the series is complete."""
        key = entry.key
        if adopt_rejected(self.index, entry):
            self.ctx.log(f"{key.slug}: recorded rejected frames left by an interrupted run")
        self.index.set_status(entry.id, "capturing")
        expected = self.expectation(item, entry) if self.ctx.params.get("library_expectation", True) else None
        if expected is not None:
            self.ctx.log(f"{key.slug}: light-leak check against {expected.source} "
                         f"({expected.mean_adu:.1f} ± {expected.sigma_adu:.1f} ADU above overscan)")
        request = SeriesRequest(frame_type=FRAME_TYPES[key.kind], exposure_s=key.exposure_s,
                                count=item.frames_target, set_point_c=key.set_point_c,
                                settings=key.capture_settings(), name_prefix=Layout.frame_prefix(key),
                                max_retakes=self.max_retakes, expected=expected,
                                compression=self.settings.library.compression, extra_headers=self.ambient_card())
        base_done = self.done
        self.done = base_done + entry.frames
        last: list[float | None] = [None]  # wall time of the previous frame of this series (None: none yet)

        def on_frame(record: FrameRecord) -> None:
            self.index.record_frame(entry.id, record.path, record.sha256, record.index, record.temperature_start_c,
                                    record.temperature_end_c, record.quality_ok, record.reasons)
            self.ctx.frame(str(record.path), record.quality_ok, record.reasons)
            now = time.monotonic()
            assert self.eta is not None
            self.eta.frame(item, None if last[0] is None else now - last[0])
            last[0] = now
            if record.quality_ok:
                self.done += 1
            else:
                self.ctx.warn(f"{key.slug} frame {record.index} rejected: {'; '.join(record.reasons)}")
            self.report(f"capturing {key.describe()}: frame {record.index}/{item.frames_target}")
            if not (record.quality_ok and record.index >= item.frames_target) and self.yield_while_clear(item):
                last[0] = None  # the wait is not frame time
                self.report(f"capturing {key.describe()}: frame {record.index}/{item.frames_target}")

        if self.yield_while_clear(item):
            self.ctx.check()
        self.report(f"cooling to {key.set_point_c:g} °C for {key.describe()}")
        self.ctx.log(f"capturing {key.describe()} into {entry.frames_dir}")
        try:
            result = capture_series(self.ctx.camera(), request, Path(entry.frames_dir),
                                    cooling=self.settings.cooling, on_frame=on_frame,
                                    on_temperature=lambda s: self.on_temperature(item, s), stop=self.ctx.stop)
        except SeriesFailed as exc:
            self.index.record_frames(entry.id, [*exc.result.frames, *exc.result.rejected])
            raise
        self.index.record_frames(entry.id, result.frames)  # frames resumed from disk (idempotent for the rest)
        accepted = len(result.frames)
        self.done = base_done + accepted  # recount from the truth (frames resumed from disk included)
        assert self.eta is not None
        self.eta.set_have(item, accepted)
        if result.reconnects:
            self.ctx.warn(f"{key.slug}: camera reconnected {result.reconnects} time(s) during the series")
        if result.stopped:
            raise JobInterrupted(self.ctx.stop_reason or "stop")
        return accepted >= item.frames_target

    # --- weather (cloudy-night operation) -----------------------------------------------------------------------------
    def yield_while_clear(self, item: PlanItem) -> bool:
        """Before a series and between frames: while the weather gate says imaging is possible, leave the camera alone
        (no exposure, no cooling change) and wait; True when it waited. Returns early when the job is stopped."""
        gate = self.gate
        if gate is None:
            return False
        impossible = gate.imaging_impossible()
        if gate.last.safe is None and not self._weather_unknown_warned:
            self._weather_unknown_warned = True
            self.ctx.warn(f"weather status unknown ({gate.describe()}): building as if the sky were unusable")
        elif gate.last.safe is not None:
            self._weather_unknown_warned = False
        if impossible:
            return False
        self.ctx.warn(f"{SKY_CLEAR_STEP} before the next {item.key.slug} frame: weather {gate.describe()}")
        self.report(SKY_CLEAR_STEP)
        if gate.wait_until_impossible(self.ctx.stop):
            self.ctx.log(f"imaging impossible again (weather {gate.describe()}): resuming {item.key.slug}")
        return True

    # --- integration (worker process) --------------------------------------------------------------------------------
    def integrate(self, item: PlanItem, entry_id: int) -> None:
        self.index.set_status(entry_id, "integrating")
        future = self.ctx.pool.submit(build_entry_master, self.settings.library.model_dump(mode="json"), entry_id,
                                      job_id=self.ctx.job_id, health=self.settings.health.model_dump(mode="json"))
        self.pending.append((item, entry_id, future))
        self.ctx.log(f"{item.key.slug}: integrating in the worker process (entry {entry_id})")

    def collect(self, *, wait: bool) -> None:
        """Record finished integrations (all of them, waiting, when ``wait``)."""
        still = []
        for item, entry_id, future in self.pending:
            if not wait and not future.done():
                still.append((item, entry_id, future))
                continue
            slug = item.key.slug
            try:
                out = future.result()
            except (BrokenProcessPool, ImportError) as exc:  # not the frames' fault: stays 'integrating' for a retry
                self.failures.append(f"{slug}: integration not done ({type(exc).__name__}: {exc})")
                self.ctx.warn(self.failures[-1])
                continue
            except DiskFullError as exc:  # not the frames' fault either: they are kept, the entry integrates later
                self.failures.append(f"{slug}: master not written, the library disk is full ({exc.strerror}); its "
                                     "good frames are kept: free some room and plan the key again to integrate them")
                self.ctx.warn(self.failures[-1])
                continue
            except Exception as exc:  # a master that cannot be built is bad; its frames stay for inspection
                self.index.mark_bad(entry_id, f"integration failed: {type(exc).__name__}: {exc}")
                self.failures.append(f"{slug}: integration failed: {exc}")
                self.ctx.warn(self.failures[-1])
                continue
            self.masters[slug] = {"entry_id": entry_id, "master": out["master"], "n_frames": out["n_frames"],
                                  "seconds": out["seconds"], "review": out["review"]}
            self.ctx.log(f"{slug}: master {out['master']} ({out['n_frames']} frames, {out['seconds']:.1f} s)")
            if out["review"]:
                self.ctx.warn(f"{slug}: new master held for review: {out['review_reason']}")
            if out.get("defect_drift"):
                self.ctx.warn(f"{slug}: {out['defect_drift']}")
            for message in out.get("health_warnings") or []:
                self.ctx.warn(message)
        self.pending = still
        self.ctx.save_result(self._result())

    # --- the run -----------------------------------------------------------------------------------------------------
    def build(self) -> None:
        camera = self.ctx.camera()
        self.eta = _Eta(self.items, camera.profile.readout_s if camera.profile is not None else DEFAULT_READOUT_S)
        self.report(f"building {len(self.items)} key(s), {self.total} frames")
        skipped_c: set[float] = set()
        try:
            if self.ctx.params.get("weather"):
                self.watch_weather(self.ctx.params["weather"])
            for item in self.items:
                self.ctx.check()
                self.collect(wait=False)
                if item.key.set_point_c in skipped_c:
                    self.failures.append(f"{item.key.slug}: skipped (set point {item.key.set_point_c:g} °C)")
                    continue
                entry = self.entry_for(item)
                if entry.status == "ready":
                    self.done += entry.frames
                    self.eta.set_have(item, entry.frames)
                    continue
                damaged = entry.status == "bad" and damaged_master(entry.note)  # frames intact: rebuild from them
                if damaged and entry.frames >= item.frames_target:
                    self.ctx.log(f"{item.key.slug}: the master of entry {entry.id} changed on disk; re-integrating "
                                 f"its {entry.frames} good frames (nothing recaptured)")
                    self.done += entry.frames
                    self.eta.set_have(item, entry.frames)
                    self.integrate(item, entry.id)
                    continue
                if entry.status in ("bad", "stale") and not damaged:
                    self.failures.append(f"{item.key.slug}: entry {entry.id} is {entry.status} ({entry.note})")
                    self.ctx.warn(self.failures[-1])
                    continue
                try:
                    complete = self.capture(item, entry)
                except (SetPointUnreachable, CameraTimeout) as exc:
                    skipped_c.add(item.key.set_point_c)
                    if isinstance(exc, SetPointUnreachable):
                        self.unreachable_c.append(item.key.set_point_c)
                    self.failures.append(f"{item.key.slug}: {exc}")
                    self.ctx.warn(f"set point {item.key.set_point_c:g} °C skipped: {exc}")
                    continue
                except SeriesFailed as exc:
                    self.failures.append(f"{item.key.slug}: {exc}")
                    self.ctx.warn(self.failures[-1])
                    continue
                if complete:
                    self.integrate(item, entry.id)
            if self.pending:
                self.report("waiting for the last master(s)")
        finally:
            self.collect(wait=True)  # integrations already started always finish (also on pause/cancel/stop)
            if self.gate is not None:
                self.gate.close()
                self.gate = None

    def ambient_card(self) -> dict[str, Any]:
        """``AMBTEMP`` for a series' frames: the ambient temperature the weather device reports (read
        at the start of every series), so a camera's health can compare cooler power at equal ambient
        (:mod:`daemon.health`)."""
        ambient_c = self.gate.monitor.reading().ambient_c if self.gate is not None else None
        if ambient_c is None:
            return {}
        return {"AMBTEMP": (round(ambient_c, 2), "[C] ambient temperature (weather device)")}

    def watch_weather(self, weather: dict[str, Any]) -> None:
        """Connect the weather gate; a device that cannot be reached fails the job (it asked to be watched)."""
        try:
            self.gate = WeatherGate.from_params(weather)
        except CameraError as exc:
            raise RuntimeError(f"cannot watch weather device {weather['device']!r} at "
                               f"{weather['host']}:{weather['port']}: {exc}") from exc
        self.ctx.log(f"watching weather device {weather['device']!r}: capturing only while imaging is impossible "
                     f"(hold-off {weather['hold_s']:g} s)")

    def warm_up(self) -> None:
        cooling = self.settings.cooling
        if not bool(self.ctx.params.get("warm_up", cooling.warm_up_at_end)):
            return
        self.report(f"warming up to {cooling.warm_up_target_c:g} °C")
        try:
            self.ctx.camera().warm_up(cooling.warm_up_target_c, cooling.warm_up_rate_c_per_min)
        except CameraError as exc:
            self.ctx.warn(f"warm-up failed: {exc}")


def run(ctx: JobContext) -> dict[str, Any]:
    """Build the plan (see the module docstring); returns the job result."""
    builder = _Builder(ctx)
    try:
        builder.build()
    except JobInterrupted:
        if ctx.stop_reason == "cancel":
            builder.warm_up()
        raise
    builder.warm_up()
    result = builder._result()
    ctx.save_result(result)
    if builder.failures:
        raise RuntimeError(f"{len(builder.failures)} key(s) not built: " + " | ".join(builder.failures))
    return result
