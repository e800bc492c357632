"""Master quality: calib.compare formulas, review flag on a large change, selection keeps the previous master."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from calib.compare import compare_masters
from calib.frames import write_frame
from daemon.library.ageing import is_expired, refresh_ageing
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings

KEY = LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120, offset=30, width_px=64,
                 height_px=48)
RNG_SHAPE = (48, 64)


def noisy(seed: int, base: np.ndarray, noise_adu: float = 1.0) -> np.ndarray:
    return (base + np.random.default_rng(seed).normal(0, noise_adu, base.shape)).astype(np.float32)


@pytest.fixture
def base() -> np.ndarray:
    return np.random.default_rng(0).normal(1000, 5, RNG_SHAPE)


def test_same_sensor_is_not_flagged(base: np.ndarray) -> None:
    result = compare_masters(noisy(1, base), noisy(2, base))
    assert not result.review and result.reasons == []
    assert result.sigma_adu == pytest.approx(np.sqrt(2), rel=0.15)  # difference of two unit-noise masters
    assert abs(result.mean_shift_adu) < 0.1


def test_new_hot_pixels_are_counted_and_flagged(base: np.ndarray) -> None:
    new = noisy(1, base)
    new[:4, :4] += 100.0  # 16 px of 3072 = 0.52 %
    result = compare_masters(new, noisy(2, base), k_sigma=5, max_moved_fraction=1e-3)
    assert result.moved_pixels == 16 and result.moved_fraction == pytest.approx(16 / base.size)
    assert result.review and "moved beyond 5σ" in result.reasons[0]


def test_mean_shift_is_flagged(base: np.ndarray) -> None:
    result = compare_masters(noisy(1, base) + 5.0, noisy(2, base))
    assert result.mean_shift_adu == pytest.approx(5.0, abs=0.1)
    assert result.review and "mean shifted by +5" in result.reasons[-1]
    assert not compare_masters(noisy(1, base) + 5.0, noisy(2, base), max_mean_shift_adu=6.0).review


def test_shape_mismatch_is_an_error(base: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        compare_masters(base, base[:10])


def _build_master(index: LibraryIndex, data: np.ndarray, created: datetime) -> int:
    entry = index.upsert_entry(KEY, 1)
    path = write_frame(entry.master_target, data)
    return index.set_master(entry.id, path, {"mean_adu": float(data.mean())}, created=created).id


def test_large_change_holds_the_new_master_for_review(tmp_path: Path, base: np.ndarray) -> None:
    index = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib"))
    now = datetime.now(UTC)
    first = _build_master(index, noisy(1, base), now - timedelta(days=10))
    similar = _build_master(index, noisy(2, base), now - timedelta(days=5))
    assert not index.get(similar).review  # type: ignore[union-attr]
    assert index.get(similar).master_stats["comparison"]["previous_entry_id"] == first  # type: ignore[index,union-attr]
    changed = noisy(3, base)
    changed[:8, :8] += 200.0
    flagged = _build_master(index, changed, now - timedelta(days=1))
    view = index.get(flagged)
    assert view is not None and view.review and "changed from entry" in (view.review_reason or "")
    # the selection rule keeps using the previous (unflagged) master until the new one is accepted
    assert index.select_master(KEY).require().id == similar
    index.accept_review(flagged)
    assert index.select_master(KEY).require().id == flagged
    index.close()


def test_ageing_marks_expired_masters_stale(tmp_path: Path, base: np.ndarray) -> None:
    index = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib", validity_days=30))
    now = datetime.now(UTC)
    old = _build_master(index, noisy(1, base), now - timedelta(days=31))
    fresh = _build_master(index, noisy(2, base), now - timedelta(days=1))
    assert is_expired(index.get(old), now) and not is_expired(index.get(fresh), now)  # type: ignore[arg-type]
    assert refresh_ageing(index, now) == [old]
    assert index.get(old).status == "stale"  # type: ignore[union-attr]
    assert refresh_ageing(index, now) == []
    index.close()
