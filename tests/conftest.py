"""Shared fixtures: a real indiserver running the simulated QHY163M (reduced sensor, fast time scale)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.indi_server import IndiServer, running_indiserver

SIM_DRIVER = "indi_darkd_sim_ccd"
SIM_DEVICE = "QHY CCD QHY163M-Sim"


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
