"""``GET /metrics``: Prometheus text format from the runtime's own registry (read scope)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.models import ErrorOut
from daemon.api.routes import RuntimeDep

router = APIRouter(tags=["metrics"], dependencies=[Depends(require("read"))],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    body = await run_in_threadpool(runtime.metrics.render)  # the library collector queries the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)
