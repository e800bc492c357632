"""Selection from a light file against a real index: header → key → the matching master, mismatches refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calib.frames import write_frame
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.library.selection import NoMatchingMaster, select_for_light
from daemon.settings import LibrarySettings

CAMERA = "QHY CCD QHY163M-Sim"


def light(path: Path, *, exposure_s: float = 120, ccd_temp_c: float = -10.2, gain: int = 120,
          date_obs: str = "2026-11-20T22:00:00") -> Path:
    h = fits.Header()
    for name, value in {"IMAGETYP": "Light Frame", "EXPTIME": exposure_s, "CCD-TEMP": ccd_temp_c, "SET-TEMP": -10.0,
                        "GAIN": gain, "OFFSET": 30, "XBINNING": 1, "INSTRUME": CAMERA, "DATE-OBS": date_obs}.items():
        h[name] = value
    return write_frame(path, np.zeros((12, 16)), h, bitpix16=True)


def master(index: LibraryIndex, key: LibraryKey, created: datetime, temp_c: float = -10.0) -> int:
    entry = index.upsert_entry(key, 1)
    frame = write_frame(Path(entry.frames_dir) / "dark_0001.fits", np.zeros((12, 16)))
    index.record_frame(entry.id, frame, "0" * 64, 1, temp_c, temp_c, True, [])
    path = write_frame(entry.master_target, np.zeros((12, 16)))
    return index.set_master(entry.id, path, {}, created=created, review=False).id


@pytest.fixture
def index(tmp_path: Path) -> LibraryIndex:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib"))
    yield idx
    idx.close()


def test_light_file_selects_nearest_matching_master(index: LibraryIndex, tmp_path: Path) -> None:
    key = LibraryKey(camera=CAMERA, kind="dark", exposure_s=120, set_point_c=-10, gain=120, offset=30, width_px=16,
                     height_px=12)
    light_time = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    older = master(index, key, light_time - timedelta(days=20))
    nearer = master(index, key, light_time + timedelta(days=2))
    master(index, key.with_kind("dark", exposure_s=60), light_time)
    chosen = select_for_light(index, light(tmp_path / "l.fits")).require()
    assert chosen.id == nearer and chosen.id != older
    bias = master(index, key.with_kind("bias"), light_time)
    assert select_for_light(index, tmp_path / "l.fits", kind="bias").require().id == bias


def test_light_file_mismatch_is_refused_with_reason(index: LibraryIndex, tmp_path: Path) -> None:
    key = LibraryKey(camera=CAMERA, kind="dark", exposure_s=120, set_point_c=-10, gain=120, offset=30, width_px=16,
                     height_px=12)
    master(index, key, datetime(2026, 11, 20, tzinfo=UTC))
    with pytest.raises(NoMatchingMaster, match="gain differs"):
        select_for_light(index, light(tmp_path / "g.fits", gain=0)).require()
    # measured light temperature −10.6 °C is 0.6 °C from the master's −10.0 °C: refused
    with pytest.raises(NoMatchingMaster, match="temperature"):
        select_for_light(index, light(tmp_path / "t.fits", ccd_temp_c=-10.6)).require()
    scaled = select_for_light(index, light(tmp_path / "s.fits", exposure_s=240), allow_scaled=True)
    assert scaled.scaled and scaled.scale_factor == pytest.approx(2.0) and scaled.warnings
