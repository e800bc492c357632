"""The catalog over the store: one key definition (columns, views, API, CLI, migration 0002 on a filled 0001 index),
integrity on use (a corrupt master is never selected, planned as ready or served), review decided before a master is
selectable (concurrent selectors in threads and in a second process), and slugs that cannot leave the root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text

from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.api.models import EntryOut, KeyIn
from daemon.cli.library import key_columns
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import KEY_FIELDS, InvalidKey, LibraryKey, calib_kind
from daemon.library.layout import Layout
from daemon.library.models import Entry
from daemon.library.store import make_engine, migrate
from daemon.library.verify import verify_library
from daemon.planning import library_status
from daemon.runtime import Runtime
from daemon.settings import LibrarySettings, Settings

KEY = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30, width_px=64,
                 height_px=48)
SHAPE = (48, 64)
REPO = Path(__file__).resolve().parents[2]


def _master(index: LibraryIndex, data: np.ndarray, *, key: LibraryKey = KEY, created: datetime | None = None,
            review: bool = True) -> int:
    entry = index.upsert_entry(key, 1)
    path = write_frame(entry.master_target, data.astype(np.float32))
    return index.set_master(entry.id, path, {"mean_adu": float(data.mean())}, created=created, review=review).id


def _flat(value: float, seed: int = 0) -> np.ndarray:
    return value + np.random.default_rng(seed).normal(0, 1.0, SHAPE)


# --- one key definition ---------------------------------------------------------------------------------------------
def test_the_orm_annotations_name_exactly_their_tables_columns() -> None:
    """The schema is defined once, in daemon/library/tables.py; the ORM classes only type its columns (``Mapped``
    annotations). They must name exactly the table's columns (an entry's key columns come from KEY_SPECS and are
    not annotated), so the two can never drift apart."""
    from sqlalchemy import inspect

    from daemon.library import models

    for cls in (models.Entry, models.Frame, models.Job, models.JobLog, models.CameraDefaults, models.MasterHistory,
                models.WatchLight, models.WatchKey):
        typed = set(cls.__annotations__) - set(inspect(cls).relationships.keys())
        columns = {c.key for c in cls.__table__.columns} - (set(KEY_FIELDS) if cls is models.Entry else set())
        assert typed == columns, (cls.__name__, typed ^ columns)


def test_every_outside_form_of_the_key_is_derived_from_the_dataclass() -> None:
    columns = {c.name for c in Entry.__table__.columns}
    assert set(KEY_FIELDS) <= columns
    assert Entry.__table__.c.bit_depth.nullable and not Entry.__table__.c.width_px.nullable
    entry_schema = TypeAdapter(EntryOut).json_schema(mode="serialization")["properties"]
    assert set(KEY_FIELDS) <= set(entry_schema) and "slug" in entry_schema and "temperature_c" not in entry_schema
    key_schema = TypeAdapter(KeyIn).json_schema()["properties"]
    assert set(key_schema) == {*KEY_FIELDS, "frames"}
    assert key_schema["bit_depth"]["anyOf"][0]["maximum"] == 32
    assert set(key_columns().values()) <= set(KEY_FIELDS) and "set_point_c" in key_columns().values()


def test_key_in_validates_bounds_and_spelling() -> None:
    adapter = TypeAdapter(KeyIn)
    ok = adapter.validate_python({**KEY.to_dict(), "bit_depth": 12, "frames": 3})
    assert ok.plan_key()["bit_depth"] == 12 and ok.plan_key()["frames"] == 3
    for bad in ({"exposure_s": -1}, {"kind": "light"}, {"temperature_c": -10}, {"bit_depth": 64},
                {"gain": float("nan")}):
        with pytest.raises(ValidationError):
            adapter.validate_python({**KEY.to_dict(), **bad})
    with pytest.raises(InvalidKey, match="unknown attribute"):
        LibraryKey.from_dict({**KEY.to_dict(), "temperature_c": -10})  # one spelling: set_point_c


def test_bit_depth_is_a_key_field_in_slug_filters_and_selection(tmp_path: Path) -> None:
    assert KEY.slug.endswith("_64x48") and "bit" not in KEY.slug  # None adds nothing: old slugs unchanged
    key12 = LibraryKey(**{**KEY.to_dict(), "bit_depth": 12})
    assert "_12bit_" in key12.slug
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        plain = _master(index, _flat(1000), review=False)
        deep = _master(index, _flat(1000, 1), key=key12, review=False)
        assert [e.id for e in index.entries(bit_depth=12)] == [deep]
        assert index.select_master(key12).require().id == deep
        assert index.select_master(KEY).require().id == plain
        assert index.get(deep).key == key12  # type: ignore[union-attr]


def test_calib_kind_is_mapped_in_one_place() -> None:
    assert calib_kind("flatdark") == "flat-dark" and KEY.with_kind("flat-dark").calib_kind == "flat-dark"


def test_migration_0002_keeps_every_row_of_a_0001_library(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    engine = make_engine(f"sqlite:///{root / 'index.sqlite3'}")
    migrate(engine, "0001")
    now = "2026-11-20 10:00:00.000000"
    with engine.begin() as conn:
        conn.execute(text(
            "insert into entries (slug, camera, kind, exposure_s, set_point_c, gain, offset, binning, read_mode, "
            "usb_traffic, amp_glow, overscan, width_px, height_px, directory, status, frames_target, review, "
            "master_path, master_sha256, master_stats, created_utc, updated_utc) values (:slug, 'cam', 'dark', 60, "
            "-10, 120, 30, 1, 0, 30, 'auto', 'ignore', 64, 48, :dir, 'capturing', 20, 0, NULL, NULL, NULL, :now, "
            ":now)"),
            {"slug": "dark_60s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-ignore_64x48",
             "dir": "cam/dark/dark_60s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-ignore_64x48", "now": now})
        conn.execute(text("insert into frames (entry_id, path, sha256, size_bytes, \"index\", temperature_start_c, "
                          "temperature_end_c, quality_ok, reasons, created_utc) values (1, "
                          "'cam/dark/x/frames/d1.fits', :sha, 100, 1, -10.1, -9.9, 1, '[]', :now)"),
                     {"sha": "a" * 64, "now": now})
        conn.execute(text("insert into jobs (kind, params, state, progress_done, progress_total, warnings, "
                          "created_utc, updated_utc) values ('build-library', '{}', 'queued', 0, 0, '[]', :now, :now)"),
                     {"now": now})
    engine.dispose()

    with LibraryIndex(LibrarySettings(root=root)) as index:
        with index.engine.connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).scalar() == "0007"
        (entry,) = index.entries()
        assert entry.bit_depth is None and entry.status == "capturing" and entry.frames == 1
        assert entry.slug == "dark_60s_m10C_g120_o30_bin1_rm0_usb30_glow-auto_os-ignore_64x48"  # slug unchanged
        assert entry.temperature_mean_c == pytest.approx(-10.0) and entry.read_mode == 0 and entry.overscan == "ignore"
        assert index.frames_of(entry.id)[0].sha256 == "a" * 64
        assert [j.kind for j in JobQueue(index).jobs()] == ["build-library"]
        assert index.upsert_entry(entry.key, 20).id == entry.id  # the old entry is still found by its key


# --- integrity on use -----------------------------------------------------------------------------------------------
def test_a_corrupt_master_is_never_used_and_is_marked_bad(library_settings: LibrarySettings) -> None:
    with LibraryIndex(library_settings) as index:  # SQLite and PostgreSQL (tests/conftest.py)
        older = _master(index, _flat(1000, 1), created=datetime.now(UTC) - timedelta(days=3), review=False)
        newer = _master(index, _flat(1000, 2), review=False)
        assert index.select_master(KEY).require().id == newer
        hashed = index.files.hashed
        for _ in range(5):
            assert index.select_master(KEY).require().id == newer
        assert index.files.hashed == hashed  # cached by (path, size, mtime_ns): no new full hash

        path = Path(index.get(newer).master)  # type: ignore[arg-type,union-attr]
        raw = bytearray(path.read_bytes())
        raw[-4096:] = bytes(b ^ 0xFF for b in raw[-4096:])  # 4096 bytes inverted, same size
        path.write_bytes(bytes(raw))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))

        selection = index.select_master(KEY)
        assert selection.require().id == older  # the corrupt one is refused, the older intact one is used
        assert "SHA-256" in selection.refused[newer]
        bad = index.get(newer)
        assert bad is not None and bad.status == "bad" and "SHA-256" in (bad.note or "")
        assert library_status(KEY, index, datetime.now(UTC))[1].id == older  # type: ignore[union-attr]


def test_plan_does_not_call_a_corrupt_master_ready(library_settings: LibrarySettings) -> None:
    with LibraryIndex(library_settings) as index:  # SQLite and PostgreSQL (tests/conftest.py)
        only = _master(index, _flat(1000), review=False)
        assert library_status(KEY, index, datetime.now(UTC))[0] == "ready"
        path = Path(index.get(only).master)  # type: ignore[arg-type,union-attr]
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        assert library_status(KEY, index, datetime.now(UTC)) == ("missing", None)


def test_rest_refuses_to_serve_a_corrupt_master(tmp_path: Path) -> None:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    runtime = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False)
    entry_id = _master(runtime.index, _flat(1000), review=False)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
        assert client.get(f"/api/v1/library/{entry_id}/master").status_code == 200
        path = Path(runtime.index.get(entry_id).master)  # type: ignore[arg-type,union-attr]
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        response = client.get(f"/api/v1/library/{entry_id}/master")
        assert response.status_code == 409 and response.json()["error"]["code"] == "master_corrupt"
        assert client.get(f"/api/v1/library/{entry_id}").json()["status"] == "bad"
        rows = client.get("/api/v1/status").json()["coverage"]
        assert [r["status"] for r in rows if r["entry_id"] == entry_id] == ["bad"]


# --- review before ready --------------------------------------------------------------------------------------------
SELECTOR_PROCESS = """
import sys, time
from pathlib import Path
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings
root, stop, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
key = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30, width_px=64,
                 height_px=48)
