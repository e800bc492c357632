"""``GET /camera`` (the default camera), ``GET /cameras`` (every configured camera) and ``GET /cameras/{id}``: the
snapshots the runtime's monitors keep (no INDI round trip on the request path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from daemon.api.auth import require
from daemon.api.errors import ApiError
from daemon.api.models import CameraOut, ErrorOut
from daemon.api.routes import RuntimeDep
from daemon.runtime import UnknownCamera
from daemon.settings import CAMERA_ID_PATTERN

router = APIRouter(tags=["camera"], dependencies=[Depends(require("read"))],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})

# the snapshots copy a cached state under a lock held for microseconds: safe on the event loop


@router.get("/camera", response_model=CameraOut,
            summary="The default (first) camera: connection, temperature, cooler and sensor settings")
async def camera(runtime: RuntimeDep) -> CameraOut:
    return CameraOut(**runtime.camera_snapshot())


@router.get("/cameras", response_model=list[CameraOut], summary="Every configured camera, the default one first")
async def cameras(runtime: RuntimeDep) -> list[CameraOut]:
    return [CameraOut(**snapshot) for snapshot in runtime.camera_snapshots()]


@router.get("/cameras/{camera_id}", response_model=CameraOut, responses={404: {"model": ErrorOut}},
            summary="One configured camera by its id")
async def camera_by_id(camera_id: Annotated[str, Path(pattern=CAMERA_ID_PATTERN)], runtime: RuntimeDep) -> CameraOut:
    try:
        return CameraOut(**runtime.camera_snapshot(camera_id))
    except UnknownCamera as exc:
        raise ApiError(404, "camera_not_found", str(exc)) from exc
