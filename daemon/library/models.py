"""SQLAlchemy 2.0 declarative schema of the library index: entries, frames, jobs, job_log.

The schema is created and upgraded only by the Alembic migrations in ``daemon/library/migrations`` (never by
``create_all``); these classes must stay in step with the latest revision. Times are timezone-aware UTC.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, MappedColumn, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from daemon.library.keys import KEY_SPECS, key_types


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns timezone-aware UTC datetimes (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the index stores timezone-aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def _key_column_type(annotation: Any) -> tuple[TypeEngine[Any], str, bool]:
    """(SQL type, Python type name, nullable) of a key field from its annotation (``Annotated``, ``Literal``,
    ``| None`` unwrapped). The SQL type is a class to instantiate."""
    nullable = False
    hint = annotation
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (Union, UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(hint))
            hint = args[0]
        elif origin is Literal:
            hint = type(typing.get_args(hint)[0])
        else:
            break
    if hint is str:
        return String(), "str", nullable
    if hint is int:
        return Integer(), "int", nullable
    if hint is float:
        return Float(), "float", nullable
    raise TypeError(f"library key field of type {annotation!r} has no column type")


def _key_column(name: str, annotation: Any) -> MappedColumn[Any]:
    sql, python, nullable = _key_column_type(annotation)
    length = KEY_SPECS[name].sql_length
    return mapped_column(name, String(length) if python == "str" and length else sql, nullable=nullable)


class KeyColumns:
    """Mixin carrying one column per :class:`LibraryKey` field, added below from the key definition (the key is
    defined once, in :mod:`daemon.library.keys`); read them with :func:`key_column` or ``getattr``."""


for _name, _annotation in key_types().items():
    setattr(KeyColumns, _name, _key_column(_name, _annotation))


class Entry(KeyColumns, Base):
    """One library entry: a key (columns from :class:`LibraryKey`), its frames, and (once integrated) its master."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(255), nullable=False)

    directory: Mapped[str] = mapped_column(Text, nullable=False)  # relative to the library root when inside it
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="planned")
    frames_target: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    note: Mapped[str | None] = mapped_column(Text)
    review: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    review_reason: Mapped[str | None] = mapped_column(Text)

    master_path: Mapped[str | None] = mapped_column(Text)
    master_sha256: Mapped[str | None] = mapped_column(String(64))
    master_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    master_created_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_until_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)
    updated_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now)

    frames: Mapped[list[Frame]] = relationship(back_populates="entry", cascade="all, delete-orphan",
                                               order_by="Frame.index")

    # one entry per directory: two hosts planning the same key at once cannot both create it (the loser retries)
    __table_args__ = (Index("ix_entries_slug", "camera", "slug"), Index("ix_entries_status", "status"),
                      UniqueConstraint("directory", name="uq_entries_directory"))


def key_column(name: str) -> InstrumentedAttribute[Any]:
    """The :class:`Entry` column of key field ``name`` (for queries; the columns are derived, so not typed)."""
    if name not in KEY_SPECS:
        raise KeyError(f"{name!r} is not a library key field")
    column: InstrumentedAttribute[Any] = getattr(Entry, name)
    return column


class Frame(Base):
    """A captured calibration frame that belongs to an entry (accepted or rejected by the quality check)."""

    __tablename__ = "frames"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), nullable=False, index=True)
    path: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    temperature_start_c: Mapped[float | None] = mapped_column(Float)
    temperature_end_c: Mapped[float | None] = mapped_column(Float)
    quality_ok: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    reasons: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)

    entry: Mapped[Entry] = relationship(back_populates="frames")


