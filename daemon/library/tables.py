"""The tables of the library index as SQLAlchemy Core :class:`Table` objects: entries, frames, jobs, job_log,
camera_defaults, master_history, watch_lights, watch_keys. This is their one definition.

The ORM classes of :mod:`daemon.library.models` are mapped onto these tables (``__table__``); read paths that need no
ORM objects (``darkd library``, ``darkd jobs list``: start-up time, issue 16) query them with Core ``select()`` and do
not import ``sqlalchemy.orm``. The schema is created and upgraded only by the Alembic migrations in
``daemon/library/migrations`` (never by ``create_all``); these tables must stay in step with the latest revision.
Times are timezone-aware UTC.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
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


metadata = MetaData()


def _key_column_type(annotation: Any) -> tuple[TypeEngine[Any], str, bool]:
    """(SQL type, Python type name, nullable) of a key field from its annotation (``Annotated``, ``Literal``,
    ``| None`` unwrapped)."""
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


def _key_columns() -> list[Column[Any]]:
    """One column per :class:`daemon.library.keys.LibraryKey` field (the key is defined once, in
    :mod:`daemon.library.keys`)."""
    columns: list[Column[Any]] = []
    for name, annotation in key_types().items():
        sql, python, nullable = _key_column_type(annotation)
        length = KEY_SPECS[name].sql_length
        columns.append(Column(name, String(length) if python == "str" and length else sql, nullable=nullable))
    return columns


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True, autoincrement=True)


#: One library entry: a key (columns from :class:`LibraryKey`), its frames, and (once integrated) its master. One entry
#: per directory: two hosts planning the same key at once cannot both create it (the loser retries).
entries = Table(
    "entries", metadata,
    _id(),
    Column("slug", String(255), nullable=False),
    Column("directory", Text, nullable=False),  # relative to the library root when inside it
    Column("status", String(16), nullable=False, default="planned"),
    Column("frames_target", Integer, nullable=False, default=0),
    Column("note", Text),
    Column("review", Boolean, nullable=False, default=False),
    Column("review_reason", Text),
    Column("master_path", Text),
    Column("master_sha256", String(64)),
    Column("master_stats", JSON),
    Column("master_created_utc", UTCDateTime),
    Column("valid_until_utc", UTCDateTime),
    Column("created_utc", UTCDateTime, nullable=False, default=utc_now),
    Column("updated_utc", UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now),
    *_key_columns(),
    Index("ix_entries_slug", "camera", "slug"),
    Index("ix_entries_status", "status"),
    UniqueConstraint("directory", name="uq_entries_directory"),
)

#: A captured calibration frame that belongs to an entry (accepted or rejected by the quality check).
frames = Table(
    "frames", metadata,
    _id(),
    Column("entry_id", ForeignKey("entries.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("path", Text, nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer),
    Column("index", Integer, nullable=False),
    Column("temperature_start_c", Float),
    Column("temperature_end_c", Float),
    Column("quality_ok", Boolean, nullable=False, default=True),
    Column("reasons", JSON, nullable=False, default=list),
    Column("created_utc", UTCDateTime, nullable=False, default=utc_now),
)

#: A persistent job of the queue (the JOBS engine owns the semantics of ``params`` and ``result``). ``owner``: the
#: daemon process running the job (:func:`daemon.jobs.queue.process_owner`) and ``lease_until_utc`` until when its
#: claim holds; renewed while it runs (a lease: several daemons on one index, :mod:`daemon.jobs.queue`).
jobs = Table(
    "jobs", metadata,
    _id(),
    Column("kind", String(32), nullable=False),
    Column("params", JSON, nullable=False, default=dict),
    Column("state", String(16), nullable=False, default="queued", index=True),
    Column("camera", String(255)),
    Column("progress_done", Integer, nullable=False, default=0),
    Column("progress_total", Integer, nullable=False, default=0),
    Column("step", Text),
    Column("eta_s", Float),
    Column("warnings", JSON, nullable=False, default=list),
    Column("error", Text),
    Column("result", JSON),
    Column("created_utc", UTCDateTime, nullable=False, default=utc_now),
    Column("started_utc", UTCDateTime),
    Column("finished_utc", UTCDateTime),
    Column("updated_utc", UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now),
    Column("owner", String(255)),
    Column("lease_until_utc", UTCDateTime),
)

#: One line of a job's log.
job_log = Table(
    "job_log", metadata,
    _id(),
    Column("job_id", ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("time_utc", UTCDateTime, nullable=False, default=utc_now),
    Column("line", Text, nullable=False),
)

#: A camera's state as its driver reports it when darkd connects (:class:`daemon.library.models.CameraDefaults`).
camera_defaults = Table(
    "camera_defaults", metadata,
    Column("camera", String(255), primary_key=True),
    Column("values", JSON, nullable=False),
    Column("read_mode_labels", JSON, nullable=False),
    Column("recorded_utc", UTCDateTime, nullable=False, default=utc_now),
)

#: One quantity measured on one master (:class:`daemon.library.models.MasterHistory`).
master_history = Table(
    "master_history", metadata,
    _id(),
    Column("camera", String(255), nullable=False),
    Column("entry_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("slug", String(255), nullable=False),
    Column("series", String(255), nullable=False),
    Column("set_point_c", Float),
    Column("exposure_s", Float),
    Column("created_utc", UTCDateTime, nullable=False),
    Column("quantity", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("uncertainty", Float),
    Column("unit", String(32), nullable=False),
    Column("ambient_c", Float),
    Column("method", Text),
    Column("recorded_utc", UTCDateTime, nullable=False, default=utc_now),
    UniqueConstraint("entry_id", "created_utc", "quantity", name="uq_master_history_point"),
    Index("ix_master_history_camera", "camera", "quantity", "created_utc"),
)

#: A light the closed loop has taken from a watched folder (:class:`daemon.library.models.WatchLight`).
watch_lights = Table(
    "watch_lights", metadata,
    _id(),
    Column("path", String(1024), nullable=False, unique=True),
    Column("folder", String(1024), nullable=False),
    Column("camera", String(255), nullable=False),
    Column("slug", String(255), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text),
    Column("output", Text),
    Column("master", Text),
    Column("seen_utc", UTCDateTime, nullable=False, default=utc_now),
    Column("done_utc", UTCDateTime),
)

#: A key of the closed loop's standing plan (:class:`daemon.library.models.WatchKey`).
watch_keys = Table(
    "watch_keys", metadata,
    _id(),
    Column("camera", String(255), nullable=False),
    Column("slug", String(255), nullable=False),
    Column("key", JSON, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text),
    Column("job_id", Integer),
    Column("attempts", Integer, nullable=False, default=0),
    Column("added_utc", UTCDateTime, nullable=False, default=utc_now),
    Column("updated_utc", UTCDateTime, nullable=False, default=utc_now, onupdate=utc_now),
    UniqueConstraint("camera", "slug", name="uq_watch_keys_camera_slug"),
)
