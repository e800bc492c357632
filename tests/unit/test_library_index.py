"""LibraryIndex against a real SQLite file: migrations from empty, entries, frames, masters, thread safety (the job
queue in the same database: tests/unit/test_job_queue.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.integrity import sha256_file
from daemon.library.keys import InvalidKey, LibraryKey
from daemon.library.models import Base
from daemon.library.store import EntryNotFound
from daemon.settings import LibrarySettings

KEY = LibraryKey(camera="QHY CCD QHY163M-Sim", kind="dark", exposure_s=300, set_point_c=-10, gain=120, offset=30,
                 read_mode=0, usb_traffic=30, amp_glow="auto", overscan="include", width_px=496, height_px=368)


@pytest.fixture
def index(library_settings: LibrarySettings) -> LibraryIndex:
    """On SQLite and on a real PostgreSQL server (``tests/conftest.py``)."""
    idx = LibraryIndex.open(library_settings)
    yield idx
    idx.close()


def test_migrations_create_schema_from_empty(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    LibraryIndex.open(LibrarySettings(root=root)).close()
    engine = create_engine(f"sqlite:///{root / 'index.sqlite3'}")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= {"entries", "frames", "jobs", "job_log", "alembic_version",
                                                        "camera_defaults"}
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0007"
        assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diffs == [], f"models and migrations disagree: {diffs}"
    LibraryIndex.open(LibrarySettings(root=root)).close()  # re-opening an up-to-date index is a no-op


def test_migrations_downgrade_to_empty_and_back(tmp_path: Path) -> None:
    from alembic import command

    from daemon.library.store import alembic_config, make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    migrate(engine)
    with engine.begin() as conn:
        cfg = alembic_config(str(engine.url))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    migrate(engine)
    with engine.connect() as conn:
        assert {"entries", "frames", "jobs", "job_log"} <= set(inspect(conn).get_table_names())
    engine.dispose()


def test_key_validation_and_roundtrip() -> None:
    assert LibraryKey.from_dict(KEY.to_dict()) == KEY
    assert LibraryKey.from_dict({**KEY.to_dict(), "kind": "flat-dark"}).kind == "flatdark"
    with pytest.raises(InvalidKey, match="kind"):
        LibraryKey.from_dict({**KEY.to_dict(), "kind": "light"})
    with pytest.raises(InvalidKey, match="gain"):
        LibraryKey.from_dict({**KEY.to_dict(), "gain": 1.5})
    with pytest.raises(InvalidKey, match="missing"):
        LibraryKey.from_dict({"camera": "x", "kind": "dark"})
    with pytest.raises(InvalidKey, match="unknown"):
        LibraryKey.from_dict({**KEY.to_dict(), "filter": "Ha"})
    assert KEY.slug == "dark_300s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-include_496x368"
    assert KEY.with_kind("bias").exposure_s == 0.0


def test_upsert_reuses_in_progress_entry_and_creates_a_new_generation_after_ready(index: LibraryIndex) -> None:
    first = index.upsert_entry(KEY, 20)
    assert first.status == "planned" and Path(first.frames_dir).is_dir()
    assert index.upsert_entry(KEY, 25).id == first.id
    master = Path(first.master_target)
    master.write_bytes(b"master")
    ready = index.set_master(first.id, master, {"mean_adu": 1000.5, "noise_adu": 3.2}, sha256=None)
    assert ready.status == "ready" and ready.master_sha256 == sha256_file(master)
    assert ready.valid_until_utc is not None and ready.master_created_utc is not None
    assert ready.valid_until_utc - ready.master_created_utc == timedelta(days=90)
    second = index.upsert_entry(KEY, 20)
    assert second.id != first.id and second.directory.endswith(".2")
    assert index.get(first.id).status == "ready"  # type: ignore[union-attr]


def test_frames_are_recorded_idempotently_with_temperature_statistics(index: LibraryIndex) -> None:
    e = index.upsert_entry(KEY, 3)
    for i, (t0, t1, ok) in enumerate([(-10.2, -10.0, True), (-9.9, -9.9, True), (-12.0, -12.0, False)], start=1):
        path = Path(e.frames_dir) / f"dark_{i:04d}.fits"
        path.write_bytes(b"x" * i)
        index.record_frame(e.id, path, f"{i:064d}", i, t0, t1, ok, [] if ok else ["temperature drift"])
    index.record_frame(e.id, Path(e.frames_dir) / "dark_0001.fits", f"{1:064d}", 1, -10.2, -10.0, True, [])
    view = index.get(e.id)
    assert view is not None
    assert (view.frames, view.frames_rejected) == (2, 1)
    assert view.temperature_mean_c == pytest.approx(-10.0)
    assert (view.temperature_min_c, view.temperature_max_c) == (-10.2, -9.9)
    frames = index.frames_of(e.id)
    assert [f.index for f in frames] == [1, 2, 3] and frames[2].reasons == ["temperature drift"]
    assert frames[0].size_bytes == 1 and frames[0].path == str(Path(e.frames_dir) / "dark_0001.fits")
    assert len(index.frames_of(e.id, accepted_only=True)) == 2


def test_record_frames_from_capture_records(index: LibraryIndex) -> None:
    from types import SimpleNamespace

    e = index.upsert_entry(KEY, 2)
    records = [SimpleNamespace(path=Path(e.frames_dir) / f"dark_{i:04d}.fits", sha256=f"{i:064d}", index=i,
                               temperature_start_c=-10.0, temperature_end_c=-10.2, quality_ok=i != 2,
                               reasons=[] if i != 2 else ["light leak"]) for i in (1, 2, 3)]
    views = index.record_frames(e.id, records)
    assert [v.quality_ok for v in views] == [True, False, True]
    assert index.get(e.id).frames == 2  # type: ignore[union-attr]


def test_filters_status_bad_and_errors(index: LibraryIndex, tmp_path: Path) -> None:
    dark = index.upsert_entry(KEY, 20)
    bias = index.upsert_entry(KEY.with_kind("bias"), 50)
    index.mark_bad(bias.id, "light leak")
    assert [e.id for e in index.entries(kind="dark")] == [dark.id]
    assert [e.id for e in index.entries(status="bad")] == [bias.id]
    assert index.get(bias.id).note == "light leak"  # type: ignore[union-attr]
    assert [e.id for e in index.entries(set_point_c=-10.4)] == [dark.id, bias.id]
    assert index.entries(set_point_c=-10.6) == []
    with pytest.raises(ValueError, match="unknown library filter"):
        index.entries(temperature_c=-10.0)  # one spelling: the key's
    assert [e.id for e in index.entries(key=KEY)] == [dark.id]
    assert [e.id for e in index.entries(exposure_s=300.0, gain=120)] == [dark.id]
    with pytest.raises(ValueError, match="unknown library filter"):
        index.entries(colour="red")
    with pytest.raises(ValueError, match="status"):
        index.set_status(dark.id, "done")
    with pytest.raises(EntryNotFound):
        index.set_status(999, "ready")
    with pytest.raises(FileNotFoundError):
        index.set_master(dark.id, tmp_path / "missing.fits", {})


def test_ping_counts_and_remove_frame(index: LibraryIndex) -> None:
    assert index.ping()
    e = index.upsert_entry(KEY, 2)
    path = Path(e.frames_dir) / "dark_0001.fits"
    index.record_frame(e.id, path, "0" * 64, 1)
    assert index.count_by_status() == {"planned": 1, "capturing": 0, "integrating": 0, "ready": 0, "stale": 0, "bad": 0}
    assert index.remove_frame(path) and not index.remove_frame(path)
    assert index.frames_of(e.id) == []


def test_mark_stale_after_validity(index: LibraryIndex) -> None:
    e = index.upsert_entry(KEY, 1)
    master = Path(e.master_target)
    master.write_bytes(b"m")
    created = datetime(2026, 1, 1, tzinfo=UTC)
    index.set_master(e.id, master, {}, created=created)
    assert index.mark_stale(now=created + timedelta(days=89)) == []
    assert index.mark_stale(now=created + timedelta(days=91)) == [e.id]
    assert index.get(e.id).status == "stale"  # type: ignore[union-attr]


def test_concurrent_writers_from_threads(index: LibraryIndex) -> None:
    entries = [index.upsert_entry(KEY.with_kind("dark", exposure_s=float(n)), 30) for n in (10, 20, 30, 40)]
    queue = JobQueue(index)  # the job queue shares the library's database: its writes interleave with the index's
    job = queue.add_job("build-library", {})
    errors: list[BaseException] = []

    def worker(entry_id: int, frames_dir: str) -> None:
        try:
            for i in range(15):
                index.record_frame(entry_id, Path(frames_dir) / f"dark_{i:04d}.fits", "0" * 64, i, -10, -10, True, [])
                queue.append_job_log(job.id, f"{entry_id}:{i}")
                index.entries()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e.id, e.frames_dir)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [index.get(e.id).frames for e in entries] == [15, 15, 15, 15]  # type: ignore[union-attr]
    assert len(queue.job_log(job.id)) == 60
