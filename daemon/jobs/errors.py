"""Errors of the job engine (the REST layer maps them: ``JobNotFound`` → 404, ``JobConflict`` → 409)."""

from __future__ import annotations

from daemon.library.index import JobNotFoundError


class JobConflict(RuntimeError):
    """The request conflicts with the current state: a capture job already holds the camera, or the job is in a
    state that does not allow the operation (e.g. pausing a finished job). The message says which."""


class JobNotFound(JobNotFoundError):
    """No job with that id."""


class JobInterrupted(Exception):
    """Raised inside a running job when it has been asked to stop (cancel, pause, daemon shutdown).

    Deliberately not a :class:`drivers.camera.CameraError`, so it passes through the capture code unchanged (e.g. when
    raised from a temperature callback during a cooling wait)."""
