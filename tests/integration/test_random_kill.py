"""Crash safety at RANDOM moments (issue 15): the daemon's whole process group (the daemon and its integration worker)
is SIGKILLed at least :data:`KILLS` times after random delays while it builds a real library on the simulator, and
restarted each time; then it runs to the end. The end state must be exact: the planned frames ``<kind>_0001 … N``
once each (one index row per frame number, ``FRAMENUM`` matching), no temporary file, every entry ``ready`` with
``NCOMBINE`` = frames, and ``darkd library verify --strict`` exits 0.

Unlike tests/integration/test_crash_points.py (chosen moments), nothing here aims: the delays are drawn from a seeded
random generator (the seed is logged and can be changed with ``DARKD_RANDOM_KILL_SEED``), so kills land wherever the
daemon happens to be — starting up, connecting, cooling, exposing, downloading, writing a frame or the master,
recording in the index. Real parts: indiserver + ``indi_darkd_sim_ccd`` (small frames, time scale 300), the daemon
subprocess of test_jobs_sim.py (JobEngine, IndiCamera, spawned integration worker, SQLite index), the ``darkd`` CLI.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from daemon.indiserver import LocalIndiServer
from daemon.jobs.queue import JobQueue
from daemon.library.verify import partial_files
from tests.integration.test_crash_points import Rig, check_library
from tests.integration.test_jobs_sim import (
    frame_names,
    make_plan,
    server,  # noqa: F401  (pytest fixture)
)
from tests.integration.test_jobs_sim import pytestmark as sim_marks

pytestmark = [*sim_marks, pytest.mark.slow]

log = logging.getLogger(__name__)
KILLS = 10
#: Random delay from each (re)start of the daemon process to its kill (s): the start-up (imports, index, INDI
#: connection: 1-3 s on a loaded machine), cooling, exposures, downloads, frame and master writes all fall inside.
DELAY_S = (0.3, 4.0)
#: The build: 4 darks of 60 s (0.2 s wall each) on small frames. When a build ends before KILLS kills, the next key
#: of MORE_KEYS is queued as a further build-library job (as a client would) and the killing goes on, so the test
#: always makes KILLS kills during builds, however fast the machine, and stays short.
KEYS = [{"kind": "dark", "exposure_s": 60}]
MORE_KEYS = [{"kind": "dark", "exposure_s": float(s)} for s in (30, 90, 120, 150, 180, 210, 240, 270, 300, 330)]


def test_random_sigkills_during_a_library_build_leave_an_exact_library(server: LocalIndiServer,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("DARKD_RANDOM_KILL_SEED", "15"))
    rng = random.Random(seed)
    rig = Rig(server.port, tmp_path, KEYS)
    kills: list[tuple[float, str]] = []
    queue = JobQueue(rig.index)

    def runs_logged() -> int:
        jobs = queue.jobs() if (rig.root / "index.sqlite3").exists() else []
        return sum(line in ("started", "resumed") for job in jobs for _, line in queue.job_log(job.id))

    def start_and_wait_for_the_job() -> subprocess.Popen[bytes]:
        """Start the daemon and wait until it runs a job (only where the job is new: a kill before the daemon has
        queued it would leave nothing to resume)."""
        before = runs_logged()
        proc = rig.start()
        deadline = time.monotonic() + 60
        while runs_logged() == before and proc.poll() is None:
            assert time.monotonic() < deadline, rig.log_tail()
            time.sleep(0.02)
        return proc

    try:
        proc = start_and_wait_for_the_job()
        while len(kills) < KILLS:
            delay_s = rng.uniform(*DELAY_S)
            try:
                proc.wait(timeout=delay_s)
            except subprocess.TimeoutExpired:
                rig.kill()
            else:  # the build ended before this kill: queue the next key's build and go on
                plan = make_plan(rig.settings, [{**KEYS[0], **MORE_KEYS[len(queue.jobs()) - 1]}])
                queue.add_job("build-library", {"plan": plan.to_dict()}, camera=plan.work()[0].key.camera)
                proc = start_and_wait_for_the_job()
                continue
            entries = rig.index.entries() if (rig.root / "index.sqlite3").exists() else []
            state = ", ".join(f"{e.kind} {e.status} {e.frames}/{e.frames_target}" for e in entries) or "no entry yet"
            kills.append((round(delay_s, 2), state))
            for entry in entries:  # between two runs: never a frame twice, never more than one not yet recorded
                on_disk = frame_names(rig.index, entry.id)
                assert on_disk == sorted(set(on_disk))
                assert 0 <= len(on_disk) - entry.frames <= 1, (on_disk, entry.frames)
            proc = rig.start()
        log.info("random-kill seed %d: %d kill(s) (delay s, state after): %s", seed, len(kills), kills)
        assert len(kills) >= KILLS, f"the build ended after {len(kills)} kill(s): {kills}"
        assert proc.wait(timeout=120) == 0, rig.log_tail()
        assert partial_files(rig.root) == []
        check_library(rig)
        assert len(rig.index.entries()) == len(queue.jobs())  # one entry per key: a key was never started again
    finally:
        rig.close()
