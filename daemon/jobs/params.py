"""The common base of typed job params: unknown fields refused, numbers finite, the start window every kind accepts.

Each kind's params model lives with its kind module (``BuildLibraryParams`` in :mod:`daemon.jobs.build_library`,
``IntegrateParams``, ``CalibrateParams``, ``MeasureParams``); :mod:`daemon.jobs.requests` assembles them into the
discriminated union that ``POST /jobs`` documents. The engine checks every submit against the kind's model, whichever
way it came in (REST, CLI, demo).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: Bounds shared by several kinds.
MAX_ID = 2**62
MAX_PATH_CHARS = 4096
MAX_PATHS = 100_000

Path = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class StrictModel(BaseModel):
    """Unknown fields are refused, NaN and infinity too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobParams(StrictModel):
    """Params every kind accepts: the start window (ISO 8601; a time without zone is UTC)."""

    not_before: datetime | None = Field(default=None, description="do not start before this time")
    not_after: datetime | None = Field(default=None, description="do not start (and pause a running job) after this")
