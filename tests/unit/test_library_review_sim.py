"""Master review on frames from the simulated QHY163M sensor model: a fresh master of the same sensor passes, a
master built from darks with a light leak is held for review and the previous master stays selected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from calib.compare import compare_masters
from calib.frames import write_frame
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings
from drivers.sim.physics import SMALL_GEOMETRY, SensorModel

EXPOSURE_S = 60.0
TEMPERATURE_C = -10.0
GAIN = 120
OFFSET = 30
N_FRAMES = 7
KEY = LibraryKey(camera="QHY CCD QHY163M-Sim", kind="dark", exposure_s=EXPOSURE_S, set_point_c=TEMPERATURE_C,
                 gain=GAIN, offset=OFFSET, amp_glow="auto", overscan="include",
                 width_px=SMALL_GEOMETRY.full_width, height_px=SMALL_GEOMETRY.full_height)


def master_dark(sensor: SensorModel, seed: int, light_leak_e_per_s: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stack = [sensor.expose("dark", EXPOSURE_S, TEMPERATURE_C, GAIN, OFFSET, light_leak_e_per_s=light_leak_e_per_s,
                           rng=rng).astype(np.float32) for _ in range(N_FRAMES)]
    return np.median(stack, axis=0)  # median: cosmic rays of single frames do not reach the master


@pytest.fixture(scope="module")
def sensor() -> SensorModel:
    return SensorModel(SMALL_GEOMETRY, seed=1)


def test_same_sensor_new_series_is_consistent(sensor: SensorModel) -> None:
    result = compare_masters(master_dark(sensor, 10), master_dark(sensor, 11))
    assert not result.review, result.reasons
    assert result.moved_fraction < 1e-3


def test_light_leak_is_caught_by_the_mean_shift(sensor: SensorModel) -> None:
    result = compare_masters(master_dark(sensor, 10, light_leak_e_per_s=2.0), master_dark(sensor, 11))
    assert result.review and result.mean_shift_adu > 0
    assert any("mean shifted" in r for r in result.reasons)


def test_leaky_master_is_held_and_previous_stays_selected(tmp_path: Path, sensor: SensorModel) -> None:
    now = datetime.now(UTC)
    with LibraryIndex(LibrarySettings(root=tmp_path / "lib")) as index:
        ids = []
        for seed, leak, age_days in ((10, 0.0, 3), (11, 2.0, 1)):
            entry = index.upsert_entry(KEY, N_FRAMES)
            path = write_frame(entry.master_target, master_dark(sensor, seed, light_leak_e_per_s=leak))
            ids.append(index.set_master(entry.id, path, {"n_frames": N_FRAMES},
                                        created=now - timedelta(days=age_days)).id)
        good, leaky = (index.get(i) for i in ids)
        assert good is not None and leaky is not None
        assert not good.review and leaky.review and "mean shifted" in (leaky.review_reason or "")
        assert index.select_master(KEY).require().id == good.id
