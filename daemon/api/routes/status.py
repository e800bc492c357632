"""The status page (``GET /``, static, no data in it) and its one data call ``GET /api/v1/status`` (read scope).

The page shows one card per configured camera (temperature, set point, cooler power, connected, error; ``cameras``),
each camera's sensor temperature and cooler power over the last hours (its ring buffer; ``histories``, one chart per
camera), the current job with progress, and the library coverage table: every key the library has, with its status,
plus the keys of the latest plan (``POST /library/plan``) that the library lacks (``missing``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.models import ErrorOut, StatusOut
from daemon.api.routes import RuntimeDep
from daemon.jobs.states import JobState
from daemon.runtime import Runtime

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_POINTS = 720
IN_PROGRESS = {"planned", "capturing", "integrating"}

page_router = APIRouter(include_in_schema=False)
router = APIRouter(tags=["status"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@page_router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "status.html", media_type="text/html")


def downsample(samples: list[dict[str, Any]], since: datetime, max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """Samples newer than ``since``, thinned to at most ``max_points`` by keeping every n-th (the last one always)."""
    cutoff = since.isoformat().replace("+00:00", "Z")
    recent = [s for s in samples if s["time"] >= cutoff]
    if len(recent) <= max_points:
        return recent
    step = -(-len(recent) // max_points)
    thinned = recent[::step]
    if thinned[-1] is not recent[-1]:
        thinned.append(recent[-1])
    return thinned


def _current_job(runtime: Runtime) -> dict[str, Any] | None:
    for state in (JobState.RUNNING, JobState.PAUSED, JobState.QUEUED):
        jobs = runtime.queue.jobs(state=state)
        if jobs:
            return jobs[0].to_dict()
    return None


def coverage(runtime: Runtime) -> list[dict[str, Any]]:
    """One row per camera and key, for every camera of the index (a fleet sharing one index shows all its rigs): the
    newest entry's status (planned/capturing/integrating shown as ``in-progress``), then keys of the latest plan
    that no entry covers, as ``missing``.

    A ``ready`` entry is shown ``ready`` only when the usable-master rule accepts it for its own key now (file
    checked); otherwise ``review`` (held for review) or ``unusable``, with the rule's ``reason``."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    now = datetime.now(UTC)
    for e in runtime.index.entries():
        status = "in-progress" if e.status in IN_PROGRESS else e.status
        reason = None
        if e.status == "ready":
            reason = runtime.index.usable_refusal(e, when=now)
            status = "ready" if reason is None else "review" if e.review else "unusable"
        rows[(e.camera, e.slug)] = {"camera": e.camera, "slug": e.slug, "description": e.key.describe(), "kind": e.kind,
                                    "exposure_s": e.exposure_s, "set_point_c": e.set_point_c, "status": status,
                                    "entry_id": e.id, "frames": e.frames, "frames_target": e.frames_target,
                                    "reason": reason}
    plan = runtime.last_plan
    for item in plan.items if plan is not None else []:
        k = item.key
        if (k.camera, k.slug) not in rows:
            rows[(k.camera, k.slug)] = {"camera": k.camera, "slug": k.slug, "description": k.describe(), "kind": k.kind,
                                        "exposure_s": k.exposure_s, "set_point_c": k.set_point_c,
                                        "status": "missing" if item.reachable else "unreachable",
                                        "entry_id": None, "frames": 0, "frames_target": item.frames_target}
    return sorted(rows.values(), key=lambda r: (r["camera"], r["set_point_c"], r["kind"], r["exposure_s"]))


@router.get("/status", response_model=StatusOut, dependencies=[Depends(require("read"))],
            summary="Everything the status page shows")
async def status(runtime: RuntimeDep,
                 hours: Annotated[float, Query(gt=0, le=48, allow_inf_nan=False)] = 6.0) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(hours=hours)

    def gather() -> dict[str, Any]:
        histories = {camera_id: downsample(list(slot.samples), since) for camera_id, slot in runtime.cameras.items()}
        return {"current_job": _current_job(runtime), "coverage": coverage(runtime),
                "counts": runtime.index.count_by_status(), "samples": histories[runtime.default_camera.id],
                "histories": histories}

    data = await run_in_threadpool(gather)
    return {"camera": runtime.camera_snapshot(), "cameras": runtime.camera_snapshots(),
            "server_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            **data}
