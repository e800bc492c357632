"""Errors of the job model, one class per condition. The REST layer maps them: :class:`JobNotFound` → 404,
:class:`JobConflict` → 409, :class:`JobStoreError` → 503; ``darkd jobs`` to exit codes 1, 1 and 2.

This module imports nothing from darkd (the queue at the bottom of the job layers raises these).
"""

from __future__ import annotations


class JobNotFound(LookupError):
    """No job with that id."""


class JobConflict(RuntimeError):
    """The request conflicts with the current state: a capture job already holds the camera, or the job is in a
    state that does not allow the operation (e.g. pausing a finished job). The message says which."""


class JobStoreError(RuntimeError):
    """The job queue's database cannot be read or written (read-only, malformed or full); the message says why."""


class JobInterrupted(Exception):
    """Raised inside a running job when it has been asked to stop (cancel, pause, daemon shutdown).

    Deliberately not a :class:`drivers.camera.CameraError`, so it passes through the capture code unchanged (e.g. when
    raised from a temperature callback during a cooling wait)."""
