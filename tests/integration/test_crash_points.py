"""Crash safety at CHOSEN moments (issue 6): the daemon's whole process group is SIGKILLed

1. while the simulated camera's ``CCD_EXPOSURE`` is Busy (mid-series, an exposure in flight), and after the
   countdown ran out but before the daemon starts writing that frame (the driver renders/sends, the daemon decodes),
2. the moment a frame's atomic-write temporary file (``.<name>.*.part``, calib.frames.atomic_file) appears, and
   the moment a new frame is renamed into place (before its index row is written),
3. the moment the master's temporary file (``.master.fits.*.part``, calib.integration.write_integration) appears,
4. the moment the master is renamed into place, before the worker records it in the index, and the moment the index
   says ``ready`` while the job is still running (the restart must keep that master, not rebuild it),

then restarted until the job ends. After the last run: exactly the planned frames (``dark_0001 … dark_N``, one index
row per frame number), no temporary file, ``NCOMBINE`` = frames, and ``darkd library verify --strict`` exits 0.
No failpoints in production code: the test watches the camera (a second INDI client) and the file system.

A write window is only a few milliseconds on SMALL frames, so a watch may see the temporary file but the kill land
after the rename; each kill is classified as *hit* (the temporary file or the unrecorded master is still there after
the process group is dead) or *miss*, a few attempts are made, and at least one hit is required.

Real parts: indiserver + ``indi_darkd_sim_ccd`` (SMALL, time scale 300), the daemon of test_jobs_sim.py run as a
subprocess (JobEngine, IndiCamera, spawn integration worker, SQLite index), the ``darkd`` CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calib.frames import read_frame, read_header
from daemon.indiserver import LocalIndiServer
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.verify import partial_files
from tests.conftest import SIM_DEVICE
from tests.integration.test_jobs_sim import (
    TIME_SCALE,
    frame_names,
    make_plan,
    server,  # noqa: F401  (pytest fixture)
    settings_for,
    start_daemon,
    wait_for,
)
from tests.integration.test_jobs_sim import pytestmark as sim_marks

pytestmark = [*sim_marks, pytest.mark.slow]

log = logging.getLogger(__name__)
DARKD = str(Path(sys.executable).parent / "darkd")
ATTEMPTS = 3  # kills tried per write window
MASTER_RIGS = 3  # libraries tried for the master-write kill (test_kill_during_the_master_write)
RUN_TIMEOUT_S = 60.0


class Rig:
    """A library root, its plan and the daemon subprocesses started on it (killed/awaited by the test)."""

    def __init__(self, port: int, tmp_path: Path, keys: list[dict[str, Any]]) -> None:
        self.tmp_path = tmp_path
        self.root = tmp_path / "library"
        self.settings = settings_for(self.root, port)
        self.cfg: dict[str, Any] = {"root": str(self.root), "port": port,
                                    "plan": make_plan(self.settings, keys).to_dict()}
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.index = LibraryIndex(self.settings.library)

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        cfg = self.cfg if self.runs == 1 else {**self.cfg, "plan": None}  # later runs resume what the index holds
        self.proc = start_daemon(cfg, self.tmp_path / f"daemon{self.runs}.log")
        return self.proc

    def kill(self) -> None:
        """SIGKILL the daemon and its integration worker (one process group) and wait until the daemon is gone."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self) -> None:
        """Restart and let the job run to its end."""
        proc = self.start()
        log_path = self.tmp_path / f"daemon{self.runs}.log"
        assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.index.close()

    def log_tail(self) -> str:
        return (self.tmp_path / f"daemon{self.runs}.log").read_text()[-3000:]

    def wait_entry(self) -> Any:
        """The (single) library entry, once the running daemon has created it."""
        assert self.proc is not None
        wait_for(lambda: self.entry() is not None or self.proc.poll() is not None, RUN_TIMEOUT_S, "the entry")
        assert self.entry() is not None, self.log_tail()
        return self.entry()

    def entry(self) -> Any:
        entries = self.index.entries() if (self.root / "index.sqlite3").exists() else []
        return entries[0] if entries else None


