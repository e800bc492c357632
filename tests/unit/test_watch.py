"""The closed loop's parts (daemon/watch.py): when a light is complete, the build window, and the never-twice rules
of the standing plan (one key per camera and slug, one build per key, one take per light, across restarts), the
unbuildable report. The job engine here is a small fake that records submissions (the real engine runs in
tests/integration/test_closed_loop.py); the index is the real SQLite one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.events import EventBus
from daemon.library.catalog import LibraryIndex
from daemon.runtime import Runtime
from daemon.settings import LibrarySettings, Settings, WatchSettings
from daemon.watch import ClosedLoop, Completeness, fits_problem, in_window, parse_window

NOON = datetime(2026, 12, 2, 12, 0).astimezone()
NIGHT = datetime(2026, 12, 2, 23, 30).astimezone()


def light_bytes(exposure_s: float = 30.0, set_point_c: float = -10.0, *, extension: bool = False) -> bytes:
    h = fits.Header()
    for k, v in {"INSTRUME": "Cam", "EXPTIME": exposure_s, "SET-TEMP": set_point_c, "CCD-TEMP": set_point_c,
                 "GAIN": 100, "OFFSET": 10, "IMAGETYP": "LIGHT", "XBINNING": 1, "YBINNING": 1,
                 "DATE-OBS": "2026-12-01T22:00:00"}.items():
        h[k] = v
    hdus = fits.HDUList([fits.PrimaryHDU(np.arange(60 * 50, dtype=np.uint16).reshape(50, 60), h)])
    if extension:
        hdus.append(fits.ImageHDU(np.ones((40, 30), np.uint8), name="MASK"))
    buf = BytesIO()
    hdus.writeto(buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ completeness
@pytest.mark.parametrize("extension", [False, True])
def test_a_fits_file_cut_anywhere_is_incomplete_and_whole_is_complete(tmp_path: Path, extension: bool) -> None:
    data = light_bytes(extension=extension)
    path = tmp_path / "l.fits"
    for cut in (0, 100, 2880, 2880 + 79, 2 * 2880, len(data) // 2, len(data) - 2880 - 1):
        path.write_bytes(data[:cut])
        assert fits_problem(path) is not None, cut
    path.write_bytes(data)
    assert fits_problem(path) is None
    unpadded = 2880 + 60 * 50 * 2  # the primary HDU's data without its last block's padding
    if not extension:
        path.write_bytes(data[:unpadded])
        assert fits_problem(path) is None  # some writers leave the final padding out
    path.write_bytes(b"not a fits file" * 300)
    assert fits_problem(path) == "not a FITS file (no SIMPLE card)"


def test_a_light_written_slowly_in_chunks_is_taken_once_complete_and_only_then(tmp_path: Path) -> None:
    """Each chunk sits still longer than the interval: only the FITS check keeps the half-written file out."""
    now = [0.0]
    done = Completeness(interval_s=2.0, clock=lambda: now[0])
    data = light_bytes()
    path = tmp_path / "slow.fits"
    end = 2880 + 60 * 50 * 2 - 1  # one byte short of the data (the padding after it is optional)
    chunks = [data[i:min(i + 1500, end)] for i in range(0, end, 1500)] + [data[end:]]
    assert len(chunks) >= 4
    with path.open("wb") as fh:
        for chunk in chunks[:-1]:
            fh.write(chunk)
            fh.flush()
            done.add(path)
            for _ in range(3):  # the size holds for 4.5 s after each chunk, longer than the interval
                assert done.complete() == []
                now[0] += 1.5
            assert path in done.problems  # stable, but the FITS check found it cut short
        assert "cut short" in done.problems[path]
        fh.write(chunks[-1])
    done.add(path)  # the writer's close: one more change event
    assert done.complete() == []  # seen now, stable from now
    now[0] += 1.0
    assert done.complete() == []  # stable for less than the interval
    now[0] += 1.5
    assert done.complete() == [path]
    now[0] += 5.0
    assert done.complete() == []  # taken once


def test_a_file_still_growing_is_not_taken(tmp_path: Path) -> None:
    now = [0.0]
    done = Completeness(interval_s=1.0, clock=lambda: now[0])
    path = tmp_path / "g.fits"
    path.write_bytes(light_bytes())
    done.add(path)
    done.complete()
    with path.open("ab") as fh:  # a whole FITS that keeps growing (a second HDU being appended)
        fh.write(b"X" * 10)
    now[0] += 1.5
    assert done.complete() == []  # size changed: the interval starts again


def test_build_window_wraps_midnight() -> None:
    window = parse_window("22:00-05:00")
    assert in_window(NIGHT, window) and in_window(NIGHT.replace(hour=4, minute=59), window)
    assert not in_window(NOON, window) and not in_window(NIGHT.replace(hour=5, minute=0), window)
    day = parse_window("09:00-17:00")
    assert in_window(NOON, day) and not in_window(NIGHT, day)
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_window("tonight")


# ------------------------------------------------------------------------------------------------ never twice
@dataclass
class Job:
    id: int
    kind: str
    params: dict[str, Any]
    state: str = "queued"
    error: str | None = None
    camera: str | None = "Cam"
    result: dict[str, Any] | None = None


@dataclass
class FakeEngine:
    jobs: list[Job] = field(default_factory=list)

    def list(self, state: str | None = None) -> list[Job]:
        return [j for j in self.jobs if state is None or j.state == state]

    def get(self, job_id: int) -> Job:
        return next(j for j in self.jobs if j.id == job_id)

    def submit(self, kind: str, params: dict[str, Any]) -> Job:
        job = Job(len(self.jobs) + 1, kind, params)
        self.jobs.append(job)
        return job


@pytest.fixture
def index(tmp_path: Path) -> Any:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "library"))
    yield idx
    idx.close()


def make_loop(tmp_path: Path, index: LibraryIndex, engine: Any, now: list[datetime], **watch: Any) -> ClosedLoop:
    settings = Settings(library=index.settings, watch=WatchSettings(folders=[tmp_path / "lights"], interval_s=0.1,
                                                                    build_window="22:00-05:00", **watch))
    return ClosedLoop(settings, index, engine, EventBus(), clock=lambda: now[0])


def put(tmp_path: Path, name: str, **kw: Any) -> Path:
    path = tmp_path / "lights" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(light_bytes(**kw))
    return path.absolute()


def test_one_key_one_build_one_take_across_restarts(tmp_path: Path, index: LibraryIndex) -> None:
    engine, now = FakeEngine(), [NOON]
    loop = make_loop(tmp_path, index, engine, now)
    a, b = put(tmp_path, "a.fits"), put(tmp_path, "b.fits")
    assert loop.take(a) == "waiting" and loop.take(b) == "waiting"
    assert loop.take(a) is None  # taken once
    assert [k.status for k in loop.keys("missing", "building")] == ["missing"]  # one key for both lights
    loop.tick()
    assert engine.jobs == []  # noon: the camera may image
    now[0] = NIGHT
    loop.tick()
    loop.tick()
    assert [j.kind for j in engine.jobs] == ["build-library"]  # one build, not one per tick
    (key,) = loop.keys("building")
    assert key.job_id == 1 and [i["slug"] for i in engine.jobs[0].params["plan"]["items"]] == [key.slug]

    # a restart: the plan and the taken lights come from the index; nothing is submitted or taken again
    again = make_loop(tmp_path, index, engine, now)
    again.start()
    again.stop()
    assert {str(a), str(b)} <= again._known  # read from the index at start
    again.tick()
    assert len(engine.jobs) == 1 and again.take(a) is None
    assert again.status()["missing_keys"][0]["job_id"] == 1 and len(again.status()["waiting"]) == 2


def test_a_key_already_in_an_active_build_is_not_queued_again(tmp_path: Path, index: LibraryIndex) -> None:
    engine, now = FakeEngine(), [NIGHT]
    loop = make_loop(tmp_path, index, engine, now)
    loop.take(put(tmp_path, "a.fits"))
    (key,) = loop.keys("missing")
    other = engine.submit("build-library", {"plan": {"items": [{"key": dict(key.key), "slug": key.slug,
                                                                 "status": "missing", "reachable": True}]}})
    other.state = "paused"  # a person's build of the same key, paused: it still holds the camera and the key
    loop.tick()
    assert len(engine.jobs) == 1
    other.state = "running"
    loop.tick()
    assert len(engine.jobs) == 1 and loop.keys("building")[0].job_id == other.id


def test_failed_builds_end_in_unbuildable_not_forever(tmp_path: Path, index: LibraryIndex) -> None:
    engine, now = FakeEngine(), [NIGHT]
    loop = make_loop(tmp_path, index, engine, now, max_attempts=2)
    light = put(tmp_path, "a.fits")
    loop.take(light)
    for attempt in (1, 2):
        loop.tick()
        assert len(engine.jobs) == attempt
        engine.jobs[-1].state, engine.jobs[-1].error = "failed", "series failed: 4 retakes"
        loop.tick()
    assert len(engine.jobs) == 2
    (key,) = loop.keys("unbuildable")
    assert key.attempts == 2 and "2 build(s) failed" in (key.reason or "")
    for _ in range(3):
        loop.tick()
    assert len(engine.jobs) == 2  # not retried
    assert [w["path"] for w in loop.status()["unbuildable"]] == [str(light)]


def test_a_build_that_finds_the_set_point_unreachable_ends_it_at_once(tmp_path: Path, index: LibraryIndex) -> None:
    engine, now = FakeEngine(), [NIGHT]
    loop = make_loop(tmp_path, index, engine, now, max_attempts=5)
    loop.take(put(tmp_path, "a.fits"))
    loop.tick()
    (job,) = engine.jobs
    slug = job.params["plan"]["items"][0]["slug"]
    job.state, job.error = "failed", "1 key(s) not built: ..."
    job.result = {"unreachable_c": [-10.0], "failures": [f"{slug}: cooler at 100 % for 120 s, 3 °C above"]}
    loop.tick()
    loop.tick()
    assert len(engine.jobs) == 1
    (key,) = loop.keys("unbuildable")
    assert key.attempts == 1 and key.reason == f"set point -10 °C unreachable by the cooler: {slug}: cooler at 100 % " \
        "for 120 s, 3 °C above"


def test_a_set_point_the_cooler_cannot_reach_is_reported_and_never_built(tmp_path: Path, index: LibraryIndex) -> None:
    engine, now = FakeEngine(), [NIGHT]
    loop = make_loop(tmp_path, index, engine, now, ambient_c=20.0, max_cooling_delta_c=25.0)
    cold, warm = put(tmp_path, "cold.fits", set_point_c=-10.0), put(tmp_path, "warm.fits", set_point_c=0.0)
    assert loop.take(cold) == "unbuildable" and loop.take(warm) == "waiting"
    loop.tick()
    loop.tick()
    (job,) = engine.jobs
    assert [i["key"]["set_point_c"] for i in job.params["plan"]["items"]] == [0.0]
    (gone,) = loop.status()["unbuildable"]
    assert gone["path"] == str(cold) and "coldest reachable -5 °C" in gone["reason"]


def test_runtime_starts_the_watcher_and_rest_shows_it(tmp_path: Path) -> None:
    lights = tmp_path / "lights"
    settings = Settings(library=LibrarySettings(root=tmp_path / "library"),
                        watch=WatchSettings(folders=[lights], interval_s=0.1))
    runtime = Runtime(settings, connect_camera=False, start_engine=False)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as client:
        assert runtime.watch is not None and runtime.watch.running
        put(tmp_path, "a.fits")
        deadline = datetime.now().timestamp() + 10
        body: dict[str, Any] = {}
        while datetime.now().timestamp() < deadline:
            body = client.get("/api/v1/watch").json()
            if body["waiting"]:
                break
            time.sleep(0.05)
        assert body["running"] is True and body["folders"] == [str(lights)]
        assert [w["path"] for w in body["waiting"]] == [str((lights / "a.fits").absolute())]
        assert body["missing_keys"][0]["status"] == "missing" and body["estimate_s"]["capture_s"] > 0
    assert runtime.watch is None


def test_a_bad_watch_setting_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    settings = Settings(library=LibrarySettings(root=tmp_path / "library"),
                        watch=WatchSettings(folders=[tmp_path / "lights"], build_window="tonight"))
    runtime = Runtime(settings, connect_camera=False, start_engine=False)
    with pytest.raises(ValueError, match="build_window 'tonight'"):
        runtime.start()
    assert not runtime.running and runtime.engine is None


def test_polling_for_network_shares_sees_a_new_light(tmp_path: Path, index: LibraryIndex) -> None:
    """``[watch] poll = true``: no inotify; the polling observer finds the light written after the start."""
    engine, now = FakeEngine(), [NOON]
    loop = make_loop(tmp_path, index, engine, now, poll=True)
    assert type(loop._make_observer()).__name__ == "PollingObserver"
    loop.start()
    try:
        light = put(tmp_path, "sub/late.fits")
        deadline = time.monotonic() + 10
        while not loop.status()["waiting"]:
            assert time.monotonic() < deadline, "the polling watcher never took the light"
            time.sleep(0.05)
        assert [w["path"] for w in loop.status()["waiting"]] == [str(light)]
    finally:
        loop.stop()


def test_the_standing_plan_is_built_once_no_client_has_exposed_for_idle_s(tmp_path: Path, index: LibraryIndex) -> None:
    """The third trigger: the imaging program let go of the camera (stopped its sequence or disconnected) — seen as
    ``idle_s`` seconds in which the camera took no exposure for anyone (its CCD_EXPOSURE never Busy)."""
    from drivers.camera import CameraState

    engine, now, mono = FakeEngine(), [NOON], [1000.0]
    state = [CameraState(connected=True, exposing=True)]  # another client's exposure in progress
    settings = Settings(library=index.settings, watch=WatchSettings(folders=[tmp_path / "lights"], interval_s=0.1,
                                                                    build_window="22:00-05:00", idle_s=600))
    loop = ClosedLoop(settings, index, engine, EventBus(), clock=lambda: now[0], camera_state=lambda: state[0],
                      monotonic=lambda: mono[0])
    loop.take(put(tmp_path, "a.fits"))
    for _ in range(3):  # an imaging session: exposures every few minutes, idle gaps shorter than idle_s
        mono[0] += 500
        loop.tick()
    state[0] = CameraState(connected=True, exposing=False)
    mono[0] += 599
    loop.tick()
    assert engine.jobs == []  # noon, and the camera idle for only 599 s
    mono[0] += 2
    loop.tick()
    (job,) = engine.jobs
    assert job.kind == "build-library" and loop.keys("building")[0].job_id == job.id
