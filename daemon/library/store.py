"""The library store: storage without policy. One SQLAlchemy engine, short thread-safe sessions, schema managed by
Alembic; entries, frames (and, until they move to ``daemon/jobs/queue.py``, the job queue).

Which master may be used, and the review of a new master, are decided by :mod:`daemon.library.catalog` (the class the
rest of the daemon opens, :class:`daemon.library.catalog.LibraryIndex`), never here.

SQLite (the default, ``<root>/index.sqlite3``) runs in WAL mode with a busy timeout so the daemon, its worker process
and CLI readers can share it; write transactions start with ``BEGIN IMMEDIATE`` so two writers queue on the busy
timeout instead of failing on a lock upgrade. ``LibrarySettings.database_url`` may point at PostgreSQL instead.

Every public method opens and closes its own session and returns plain dataclasses (:class:`EntryView`,
:class:`FrameView`, :class:`JobRow`), never ORM objects, so results can cross threads and processes freely. Reads run
as SQLAlchemy Core ``select()`` over :mod:`daemon.library.tables` (:meth:`LibraryStore.read_connection`); writes use
the ORM classes of :mod:`daemon.library.models` (:meth:`LibraryStore.write_session`), imported by the first write, so
a command that only reads (``darkd library``, ``darkd jobs list``) never loads ``sqlalchemy.orm`` (start-up time).
"""

from __future__ import annotations

import logging
import re
import threading
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

from sqlalchemy import Connection, Engine, RowMapping, Select, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from daemon.library.integrity import sha256_file
from daemon.library.keys import KEY_FIELDS, KEY_SPECS, LibraryKey
from daemon.library.layout import Layout
from daemon.library.tables import camera_defaults as camera_defaults_table
from daemon.library.tables import entries as entries_table
from daemon.library.tables import frames as frames_table
from daemon.settings import LibrarySettings

if TYPE_CHECKING:  # Alembic is imported only when a schema change is due, the ORM by the first write (start-up time)
    from alembic.config import Config
    from sqlalchemy.orm import Session

    from daemon.library.models import Entry, Frame

log = logging.getLogger(__name__)

EntryStatus = Literal["planned", "capturing", "integrating", "ready", "stale", "bad"]
STATUSES: tuple[str, ...] = typing.get_args(EntryStatus)
IN_PROGRESS = ("planned", "capturing", "integrating")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: ``entries()`` filters besides the key fields
ENTRY_FILTERS = ("status", "slug", "key", "review")


class FrameLike(Protocol):
    """What :meth:`LibraryStore.record_frames` reads from a captured frame's record."""

    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def temperature_start_c(self) -> float | None: ...
    @property
    def temperature_end_c(self) -> float | None: ...
    @property
    def quality_ok(self) -> bool: ...
    @property
    def reasons(self) -> list[str]: ...


class EntryNotFound(LookupError):
    """No library entry with that id."""


__all__ = ["EntryNotFound", "EntryView", "FrameView", "LibraryStore", "sha256_file"]


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 with a ``Z`` suffix (``None`` stays ``None``)."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass(frozen=True)
class FrameView:
    """A frame of an entry. ``path`` is absolute."""

    id: int
    entry_id: int
    path: str
    sha256: str
    index: int
    temperature_start_c: float | None
    temperature_end_c: float | None
    quality_ok: bool
    reasons: list[str]
    size_bytes: int | None
    created_utc: datetime

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_utc"] = iso_utc(self.created_utc)
        return data