def kill_when(rig: Rig, seen: Callable[[], bool], timeout_s: float = RUN_TIMEOUT_S) -> bool:
    """Busy-poll ``seen`` (no sleep: the windows are milliseconds) and SIGKILL the group the moment it is true.
    False when the daemon exited (job done) or the timeout passed without it."""
    assert rig.proc is not None
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        if seen():
            rig.kill()
            return True
        n += 1
        if n % 200 == 0 and rig.proc.poll() is not None:
            return False
    rig.kill()
    return False


def temp_file(directory: Path, prefix: str) -> Callable[[], bool]:
    """True while ``directory`` holds an atomic-write temporary file ``<prefix>*.part``."""

    def seen() -> bool:
        try:
            with os.scandir(directory) as it:
                return any(e.name.startswith(prefix) and e.name.endswith(".part") for e in it)
        except FileNotFoundError:
            return False

    return seen


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def check_library(rig: Rig) -> None:
    """The end state every crash must lead to: exact frames, no partials, NCOMBINE, verify --strict."""
    jobs = JobQueue(rig.index).jobs()
    assert jobs
    for job in jobs:
        assert job.state == "succeeded", job.error
    entries = rig.index.entries()
    assert entries
    for entry in entries:
        expected = [f"{entry.kind}_{i:04d}.fits" for i in range(1, entry.frames_target + 1)]
        assert frame_names(rig.index, entry.id) == expected
        frames = rig.index.frames_of(entry.id, accepted_only=True)
        assert sorted(f.index for f in frames) == list(range(1, entry.frames_target + 1))  # no duplicate numbers
        assert sorted(Path(f.path).name for f in frames) == expected
        for f in frames:
            assert int(read_header(f.path)["FRAMENUM"]) == f.index
            assert read_frame(f.path).data.shape == (entry.key.height_px, entry.key.width_px)  # complete image
        assert entry.status == "ready" and entry.frames == entry.frames_target
        assert int(read_header(entry.master)["NCOMBINE"]) == entry.frames_target
    assert partial_files(rig.root) == []
    config = rig.tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{rig.root}"\n')
    result = subprocess.run([DARKD, "library", "verify", "--strict", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ 1. exposure in flight
def test_kill_while_the_exposure_is_busy_and_during_the_download(server: LocalIndiServer,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    from tests.integration.indi_client_helper import SimClient

    # 1 s wall per exposure; 8 frames: after the two exposure kills (at >= 1 and >= 3 frames) at least four exposures
    # are left for the download window, which lasts only the render and upload of one SMALL frame (a few ms)
    rig = Rig(server.port, tmp_path, [{"kind": "dark", "exposure_s": 300, "frames": 8}])
    watcher = SimClient(server.port, SIM_DEVICE).start()  # a second client: sees CCD_EXPOSURE, takes no BLOBs
    kills = []
    try:
        for frames_before in (1, 3):  # two kills: after the 1st and after the 3rd frame, mid-exposure each time
            rig.start()

            def busy(at_least: int = frames_before) -> bool:
                entry = rig.entry()
                if entry is None or entry.frames < at_least or "CCD_EXPOSURE" not in watcher.props:
                    return False
                snap = watcher.snap("CCD_EXPOSURE")
                return snap.state == "Busy" and snap.values["CCD_EXPOSURE_VALUE"] > 0

            wait_for(lambda b=busy: b() or rig.proc.poll() is not None, RUN_TIMEOUT_S, "an exposure in flight")
            assert busy(), rig.log_tail()
            rig.kill()
            entry = rig.entry()
            on_disk = frame_names(rig.index, entry.id)
            kills.append((entry.frames, len(on_disk)))
            assert watcher.snap("CCD_EXPOSURE").state == "Busy"  # the camera is still exposing for a dead client
            assert entry.frames < 8 and len(on_disk) == entry.frames  # the frame in flight is not on disk
            assert partial_files(rig.root) == []
        log.info("exposure kills (recorded, on disk): %s", kills)
        assert kills[1][0] > kills[0][0]

        # the download: the countdown of an exposure has run out (driver rendering/sending the BLOB, daemon decoding
        # it) and the daemon has not started writing that frame yet
        rig.start()
        frames_dir = Path(rig.wait_entry().frames_dir)
        state = {"seq": -1, "seen_s": 0.0, "files": -1}

        def downloading() -> bool:
            snap = watcher.snap("CCD_EXPOSURE")
            now = time.monotonic()
            if snap.seq != state["seq"]:
                state["seq"], state["seen_s"] = snap.seq, now
                state["files"] = sum(1 for _ in frames_dir.iterdir())
            left_s = snap.values["CCD_EXPOSURE_VALUE"] / TIME_SCALE
            return snap.state == "Busy" and state["files"] >= 1 and now > state["seen_s"] + left_s + 0.003

        assert kill_when(rig, downloading), rig.log_tail()
        files_after = sorted(p.name for p in frames_dir.iterdir())
        download_hit = len(files_after) == state["files"] and not partial_files(frames_dir)
        log.info("download kill: %s (%d file(s) before, %s after)", "hit" if download_hit else "miss",
                 state["files"], files_after)
        rig.finish()
        check_library(rig)
    finally:
        watcher.stop()
        rig.close()


# ------------------------------------------------------------------------------------------ 2. frame atomic write
def test_kill_during_a_frames_atomic_write(server: LocalIndiServer, tmp_path: Path) -> None:  # noqa: F811
    rig = Rig(server.port, tmp_path, [{"kind": "dark", "exposure_s": 30, "frames": 10}])
    hits = misses = 0
    try:
        for _ in range(ATTEMPTS):
            rig.start()
            entry = rig.wait_entry()
            frames_dir = Path(entry.frames_dir)
            if not kill_when(rig, temp_file(frames_dir, ".dark_")):
                break  # the series ended before another write was caught
            leftovers = partial_files(frames_dir)
            hits, misses = hits + bool(leftovers), misses + (not leftovers)
            for path in frames_dir.glob("*.fits"):  # whatever was renamed into place is a complete frame
                read_frame(path)
            assert len(leftovers) <= 1
            assert len(frame_names(rig.index, entry.id)) - rig.entry().frames in (0, 1)  # at most 1 not yet recorded
        log.info("frame-write kills: %d hit(s), %d miss(es)", hits, misses)
        assert hits >= 1, f"no kill landed inside a frame write ({misses} misses)"

        # a frame renamed into place (a new dark_NNNN.fits) but not yet recorded in the index
        unrecorded = 0
        for _ in range(ATTEMPTS):
            rig.start()
            entry = rig.wait_entry()
            known = {p.name for p in frames_dir.glob("*.fits")}

            def new_frame(known: set[str] = known) -> bool:
                with os.scandir(frames_dir) as it:
                    return any(e.name.endswith(".fits") and e.name not in known for e in it)

            if not kill_when(rig, new_frame):
                break
            unrecorded += len(frame_names(rig.index, entry.id)) > rig.entry().frames
        log.info("frame-rename kills: %d left a frame on disk that the index did not record yet", unrecorded)
        assert unrecorded >= 1, "no kill landed between a frame's rename and its index row"
        rig.finish()
        check_library(rig)
    finally:
        rig.close()


# ------------------------------------------------------------------------------------------ 3./4. the master
def master_rig(port: int, tmp_path: Path) -> tuple[Rig, Path]:
    """4 SMALL darks, then the first run is started and the entry's ``master.fits`` target returned."""
    rig = Rig(port, tmp_path, [{"kind": "dark", "exposure_s": 30, "frames": 4}])
    rig.start()
    return rig, Path(rig.wait_entry().master_target)


def test_kill_during_the_master_write(server: LocalIndiServer, tmp_path: Path) -> None:  # noqa: F811
    """Kills the moment the master's temporary file appears. A library whose job ended without the watch ever seeing
    that file (the window is milliseconds, and on two busy cores the watching thread may not run during it: seen
    once in a fresh-clone run) has no write left to catch, so the test starts over on a new library, up to
    ``MASTER_RIGS`` times."""
    hits = misses = 0
    for trial in range(MASTER_RIGS):
        (tmp_path / f"rig{trial}").mkdir()
        rig, master = master_rig(server.port, tmp_path / f"rig{trial}")
        try:
            for attempt in range(ATTEMPTS):
                if attempt:
                    rig.start()  # the restart finds the entry 'integrating' and rebuilds the master from the frames
                if not kill_when(rig, temp_file(master.parent, f".{master.name}.")):
                    break
                leftovers = partial_files(master.parent)
                hit = bool(leftovers) and not master.exists()
                hits, misses = hits + hit, misses + (not hit)
                entry = rig.entry()
                assert frame_names(rig.index, entry.id) == [f"dark_{i:04d}.fits" for i in range(1, 5)]
                if hit:
                    assert entry.status == "integrating" and entry.master is None
            log.info("master-write kills: %d hit(s), %d miss(es) so far, library %d, %d run(s)", hits, misses,
                     trial + 1, rig.runs)
            rig.finish()
            check_library(rig)
        finally:
            rig.close()
        if hits:
            break
    assert hits >= 1, f"no kill landed inside the master write ({misses} misses in {trial + 1} libraries)"


def test_kill_after_the_master_rename_and_after_the_index_update(server: LocalIndiServer,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """(4a) Kills between the master's rename into place and its index update; (4b) after the index update, before
    the job ends. A (4a) kill that lands after the index update (a miss: the window is milliseconds, and on two busy
    cores the watching thread may not run during it; seen once in a fresh-clone run) leaves no window in that
    library, so its job is finished and checked, and (4a) starts over on a new library, up to ``MASTER_RIGS``
    times."""
    hits = misses = 0
    rig: Rig | None = None
    try:
        for trial in range(MASTER_RIGS):
            if rig is not None:
                rig.close()
            (tmp_path / f"rig{trial}").mkdir()
            rig, master = master_rig(server.port, tmp_path / f"rig{trial}")
            # (4a) master.fits renamed into place (new inode), the worker has not yet recorded it with set_master
            for attempt in range(ATTEMPTS):
                before = inode(master)
                if attempt:
                    rig.start()
                if not kill_when(rig, lambda b=before, m=master: inode(m) not in (None, b)):
                    break
                entry = rig.entry()
                hit = entry.master is None
                hits, misses = hits + hit, misses + (not hit)
                if hit:
                    assert entry.status == "integrating" and int(read_header(master)["NCOMBINE"]) == 4
                else:
                    break  # recorded: the job is about to succeed, nothing left to rebuild
            log.info("master-recorded kills: %d hit(s), %d miss(es) so far, library %d", hits, misses, trial + 1)
            if hits:
                break
            rig.finish()
            check_library(rig)
        assert hits >= 1, f"no kill landed between the master's rename and its index update ({misses} misses)"
        assert rig is not None

        # (4b) the worker recorded the master (entry ready), the daemon has not yet ended the job
        rig.start()
        job_id = JobQueue(rig.index).jobs()[0].id
        caught = kill_when(rig, lambda: rig.entry().status == "ready")
        still_running = caught and JobQueue(rig.index).get_job(job_id).state == "running"
        log.info("after-index kill: caught=%s, job still running=%s", caught, still_running)
        recorded = rig.entry().master_sha256
        if still_running:
            rig.finish()
        check_library(rig)
        assert rig.entry().master_sha256 == recorded  # a recorded master is kept, not rebuilt
    finally:
        if rig is not None:
            rig.close()
