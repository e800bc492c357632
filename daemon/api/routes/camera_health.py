"""``GET /camera/health``: a camera's health over months (:mod:`daemon.health`): every master's statistics as time
series with their trends (slope and its 1σ error) and the warnings, each with a suggestion of what to rebuild."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.models import ErrorOut
from daemon.api.routes import RuntimeDep

router = APIRouter(tags=["camera"], dependencies=[Depends(require("read"))],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


class HealthPointOut(BaseModel):
    created_utc: str
    value: float
    uncertainty: float | None
    entry_id: int
    ambient_c: float | None


class HealthSeriesOut(BaseModel):
    camera: str
    quantity: str = Field(description="e.g. hot_pixels, bias_level_adu, dark_current_e_per_s, cooler_power_pct")
    series: str = Field(description="the key slug, or 'set point -20 C' for cooler power")
    unit: str
    points: list[HealthPointOut]
    trend: dict[str, Any] | None = Field(description="slope_per_day, slope_uncertainty_per_day, change_per_window …")
    notes: list[str]


class HealthWarningOut(BaseModel):
    camera: str
    quantity: str
    series: str
    message: str
    suggestion: str
    entry_id: int
    created_utc: str | None


class CameraHealthOut(BaseModel):
    generated_utc: str
    window_days: float
    cameras: list[str]
    series: list[HealthSeriesOut]
    warnings: list[HealthWarningOut]


@router.get("/camera/health", response_model=CameraHealthOut,
            summary="Trends of every master's statistics per camera, and the warnings beyond the [health] limits")
async def camera_health(runtime: RuntimeDep,
                        camera: Annotated[str | None, Query(max_length=255)] = None) -> CameraHealthOut:
    from daemon.health import camera_health as report

    result = await run_in_threadpool(report, runtime.index, runtime.settings.health, camera)
    return CameraHealthOut.model_validate(result)
