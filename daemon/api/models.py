"""Pydantic models of every request and response body of the REST API (they make the published OpenAPI schema).

Units are in the field names: seconds (``_s``), degrees Celsius (``_c``), percent (``_pct``), pixels (``_px``).
Times are ISO 8601 strings in UTC.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from daemon.jobs.requests import JobRequest
from daemon.jobs.states import JobKind, JobState
from daemon.library.keys import KEY_FIELDS, MAX_FRAMES_PER_KEY, REQUIRED_FIELDS, Kind, LibraryKey
from daemon.library.store import EntryStatus as EntryStatus
from daemon.library.store import EntryView

EntryKind = Kind


class Strict(BaseModel):
    """Request models: unknown fields are refused, no NaN/infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, bool]
    details: dict[str, str] = Field(default_factory=dict)


class CameraOut(BaseModel):
    """The camera as last read by the monitor (``age_s`` seconds ago), never a live INDI call."""

    connected: bool
    device: str | None = None
    temperature_c: float | None = None
    set_point_c: float | None = None
    stable: bool = False
    cooler_on: bool | None = None
    cooler_power_pct: float | None = None
    gain: float | None = None
    offset: float | None = None
    binning: int | None = None
    read_mode: int | None = None
    overscan: str | None = None
    exposing: bool = False
    exposure_remaining_s: float | None = None
    updated_utc: str | None = None
    age_s: float | None = None
    reconnects: int = 0
    last_error: str | None = None
    id: str | None = Field(default=None, description="the camera's id ([[cameras]] id; 'default' for a daemon "
                                                     "configured with one camera by [indi])")
    indi_host: str | None = None
    indi_port: int | None = None
    indi_device: str | None = Field(default=None, description="the configured INDI device (None: the first CCD)")
    profile: str | None = Field(default=None, description="the configured camera profile ('auto': detected)")


@pydantic_dataclass(frozen=True, kw_only=True)
class EntryOut(EntryView):
    """A library entry (``darkd library --json`` shows the same fields): every field of the library key
    (:class:`daemon.library.keys.LibraryKey`, same names) plus the entry's state (:class:`EntryView`)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def slug(self) -> str:
        return self.key.slug


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class KeyIn(LibraryKey):
    """A library key (its fields and bounds are :class:`daemon.library.keys.LibraryKey`'s); ``frames`` overrides the
    per-kind frame count."""

    frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES_PER_KEY)

    def plan_key(self) -> dict[str, Any]:
        """The key fields that were given (``None`` ones left out) plus ``frames``, as ``plan_from_keys`` takes them."""
        data = {name: getattr(self, name) for name in (*KEY_FIELDS, "frames")}
        return {name: value for name, value in data.items() if value is not None or name in REQUIRED_FIELDS}


class PlanIn(Strict):
    """Plan from explicit ``keys`` or from a ``lights_dir`` under an allowed root (exactly one of them)."""

    keys: list[KeyIn] | None = Field(default=None, max_length=1000)
    lights_dir: str | None = Field(default=None, max_length=4096)
    camera: str | None = Field(default=None, max_length=200, description="camera name when the lights lack one")
    include_bias: bool = True
    ambient_c: float | None = Field(default=None, ge=-60, le=60)
    max_cooling_delta_c: float = Field(default=38.0, gt=0, le=100)
    readout_s: float = Field(default=2.0, ge=0, le=600)

    @model_validator(mode="after")
    def _one_source(self) -> PlanIn:
        if (self.keys is None) == (self.lights_dir is None):
            raise ValueError("give exactly one of 'keys' or 'lights_dir'")
        return self


class PlanItemOut(BaseModel):
    key: dict[str, Any]
    slug: str
    description: str
    kind: str
    exposure_s: float
    set_point_c: float
    status: str
    frames_target: int
    frames_have: int
    frames_needed: int
    entry_id: int | None = None
    lights: int
    reachable: bool
    reason: str | None = None
    order: int | None = None
    bytes_needed: int = Field(default=0, description="disk room its missing frames and master need (bytes)")


class PlanOut(BaseModel):
    bytes_needed: int = Field(default=0, description="disk room the plan's work needs: frames + masters (bytes)")
    created_utc: str
    items: list[PlanItemOut]
    work: list[str]
    set_points_c: list[float]
    unreachable_c: list[float]
    total_frames: int
    estimate_s: dict[str, float]
    assumptions: dict[str, Any]
    lights: int
    errors: list[dict[str, str]]
    warnings: list[str]
    text: str


#: A job to queue: ``{"kind": ..., "params": {...}}``, the params typed per kind (their paths must be under the
#: allowed roots).
JobIn = JobRequest


class JobOut(BaseModel):
    id: int
    kind: JobKind
    params: dict[str, Any]
    state: JobState
    camera: str | None = None
    progress_done: int
    progress_total: int
    step: str | None = None
    eta_s: float | None = None
    warnings: list[str]
    error: str | None = None
    result: dict[str, Any] | None = None
    created_utc: str | None = None
    started_utc: str | None = None
    finished_utc: str | None = None
    updated_utc: str | None = None
    owner: str | None = None  # the daemon process that runs (or last ran) it: several hosts may share one index
    lease_until_utc: str | None = None  # until when that daemon's claim holds (renewed while the job runs)


class SampleOut(BaseModel):
    time: str
    temperature_c: float | None
    set_point_c: float | None
    cooler_power_pct: float | None


class CoverageRow(BaseModel):
    """One key of the coverage table: ``ready``, ``stale``, ``in-progress``, ``bad`` or ``missing`` (from the plan)."""

    camera: str | None = None  # every camera of the (shared) index has its rows
    slug: str
    description: str
    kind: str
    exposure_s: float
    set_point_c: float
    status: str
    entry_id: int | None = None
    frames: int = 0
    frames_target: int = 0
    reason: str | None = Field(default=None, description="why a ready entry is not usable (usable-master rule)")


class StatusOut(BaseModel):
    """Everything the status page shows, in one request."""

    camera: CameraOut
    cameras: list[CameraOut] = Field(default_factory=list, description="every configured camera, in configuration "
                                     "order (the first is ``camera``)")
    samples: list[SampleOut] = Field(description="the first camera's readings (``histories[camera.id]``)")
    histories: dict[str, list[SampleOut]] = Field(default_factory=dict, description="each configured camera's "
                                                  "readings over the last ``hours``, by camera id, in configuration "
                                                  "order (thinned to at most 720 each)")
    current_job: JobOut | None
    coverage: list[CoverageRow]
    counts: dict[str, int]
    server_time: str
