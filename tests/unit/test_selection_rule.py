"""The selection rule, case by case: every key mismatch refused, temperature edge, validity window, time, status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from daemon.library.keys import LibraryKey
from daemon.library.selection import NoMatchingMaster, select_master
from daemon.library.store import EntryView

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
LIGHT = LibraryKey(camera="QHY163M", kind="dark", exposure_s=300, set_point_c=-10, gain=120, offset=30, binning=1,
                   read_mode=0, usb_traffic=30, amp_glow="auto", overscan="include", width_px=496, height_px=368)


def entry(entry_id: int = 1, *, key: LibraryKey = LIGHT, status: str = "ready", age_days: float = 1.0,
          temperature_mean_c: float | None = None, review: bool = False, master: str | None = "/lib/master.fits",
          valid_until: datetime | None = None) -> EntryView:
    created = NOW - timedelta(days=age_days)
    return EntryView(
        **key.to_dict(), id=entry_id, status=status, frames=20, frames_target=20, frames_rejected=0, master=master,
        master_sha256="0" * 64,
        master_stats={}, temperature_mean_c=temperature_mean_c, temperature_min_c=None, temperature_max_c=None,
        created_utc=created, updated_utc=created, master_created_utc=created, valid_until_utc=valid_until,
        review=review, review_reason=None, note=None, directory="/lib", frames_dir="/lib/frames")


def test_exact_match_selected() -> None:
    chosen = select_master(LIGHT, [entry()], now=NOW).require()
    assert chosen.id == 1


@pytest.mark.parametrize(("name", "value"), [
    ("camera", "ASI294MM"), ("exposure_s", 299.0), ("gain", 121), ("offset", 31), ("binning", 2), ("read_mode", 1),
    ("usb_traffic", 0), ("amp_glow", "off"), ("overscan", "ignore"), ("width_px", 480), ("height_px", 360),
    ("kind", "bias"), ("read_mode", None),
])
def test_each_key_mismatch_is_refused(name: str, value: object) -> None:
    other = replace(LIGHT, **{name: value})
    selection = select_master(LIGHT, [entry(key=other)], now=NOW)
    assert selection.entry is None
    assert name in selection.refused[1]
    with pytest.raises(NoMatchingMaster, match=name):
        selection.require()


@pytest.mark.parametrize(("master_c", "ok"), [(-10.5, True), (-9.5, True), (-10.51, False), (-9.49, False)])
def test_temperature_tolerance_edge(master_c: float, ok: bool) -> None:
    selection = select_master(LIGHT, [entry(temperature_mean_c=master_c)], now=NOW, tolerance_c=0.5)
    assert selection.ok is ok


def test_measured_light_temperature_is_compared_with_measured_master_temperature() -> None:
    e = entry(temperature_mean_c=-10.1)
    assert select_master(LIGHT, [e], now=NOW, light_temperature_c=-9.7).ok
    assert not select_master(LIGHT, [e], now=NOW, light_temperature_c=-9.5).ok


@pytest.mark.parametrize(("age_days", "ok"), [(89.9, True), (90.1, False), (-89.0, True), (-91.0, False)])
def test_validity_window(age_days: float, ok: bool) -> None:
    selection = select_master(LIGHT, [entry(age_days=age_days)], now=NOW, validity_days=90)
    assert selection.ok is ok
    if not ok:
        assert "validity" in selection.refused[1]


def test_valid_until_shorter_than_window_is_respected() -> None:
    e = entry(age_days=10, valid_until=NOW - timedelta(days=1))
    assert not select_master(LIGHT, [e], now=NOW).ok


def test_nearest_in_time_wins_even_if_older() -> None:
    light_time = NOW - timedelta(days=30)
    candidates = [entry(1, age_days=1), entry(2, age_days=28), entry(3, age_days=60)]
    assert select_master(LIGHT, candidates, light_time=light_time).require().id == 2


@pytest.mark.parametrize("status", ["bad", "stale", "planned", "capturing", "integrating"])
def test_non_ready_entries_excluded(status: str) -> None:
    selection = select_master(LIGHT, [entry(1, status=status, age_days=0.1), entry(2, age_days=5)], now=NOW)
    assert selection.require().id == 2
    assert status in selection.refused[1]


def test_review_flagged_master_is_not_used() -> None:
    selection = select_master(LIGHT, [entry(1, review=True, age_days=0.1), entry(2, age_days=5)], now=NOW)
    assert selection.require().id == 2


def test_no_scaled_substitute_unless_asked() -> None:
    other = replace(LIGHT, exposure_s=120)
    assert not select_master(LIGHT, [entry(key=other)], now=NOW).ok
    scaled = select_master(LIGHT, [entry(key=other)], now=NOW, allow_scaled=True)
    assert scaled.scaled and scaled.scale_factor == pytest.approx(2.5)
    assert "optical-black clamping" in scaled.warnings[0] and "amp glow" in scaled.warnings[0]


def test_scaled_substitute_still_requires_other_keys() -> None:
    other = replace(LIGHT, exposure_s=120, gain=0)
    assert not select_master(LIGHT, [entry(key=other)], now=NOW, allow_scaled=True).ok


def test_exact_preferred_over_scaled_even_when_older() -> None:
    scaled = entry(1, key=replace(LIGHT, exposure_s=120), age_days=0.1)
    exact = entry(2, age_days=50)
    selection = select_master(LIGHT, [scaled, exact], now=NOW, allow_scaled=True)
    assert selection.require().id == 2 and not selection.scaled and not selection.warnings