class Job(Base):
    """A persistent job of the queue (the JOBS engine owns the semantics of ``params`` and ``result``)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="queued", index=True)
    camera: Mapped[str | None] = mapped_column(String(255))
    progress_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    step: Mapped[str | None] = mapped_column(Text)
    eta_s: Mapped[float | None] = mapped_column(Float)
    warnings: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)
    started_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now)
    #: the daemon process running the job (:func:`daemon.jobs.queue.process_owner`) and until when its claim holds;
    #: renewed while it runs (a lease: several daemons on one index, :mod:`daemon.jobs.queue`)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_until_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)

    log: Mapped[list[JobLog]] = relationship(back_populates="job", cascade="all, delete-orphan", order_by="JobLog.id")


class JobLog(Base):
    """One line of a job's log."""

    __tablename__ = "job_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True)
    time_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)
    line: Mapped[str] = mapped_column(Text, nullable=False)

    job: Mapped[Job] = relationship(back_populates="log")


class CameraDefaults(Base):
    """A camera's state as its driver reports it when darkd connects, before darkd changes anything (one row per
    camera, replaced on each record): what a light shot with the driver's defaults was taken with. Read by the
    unstated-fields rule (:mod:`daemon.light_rule`). ``values``: gain, offset, read_mode, usb_traffic, amp_glow,
    overscan (``None`` = not reported), ``has_gain``/``has_offset``, ``profile``; ``read_mode_labels``: the mode
    names the driver offers, in index order."""

    __tablename__ = "camera_defaults"

    camera: Mapped[str] = mapped_column(String(255), primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    read_mode_labels: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    recorded_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)


class MasterHistory(Base):
    """One quantity measured on one master (``daemon.health``): the time series of a camera's health. Rows are never
    updated; a rebuilt master adds rows (unique per entry, master creation time and quantity), so the history outlives
    the library's one-current-master-per-entry. ``series``: what the values are compared along (the key slug, or
    ``set point -20 °C`` for cooler power); ``ambient_c`` only when the frames recorded it."""

    __tablename__ = "master_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    camera: Mapped[str] = mapped_column(String(255), nullable=False)
    entry_id: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    slug: Mapped[str] = mapped_column(String(255), nullable=False)
    series: Mapped[str] = mapped_column(String(255), nullable=False)
    set_point_c: Mapped[float | None] = mapped_column(Float)
    exposure_s: Mapped[float | None] = mapped_column(Float)
    created_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    quantity: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32), nullable=False)
    ambient_c: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(Text)
    recorded_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)

    __table_args__ = (UniqueConstraint("entry_id", "created_utc", "quantity", name="uq_master_history_point"),
                      Index("ix_master_history_camera", "camera", "quantity", "created_utc"))


class WatchLight(Base):
    """A light the closed loop (:mod:`daemon.watch`) has taken from a watched folder, once (``path`` is unique: a
    light is never taken twice). ``status``: ``waiting`` (its dark is on the standing plan), ``calibrated``
    (``output`` written with ``master``), ``unbuildable`` (its dark can never be built: ``reason``), ``failed``
    (calibration failed: ``reason``). ``slug`` / ``camera``: its dark's key."""

    __tablename__ = "watch_lights"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(1024), nullable=False, unique=True)
    folder: Mapped[str] = mapped_column(String(1024), nullable=False)
    camera: Mapped[str] = mapped_column(String(255), nullable=False)
    slug: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    master: Mapped[str | None] = mapped_column(Text)
    seen_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)
    done_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WatchKey(Base):
    """A key of the closed loop's standing plan: a dark its waiting lights need. ``status``: ``missing`` (to build
    when the camera is free and cannot image), ``building`` (in build-library job ``job_id``), ``built``,
    ``unbuildable`` (``reason``: a set point the cooler cannot reach, or ``attempts`` failed builds)."""

    __tablename__ = "watch_keys"
    __table_args__ = (UniqueConstraint("camera", "slug", name="uq_watch_keys_camera_slug"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    camera: Mapped[str] = mapped_column(String(255), nullable=False)
    slug: Mapped[str] = mapped_column(String(255), nullable=False)
    key: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    added_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now)
    updated_utc: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now)
