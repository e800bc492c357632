"""The ORM classes of the library index (SQLAlchemy 2.0 declarative), mapped onto the Core tables of
:mod:`daemon.library.tables` (the schema's one definition): entries, frames, jobs, job_log, camera_defaults,
master_history, watch_lights, watch_keys. Writes and most reads use these classes; the annotations below type the
mapped columns (they define nothing: each class's columns are its table's).

The schema is created and upgraded only by the Alembic migrations in ``daemon/library/migrations`` (never by
``create_all``). Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from daemon.library import tables
from daemon.library.tables import UTCDateTime, utc_now

__all__ = ["Base", "CameraDefaults", "Entry", "Frame", "Job", "JobLog", "MasterHistory", "UTCDateTime", "WatchKey",
           "WatchLight", "utc_now"]


class Base(DeclarativeBase):
    metadata = tables.metadata


class Entry(Base):
    """One library entry: a key (one column per :class:`LibraryKey` field, mapped from the table: ``getattr``
    or ``tables.entries.c``), its frames, and (once integrated) its master."""

    __table__ = tables.entries

    id: Mapped[int]
    slug: Mapped[str]

    directory: Mapped[str]  # relative to the library root when inside it
    status: Mapped[str]
    frames_target: Mapped[int]
    note: Mapped[str | None]
    review: Mapped[bool]
    review_reason: Mapped[str | None]

    master_path: Mapped[str | None]
    master_sha256: Mapped[str | None]
    master_stats: Mapped[dict[str, Any] | None]
    master_created_utc: Mapped[datetime | None]
    valid_until_utc: Mapped[datetime | None]

    created_utc: Mapped[datetime]
    updated_utc: Mapped[datetime]

    frames: Mapped[list[Frame]] = relationship(back_populates="entry", cascade="all, delete-orphan",
                                               order_by="Frame.index")


class Frame(Base):
    """A captured calibration frame that belongs to an entry (accepted or rejected by the quality check)."""

    __table__ = tables.frames

    id: Mapped[int]
    entry_id: Mapped[int]
    path: Mapped[str]
    sha256: Mapped[str]
    size_bytes: Mapped[int | None]
    index: Mapped[int]
    temperature_start_c: Mapped[float | None]
    temperature_end_c: Mapped[float | None]
    quality_ok: Mapped[bool]
    reasons: Mapped[list[str]]
    created_utc: Mapped[datetime]

    entry: Mapped[Entry] = relationship(back_populates="frames")


class Job(Base):
    """A persistent job of the queue (the JOBS engine owns the semantics of ``params`` and ``result``)."""

    __table__ = tables.jobs

    id: Mapped[int]
    kind: Mapped[str]
    params: Mapped[dict[str, Any]]
    state: Mapped[str]
    camera: Mapped[str | None]
    progress_done: Mapped[int]
    progress_total: Mapped[int]
    step: Mapped[str | None]
    eta_s: Mapped[float | None]
    warnings: Mapped[list[str]]
    error: Mapped[str | None]
    result: Mapped[dict[str, Any] | None]
    created_utc: Mapped[datetime]
    started_utc: Mapped[datetime | None]
    finished_utc: Mapped[datetime | None]
    updated_utc: Mapped[datetime]
    #: the daemon process running the job (:func:`daemon.jobs.queue.process_owner`) and until when its claim holds;
    #: renewed while it runs (a lease: several daemons on one index, :mod:`daemon.jobs.queue`)
    owner: Mapped[str | None]
    lease_until_utc: Mapped[datetime | None]

    log: Mapped[list[JobLog]] = relationship(back_populates="job", cascade="all, delete-orphan", order_by="JobLog.id")


class JobLog(Base):
    """One line of a job's log."""

    __table__ = tables.job_log

    id: Mapped[int]
    job_id: Mapped[int]
    time_utc: Mapped[datetime]
    line: Mapped[str]

    job: Mapped[Job] = relationship(back_populates="log")


class CameraDefaults(Base):
    """A camera's state as its driver reports it when darkd connects, before darkd changes anything (one row per
    camera, replaced on each record): what a light shot with the driver's defaults was taken with. Read by the
    unstated-fields rule (:mod:`daemon.light_rule`). ``values``: gain, offset, read_mode, usb_traffic, amp_glow,
    overscan (``None`` = not reported), ``has_gain``/``has_offset``, ``profile``; ``read_mode_labels``: the mode
    names the driver offers, in index order."""

    __table__ = tables.camera_defaults

    camera: Mapped[str]
    values: Mapped[dict[str, Any]]
    read_mode_labels: Mapped[list[str]]
    recorded_utc: Mapped[datetime]


class MasterHistory(Base):
    """One quantity measured on one master (``daemon.health``): the time series of a camera's health. Rows are never
    updated; a rebuilt master adds rows (unique per entry, master creation time and quantity), so the history outlives
    the library's one-current-master-per-entry. ``series``: what the values are compared along (the key slug, or
    ``set point -20 °C`` for cooler power); ``ambient_c`` only when the frames recorded it."""

    __table__ = tables.master_history

    id: Mapped[int]
    camera: Mapped[str]
    entry_id: Mapped[int]
    kind: Mapped[str]
    slug: Mapped[str]
    series: Mapped[str]
    set_point_c: Mapped[float | None]
    exposure_s: Mapped[float | None]
    created_utc: Mapped[datetime]
    quantity: Mapped[str]
    value: Mapped[float]
    uncertainty: Mapped[float | None]
    unit: Mapped[str]
    ambient_c: Mapped[float | None]
    method: Mapped[str | None]
    recorded_utc: Mapped[datetime]


class WatchLight(Base):
    """A light the closed loop (:mod:`daemon.watch`) has taken from a watched folder, once (``path`` is unique: a
    light is never taken twice). ``status``: ``waiting`` (its dark is on the standing plan), ``calibrated``
    (``output`` written with ``master``), ``unbuildable`` (its dark can never be built: ``reason``), ``failed``
    (calibration failed: ``reason``). ``slug`` / ``camera``: its dark's key."""

    __table__ = tables.watch_lights

    id: Mapped[int]
    path: Mapped[str]
    folder: Mapped[str]
    camera: Mapped[str]
    slug: Mapped[str]
    status: Mapped[str]
    reason: Mapped[str | None]
    output: Mapped[str | None]
    master: Mapped[str | None]
    seen_utc: Mapped[datetime]
    done_utc: Mapped[datetime | None]


class WatchKey(Base):
    """A key of the closed loop's standing plan: a dark its waiting lights need. ``status``: ``missing`` (to build
    when the camera is free and cannot image), ``building`` (in build-library job ``job_id``), ``built``,
    ``unbuildable`` (``reason``: a set point the cooler cannot reach, or ``attempts`` failed builds)."""

    __table__ = tables.watch_keys

    id: Mapped[int]
    camera: Mapped[str]
    slug: Mapped[str]
    key: Mapped[dict[str, Any]]
    status: Mapped[str]
    reason: Mapped[str | None]
    job_id: Mapped[int | None]
    attempts: Mapped[int]
    added_utc: Mapped[datetime]
    updated_utc: Mapped[datetime]
