"""Library routes: list/filter entries, one entry, its master FITS file, and a plan (computed, not run).

``GET /library`` answers from a small cache of serialised responses (per filter combination), rebuilt when an event
says the library may have changed (``frame``/``job`` on the bus) and at the latest after ``LIST_MAX_AGE_S`` (changes
made by other processes, e.g. the CLI). Listing ~100 entries costs ~20 ms of CPU (SQL, views, JSON); a monitor polling
at 100 requests/s would otherwise saturate the daemon's one Python core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from daemon.api.auth import require
from daemon.api.errors import ApiError, not_found
from daemon.api.models import EntryOut, EntryStatus, ErrorOut, PlanIn, PlanOut
from daemon.api.paths import files_inside, resolve_allowed
from daemon.api.routes import RuntimeDep
from daemon.library.keys import key_types
from daemon.library.store import EntryView
from daemon.planning import PlanError, find_lights, plan_from_keys, plan_from_lights
from daemon.runtime import Runtime

ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                           404: {"model": ErrorOut}, 409: {"model": ErrorOut},
                                           422: {"model": ErrorOut}}
log = logging.getLogger(__name__)
LIST_MAX_AGE_S = 1.0
ENTRY_LIST = TypeAdapter(list[EntryOut])
router = APIRouter(prefix="/library", tags=["library"], responses=ERRORS)


class ListCache:
    """Serialised ``GET /library`` bodies by filter key (see the module docstring); used on the event loop only.

    Stale-while-revalidate: once a key has a body, requests get it at once while a newer body is built in the
    background (at most one build per key, at most one per ``min_interval_s``), so no request waits for SQL. Only the
    first request of a key waits. A body is rebuilt after an event or when older than ``max_age_s``.
    """

    def __init__(self, max_age_s: float, min_interval_s: float = 0.2, max_keys: int = 64) -> None:
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        self.max_keys = max_keys
        self.generation = 0  # bumped (from any thread) when the library may have changed
        self._bodies: dict[tuple[Any, ...], tuple[float, int, bytes]] = {}
        self._building: dict[tuple[Any, ...], asyncio.Task[bytes]] = {}

    def invalidate(self) -> None:
        self.generation += 1

    def on_event(self, event: dict[str, Any]) -> None:
        """An :class:`~daemon.api.routes.events.EventHub` listener: frames and job changes touch the library."""
        if event.get("type") in ("frame", "job"):
            self.invalidate()

    async def get(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        hit = self._bodies.get(key)
        if hit is not None:
            built_at, generation, body = hit
            age_s = time.monotonic() - built_at
            stale = generation != self.generation or age_s > self.max_age_s
            if stale and key not in self._building and age_s >= self.min_interval_s:
                self._start(key, build)
            return body
        task = self._building.get(key) or self._start(key, build)
        return await asyncio.shield(task)

    def _start(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> asyncio.Task[bytes]:
        task = asyncio.get_running_loop().create_task(self._build(key, build))
        self._building[key] = task
        task.add_done_callback(_log_failure)
        return task

    async def _build(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        try:
            generation, started = self.generation, time.monotonic()
            body = await run_in_threadpool(build)
            if len(self._bodies) >= self.max_keys:
                self._bodies.clear()
            self._bodies[key] = (started, generation, body)
            return body
        finally:
            self._building.pop(key, None)


def _log_failure(task: asyncio.Task[bytes]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("library listing failed: %s", task.exception())


ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(EntryView))


def entry_row(entry: EntryView) -> dict[str, Any]:
    """The fields of an ``EntryView`` for ``EntryOut`` (shallow; ``dataclasses.asdict`` costs 90 µs per entry)."""
    return {name: getattr(entry, name) for name in ENTRY_FIELDS}


def _key_filters() -> Callable[..., dict[str, Any]]:
    """A dependency taking one optional query parameter per library key field, typed and bounded as the key field
    (:mod:`daemon.library.keys`): a new key field is a new filter without touching this route."""

    def key_filters(**values: Any) -> dict[str, Any]:
        return values

    parameters = []
    for name, hint in key_types().items():
        description = ("within the library's temperature tolerance" if name == "set_point_c"
                       else "within 1 µs" if name == "exposure_s" else None)
        query = Query(description=description, allow_inf_nan=False) if _is_float(hint) else Query(
            description=description)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[hint | None, query]))
    key_filters.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return key_filters


def _is_float(hint: Any) -> bool:
    return (typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint) is float


KeyFiltersDep = Annotated[dict[str, Any], Depends(_key_filters())]


@router.get("", response_model=list[EntryOut], dependencies=[Depends(require("read"))],
            summary="Library entries, filtered (every filter optional; one per key field, plus status and review)")
async def list_entries(
    request: Request,
    runtime: RuntimeDep,
    key_filters: KeyFiltersDep,
    status: Annotated[list[EntryStatus] | None, Query(description="repeat for several")] = None,
    review: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    filters = {**key_filters, "status": status, "review": review}

    def build() -> bytes:
        entries = runtime.index.entries(**filters)
        return ENTRY_LIST.dump_json(ENTRY_LIST.validate_python([entry_row(e) for e in entries[skip:skip + limit]]))

    key = (tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in filters.items())), limit, skip)
    cache: ListCache = request.app.state.list_cache
    return Response(await cache.get(key, build), media_type="application/json")


async def _entry(runtime: Runtime, entry_id: int) -> EntryView:
    if not 1 <= entry_id <= 2**62:
        raise not_found("entry", entry_id)
    entry = await run_in_threadpool(runtime.index.get, entry_id)
    if entry is None:
        raise not_found("entry", entry_id)
    return entry


@router.get("/{entry_id}", response_model=EntryOut, dependencies=[Depends(require("read"))],
            summary="One library entry")
async def get_entry(entry_id: int, runtime: RuntimeDep) -> dict[str, Any]:
    return entry_row(await _entry(runtime, entry_id))


@router.get("/{entry_id}/master", response_class=FileResponse, dependencies=[Depends(require("read"))],
            summary="The master FITS file of an entry",
            responses={200: {"content": {"application/fits": {}}, "description": "the FITS file"}})
async def get_master(entry_id: int, runtime: RuntimeDep) -> FileResponse:
    entry = await _entry(runtime, entry_id)
    master = entry.master
    if not master:
        raise ApiError(404, "master_not_found", f"entry {entry_id} ({entry.status}) has no master yet")
    root = Path(runtime.index.layout.root).resolve()
    path = await run_in_threadpool(lambda: Path(master).resolve())
    if not path.is_relative_to(root):
        raise ApiError(403, "path_not_allowed", f"the master of entry {entry_id} lies outside the library root")
    if not await run_in_threadpool(path.is_file):
        raise ApiError(404, "master_not_found", f"the master file of entry {entry_id} is missing on disk ({path}); "
                       "run 'darkd library verify'")
    problem = await run_in_threadpool(runtime.index.master_problem, entry)
    if problem is not None:
        raise ApiError(409, "master_corrupt", f"the master of entry {entry_id} is not served: {problem}; the entry is "
                       "marked bad, plan the key again")
    return FileResponse(path, media_type="application/fits", filename=f"{entry.slug}.fits")


@router.post("/plan", response_model=PlanOut, dependencies=[Depends(require("read"))],
             summary="Plan the masters that lights (or explicit keys) need, without running anything")
async def plan(body: PlanIn, runtime: RuntimeDep) -> dict[str, Any]:
    common: dict[str, Any] = {"ambient_c": body.ambient_c, "max_cooling_delta_c": body.max_cooling_delta_c,
              "readout_s": body.readout_s}
    def from_lights(raw: str) -> Any:
        lights = resolve_allowed(raw, runtime.settings.api.allowed_roots, what="lights_dir")
        if not lights.is_dir():
            raise ApiError(422, "not_a_directory", f"lights_dir {raw!r} is not a directory")
        files_inside(find_lights(lights), runtime.settings.api.allowed_roots, what="light")  # no symlink out
        return plan_from_lights(lights, runtime.index, runtime.settings, camera=body.camera,
                                include_bias=body.include_bias, **common)

    try:
        if body.lights_dir is not None:
            result = await run_in_threadpool(from_lights, body.lights_dir)
        else:
            keys = [k.plan_key() for k in body.keys or []]
            result = await run_in_threadpool(plan_from_keys, keys, runtime.index, runtime.settings, **common)
    except PlanError as exc:
        code = "invalid_key" if "key" in str(exc) else "plan_failed"
        raise ApiError(422, code, str(exc)) from exc
    runtime.last_plan = result
    return {**result.to_dict(), "text": result.to_text()}