@dataclass(frozen=True, kw_only=True)
class EntryView(LibraryKey):
    """A library entry as ``darkd library --json`` and ``GET /library`` show it: its key (every
    :class:`LibraryKey` field, same names) plus its state. Paths are absolute strings.

    ``set_point_c`` is the set point of the key; ``temperature_mean_c``/``_min_c``/``_max_c`` are measured over the
    accepted frames (mean of start and end readings per frame). ``frames`` counts accepted frames only. ``slug`` is
    the key's (the index stores it too, as the entry's directory name).
    """

    id: int
    status: str
    frames: int
    frames_target: int
    frames_rejected: int
    master: str | None
    master_sha256: str | None
    master_stats: dict[str, Any] | None
    temperature_mean_c: float | None
    temperature_min_c: float | None
    temperature_max_c: float | None
    created_utc: datetime
    updated_utc: datetime
    master_created_utc: datetime | None
    valid_until_utc: datetime | None
    review: bool
    review_reason: str | None
    note: str | None
    directory: str
    frames_dir: str
    master_target: str = ""

    @property
    def key(self) -> LibraryKey:
        return self.key_only()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (times as ISO 8601 UTC strings)."""
        data = asdict(self)
        for name in ("created_utc", "updated_utc", "master_created_utc", "valid_until_utc"):
            data[name] = iso_utc(getattr(self, name))
        data["slug"] = self.slug
        return data


def alembic_config(url: str) -> Config:
    """An Alembic :class:`Config` built in code (no ini file needed) pointing at our migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


def head_revision() -> str | None:
    """The head of our migration scripts, read from their ``revision``/``down_revision`` lines without importing
    Alembic; ``None`` when the scripts do not form one plain chain (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted((MIGRATIONS_DIR / "versions").glob("[!_]*.py")):
        found = dict((m.group(1), m.group(2)) for m in _REVISION_LINE.finditer(script.read_text(encoding="utf-8")))
        if "revision" not in found or found["revision"] is None or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (``alembic_version``), or ``None`` when there is none yet."""
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except DBAPIError:
        return None  # no table yet: a new index
    return str(rows[0][0]) if len(rows) == 1 else None


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema of ``engine``'s database to ``revision`` (creates it from empty).

    When the database already records the head revision (every open of an existing index), one query answers and
    Alembic is not even imported; otherwise Alembic's ``upgrade`` runs.
    """
    if revision == "head" and (head := head_revision()) is not None and _stored_revision(engine) == head:
        return
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        conn.info["darkd_write"] = True  # SQLite: BEGIN IMMEDIATE, so processes opening a new index migrate in turn
        if sqlite:
            # A column change rebuilds the table on SQLite (alembic batch mode: copy, drop, rename); with foreign keys
            # on, dropping ``entries`` would cascade-delete every frame row. Off for the migration (only possible
            # outside a transaction), checked before the commit, on again afterwards.
            _sqlite_pragma(conn, "foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                    raise RuntimeError(f"migration to {revision} left {len(broken)} rows without their parent: "
                                       f"{broken[:5]}")
        finally:
            conn.info.pop("darkd_write", None)
            if sqlite:
                _sqlite_pragma(conn, "foreign_keys=ON")


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """Run a PRAGMA on the DBAPI connection itself (autocommit mode), outside any transaction, where it takes effect."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    dbapi.execute(f"PRAGMA {pragma}")


