"""One view of the fleet (issue 17): daemons sharing one index show every camera's coverage, not only their own —
``GET /api/v1/library`` and the status page's coverage table (``GET /api/v1/status``), each row naming its camera.
A real index (SQLite on disk) written as two hosts would write it; the HTTP app in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from daemon.api.app import create_app
from daemon.library.keys import LibraryKey
from daemon.runtime import Runtime
from daemon.settings import Settings

CAMERAS = ("QHY CCD QHY163M-Sim", "ZWO CCD ASI1600MM Pro")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}, "indi": {"device": CAMERAS[0]}})
    runtime = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False)
    for camera in CAMERAS:  # what each host's jobs put in the shared index
        for exposure_s in (60, 300):
            runtime.index.upsert_entry(LibraryKey(camera=camera, kind="dark", exposure_s=exposure_s,
                                                  set_point_c=-10, gain=120, offset=30, width_px=64, height_px=48),
                                       frames_target=5)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000), raise_server_exceptions=False) as c:
        yield c


def test_the_library_and_the_status_coverage_list_every_cameras_entries(client: TestClient) -> None:
    entries = client.get("/api/v1/library").json()
    assert sorted((e["camera"], e["exposure_s"]) for e in entries) == sorted(
        (c, float(x)) for c in CAMERAS for x in (60, 300))
    coverage = client.get("/api/v1/status").json()["coverage"]
    assert [(r["camera"], r["exposure_s"], r["status"]) for r in coverage] == [
        (c, float(x), "in-progress") for c in CAMERAS for x in (60, 300)]  # same slugs, told apart by camera