seen, n = set(), 0
with LibraryIndex(LibrarySettings(root=root)) as index:
    Path(sys.argv[3] + ".ready").write_text("1")
    while not stop.exists():
        entry = index.select_master(key).entry
        seen.add(entry.id if entry is not None else None)
        n += 1
out.write_text(" ".join(str(i) for i in sorted(seen, key=str)) + f"\\n{n}")
"""


def test_a_concurrent_selector_never_sees_a_master_that_review_holds_back(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    stop, out = tmp_path / "stop", tmp_path / "seen"
    with LibraryIndex(LibrarySettings(root=root)) as index:
        previous = _master(index, _flat(1000, 1), created=datetime.now(UTC) - timedelta(days=1))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        other = subprocess.Popen([sys.executable, "-c", SELECTOR_PROCESS, str(root), str(stop), str(out)], env=env)
        seen: set[int | None] = set()
        done = threading.Event()
        counts = [0, 0]

        def select(slot: int) -> None:
            while not done.is_set():
                entry = index.select_master(KEY).entry
                seen.add(entry.id if entry is not None else None)
                counts[slot] += 1

        threads = [threading.Thread(target=select, args=(i,)) for i in range(2)]
        try:
            deadline = time.monotonic() + 60
            while not Path(f"{out}.ready").exists():
                assert other.poll() is None and time.monotonic() < deadline, "selector process did not start"
                time.sleep(0.05)
            for t in threads:
                t.start()
            held = []
            for n in range(3):  # each new master differs strongly from the one in use: review holds it back
                changed = _flat(1000, 10 + n)
                changed[:8, :8] += 300.0
                held.append(_master(index, changed))
            time.sleep(0.3)
        finally:
            done.set()
            stop.write_text("1")
            for t in threads:
                t.join()
            assert other.wait(timeout=60) == 0
        for entry_id in held:
            view = index.get(entry_id)
            assert view is not None and view.status == "ready" and view.review, view
        ids_text, n_other = out.read_text().split("\n")
        seen_other = {None if s == "None" else int(s) for s in ids_text.split()}
        assert seen == {previous} and seen_other == {previous}, (seen, seen_other, held)
        assert min(counts) > 10 and int(n_other) > 10  # the selectors really ran during the recording


# --- contained paths ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("camera", ["..", ".", "../../etc", "a/../../b", "/abs/path", "..\\..", "~"])
def test_no_camera_name_leaves_the_library_root(tmp_path: Path, camera: str) -> None:
    root = tmp_path / "lib"
    key = LibraryKey(**{**KEY.to_dict(), "camera": camera})
    assert key.camera_slug not in (".", "..") and "/" not in key.camera_slug
    with LibraryIndex(LibrarySettings(root=root)) as index:
        entry = index.upsert_entry(key, 1)
        assert Path(entry.directory).resolve().is_relative_to(root.resolve())
        assert [p for p in tmp_path.iterdir() if p.name != "lib"] == []


def test_layout_refuses_a_directory_outside_the_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "lib")
    assert layout.contains(tmp_path / "lib" / "cam") and not layout.contains(tmp_path / "lib" / ".." / "x")


def test_verify_flags_files_outside_the_root(tmp_path: Path) -> None:
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        entry = index.upsert_entry(KEY, 1)
        outside = write_frame(tmp_path / "elsewhere.fits", np.zeros(SHAPE, dtype=np.float32))
        from daemon.library.integrity import sha256_file

        index.record_frame(entry.id, outside, sha256_file(outside), 1)
        report = verify_library(index)
        assert not report.ok and [p.code for p in report.problems] == ["outside-root"]
        assert json.dumps(report.to_dict())
