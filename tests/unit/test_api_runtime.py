"""The runtime: worker processes run at a lower priority than the daemon (so that integration cannot starve the
API), and the readiness checks report each failing part."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.runtime import WORKER_NICENESS, Runtime
from daemon.settings import Settings


def test_integration_workers_run_niced(tmp_path: Path) -> None:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    runtime = Runtime(settings, connect_camera=False, warm_on_shutdown=False).start()
    try:
        assert runtime.engine is not None
        parent = os.nice(0)
        assert runtime.engine.pool.submit(os.nice, 0).result(timeout=120) == min(parent + WORKER_NICENESS, 19)
    finally:
        runtime.stop()


def test_readiness_names_what_is_missing(tmp_path: Path) -> None:
    settings = Settings.model_validate({"library": {"root": str(tmp_path / "lib")}})
    runtime = Runtime(settings, connect_camera=False, start_engine=False).start()
    try:
        ready = runtime.readiness()
        assert ready["ready"] is False
        assert ready["checks"] == {"indi": False, "database": True, "index_writable": True, "library_writable": True,
                                   "library_space": True,
                                   "job_engine": True}
        assert ready["details"]["indi"] == "camera not connected yet"
    finally:
        runtime.stop()
