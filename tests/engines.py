"""A job engine for tests whose subject is not the worker process: master integration runs in a thread; and the
wait those tests share.

The real :class:`daemon.jobs.engine.JobEngine` spawns a worker process for integration (about 2 s to start one);
``tests/integration/test_jobs_sim.py`` and the crash-point tests keep that path, everything else may use this."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon.jobs.engine import JobEngine


class InThreadEngine(JobEngine):
    """The real engine, with master integration in a worker thread instead of a spawned process."""

    @property
    def pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1)  # type: ignore[assignment]
            return self._pool


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; ``AssertionError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")
