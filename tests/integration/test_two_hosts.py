"""Two daemons, one index (issue 17): two camera hosts share one PostgreSQL index and one library root.

Two indiservers, each with one ``indi_darkd_sim_ccd`` — the QHY163M twin and the ZWO ASI1600MM Pro twin
(``DARKD_SIM_VENDOR``; the simulator's device name follows the vendor) — and two daemon processes (JobEngine,
IndiCamera, spawn integration worker), each with ``[indi] device`` naming its own camera, on one real PostgreSQL
server (``tests/postgres_server.py``) and one library root. The plan holds keys for both cameras, split into one
build-library job per camera in the shared queue; each daemon claims only its camera's job. The QHY host is SIGKILLed
mid-series (with its worker) while the ASI host keeps building; the ASI host does not take the dead host's job (not
its camera) and never took it over when it started; the QHY host restarts and resumes from the files on disk.

The end: both jobs succeeded, exactly the planned frames (one entry per key, frame numbers 1..N, one index row per
frame), no temporary file, ``NCOMBINE`` = frames and ``darkd library verify --strict`` clean on the shared index.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from calib.frames import read_header
from daemon.events import EventBus
from daemon.indiserver import LocalIndiServer
from daemon.jobs.engine import JobEngine
from daemon.jobs.errors import JobConflict
from daemon.jobs.queue import JobQueue, JobRow
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.library.models import Frame
from daemon.library.verify import partial_files
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, IndiSettings, LibrarySettings, Settings
from drivers.factory import open_indi_camera
from tests.conftest import requires_sim_driver, sim_env
from tests.integration.test_jobs_sim import frame_names, wait_for
from tests.integration.test_jobs_sim import start_daemon as start_host
from tests.postgres_server import PostgresServer, postgres_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_sim_driver]

DARKD = str(Path(sys.executable).parent / "darkd")
TIME_SCALE = 300  # a 60 s dark takes 0.2 s of wall time
SET_POINT_C = -10.0
#: per host: the twin, its device name, the profile (None: detected) and the key settings that driver offers
HOSTS: dict[str, dict[str, Any]] = {
    "qhy": {"device": "QHY CCD QHY163M-Sim", "profile": "qhy163m-sim-small", "gain": 120, "offset": 30},
    "asi": {"device": "ZWO CCD ASI1600MM Pro", "profile": None, "gain": 139, "offset": 21},
}
DARK_FRAMES = 6
_databases = itertools.count(1)


def settings_for(root: Path, url: str, port: int, device: str, profile: str | None) -> Settings:
    cooling = CoolingSettings(tolerance_c=0.3, hold_s=1.0, timeout_s=60.0, unreachable_window_s=5.0,
                              reconnect_timeout_s=30.0, warm_up_at_end=False)
    return Settings(camera_profile=profile or "auto",
                    indi=IndiSettings(port=port, device=device, connect_timeout_s=20.0), cooling=cooling,
                    library=LibrarySettings(root=root, database_url=url, frames_bias=3, frames_dark=3))


def daemon_main(cfg: dict[str, Any]) -> int:
    """One camera host (run as a subprocess): the shared index, its own camera, a job engine; runs until every job
    for its camera has ended."""
    host = HOSTS[cfg["host"]]
    settings = settings_for(Path(cfg["root"]), cfg["url"], int(cfg["port"]), host["device"], host["profile"])
    index = LibraryIndex.open(settings.library)
    camera = open_indi_camera("127.0.0.1", int(cfg["port"]), host["device"], profile=host["profile"],
                              reconnect_timeout_s=30.0)
    engine = JobEngine(settings, index, lambda: camera, EventBus(), poll_s=0.1).start()
    queue = JobQueue(index)
    deadline = time.monotonic() + 120

    def mine() -> list[JobRow]:
        return [j for j in queue.jobs() if j.camera == host["device"]]

    while time.monotonic() < deadline and (not mine() or any(j.state not in FINAL_STATES for j in mine())):
        time.sleep(0.1)
    engine.stop(timeout_s=30)
    camera.disconnect()
    index.close()
    return 0


def start_daemon(cfg: dict[str, Any], log_path: Path) -> subprocess.Popen[bytes]:
    """:func:`daemon_main` of this module in a process of its own (see test_jobs_sim's ``start_daemon``)."""
    return start_host(cfg, log_path, module="tests.integration.test_two_hosts")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_or_skip() as server:
        yield server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, LocalIndiServer]]:
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(LocalIndiServer(env=sim_env(vendor=name, time_scale=TIME_SCALE),
                                                         log_path=tmp_path / f"indiserver-{name}.log"))
               for name in HOSTS}