def make_engine(url: str) -> Engine:
    """Create the engine; for SQLite: WAL, busy timeout, foreign keys, and BEGIN IMMEDIATE for write sessions."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's own handling is not SQL-standard)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("darkd_write", False) else "BEGIN")

    return engine


class LibraryStore:
    """The index of one library root (see the module docstring). Safe to share between threads."""

    def __init__(self, settings: LibrarySettings) -> None:
        self.settings = settings
        self.layout = Layout(Path(settings.root).expanduser().resolve())
        self.url = settings.resolved_database_url()
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.RLock()

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: LibrarySettings) -> Self:
        """Construct and :meth:`create` in one call."""
        index = cls(settings)
        index.create()
        return index

    def create(self) -> Self:
        """Create the root directory and bring the schema up to date (idempotent). Returns ``self``."""
        with self._lock:
            if self._engine is not None:
                return self
            if self.url.startswith("sqlite"):
                Path(self.settings.root).mkdir(parents=True, exist_ok=True)
            engine = make_engine(self.url)
            migrate(engine)
            self._engine = engine
        return self

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def after_fork(self) -> None:
        """Call in a forked child before using an index inherited from the parent: drops the parent's pooled
        connections without closing them (SQLite connections must not cross a fork). Spawned processes should
        simply open their own :class:`LibraryIndex`."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose(close=False)

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.create()
        assert self._engine is not None
        return self._engine

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A short read transaction on the library database, for Core queries (no ORM)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A short read transaction on the library database, for ORM queries."""
        from sqlalchemy.orm import Session

        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A write transaction, one at a time in this process (SQLite: ``BEGIN IMMEDIATE``, so writers of other
        processes queue on the busy timeout). Everything the library database holds is written through this: entries,
        frames and the job queue (:mod:`daemon.jobs.queue`). An exception rolls the transaction back."""
        from sqlalchemy.orm import Session

        with self._write_lock, self.engine.connect() as conn:
            conn.info["darkd_write"] = True
            try:
                with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                    yield session
                conn.commit()
            finally:
                conn.info.pop("darkd_write", None)

    def ping(self) -> bool:
        """True when the database answers (for readiness checks); never raises."""
        try:
            with self.read_connection() as conn:
                conn.execute(select(1))
            return True
        except Exception:  # any failure means "not ready"
            log.exception("library index not reachable")
            return False

    def integrity_problem(self) -> str | None:
        """SQLite ``PRAGMA integrity_check`` result when it is not ``ok`` (``None`` = fine or not SQLite)."""
        if not self.url.startswith("sqlite"):
            return None
        with self.read_connection() as conn:
            rows = [str(r[0]) for r in conn.execute(text("PRAGMA integrity_check")).all()]
        return None if rows == ["ok"] else "; ".join(rows[:5])

    def count_by_status(self) -> dict[str, int]:
        """Number of entries per status (every status present, zero included), e.g. for metrics."""
        with self.read_connection() as conn:
            rows = conn.execute(select(entries_table.c.status, func.count()).group_by(entries_table.c.status)).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    # --- entries: reads ----------------------------------------------------------------------------------------------
    @staticmethod
    def _frame_stats(conn: Connection, entry_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Per entry: accepted/rejected counts and temperature statistics of accepted frames, in one SQL query.

        Per-frame temperature = mean of start and end readings (either one when the other is missing).
        """
        if not entry_ids:
            return {}
        frame = frames_table.c
        per_frame = func.coalesce((frame.temperature_start_c + frame.temperature_end_c) / 2.0,
                                  frame.temperature_start_c, frame.temperature_end_c)
        query = (select(frame.entry_id, frame.quality_ok, func.count(), func.avg(per_frame),
                        func.min(frame.temperature_start_c), func.min(frame.temperature_end_c),
                        func.max(frame.temperature_start_c), func.max(frame.temperature_end_c))
                 .group_by(frame.entry_id, frame.quality_ok))
        if len(entry_ids) <= 500:
            query = query.where(frame.entry_id.in_(entry_ids))
        out: dict[int, dict[str, Any]] = {}
        for entry_id, ok, count, mean_c, min_a, min_b, max_a, max_b in conn.execute(query).all():
            stats = out.setdefault(entry_id, {"frames": 0, "rejected": 0, "mean": None, "min": None, "max": None})
            if not ok:
                stats["rejected"] = int(count)
                continue
            stats["frames"] = int(count)
            stats["mean"] = round(float(mean_c), 3) if mean_c is not None else None
            lows = [v for v in (min_a, min_b) if v is not None]
            highs = [v for v in (max_a, max_b) if v is not None]
            stats["min"] = min(lows) if lows else None
            stats["max"] = max(highs) if highs else None
        return out

    def _view(self, row: RowMapping, stats: Mapping[str, Any] | None = None) -> EntryView:
        """An entry's view from its ``entries`` row (by column name) and :meth:`_frame_stats`."""
        st = stats or {"frames": 0, "rejected": 0, "mean": None, "min": None, "max": None}
        directory = self.layout.from_stored(row["directory"])
        return EntryView(
            **{name: row[name] for name in KEY_FIELDS},
            id=row["id"], status=row["status"], frames=st["frames"], frames_target=row["frames_target"],
            frames_rejected=st["rejected"],
            master=str(self.layout.from_stored(row["master_path"])) if row["master_path"] else None,
            master_sha256=row["master_sha256"],
            master_stats=dict(row["master_stats"]) if row["master_stats"] else None,
            temperature_mean_c=st["mean"], temperature_min_c=st["min"], temperature_max_c=st["max"],
            created_utc=row["created_utc"], updated_utc=row["updated_utc"],
            master_created_utc=row["master_created_utc"], valid_until_utc=row["valid_until_utc"],
            review=row["review"], review_reason=row["review_reason"], note=row["note"],
            directory=str(directory), frames_dir=str(directory / "frames"),
            master_target=str(directory / "master.fits"),
        )

    def _select_views(self, query: Select[Any]) -> list[EntryView]:
        """The entries of ``query`` (a ``select()`` of the ``entries`` table) with their frame statistics."""
        with self.read_connection() as conn:
            rows = [row._mapping for row in conn.execute(query).all()]
            stats = self._frame_stats(conn, [r["id"] for r in rows])
        return [self._view(r, stats.get(r["id"])) for r in rows]

    def entries(self, **filters: Any) -> list[EntryView]:
        """Entries matching all ``filters`` (ordered by id).

        Filters: any key field by name (``camera``, ``kind``, ``exposure_s``, ``set_point_c`` …; a field with a
        tolerance in its spec is compared within it, ``set_point_c`` within ``temperature_tolerance_c``), ``status``
        (a name or a list), ``slug``, ``key`` (a :class:`LibraryKey`: every attribute equal, set point within
        tolerance), ``review`` (bool). ``None`` values are ignored. Unknown filter names raise ``ValueError``.
        """
        unknown = sorted(set(filters) - set(KEY_FIELDS) - set(ENTRY_FILTERS))
        if unknown:
            raise ValueError(f"unknown library filter(s): {', '.join(unknown)}")
        entry = entries_table.c
        query = select(entries_table).order_by(entry.id)
        f = {k: v for k, v in filters.items() if v is not None}
        key: LibraryKey | None = f.pop("key", None)
        if key is not None:
            for name in KEY_FIELDS:
                if name != "set_point_c":
                    column = entry[name]
                    query = query.where(column.is_(None) if getattr(key, name) is None
                                        else column == getattr(key, name))
            f.setdefault("set_point_c", key.set_point_c)
        if "status" in f:
            statuses = [f.pop("status")] if isinstance(f["status"], str) else list(f.pop("status"))
            query = query.where(entry.status.in_(statuses))
        if "kind" in f:
            query = query.where(entry.kind == str(f.pop("kind")).lower().replace("-", ""))
        for name, value in f.items():
            column = entry[name]
            tolerance = (self.settings.temperature_tolerance_c if name == "set_point_c"
                         else KEY_SPECS[name].tolerance if name in KEY_SPECS else None)
            if tolerance is not None:
                low, high = float(value) - tolerance - 1e-9, float(value) + tolerance + 1e-9
                query = query.where(column >= low, column <= high)
            else:
                query = query.where(column == value)
        return self._select_views(query)

    def get(self, entry_id: int) -> EntryView | None:
        views = self._select_views(select(entries_table).where(entries_table.c.id == int(entry_id)))
        return views[0] if views else None

    def frames_of(self, entry_id: int, *, accepted_only: bool = False) -> list[FrameView]:
        """Frames of an entry ordered by index (rejected ones too unless ``accepted_only``)."""
        from daemon.library.models import Frame

        with self.read_session() as s:
            query = select(Frame).where(Frame.entry_id == int(entry_id)).order_by(Frame.index, Frame.id)
            if accepted_only:
                query = query.where(Frame.quality_ok.is_(True))
            return [self._frame_view(f) for f in s.scalars(query).all()]

    def _frame_view(self, f: Frame) -> FrameView:
        return FrameView(id=f.id, entry_id=f.entry_id, path=str(self.layout.from_stored(f.path)), sha256=f.sha256,
                         index=f.index, temperature_start_c=f.temperature_start_c,
                         temperature_end_c=f.temperature_end_c, quality_ok=f.quality_ok, reasons=list(f.reasons or []),
                         size_bytes=f.size_bytes, created_utc=f.created_utc)

    # --- entries: writes ---------------------------------------------------------------------------------------------
    def upsert_entry(self, key: LibraryKey, frames_target: int) -> EntryView:
        """The in-progress entry (planned/capturing/integrating) of ``key``, or a new ``planned`` one.

        Ready, stale and bad entries are never reused: building a key again makes a new entry (and directory
        ``<slug>.N``) so older masters stay selectable until the new one is ready. Creates the entry's directories.
        """
        if frames_target < 0:
            raise ValueError(f"frames_target must be >= 0, got {frames_target}")
        try:
            return self._upsert_entry(key, frames_target)
        except IntegrityError:  # another host created this key's entry at the same moment: use theirs
            log.info("library: %s was created concurrently; using that entry", key.describe())
            return self._upsert_entry(key, frames_target)

    def _upsert_entry(self, key: LibraryKey, frames_target: int) -> EntryView:
        from daemon.library.models import Entry

        with self.write_session() as s:
            rows = s.scalars(select(Entry).where(entries_table.c.camera == key.camera, Entry.slug == key.slug)
                             .order_by(Entry.id)).all()
            current = next((r for r in rows if r.status in IN_PROGRESS), None)  # the slug encodes every key field
            if current is None:
                used = {r.directory for r in rows}
                generation = 1
                while self.layout.to_stored(self.layout.entry_dir(key, generation)) in used:
                    generation += 1
                directory = self.layout.ensure(key, generation)
                current = Entry(slug=key.slug, directory=self.layout.to_stored(directory), status="planned",
                                frames_target=int(frames_target), review=False,
                                **{name: getattr(key, name) for name in KEY_FIELDS})
                s.add(current)
                log.info("library: new entry %s in %s", key.describe(), directory)
            else:
                current.frames_target = int(frames_target)
                self.layout.from_stored(current.directory).joinpath("frames").mkdir(parents=True, exist_ok=True)
            s.flush()
            entry_id = current.id
        view = self.get(entry_id)
        assert view is not None
        return view

    def _entry(self, s: Session, entry_id: int) -> Entry:
        from daemon.library.models import Entry

        row = s.get(Entry, int(entry_id))
        if row is None:
            raise EntryNotFound(f"no library entry with id {entry_id}")
        return row

    def set_status(self, entry_id: int, status: str, note: str | None = None) -> EntryView:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        with self.write_session() as s:
            row = self._entry(s, entry_id)
            row.status = status
            if note is not None:
                row.note = note
        return self._get_required(entry_id)

    def _get_required(self, entry_id: int) -> EntryView:
        view = self.get(entry_id)
        if view is None:
            raise EntryNotFound(f"no library entry with id {entry_id}")
        return view

    def record_frame(self, entry_id: int, path: str | Path, sha256: str, index: int,
                     temperature_start_c: float | None = None, temperature_end_c: float | None = None,
                     quality_ok: bool = True, reasons: Iterable[str] = ()) -> FrameView:
        """Record (or update, keyed by path) a frame of an entry. Idempotent: safe to repeat after a crash."""
        p = Path(path)
        size = p.stat().st_size if p.exists() else None
        stored = self.layout.to_stored(p)
        from daemon.library.models import Frame

        with self.write_session() as s:
            self._entry(s, entry_id)
            row = s.scalars(select(Frame).where(Frame.path == stored)).one_or_none()
            if row is None:
                row = Frame(entry_id=int(entry_id), path=stored)
                s.add(row)
            elif row.entry_id != int(entry_id):
                raise ValueError(f"{p} is already recorded for entry {row.entry_id}, not {entry_id}")
            row.sha256 = sha256
            row.index = int(index)
            row.size_bytes = size
            row.temperature_start_c = temperature_start_c
            row.temperature_end_c = temperature_end_c
            row.quality_ok = bool(quality_ok)
            row.reasons = list(reasons)
            s.flush()
            return self._frame_view(row)

    def record_frames(self, entry_id: int, records: Iterable[FrameLike]) -> list[FrameView]:
        """:meth:`record_frame` for each record (e.g. ``daemon.capture.FrameRecord``)."""
        return [self.record_frame(entry_id, r.path, r.sha256, r.index, r.temperature_start_c, r.temperature_end_c,
                                  r.quality_ok, list(r.reasons or [])) for r in records]

    def remove_frame(self, path: str | Path) -> bool:
        """Forget a frame record (e.g. its file was lost before it was complete); the file is not touched.

        Returns whether a record was removed."""
        stored = self.layout.to_stored(Path(path))
        from daemon.library.models import Frame

        with self.write_session() as s:
            row = s.scalars(select(Frame).where(Frame.path == stored)).one_or_none()
            if row is None:
                return False
            s.delete(row)
            return True

    def record_master(self, entry_id: int, path: str | Path, stats: Mapping[str, Any], *, sha256: str,
                      created: datetime, valid_until: datetime, review_reason: str | None) -> EntryView:
        """Record the entry's master and make it ``ready`` in one write transaction, already judged: with a
        ``review_reason`` it is held for review from the first moment it is ready (no policy here: the catalog decides).
        """
        with self.write_session() as s:
            row = self._entry(s, entry_id)
            row.master_path = self.layout.to_stored(Path(path))
            row.master_sha256 = sha256
            row.master_stats = {k: jsonable(v) for k, v in dict(stats).items()}
            row.master_created_utc = created
            row.valid_until_utc = valid_until
            row.status = "ready"
            row.review = review_reason is not None
            row.review_reason = review_reason
        return self._get_required(entry_id)

    def mark_bad(self, entry_id: int, reason: str) -> EntryView:
        """Mark an entry bad (never selected again); ``reason`` is kept in ``note``."""
        return self.set_status(entry_id, "bad", note=reason)

    def flag_review(self, entry_id: int, reason: str) -> EntryView:
        """Hold a new master for review: it stays ``ready`` but selection skips it until :meth:`accept_review`."""
        with self.write_session() as s:
            row = self._entry(s, entry_id)
            row.review = True
            row.review_reason = reason
        return self._get_required(entry_id)

    def merge_master_stats(self, entry_id: int, extra: Mapping[str, Any]) -> EntryView:
        """Add ``extra`` to the entry's master statistics (e.g. the comparison with the previous master)."""
        with self.write_session() as s:
            row = self._entry(s, entry_id)
            row.master_stats = {**(row.master_stats or {}), **jsonable(dict(extra))}
        return self._get_required(entry_id)

    def accept_review(self, entry_id: int) -> EntryView:
        with self.write_session() as s:
            row = self._entry(s, entry_id)
            row.review = False
        return self._get_required(entry_id)

    def mark_stale(self, now: datetime | None = None) -> list[int]:
        """Ready entries whose validity has ended become ``stale``; returns their ids (see ``ageing``).

        Looked for first in a read transaction: when none has expired (the usual case, e.g. each ``darkd library``)
        no write transaction is opened."""
        now = now or datetime.now(UTC)
        entry = entries_table.c
        expired = (entry.status == "ready", entry.valid_until_utc.is_not(None), entry.valid_until_utc < now)
        with self.read_connection() as conn:
            if conn.execute(select(entry.id).where(*expired).limit(1)).first() is None:
                return []
        from daemon.library.models import Entry

        with self.write_session() as s:
            rows = s.scalars(select(Entry).where(*expired)).all()
            for row in rows:
                row.status = "stale"
                row.note = f"validity ended {iso_utc(row.valid_until_utc)}"
            return [row.id for row in rows]

    # --- camera defaults (the driver's state at connect; policy in daemon/light_rule.py) -----------------------------
    def record_camera_defaults(self, camera: str, values: Mapping[str, Any], read_mode_labels: Iterable[str]) -> None:
        """Store (replace) ``camera``'s driver-reported state and read-mode labels."""
        from daemon.library.models import CameraDefaults

        with self.write_session() as s:
            row = s.get(CameraDefaults, camera)
            if row is None:
                row = CameraDefaults(camera=camera)
                s.add(row)
            row.values = jsonable(dict(values))
            row.read_mode_labels = [str(label) for label in read_mode_labels]
            row.recorded_utc = datetime.now(UTC)

    def camera_defaults(self, camera: str) -> tuple[dict[str, Any], list[str]] | None:
        """``(values, read_mode_labels)`` recorded for ``camera``, or ``None``."""
        table = camera_defaults_table
        with self.read_connection() as conn:
            row = conn.execute(select(table.c["values"], table.c.read_mode_labels)
                               .where(table.c.camera == camera)).first()
        return None if row is None else (dict(row[0]), list(row[1]))


def jsonable(value: Any) -> Any:
    """Convert NumPy scalars, Paths and datetimes to JSON-storable values (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # NumPy scalar
        return value.item()
    return value
