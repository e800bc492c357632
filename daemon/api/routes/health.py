"""``GET /health`` (the process answers) and ``GET /ready`` (INDI connected, database reachable, the index and the
library writable: a read-only, malformed or full index makes the daemon not ready, with the reason in ``details``).

Both are open (no token): they reveal no data, and supervisors/load balancers probe them without credentials.
``/ready`` answers 503 with the same body while a check fails.
"""

from __future__ import annotations

import time
from importlib import metadata

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from daemon.api.models import HealthOut, ReadyOut
from daemon.api.routes import RuntimeDep

router = APIRouter(tags=["health"])

try:
    VERSION = metadata.version("darkd")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"


@router.get("/health", response_model=HealthOut, summary="The daemon process is alive")
async def health(runtime: RuntimeDep) -> HealthOut:
    return HealthOut(version=VERSION, uptime_s=round(time.monotonic() - runtime.started_monotonic, 3))


@router.get("/ready", response_model=ReadyOut, summary="Ready to work: INDI connected, index and library writable",
            responses={503: {"model": ReadyOut, "description": "a check failed; see details"}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    result = await run_in_threadpool(runtime.readiness)
    body = ReadyOut(**result)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