def test_two_hosts_split_one_plan_on_one_postgresql_index_and_survive_a_kill(
        pg: PostgresServer, servers: dict[str, LocalIndiServer], tmp_path: Path) -> None:
    url = pg.create_database(f"twohosts{os.getpid()}x{next(_databases)}")
    root = tmp_path / "library"  # the shared library root (an NFS export between two hosts)
    root.mkdir()
    settings = {name: settings_for(root, url, servers[name].port, h["device"], h["profile"])
                for name, h in HOSTS.items()}
    index = LibraryIndex.open(settings["qhy"].library)
    queue = JobQueue(index)
    # the plan: a bias and a dark for each camera (partial keys, completed from each camera before capture) …
    keys = [{"camera": h["device"], "kind": kind, "exposure_s": exposure_s, "set_point_c": SET_POINT_C,
             "gain": h["gain"], "offset": h["offset"], **({"frames": DARK_FRAMES} if kind == "dark" else {})}
            for h in HOSTS.values() for kind, exposure_s in (("bias", 0), ("dark", 60))]
    plan = plan_from_keys(keys, index, settings["qhy"], ambient_c=20.0, readout_s=1.0)
    assert len(plan.work()) == 4
    # … split into one build-library job per camera, in the shared queue (what POST /jobs does on either host)
    submitter = JobEngine(settings["qhy"], index, lambda: pytest.fail("the submitter never captures"))
    jobs = {}
    for name, h in HOSTS.items():
        part = plan_from_keys([k for k in keys if k["camera"] == h["device"]], index, settings[name], ambient_c=20.0,
                              readout_s=1.0)
        jobs[name] = submitter.submit("build-library", {"plan": part.to_dict()}).id
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def cfg(name: str) -> dict[str, Any]:
        return {"host": name, "root": str(root), "url": url, "port": servers[name].port}

    def state(job_id: int) -> str:
        row = queue.get_job(job_id)
        assert row is not None
        return row.state

    def dark_frames(device: str) -> int:
        return sum(e.frames for e in index.entries(camera=device, kind="dark"))

    try:
        procs["qhy"] = start_daemon(cfg("qhy"), tmp_path / "qhy-1.log")
        wait_for(lambda: state(jobs["qhy"]) == "running" or procs["qhy"].poll() is not None, 60,
                 "the QHY host to claim its job")
        qhy_owner = queue.get_job(jobs["qhy"]).owner  # type: ignore[union-attr]
        procs["asi"] = start_daemon(cfg("asi"), tmp_path / "asi.log")  # starts while the QHY job runs
        wait_for(lambda: state(jobs["asi"]) != "queued" or procs["asi"].poll() is not None, 60,
                 "the ASI host to claim its job")
        assert queue.get_job(jobs["qhy"]).owner == qhy_owner  # type: ignore[union-attr]  # not taken at its start
        wait_for(lambda: dark_frames(HOSTS["qhy"]["device"]) >= 2 or procs["qhy"].poll() is not None, 90,
                 "two QHY dark frames")
        os.killpg(procs["qhy"].pid, signal.SIGKILL)  # the QHY host and its integration worker, mid-series
        assert procs["qhy"].wait(timeout=10) == -signal.SIGKILL
        assert 2 <= dark_frames(HOSTS["qhy"]["device"]) < DARK_FRAMES
        # the ASI host goes on with its own camera's keys; it may release the dead host's job (its process is gone
        # from this machine) but never runs it: not its camera. The QHY host restarts and resumes it.
        procs["qhy"] = start_daemon(cfg("qhy"), tmp_path / "qhy-2.log")
        for name, log_name in (("asi", "asi.log"), ("qhy", "qhy-2.log")):
            assert procs[name].wait(timeout=120) == 0, (tmp_path / log_name).read_text()[-3000:]
        for name, job_id in jobs.items():
            job = queue.get_job(job_id)
            assert job is not None and job.state == "succeeded", (name, job and job.error, job and job.warnings,
                                                                   queue.job_log(job_id)[-10:])
        owners = {name: queue.get_job(job_id).owner for name, job_id in jobs.items()}  # type: ignore[union-attr]
        assert len({qhy_owner, *owners.values()}) == 3  # the QHY host before and after the kill, the ASI host
        qhy_log = [line for _, line in queue.job_log(jobs["qhy"])]
        assert sum("queued again" in line for line in qhy_log) == 1, qhy_log  # released once, after the kill
        assert not any("queued again" in line for _, line in queue.job_log(jobs["asi"]))

        entries = index.entries()
        assert sorted((e.camera, e.kind) for e in entries) == sorted((h["device"], kind) for h in HOSTS.values()
                                                                     for kind in ("bias", "dark"))
        for entry in entries:
            expected = [f"{entry.kind}_{i:04d}.fits" for i in range(1, entry.frames_target + 1)]
            assert frame_names(index, entry.id) == expected, entry.slug
            assert entry.status == "ready" and entry.frames == entry.frames_target
            assert int(read_header(entry.master)["NCOMBINE"]) == entry.frames_target  # type: ignore[arg-type]
            with index.read_session() as s:  # one index row per frame number
                rows = s.execute(select(Frame.index, func.count()).where(Frame.entry_id == entry.id,
                                                                         Frame.quality_ok.is_(True))
                                 .group_by(Frame.index)).all()
            assert sorted(rows) == [(i, 1) for i in range(1, entry.frames_target + 1)]
        assert partial_files(root) == []
        config = tmp_path / "darkd.toml"
        config.write_text(f'[library]\nroot = "{root}"\ndatabase_url = "{url}"\n')
        result = subprocess.run([DARKD, "library", "verify", "--strict", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        index.close()


def test_two_hosts_submitting_for_one_camera_at_once_get_one_capture_job(pg: PostgresServer, tmp_path: Path) -> None:
    """The one-capture-job-per-camera check and the insert share a transaction under a per-camera advisory lock:
    eight connections (as many hosts) submitting for one camera at the same instant leave exactly one job."""
    url = pg.create_database(f"submit{os.getpid()}x{next(_databases)}")
    indexes = [LibraryIndex.open(LibrarySettings(root=tmp_path / "lib", database_url=url)) for _ in range(8)]
    barrier = threading.Barrier(len(indexes))
    outcomes: list[str] = []

    def submit(index: LibraryIndex) -> None:
        barrier.wait()
        try:
            JobQueue(index).add_job("build-library", {}, camera="ZWO CCD ASI1600MM Pro",
                                    conflicts=lambda j: j.kind == "build-library")
            outcomes.append("added")
        except JobConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(index,)) for index in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert sorted(outcomes) == ["added"] + ["refused"] * 7
        assert len(JobQueue(indexes[0]).jobs()) == 1
    finally:
        for index in indexes:
            index.close()
