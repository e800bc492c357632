"""Contained paths and a broken index through the real REST app and CLI (issue 15, defects 8 and 9):

* a path component over 255 bytes is a 422 ``invalid_path``, not a 500 (``ENAMETOOLONG``);
* a symlinked light inside an allowed lights folder that points outside the allowed roots is refused (403) before
  anything reads it — by ``POST /library/plan`` and by a calibrate job;
* ``darkd library verify`` on a malformed index prints one clear line and exits 2, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from calib.frames import write_frame
from daemon.api.app import create_app
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.runtime import Runtime
from daemon.settings import LibrarySettings, Settings

LOCAL = ("127.0.0.1", 50000)
LIGHT_HEADER = {"IMAGETYP": "Light Frame", "EXPTIME": 60.0, "GAIN": 120, "OFFSET": 30, "CCD-TEMP": -10.0,
                "SET-TEMP": -10.0, "INSTRUME": "cam", "XBINNING": 1}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")},
                                        "api": {"allowed_roots": [str(data)]}})
    runtime = Runtime(settings, connect_camera=False, start_engine=True, warm_on_shutdown=False)
    with TestClient(create_app(runtime), client=LOCAL, raise_server_exceptions=False) as client:
        yield client, data


@pytest.mark.parametrize("where", ["lights_dir", "output_dir"])
def test_a_name_over_255_bytes_is_422_not_500(setup: tuple[TestClient, Path], where: str) -> None:
    client, data = setup
    long = f"{data}/{'x' * 256}"
    if where == "lights_dir":
        r = client.post("/api/v1/library/plan", json={"lights_dir": long})
    else:
        r = client.post("/api/v1/jobs", json={"kind": "calibrate", "params": {"lights": [f"{data}/l.fits"],
                                                                               "output_dir": f"{long}/out"}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_path" and "255" in r.json()["error"]["message"]


def _lights_with_a_symlink_out(tmp_path: Path, data: Path) -> Path:
    lights = data / "lights"
    lights.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    image = np.full((8, 8), 1000, dtype=np.uint16)
    write_frame(lights / "inside.fits", image, fits.Header(LIGHT_HEADER), bitpix16=True)
    target = write_frame(outside / "private.fits", image, fits.Header(LIGHT_HEADER), bitpix16=True)
    (lights / "link.fits").symlink_to(target)
    return lights


def test_a_symlinked_light_pointing_outside_the_roots_is_refused(setup: tuple[TestClient, Path],
                                                                 tmp_path: Path) -> None:
    client, data = setup
    lights = _lights_with_a_symlink_out(tmp_path, data)
    r = client.post("/api/v1/library/plan", json={"lights_dir": str(lights)})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "path_not_allowed" and "link.fits" in r.json()["error"]["message"]
    r = client.post("/api/v1/jobs", json={"kind": "calibrate", "params": {"lights_dir": str(lights),
                                                                          "output_dir": str(data / "out")}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed", r.text
    assert not (data / "out").exists()
    (lights / "link.fits").unlink()  # the folder alone is fine
    assert client.post("/api/v1/library/plan", json={"lights_dir": str(lights)}).status_code == 200


def test_verify_on_a_malformed_index_says_so_without_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with LibraryIndex(LibrarySettings(root=root)) as index:
        for n in range(40):
            index.upsert_entry(LibraryKey(camera="cam", kind="dark", exposure_s=60 + n, set_point_c=-10, gain=120,
                                          offset=30, width_px=64, height_px=48), 5)
    db = root / "index.sqlite3"
    raw = bytearray(db.read_bytes())
    for offset in range(2 * 4096, len(raw), 4096):  # every page after the first two: the schema header survives
        raw[offset:offset + 100] = b"\xff" * 100
    db.write_bytes(bytes(raw))
    darkd = str(Path(sys.executable).parent / "darkd")
    out = subprocess.run([darkd, "library", "verify"], capture_output=True, text=True,
                         env={"DARKD_LIBRARY__ROOT": str(root), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "malformed" in out.stderr
    assert out.stderr.startswith("darkd: ") and out.stderr.count("\n") <= 3
