"""``GET /api/v1/watch`` (read scope): the closed loop's state (:mod:`daemon.watch`): the watched folders, the lights
waiting for a dark or put aside (unbuildable, failed, with the reason), the standing plan's keys and the estimated
time to build the missing ones. Live changes come as ``watch`` events on ``GET /api/v1/events``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.models import ErrorOut
from daemon.api.routes import RuntimeDep
from daemon.watch import watch_status

router = APIRouter(tags=["watch"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.get("/watch", dependencies=[Depends(require("read"))], summary="The closed loop: waiting lights, missing keys")
async def watch(runtime: RuntimeDep) -> dict[str, Any]:
    running = runtime.watch is not None and runtime.watch.running
    return await run_in_threadpool(watch_status, runtime.index, runtime.settings, running=running)
