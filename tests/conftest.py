"""Shared fixtures and markers: a real indiserver running the simulated QHY163M (reduced sensor, fast time scale), the
skip markers of the tests that need INDI programs (one definition instead of a ``skipif`` per file), and the library
settings on both index back-ends (SQLite, and a real PostgreSQL server: ``library_settings``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.settings import LibrarySettings
from tests.indi_server import IndiServer, running_indiserver
from tests.postgres_server import PostgresServer, postgres_or_skip

SIM_DRIVER = "indi_darkd_sim_ccd"
SIM_DEVICE = "QHY CCD QHY163M-Sim"
VENV_BIN = Path(sys.executable).parent  # console scripts of the project (indi_darkd_sim_ccd, darkd)


def missing_programs(*names: str) -> list[str]:
    """The programs among ``names`` found neither in the project's venv nor on ``PATH``."""
    search = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
    return [name for name in names if shutil.which(name, path=search) is None]


def requires(*programs: str) -> pytest.MarkDecorator:
    """Skip unless every program is installed (the skip reason names the missing ones)."""
    missing = missing_programs(*programs)
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} (make venv; Debian indi-bin)")


#: the real indiserver with our simulated QHY163M driver
requires_sim_driver = requires("indiserver", SIM_DRIVER)
#: the real indiserver with Debian's stock ``CCD Simulator`` (indi-bin)
requires_indi = requires("indiserver", "indi_simulator_ccd")


def sim_env(**overrides: str | float | int) -> dict[str, str]:
    """Environment for the simulated camera: SMALL sensor, time scale 100, seed 1, unless overridden."""
    env = {"DARKD_SIM_SENSOR": "SMALL", "DARKD_SIM_TIME_SCALE": "100", "DARKD_SIM_SEED": "1",
           "DARKD_SIM_AMBIENT_C": "20"}
    env.update({f"DARKD_SIM_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[IndiServer]:
    """A fresh indiserver + simulated QHY163M for one test (SMALL sensor, time scale 100)."""
    with running_indiserver([SIM_DRIVER], env=sim_env(), log_path=tmp_path / "indiserver.log") as server:
        yield server


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (Debian's ``postgresql``) for the whole run of one worker; skipped with the reason
    when the package is missing."""
    with postgres_or_skip() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def library_settings(request: pytest.FixtureRequest, tmp_path: Path) -> LibrarySettings:
    """The library of one test on each index back-end: SQLite in the root, and a fresh database on the real
    PostgreSQL server (issue 17: the library and job-queue tests run on both)."""
    if request.param == "sqlite":
        return LibrarySettings(root=tmp_path / "lib")
    server: PostgresServer = request.getfixturevalue("postgres")
    return LibrarySettings(root=tmp_path / "lib",
                           database_url=server.create_database(f"t{os.getpid()}_{next(_databases)}"))
