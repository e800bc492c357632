"""Integrity on use, the reactions (issue 15, defect 1): a master found changed on disk when it is used is marked bad
with the reason, an ``integrity`` event and the ``darkd_master_integrity_failures_total`` metric are raised, an
``integrate`` job rebuilds it from the entry's good frames (no recapture: no new entry, the same frames), and a light
is calibrated with nothing rather than with the corrupt master.

Real parts: the runtime with its index (SQLite on disk), event bus, metrics and job engine (integration in a thread,
:class:`tests.engines.InThreadEngine`), the REST app, real FITS frames and masters."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.jobs.integrate_job import build_entry_master
from daemon.library.integrity import sha256_file
from daemon.library.keys import LibraryKey
from daemon.library.selection import select_for_light
from daemon.light_headers import LightInfo
from daemon.runtime import Runtime
from daemon.settings import Settings
from tests.engines import InThreadEngine

KEY = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30, width_px=32,
                 height_px=24)
FRAMES = 5


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    rt = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False).start()
    rt.engine = InThreadEngine(settings, rt.index, rt.camera, rt.bus, poll_s=0.05).start()
    try:
        yield rt
    finally:
        rt.engine.stop()
        rt.stop()


def _entry_with_master(runtime: Runtime) -> int:
    """A ready entry built from FRAMES real dark frames (known pixel values) by the worker function itself."""
    index = runtime.index
    entry = index.upsert_entry(KEY, FRAMES)
    frames_dir = Path(entry.frames_dir)
    for n in range(1, FRAMES + 1):
        data = np.full((24, 32), 1000 + n, dtype=np.uint16)
        header = fits.Header({"IMAGETYP": "Dark Frame", "EXPTIME": 60.0, "GAIN": 120, "OFFSET": 30,
                              "CCD-TEMP": -10.0})
        path = write_frame(frames_dir / f"dark_{n:04d}.fits", data, header, bitpix16=True)
        index.record_frame(entry.id, path, sha256_file(path), n, -10.0, -10.0)
    build_entry_master(runtime.settings.library.model_dump(mode="json"), entry.id)
    view = index.get(entry.id)
    assert view is not None and view.status == "ready" and view.master
    return entry.id


def _corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-4096:] = bytes(b ^ 0xFF for b in raw[-4096:])  # the 4096 inverted bytes, same size
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))


def _wait(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_a_corrupt_master_raises_event_metric_and_is_reintegrated_from_its_frames(runtime: Runtime) -> None:
    entry_id = _entry_with_master(runtime)
    index = runtime.index
    master = Path(index.get(entry_id).master)  # type: ignore[arg-type,union-attr]
    good_pixels = fits.getdata(master, 0).copy()
    frames_before = [(f.path, f.sha256) for f in index.frames_of(entry_id)]
    assert index.select_master(KEY).require().id == entry_id

    with runtime.bus.subscribe() as sub:
        _corrupt(master)
        selection = index.select_master(KEY)
        assert selection.entry is None and "SHA-256" in selection.refused[entry_id]
        events = []
        _wait(lambda: events.append(sub.get(0.05)) or any(e and e["type"] == "integrity" for e in events))
    event = next(e for e in events if e and e["type"] == "integrity")
    assert event["entry_id"] == entry_id and "SHA-256" in event["reason"]
    job_id = event["reintegration_job_id"]
    assert isinstance(job_id, int)

    _wait(lambda: b"darkd_master_integrity_failures_total 1.0" in runtime.metrics.render())
    _wait(lambda: runtime.queue.get_job(job_id).state in ("succeeded", "failed"))  # type: ignore[union-attr]
    job = runtime.queue.get_job(job_id)
    assert job is not None and job.kind == "integrate" and job.state == "succeeded", job

    rebuilt = index.get(entry_id)
    assert rebuilt is not None and rebuilt.status == "ready" and rebuilt.frames == FRAMES
    assert sha256_file(master) == rebuilt.master_sha256  # the new master is recorded
    assert np.array_equal(fits.getdata(master, 0), good_pixels)  # from the same frames: the same pixels
    assert [(f.path, f.sha256) for f in index.frames_of(entry_id)] == frames_before
    assert [e.id for e in index.entries()] == [entry_id]  # re-integrated, not a new entry to recapture
    assert index.select_master(KEY).require().id == entry_id


def test_one_reintegration_per_corruption_and_rest_refuses_meanwhile(tmp_path: Path) -> None:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    rt = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False).start()
    rt.engine = InThreadEngine(settings, rt.index, rt.camera, rt.bus)  # not started: its jobs stay queued
    try:
        entry_id = _entry_with_master(rt)
        _corrupt(Path(rt.index.get(entry_id).master))  # type: ignore[arg-type,union-attr]
        with TestClient(create_app(rt), client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
            for _ in range(3):
                response = client.get(f"/api/v1/library/{entry_id}/master")
                assert response.status_code == 409 and response.json()["error"]["code"] == "master_corrupt"
                assert rt.index.select_master(KEY).entry is None
        (job,) = rt.queue.jobs()
        assert job.kind == "integrate" and job.params["entry_id"] == entry_id and job.state == "queued"
    finally:
        rt.stop()


def test_a_light_is_calibrated_with_nothing_rather_than_a_corrupt_master(runtime: Runtime) -> None:
    entry_id = _entry_with_master(runtime)
    light = LightInfo(key=KEY, temperature_c=-10.0, time_utc=None,
                      image_type="light")
    runtime.engine.pause(runtime.engine.submit("integrate", {"entry_id": entry_id}).id)  # type: ignore[union-attr]
    assert select_for_light(runtime.index, light).require().id == entry_id
    _corrupt(Path(runtime.index.get(entry_id).master))  # type: ignore[arg-type,union-attr]
    selection = select_for_light(runtime.index, light)
    assert selection.entry is None and "SHA-256" in " ".join(selection.refused.values())
