"""``capture_series`` on the in-process simulated camera: every branch in simulated time (no indiserver).

Retakes after a failed quality check (light leak, temperature), failed and dropped exposures, reconnect mid-series,
stop/abort, resume of a partial series and atomic writes. The integration twins in
``tests/integration/test_camera_sim.py`` run the same loop through the real indiserver.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits

import calib.frames
from calib.quality import FrameExpectation
from daemon.capture import FrameRecord, SeriesFailed, SeriesRequest, capture_series
from daemon.settings import CoolingSettings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.profiles import load_profile
from drivers.sim.inprocess import ScaledClock, SimCamera, SimFaults

PROFILE = load_profile("qhy163m-sim-small")
SETTINGS = CaptureSettings(gain=120, offset=30, read_mode=0, usb_traffic=30, amp_glow="auto",
                           overscan=OverscanMode.INCLUDE)
COOLING = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, ramp_c_per_min=None,
                          unreachable_window_s=120.0, reconnect_timeout_s=60.0)


def make_camera(**kwargs: Any) -> SimCamera:
    camera = SimCamera(profile=PROFILE, reconnect_timeout_s=COOLING.reconnect_timeout_s, **kwargs)
    camera.connect()
    return camera


def request(count: int = 3, prefix: str = "dark", **kwargs: Any) -> SeriesRequest:
    fields: dict[str, Any] = {"frame_type": FrameType.DARK, "exposure_s": 300.0, "count": count,
                              "set_point_c": -10.0, "settings": SETTINGS, "name_prefix": prefix, **kwargs}
    return SeriesRequest(**fields)


def names(directory: Path, pattern: str = "*.fits") -> list[str]:
    return sorted(p.name for p in directory.glob(pattern))


def assert_no_partial_files(directory: Path) -> None:
    assert not [p for p in directory.rglob(".*.part")]


def test_series_cools_captures_stamps_and_writes_each_frame_atomically(tmp_path: Path) -> None:
    camera = make_camera()
    started = time.perf_counter()
    result = capture_series(camera, request(), tmp_path, cooling=COOLING)
    assert time.perf_counter() - started < 3.0
    assert result.complete and result.reconnects == 0 and result.rejected == []
    assert names(tmp_path) == ["dark_0001.fits", "dark_0002.fits", "dark_0003.fits"]
    assert_no_partial_files(tmp_path)
    for number, record in enumerate(result.frames, start=1):
        assert record.index == number and record.quality_ok
        assert hashlib.sha256(record.path.read_bytes()).hexdigest() == record.sha256
        header = fits.getheader(record.path)
        assert header["FRAMENUM"] == number and header["SERIES"] == "dark" and header["QUALOK"] is True
        assert header["SET-TEMP"] == -10.0 and abs(header["CCDTEMP1"] + 10) <= 0.3
        assert (header["GAIN"], header["OFFSET"], header["OVSCMODE"]) == (120, 30, "include")
        assert header["BIASSEC"] == "[481:496,9:368]" and header["DATASEC"] == "[1:480,9:368]"
        assert header["EXPTIME"] == 300.0 and "OVERSCAN" in header and "QCMEAN" in header
    assert camera.exposures == 3


def test_light_leak_rejected_into_rejected_dir_and_retaken(tmp_path: Path) -> None:
    camera = make_camera()
    ref = capture_series(camera, request(prefix="ref"), tmp_path / "ref", cooling=COOLING)
    expected = FrameExpectation.from_means([r.corrected_mean_adu for r in ref.frames], source="library")
    camera.faults.leak_frames = 1
    seen: list[FrameRecord] = []
    result = capture_series(camera, request(expected=expected), tmp_path / "leak", cooling=COOLING,
                            on_frame=seen.append)
    assert [r.index for r in result.frames] == [1, 2, 3]
    assert len(result.rejected) == 1 and result.rejected[0].reasons[0].startswith("light leak")
    assert result.rejected[0].path == tmp_path / "leak" / "rejected" / "dark_0001_try1.fits"
    assert fits.getheader(result.rejected[0].path)["QUALOK"] is False
    assert result.frames[0].attempt == 1 and [r.quality_ok for r in seen] == [False, True, True, True]
    assert names(tmp_path / "leak") == ["dark_0001.fits", "dark_0002.fits", "dark_0003.fits"]


def test_series_predicts_the_leak_check_from_its_own_first_frames(tmp_path: Path) -> None:
    camera = make_camera()

    def on_frame(record: FrameRecord) -> None:
        if record.index == 3 and record.quality_ok:
            camera.faults.leak_frames = 1  # frame 4 sees light; frames 1-3 made the prediction

    result = capture_series(camera, request(count=5), tmp_path, cooling=COOLING, on_frame=on_frame)
    assert [r.index for r in result.frames] == [1, 2, 3, 4, 5]
    assert [(r.index, r.reasons[0].split(":")[0]) for r in result.rejected] == [(4, "light leak")]


def test_a_warm_frame_is_rejected_and_the_series_cools_again(tmp_path: Path) -> None:
    camera = make_camera(faults=SimFaults(jolt_exposures=1, jolt_c=3.0))
    samples: list[float] = []
    at_rejection: list[int] = []
    result = capture_series(camera, request(count=2), tmp_path, cooling=COOLING,
                            on_temperature=lambda s: samples.append(s.temperature_c),
                            on_frame=lambda r: r.quality_ok or at_rejection.append(len(samples)))
    assert [r.index for r in result.frames] == [1, 2]
    assert len(result.rejected) == 1 and result.rejected[0].reasons[0].startswith("temperature")
    assert fits.getheader(result.rejected[0].path)["QCREASON"].startswith("temperature: -")  # FITS-safe text
    assert all(abs(fits.getheader(r.path)["CCDTEMP1"] + 10) <= 0.3 for r in result.frames)
    assert len(samples) > at_rejection[0] >= 30  # the stability wait ran again (hold 30 s, 1 s samples)


def test_retakes_exhausted_raise_series_failed_with_the_partial_result(tmp_path: Path) -> None:
    camera = make_camera()

    def on_frame(record: FrameRecord) -> None:
        camera.faults.jolt_exposures = 10  # every frame after the first starts warm

    with pytest.raises(SeriesFailed, match="frame 2 rejected 3 times") as err:
        capture_series(camera, request(max_retakes=2), tmp_path, cooling=COOLING, on_frame=on_frame)
    result = err.value.result
    assert [r.index for r in result.frames] == [1] and len(result.rejected) == 3
    assert names(tmp_path) == ["dark_0001.fits"] and len(names(tmp_path / "rejected")) == 3


def test_failed_and_dropped_exposures_are_retried_then_fail_the_series(tmp_path: Path) -> None:
    camera = make_camera(faults=SimFaults(fail_exposures=1, drop_downloads=1))
    result = capture_series(camera, request(count=2), tmp_path, cooling=COOLING)
    assert [r.index for r in result.frames] == [1, 2] and result.frames[0].attempt == 2
    assert camera.exposures == 4
    camera.faults.fail_exposures = 5
    with pytest.raises(SeriesFailed, match="frame 1 failed 2 times"):
        capture_series(camera, request(count=1, prefix="again", max_retakes=1), tmp_path, cooling=COOLING)


def test_disconnect_mid_series_reconnects_and_retries_the_current_frame(tmp_path: Path) -> None:
    camera = make_camera()

    def on_frame(record: FrameRecord) -> None:
        if record.index == 1:
            camera.faults.disconnect_exposures = 1  # the link drops during frame 2
            camera.faults.refuse_connects = 2  # and the server needs three attempts to come back

    result = capture_series(camera, request(count=3), tmp_path, cooling=COOLING, on_frame=on_frame)
    assert result.reconnects == 1 and camera.reconnects == 1
    assert [r.index for r in result.frames] == [1, 2, 3]
    assert names(tmp_path) == ["dark_0001.fits", "dark_0002.fits", "dark_0003.fits"]
    assert [fits.getheader(tmp_path / n)["FRAMENUM"] for n in names(tmp_path)] == [1, 2, 3]
    assert all(fits.getheader(tmp_path / n)["GAIN"] == 120 for n in names(tmp_path))  # settings restored


def test_a_camera_that_does_not_come_back_fails_the_series(tmp_path: Path) -> None:
    camera = make_camera()

    def on_frame(record: FrameRecord) -> None:
        camera.drop_connection()
        camera.faults.refuse_connects = 10_000

    with pytest.raises(SeriesFailed, match="did not come back") as err:
        capture_series(camera, request(count=3), tmp_path, cooling=COOLING, on_frame=on_frame)
    assert [r.index for r in err.value.result.frames] == [1] and err.value.result.reconnects == 1


def test_stop_aborts_the_running_exposure_and_leaves_no_frame(tmp_path: Path) -> None:
    camera = make_camera(clock=ScaledClock(time_scale=200.0))  # a 1200 s dark: 6 s of wall time
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.perf_counter()
    result = capture_series(camera, request(count=3, exposure_s=1200.0, set_point_c=None), tmp_path,
                            cooling=COOLING, stop=stop)
    assert time.perf_counter() - started < 2.0
    assert result.stopped and result.frames == [] and camera.aborted == 1
    assert names(tmp_path) == [] and not camera.state().exposing
    assert_no_partial_files(tmp_path)


def test_stop_between_frames_keeps_the_finished_ones(tmp_path: Path) -> None:
    camera = make_camera()
    stop = threading.Event()
    result = capture_series(camera, request(count=4), tmp_path, cooling=COOLING, stop=stop,
                            on_frame=lambda r: r.index == 2 and stop.set())
    assert result.stopped and [r.index for r in result.frames] == [1, 2] and camera.aborted == 0
    assert capture_series(camera, request(count=4), tmp_path, cooling=COOLING, stop=stop).stopped


def test_resume_counts_complete_frames_and_retakes_unreadable_ones(tmp_path: Path) -> None:
    camera = make_camera()
    first = capture_series(camera, request(count=2), tmp_path, cooling=COOLING)
    (tmp_path / "dark_0003.fits").write_bytes(b"not a FITS file")  # e.g. copied in by hand, or truncated
    exposures = camera.exposures
    result = capture_series(camera, request(count=4), tmp_path, cooling=COOLING)
    assert camera.exposures - exposures == 2  # frames 3 and 4 only
    assert [(r.index, r.resumed) for r in result.frames] == [(1, True), (2, True), (3, False), (4, False)]
    assert [r.sha256 for r in result.frames[:2]] == [r.sha256 for r in first.frames]
    assert fits.getheader(tmp_path / "dark_0003.fits")["FRAMENUM"] == 3
    exposures = camera.exposures
    assert len(capture_series(camera, request(count=4), tmp_path, cooling=COOLING).frames) == 4
    assert camera.exposures == exposures  # complete: not even cooled or exposed


def test_a_failed_write_leaves_no_file_and_the_rerun_completes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    camera = make_camera()
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # frame 2's data (frame 1: file + directory)
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(calib.frames.os, "fsync", failing_fsync)
    with pytest.raises(calib.frames.DiskFullError, match="no space left on device; nothing was written"):
        capture_series(camera, request(count=3), tmp_path, cooling=COOLING)
    assert names(tmp_path) == ["dark_0001.fits"]
    assert_no_partial_files(tmp_path)
    monkeypatch.setattr(calib.frames.os, "fsync", real_fsync)
    result = capture_series(camera, request(count=3), tmp_path, cooling=COOLING)
    assert [(r.index, r.resumed) for r in result.frames] == [(1, True), (2, False), (3, False)]


def test_a_request_outside_the_drivers_ranges_is_refused_before_cooling(tmp_path: Path) -> None:
    from drivers.camera import SettingNotApplied

    camera = make_camera()
    warm_c = camera.state().temperature_c
    refused = ((request(settings=CaptureSettings(gain=9999)), r"gain 9999 is outside the driver's range 0\.\.580"),
               (request(settings=CaptureSettings(binning=3)), "3x3 binning is not supported"),
               (request(set_point_c=-80.0), r"set point -80\.0 °C is outside the driver's range"))
    for bad, match in refused:
        with pytest.raises(SettingNotApplied, match=match):
            capture_series(camera, bad, tmp_path, cooling=COOLING)
    assert camera.exposures == 0 and camera.state().set_point_c is None  # never cooled, never exposed
    assert camera.state().temperature_c == pytest.approx(warm_c, abs=0.5)
    assert names(tmp_path) == []


def test_a_series_larger_than_a_library_entry_may_hold_is_refused_at_once(tmp_path: Path) -> None:
    from daemon.library.keys import MAX_FRAMES_PER_KEY

    camera = make_camera()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"count must be 1..{MAX_FRAMES_PER_KEY}"):
        capture_series(camera, request(count=10**7), tmp_path, cooling=COOLING)
    assert time.perf_counter() - started < 1.0 and camera.exposures == 0


def test_resume_reads_the_folder_once_and_a_stop_ends_it(tmp_path: Path) -> None:
    camera = make_camera()
    capture_series(camera, request(count=2), tmp_path, cooling=COOLING)
    (tmp_path / "dark_0099.fits").write_bytes(b"not part of a 2-frame series")  # outside the series: ignored
    (tmp_path / "other_0001.fits").write_bytes(b"another series")
    again = capture_series(camera, request(count=3), tmp_path, cooling=COOLING)
    assert [(r.index, r.resumed) for r in again.frames] == [(1, True), (2, True), (3, False)]
    stop = threading.Event()
    stop.set()
    stopped = capture_series(camera, request(count=5), tmp_path, cooling=COOLING, stop=stop)
    assert stopped.stopped and camera.exposures == 3
