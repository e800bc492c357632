"""``GET /camera``: the camera snapshot the runtime's monitor keeps (no INDI round trip on the request path)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from daemon.api.auth import require
from daemon.api.models import CameraOut, ErrorOut
from daemon.api.routes import RuntimeDep

router = APIRouter(tags=["camera"], dependencies=[Depends(require("read"))],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.get("/camera", response_model=CameraOut, summary="Connection, temperature, cooler and sensor settings")
async def camera(runtime: RuntimeDep) -> CameraOut:
    # camera_snapshot() copies a cached state under a lock held for microseconds: safe on the event loop
    return CameraOut(**runtime.camera_snapshot())
