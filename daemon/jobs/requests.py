"""The body of ``POST /jobs``: one model per kind, told apart by ``kind`` (a pydantic discriminated union), so the
OpenAPI schema documents what each kind takes. The params models live with their kinds; this is where they meet."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from daemon.jobs.build_library import BuildLibraryParams
from daemon.jobs.calibrate_job import CalibrateParams
from daemon.jobs.integrate_job import IntegrateParams
from daemon.jobs.measure_job import MeasureParams
from daemon.jobs.params import StrictModel
from daemon.jobs.states import JobKind


class BuildLibraryJob(StrictModel):
    """Capture and integrate every key of a plan (``POST /library/plan``), unattended."""

    kind: Literal[JobKind.BUILD_LIBRARY]
    params: BuildLibraryParams


class IntegrateJob(StrictModel):
    """Rebuild the master of one library entry from its accepted frames."""

    kind: Literal[JobKind.INTEGRATE]
    params: IntegrateParams


class CalibrateJob(StrictModel):
    """Calibrate lights with their matched masters from the library."""

    kind: Literal[JobKind.CALIBRATE]
    params: CalibrateParams


class MeasureJob(StrictModel):
    """Measure the dark current from darks and biases."""

    kind: Literal[JobKind.MEASURE]
    params: MeasureParams


JobRequest = Annotated[BuildLibraryJob | IntegrateJob | CalibrateJob | MeasureJob, Field(discriminator="kind")]
