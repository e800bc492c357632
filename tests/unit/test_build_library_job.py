"""The ``build-library`` job through the real job engine on the in-process simulated camera (no indiserver).

Real parts: :class:`daemon.jobs.engine.JobEngine`, the SQLite index, ``capture_series``, ``calib.masters`` — only the
camera is :class:`drivers.sim.inprocess.SimCamera` and integrations run in a thread instead of a spawned process
(:class:`InThreadEngine`). Covers the success path, retakes, exhausted retakes, a reconnect mid-series, an unreachable
set point, cancel (the running exposure is aborted) and pause/resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.events import EventBus
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import partial_files, verify_library
from daemon.planning import Plan, plan_from_keys
from daemon.settings import CoolingSettings, LibrarySettings, Settings
from drivers.profiles import load_profile
from drivers.sim.inprocess import Clock, ManualClock, ScaledClock, SimCamera, SimFaults
from tests.conftest import SIM_DEVICE
from tests.engines import InThreadEngine, wait_for

PROFILE = "qhy163m-sim-small"
SET_POINT_C = -10.0
KEY = {"camera": SIM_DEVICE, "set_point_c": SET_POINT_C, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0,
       "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496, "height_px": 368}


def make_settings(root: Path) -> Settings:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=30.0, timeout_s=3600.0, unreachable_window_s=120.0,
                              reconnect_timeout_s=60.0, warm_up_at_end=False)
    return Settings(camera_profile=PROFILE, cooling=cooling,
                    library=LibrarySettings(root=root, frames_bias=4, frames_dark=3))


def make_plan(settings: Settings, keys: list[dict[str, Any]]) -> Plan:
    return plan_from_keys([{**KEY, **k} for k in keys], None, settings, ambient_c=None, readout_s=1.0)



class Rig:
    """Engine + index + camera; :meth:`run` submits a plan and waits for the job to end."""

    def __init__(self, root: Path, clock: Clock, **camera: Any) -> None:
        self.settings = make_settings(root)
        self.index = LibraryIndex.open(self.settings.library)
        self.camera = SimCamera(clock=clock, profile=load_profile(PROFILE), **camera)
        self.engine = InThreadEngine(self.settings, self.index, lambda: self.camera, EventBus(), poll_s=0.02).start()

    def submit(self, keys: list[dict[str, Any]], **params: Any) -> int:
        return self.engine.submit("build-library", {"plan": make_plan(self.settings, keys).to_dict(), **params}).id

    def run(self, keys: list[dict[str, Any]], **params: Any) -> Any:
        job_id = self.submit(keys, **params)
        wait_for(lambda: self.engine.get(job_id).state in FINAL_STATES, 30, "the job to end")
        return self.engine.get(job_id)

    def frame_names(self, entry_id: int) -> list[str]:
        entry = self.index.get(entry_id)
        assert entry is not None
        return sorted(p.name for p in Path(entry.frames_dir).glob("*.fits"))

    def close(self) -> None:
        self.engine.stop(timeout_s=10)
        self.index.close()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(clock: Clock | None = None, **camera: Any) -> Rig:
        rigs.append(Rig(tmp_path / "library", clock or ManualClock(), **camera))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_builds_bias_and_a_600_s_dark_in_simulated_time(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    started = time.perf_counter()
    job = rig.run([{"kind": "bias", "exposure_s": 0}, {"kind": "dark", "exposure_s": 600}], warm_up=True)
    assert job.state == "succeeded", job.error
    assert time.perf_counter() - started < 10.0
    assert rig.camera.clock.monotonic() > 3 * 600  # three 600 s darks, a cool-down and a warm-up
    assert (job.result["frames_captured"], job.result["masters_built"]) == (7, 2)
    assert job.progress_done == job.progress_total == 7
    for entry in rig.index.entries():
        assert entry.status == "ready" and entry.frames == entry.frames_target and entry.master is not None
    assert verify_library(rig.index).ok
    assert not rig.camera.state().cooler_on  # warm_up=True: warmed and switched off at the end


def test_a_rejected_frame_is_recorded_warned_and_retaken(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(faults=SimFaults(jolt_exposures=1, jolt_c=3.0))
    job = rig.run([{"kind": "dark", "exposure_s": 300}])
    assert job.state == "succeeded", job.error
    (entry,) = rig.index.entries()
    assert entry.frames == 3 and entry.frames_rejected == 1 and entry.status == "ready"
    assert any("frame 1 rejected: temperature" in w for w in job.warnings)
    rejected = [f for f in rig.index.frames_of(entry.id) if not f.quality_ok]
    assert len(rejected) == 1 and Path(rejected[0].path).parent.name == "rejected" and Path(rejected[0].path).is_file()
    assert rig.frame_names(entry.id) == ["dark_0001.fits", "dark_0002.fits", "dark_0003.fits"]


def test_exhausted_retakes_leave_the_entry_capturing_and_fail_the_job(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(faults=SimFaults(jolt_exposures=1000))
    job = rig.run([{"kind": "dark", "exposure_s": 300}], max_retakes=1)
    assert job.state == "failed" and "1 key(s) not built" in (job.error or "")
    assert any("rejected 2 times" in f for f in job.result["failures"])
    (entry,) = rig.index.entries()
    assert entry.status == "capturing" and entry.frames == 0 and entry.frames_rejected == 2
    # a later run with the fault gone continues the same entry
    rig.camera.faults.jolt_exposures = 0
    again = rig.run([{"kind": "dark", "exposure_s": 300}])
    assert again.state == "succeeded", again.error
    assert [e.id for e in rig.index.entries()] == [entry.id] and rig.index.get(entry.id).status == "ready"


def test_a_reconnect_mid_series_is_warned_and_loses_no_frame(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(faults=SimFaults(disconnect_exposures=1))
    job = rig.run([{"kind": "dark", "exposure_s": 120}])
    assert job.state == "succeeded", job.error
    assert any("camera reconnected 1 time(s)" in w for w in job.warnings)
    (entry,) = rig.index.entries()
    names = rig.frame_names(entry.id)
    assert names == ["dark_0001.fits", "dark_0002.fits", "dark_0003.fits"]
    assert rig.camera.reconnects == 1


def test_an_unreachable_set_point_is_skipped_and_the_rest_is_built(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(ambient_c=30.0)  # the TEC holds at most 38 °C below: −8 °C
    job = rig.run([{"kind": "dark", "exposure_s": 60, "set_point_c": -15.0},
                   {"kind": "dark", "exposure_s": 60, "set_point_c": -5.0}])
    assert job.state == "failed" and "1 key(s) not built" in (job.error or "")
    assert job.result["unreachable_c"] == [-15.0]
    assert any("set point -15 °C skipped" in w and "unreachable" in w for w in job.warnings)
    by_set_point = {e.set_point_c: e for e in rig.index.entries()}
    assert by_set_point[-5.0].status == "ready" and by_set_point[-15.0].frames == 0


def test_cancel_aborts_the_running_exposure(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(clock=ScaledClock(time_scale=1000.0))  # an 1800 s dark: 1.8 s of wall time
    job_id = rig.submit([{"kind": "dark", "exposure_s": 1800}])
    wait_for(lambda: rig.camera.state().exposing, 20, "the first exposure")
    started = time.monotonic()
    assert rig.engine.cancel(job_id).state == "cancelled"
    wait_for(lambda: job_id not in rig.engine._running, 10, "the job thread to end")
    assert time.monotonic() - started < 1.0 and rig.camera.aborted == 1
    (entry,) = rig.index.entries()
    assert entry.status == "capturing" and entry.frames == 0 and rig.frame_names(entry.id) == []
    assert partial_files(rig.index.layout.root) == []


def test_cancel_interrupts_the_cooling_wait(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(clock=ScaledClock(time_scale=20.0))  # cooling to −10 °C: about a minute of wall time
    job_id = rig.submit([{"kind": "dark", "exposure_s": 60}])
    wait_for(lambda: (rig.engine.get(job_id).step or "").startswith("cooling to -10 °C:"), 20, "the cooling wait")
    started = time.monotonic()
    rig.engine.cancel(job_id)
    wait_for(lambda: job_id not in rig.engine._running, 10, "the job thread to end")
    assert time.monotonic() - started < 1.0 and rig.engine.get(job_id).state == "cancelled"
    assert rig.camera.exposures == 0 and rig.camera.state().temperature_c > -5.0


def test_pause_and_resume_continue_the_same_series(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(clock=ScaledClock(time_scale=1000.0))  # a 300 s dark: 0.3 s of wall time
    job_id = rig.submit([{"kind": "dark", "exposure_s": 300, "frames": 5}])
    wait_for(lambda: rig.engine.get(job_id).progress_done >= 1, 20, "the first frame")
    rig.engine.pause(job_id)
    wait_for(lambda: job_id not in rig.engine._running, 10, "the job to stop")
    (entry,) = rig.index.entries()
    on_disk = rig.frame_names(entry.id)
    assert rig.engine.get(job_id).state == "paused" and 1 <= len(on_disk) < 5
    rig.engine.resume(job_id)
    wait_for(lambda: rig.engine.get(job_id).state in FINAL_STATES, 20, "the job to end")
    assert rig.engine.get(job_id).state == "succeeded"
    names = rig.frame_names(entry.id)
    assert names[:len(on_disk)] == on_disk and names == [f"dark_{i:04d}.fits" for i in range(1, 6)]
    assert verify_library(rig.index).ok


def test_a_master_changed_on_disk_is_reintegrated_from_its_frames_never_recaptured(
        rig_factory: Callable[..., Rig]) -> None:
    """Issue 15: a master found corrupt on use is marked bad; planning the key again shows it in progress with nothing
    to capture, and the build re-integrates the same entry's frames (same entry, same frame files)."""
    rig = rig_factory()
    assert rig.run([{"kind": "bias", "exposure_s": 0}]).state == "succeeded"
    (entry,) = rig.index.entries()
    frames_before = rig.frame_names(entry.id)
    master = Path(entry.master)
    raw = bytearray(master.read_bytes())
    raw[-4096:] = bytes(b ^ 0xFF for b in raw[-4096:])
    master.write_bytes(bytes(raw))
    assert rig.index.master_problem(entry) is not None
    bad = rig.index.get(entry.id)
    assert bad is not None and bad.status == "bad"

    keys = [{**KEY, "kind": "bias", "exposure_s": 0}]
    plan = plan_from_keys(keys, rig.index, rig.settings, ambient_c=None, readout_s=1.0)
    (item,) = plan.items
    assert (item.status, item.entry_id, item.frames_needed) == ("in-progress", entry.id, 0)

    job_id = rig.engine.submit("build-library", {"plan": plan.to_dict()}).id
    wait_for(lambda: rig.engine.get(job_id).state in FINAL_STATES, 30, "the job to end")
    job = rig.engine.get(job_id)
    assert job.state == "succeeded", job.error
    assert any("re-integrating its 4 good frames" in line for _, line in rig.engine.queue.job_log(job_id))
    rebuilt = rig.index.get(entry.id)
    assert rebuilt is not None and rebuilt.status == "ready" and rebuilt.master
    assert rig.index.master_problem(rebuilt) is None
    assert [e.id for e in rig.index.entries()] == [entry.id]  # no new entry
    assert rig.frame_names(entry.id) == frames_before  # nothing recaptured
    assert verify_library(rig.index).ok
