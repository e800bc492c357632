"""The job engine: a persistent queue of build-library, integrate, calibrate and measure jobs (see ``engine``)."""

from daemon.jobs.errors import JobConflict, JobInterrupted, JobNotFound

__all__ = ["JobConflict", "JobInterrupted", "JobNotFound"]
