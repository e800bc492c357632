"""The library index on a real PostgreSQL server (Debian's ``postgresql``, a private throw-away cluster): migrations,
the catalog's usable-master rule, the job queue's compare-and-set claims from threads and from a second process,
and one entry per key when two processes plan the same key at once — what several darkd hosts sharing one index
rely on. The same behaviour is tested on SQLite in ``tests/unit``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from calib.frames import write_frame
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.library.models import Base
from daemon.library.store import alembic_config, make_engine, migrate
from daemon.settings import LibrarySettings
from tests.postgres_server import PostgresServer, postgres_or_skip

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
KEY = LibraryKey(camera="QHY CCD QHY163M", kind="dark", exposure_s=300, set_point_c=-10, gain=120, offset=30,
                 width_px=64, height_px=48)
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_or_skip() as server:
        yield server


@pytest.fixture
def url(pg: PostgresServer) -> str:
    return pg.create_database(f"lib{next(_numbers)}")


@pytest.fixture
def index(url: str, tmp_path: Path) -> Iterator[LibraryIndex]:
    idx = LibraryIndex.open(LibrarySettings(root=tmp_path / "lib", database_url=url))
    yield idx
    idx.close()


def test_migrations_build_the_models_schema_and_go_down_and_up_again(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    with engine.connect() as conn:
        assert {"entries", "frames", "jobs", "job_log", "alembic_version"} <= set(inspect(conn).get_table_names())
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0007"
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], f"models and migrations disagree on PostgreSQL: {diffs}"
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    migrate(engine)
    engine.dispose()


def test_the_usable_master_rule_on_postgresql(index: LibraryIndex) -> None:
    entry = index.upsert_entry(KEY, 1)
    master = write_frame(entry.master_target, np.full((48, 64), 1000.0, np.float32))
    index.set_master(entry.id, master, {"mean_adu": 1000.0})
    assert index.select_master(KEY).require().id == entry.id
    assert not index.select_master(KEY, light_temperature_c=-8.0).ok  # outside the 0.5 °C tolerance
    fli = LibraryKey(**{**KEY.to_dict(), "camera": "FLI CCD", "gain": None, "offset": None})
    assert index.upsert_entry(fli, 3).gain is None  # a camera without gain/offset controls: NULL columns
    with master.open("r+b") as fh:  # corrupt the master on disk: never used again, and marked bad
        fh.seek(4000)
        fh.write(b"\xff" * 64)
    assert not index.select_master(KEY).ok
    bad = index.get(entry.id)
    assert bad is not None and bad.status == "bad"


def test_only_one_thread_claims_a_queued_job(index: LibraryIndex) -> None:
    queue = JobQueue(index)
    job = queue.add_job("integrate", {})
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        if queue.transition_job(job.id, ["queued"], state="running", step=f"worker {n}") is not None:
            wins.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


CLAIMER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from daemon.jobs.queue import JobQueue
    from daemon.library.catalog import LibraryIndex
    from daemon.settings import LibrarySettings
    url, root, name, out = sys.argv[1:5]
    index = LibraryIndex.open(LibrarySettings(root=root, database_url=url))
    queue = JobQueue(index)
    claimed = []
    for job in queue.jobs("queued"):
        if queue.transition_job(job.id, ["queued"], state="running", step=name) is not None:
            claimed.append(job.id)
    Path(out).write_text(" ".join(map(str, claimed)))
    index.close()
""")


def test_two_processes_never_claim_the_same_job(index: LibraryIndex, url: str, tmp_path: Path) -> None:
    """Two daemons sharing one index: every queued job is claimed by exactly one of them."""
    queue = JobQueue(index)
    ids = [queue.add_job("integrate", {"n": n}).id for n in range(60)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outs = [tmp_path / f"claimed-{n}" for n in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(tmp_path / "lib"), f"host{n}", str(out)],
                              env=env) for n, out in enumerate(outs)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    claimed = [[int(i) for i in out.read_text().split()] for out in outs]
    assert sorted(claimed[0] + claimed[1]) == ids  # each job exactly once, none lost
    for job_id in ids:
        row = queue.get_job(job_id)
        assert row is not None and row.state == "running" and row.step in ("host0", "host1")


PLANNER = textwrap.dedent("""
    import sys
    from daemon.library.catalog import LibraryIndex
    from daemon.library.keys import LibraryKey
    from daemon.settings import LibrarySettings
    url, root = sys.argv[1:3]
    index = LibraryIndex.open(LibrarySettings(root=root, database_url=url))
    key = LibraryKey(camera="QHY CCD QHY163M", kind="dark", exposure_s=300, set_point_c=-10, gain=120, offset=30,
                     width_px=64, height_px=48)
    for _ in range(20):
        print(index.upsert_entry(key, 20).id)
    index.close()
""")


def test_two_processes_planning_the_same_key_get_one_entry(index: LibraryIndex, url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", PLANNER, url, str(tmp_path / "lib")], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    seen = {int(line) for out in outputs for line in out.split()}
    assert len(seen) == 1 and [e.id for e in index.entries()] == list(seen)
