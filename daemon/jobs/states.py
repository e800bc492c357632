"""The one home of the job model's vocabulary: job states, the allowed state changes, the user commands and the kinds.

Used by the queue (:mod:`daemon.jobs.queue` refuses a state change the table does not allow), the engine, the CLI
(``darkd jobs cancel|pause|resume``), the API's types and the metrics. This module imports nothing from darkd: it sits
at the bottom of the job layers, so the store may import it.

State machine::

    queued ──► running ──► succeeded | failed | cancelled
      │  ▲        │ ▲
      ▼  │        ▼ │ (resume: paused → queued)
      paused ◄────┘

``running → queued`` is the engine's own move when the daemon stops or restarts (the job resumes from its files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    """The state of a job (stored as its value)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(StrEnum):
    """What a job does; each kind has a module ``daemon.jobs.<...>`` (:data:`KIND_MODULES`)."""

    BUILD_LIBRARY = "build-library"
    INTEGRATE = "integrate"
    CALIBRATE = "calibrate"
    MEASURE = "measure"


JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)
JOB_KINDS: tuple[str, ...] = tuple(k.value for k in JobKind)
#: A job in one of these states holds its place in the queue (and a capture job its camera).
ACTIVE_STATES: frozenset[JobState] = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.PAUSED})
#: A job in one of these states is finished for good.
FINAL_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: Kinds that capture with the camera: at most one such job per camera is active at a time.
CAPTURE_KINDS: frozenset[JobKind] = frozenset({JobKind.BUILD_LIBRARY})
#: kind → module implementing ``Params`` (a pydantic model), ``validate(params, settings, index)`` and ``run(ctx)``.
KIND_MODULES: Mapping[str, str] = {
    JobKind.BUILD_LIBRARY.value: "daemon.jobs.build_library",
    JobKind.INTEGRATE.value: "daemon.jobs.integrate_job",
    JobKind.CALIBRATE.value: "daemon.jobs.calibrate_job",
    JobKind.MEASURE.value: "daemon.jobs.measure_job",
}

#: Every allowed state change: from → the states it may go to. Final states go nowhere.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.PAUSED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PAUSED,
                                 JobState.QUEUED}),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(from_state: str, to_state: str) -> bool:
    """Whether a job may go from ``from_state`` to ``to_state`` (staying in the same state is always allowed)."""
    if from_state == to_state:
        return True
    try:
        return JobState(to_state) in TRANSITIONS[JobState(from_state)]
    except ValueError:
        return False


@dataclass(frozen=True)
class Command:
    """A user's command on a job (REST, CLI): the states it applies to, where it leads and the step it shows."""

    name: str
    from_states: frozenset[JobState]
    to_state: JobState
    step: str

    @property
    def finishes(self) -> bool:
        return self.to_state in FINAL_STATES


COMMANDS: Mapping[str, Command] = {
    "cancel": Command("cancel", ACTIVE_STATES, JobState.CANCELLED, "cancelled"),
    "pause": Command("pause", frozenset({JobState.QUEUED, JobState.RUNNING}), JobState.PAUSED, "paused"),
    "resume": Command("resume", frozenset({JobState.PAUSED}), JobState.QUEUED, "queued (resumed)"),
}

