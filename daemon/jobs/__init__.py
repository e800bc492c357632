"""Jobs: build-library, integrate, calibrate and measure, run from a persistent queue.

Map: ``states`` (states, transitions, commands, kinds; imports nothing from darkd) · ``errors`` (one exception per
condition) · ``queue`` (the ``jobs``/``job_log`` tables) · ``params`` (the base of typed params) · one module per kind
with its ``Params`` model, ``validate`` and ``run`` · ``requests`` (the ``POST /jobs`` union) · ``engine`` (dispatcher,
threads, cancel/pause/resume).
"""

from daemon.jobs.errors import JobConflict, JobInterrupted, JobNotFound, JobStoreError

__all__ = ["JobConflict", "JobInterrupted", "JobNotFound", "JobStoreError"]
