"""Job routes: queue (``POST /jobs``), list, one job, cancel/pause/resume.

The body of ``POST /jobs`` is typed per kind (:data:`daemon.jobs.requests.JobRequest`): a field out of its bounds, of
the wrong type or unknown is a 422 ``invalid_request`` naming the field, before anything else happens.

Mapping of engine errors: ``JobNotFound`` → 404 ``job_not_found``; ``JobConflict`` (a capture job already holds the
camera, or the job's state does not allow the command) → 409 ``job_conflict``; params that the library or the file
system refuses (no such entry, no lights) → 422 ``invalid_job``; a library index that cannot be read or written
(read-only, malformed, full disk) → 503 ``index_unavailable`` with the reason; a library disk with less room than the
job needs plus ``[library] min_free_bytes`` → 503 ``library_disk_full`` saying how much. Paths inside ``params`` (keys
such as ``lights_dir``, ``output_dir``, ``darks``) must resolve under ``[api] allowed_roots`` and are replaced by their
resolved form before the engine sees them; each file of a ``lights_dir`` is resolved too (no symlink out).
``POST /jobs?camera=<id>``: the configured camera (``[[cameras]]`` id) a capture job runs on, default the one its plan
names; an id not configured, or (with several cameras) a plan naming none of them, is a 422 ``unknown_camera``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.errors import ApiError
from daemon.api.models import ErrorOut, JobIn, JobOut, JobState
from daemon.api.paths import files_inside, resolve_allowed
from daemon.api.routes import RuntimeDep
from daemon.jobs.engine import NoRoom
from daemon.jobs.errors import JobConflict, JobNotFound, JobStoreError
from daemon.jobs.queue import describe_db_error
from daemon.planning import find_lights
from daemon.runtime import Runtime, UnknownCamera
from daemon.settings import CAMERA_ID_PATTERN

PATH_KEYS = frozenset({"path", "paths", "dir", "output", "lights", "darks", "biases", "flats", "files", "frames"})
PATH_SUFFIXES = ("_dir", "_path", "_paths", "_file", "_files", "_folder")
INVALID_PARAMS = (ValueError, TypeError, KeyError, OverflowError)
MAX_ID = 2**62

ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                           404: {"model": ErrorOut}, 409: {"model": ErrorOut},
                                           422: {"model": ErrorOut}, 503: {"model": ErrorOut}}
router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERRORS)


def is_path_key(name: str) -> bool:
    return name in PATH_KEYS or name.endswith(PATH_SUFFIXES)


def check_paths(params: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """``params`` with every path-like value resolved under the allowed roots (ApiError 403/422 otherwise)."""
    roots = runtime.settings.api.allowed_roots
    out = dict(params)
    for name, value in params.items():
        if not is_path_key(name) or value is None:
            continue
        if isinstance(value, str):
            out[name] = str(resolve_allowed(value, roots, must_exist=False, what=f"params.{name}"))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = [str(resolve_allowed(v, roots, must_exist=False, what=f"params.{name}")) for v in value]
        else:
            raise ApiError(422, "invalid_path", f"params.{name} must be a path or a list of paths")
    folder = out.get("lights_dir")
    if isinstance(folder, str) and Path(folder).is_dir():  # each file of an allowed folder resolved on its own
        files_inside(find_lights(folder), roots, what="params.lights_dir file")
    return out


def _engine(runtime: Runtime) -> Any:
    if runtime.engine is None:
        raise ApiError(503, "jobs_unavailable", runtime.engine_error or "the job engine is not running")
    return runtime.engine


def index_unavailable(exc: Exception) -> ApiError:
    """503 for a library index that refuses a read or write, with the reason (not a generic 500)."""
    reason = (f"the library index cannot be used: {describe_db_error(exc)}" if isinstance(exc, SQLAlchemyError)
              else str(exc))
    return ApiError(503, "index_unavailable", reason, headers={"Retry-After": "10"})


async def _call(runtime: Runtime, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    try:
        row = await run_in_threadpool(fn, *args)
    except JobNotFound as exc:
        raise ApiError(404, "job_not_found", str(exc)) from exc
    except JobConflict as exc:
        raise ApiError(409, "job_conflict", str(exc)) from exc
    except (JobStoreError, SQLAlchemyError) as exc:
        raise index_unavailable(exc) from exc
    except NoRoom as exc:
        raise ApiError(503, "library_disk_full", str(exc), headers={"Retry-After": "60"}) from exc
    return row.to_dict()


@router.post("", response_model=JobOut, status_code=201, dependencies=[Depends(require("control"))],
             summary="Queue a job: build-library, integrate, calibrate or measure (params typed per kind)")
async def submit(body: JobIn, runtime: RuntimeDep,
                 camera: Annotated[str | None, Query(pattern=CAMERA_ID_PATTERN)] = None) -> dict[str, Any]:
    _engine(runtime)

    def work() -> Any:
        params = check_paths(body.params.model_dump(mode="json", exclude_unset=True), runtime)
        try:
            return runtime.submit_job(body.kind, params, camera)
        except ModuleNotFoundError as exc:
            raise ApiError(422, "job_kind_unavailable", f"job kind {body.kind!r} is not available in this "
                           "version of the daemon") from exc
        except (JobConflict, JobStoreError, SQLAlchemyError):
            raise
        except UnknownCamera as exc:
            raise ApiError(422, "unknown_camera", str(exc)) from exc
        except INVALID_PARAMS as exc:
            raise ApiError(422, "invalid_job", str(exc) or type(exc).__name__) from exc

    return await _call(runtime, work)


@router.get("", response_model=list[JobOut], dependencies=[Depends(require("read"))], summary="Jobs, newest last")
async def list_jobs(runtime: RuntimeDep, state: JobState | None = None,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[dict[str, Any]]:
    try:
        rows = await run_in_threadpool(runtime.queue.jobs, state)
    except JobStoreError as exc:
        raise index_unavailable(exc) from exc
    return [r.to_dict() for r in rows[-limit:]]


def _job_id(job_id: int) -> int:
    if not 1 <= job_id <= MAX_ID:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return job_id


@router.get("/{job_id}", response_model=JobOut, dependencies=[Depends(require("read"))], summary="One job")
async def get_job(job_id: int, runtime: RuntimeDep) -> dict[str, Any]:
    job_id = _job_id(job_id)
    try:
        row = await run_in_threadpool(runtime.queue.get_job, job_id)
    except JobStoreError as exc:
        raise index_unavailable(exc) from exc
    if row is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return row.to_dict()


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require("control"))],
             summary="Cancel a queued, paused or running job (a running exposure is aborted)")
async def cancel(job_id: int, runtime: RuntimeDep) -> dict[str, Any]:
    return await _call(runtime, _engine(runtime).cancel, _job_id(job_id))


@router.post("/{job_id}/pause", response_model=JobOut, dependencies=[Depends(require("control"))],
             summary="Pause a queued or running job")
async def pause(job_id: int, runtime: RuntimeDep) -> dict[str, Any]:
    return await _call(runtime, _engine(runtime).pause, _job_id(job_id))


@router.post("/{job_id}/resume", response_model=JobOut, dependencies=[Depends(require("control"))],
             summary="Resume a paused job (it is queued again and continues where it stopped)")
async def resume(job_id: int, runtime: RuntimeDep) -> dict[str, Any]:
    return await _call(runtime, _engine(runtime).resume, _job_id(job_id))
