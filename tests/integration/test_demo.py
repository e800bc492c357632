"""``darkd demo`` (what ``make demo`` runs), end to end as a user runs it: real indiserver, simulated camera, job
engine, worker process. Checks the exit code, the printed summary and the library it leaves behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import requires_sim_driver

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              requires_sim_driver]

DARKD = Path(sys.executable).parent / "darkd"


def test_demo_builds_the_library_and_selects_masters(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([str(DARKD), "demo", "--workdir", str(tmp_path), "--frames-bias", "5", "--frames-dark", "4"],
                          capture_output=True, text=True, timeout=180)
    elapsed_s = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert elapsed_s < 180
    summary = re.search(r"summary: job (\d+) succeeded; frames captured (\d+), rejected (\d+); "
                        r"masters built (\d+)", out)
    assert summary is not None, out[-2000:]
    assert int(summary.group(2)) == 5 + 2 * 4 and int(summary.group(4)) == 3
    assert "verify: OK" in out
    lights = sorted(p.name for p in (tmp_path / "lights").glob("*.fits"))
    assert len(lights) == 4
    for light in lights:
        assert re.search(rf"{re.escape(light)}\s+-> entry \d+: .*master\.fits", out), light

    listing = subprocess.run([str(DARKD), "library", "--json", "--config", str(tmp_path / "darkd.toml")],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert sorted((e["kind"], e["exposure_s"]) for e in entries) == [("bias", 0.0), ("dark", 30.0), ("dark", 120.0)]
    for entry in entries:
        assert entry["status"] == "ready" and entry["frames"] == entry["frames_target"]
        assert Path(entry["master"]).is_file() and entry["set_point_c"] == -10.0
