"""The ``integrate`` job (rebuild the master of a library entry) and :func:`build_entry_master`, the worker-process
function that build-library also uses.

``build_entry_master`` runs in a spawned worker process: it opens its own :class:`LibraryIndex` (SQLite in WAL mode
with ``BEGIN IMMEDIATE`` writes is shared safely with the daemon), integrates the entry's accepted frames with
:func:`calib.masters.build_master` (Winsorized clipping, no normalisation, no bias subtraction — the CALIB defaults),
writes the master atomically to ``<entry>/master.fits`` — with its defect map (``MASK`` extension; for a dark the
hot-pixel test runs on ``D − B`` with the key's usable master bias when there is one) — and records it with
:meth:`LibraryIndex.set_master`, which marks the entry ``ready`` and reviews it against the previous master of the
same key. The new map's hot pixels are compared with that previous master's (:func:`calib.defects.hot_pixel_drift`);
a rise beyond +20 % is a job warning (``defect_drift`` in the outcome).

Params of the ``integrate`` job (:class:`IntegrateParams`): ``entry_id`` (required); optional ``combine``,
``rejection``, ``sigma_low``, ``sigma_high``, ``memory_budget_bytes``, ``workers`` (passed to ``IntegrationParams``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from daemon.jobs.params import Id, JobParams
from daemon.jobs.states import CAPTURE_KINDS, JobKind
from daemon.library.catalog import LibraryIndex
from daemon.library.store import EntryView
from daemon.settings import LibrarySettings, Settings

if TYPE_CHECKING:
    from calib.defects import DefectMap
    from daemon.jobs.engine import JobContext

log = logging.getLogger(__name__)

KIND = JobKind.INTEGRATE
USES_CAMERA = KIND in CAPTURE_KINDS
INTEGRATION_OPTIONS = ("combine", "rejection", "sigma_low", "sigma_high", "memory_budget_bytes", "workers")


class IntegrateParams(JobParams):
    """Params of an ``integrate`` job; the options default to ``calib.integration.IntegrationParams``'s."""

    entry_id: Id = Field(description="the library entry whose master to rebuild")
    combine: str | None = Field(default=None, max_length=40, description="e.g. mean, median")
    rejection: str | None = Field(default=None, max_length=40, description="e.g. winsorized, sigma, none")
    sigma_low: float | None = Field(default=None, gt=0, le=100)
    sigma_high: float | None = Field(default=None, gt=0, le=100)
    memory_budget_bytes: int | None = Field(default=None, ge=1 << 20, le=1 << 40)
    workers: int | None = Field(default=None, ge=1, le=256)


Params = IntegrateParams


def build_entry_master(library: dict[str, Any], entry_id: int, *, job_id: int | None = None,
                       options: dict[str, Any] | None = None, health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Integrate entry ``entry_id``'s accepted frames into its master and record it (runs in a worker process).

    ``library`` is ``LibrarySettings.model_dump(mode="json")`` (plain data crosses the process boundary). Returns
    ``{entry_id, master, stats, review, review_reason, n_frames, seconds}``.
    """
    from calib.integration import IntegrationParams
    from calib.masters import build_master

    started = time.monotonic()
    index = LibraryIndex(LibrarySettings.model_validate(library))
    try:
        index.create()
        entry = index.get(entry_id)
        if entry is None:
            raise ValueError(f"no library entry with id {entry_id}")
        frames = index.frames_of(entry_id, accepted_only=True)
        if not frames:
            raise ValueError(f"entry {entry_id} has no accepted frames to integrate")
        if entry.status not in ("integrating", "ready", "stale"):
            index.set_status(entry_id, "integrating")
        paths = [Path(f.path) for f in frames]
        opts = {k: v for k, v in (options or {}).items() if k in INTEGRATION_OPTIONS and v is not None}
        params = IntegrationParams(**opts) if opts else None
        temps = [t for f in frames for t in (f.temperature_start_c, f.temperature_end_c) if t is not None]
        extra: dict[str, Any] = {
            "DKENTRY": (entry_id, "darkd library entry id"),
            "DKKEY": entry.slug,  # darkd library key (long: no comment, astropy continues it on CONTINUE cards)
            "SET-TEMP": (entry.set_point_c, "[C] cooler set point of the frames"),
        }
        if job_id is not None:
            extra["DKJOB"] = (job_id, "darkd job that built this master")
        if temps:
            extra["CCDTMEAN"] = (round(sum(temps) / len(temps), 3), "[C] mean sensor temperature of the frames")
            extra["CCDTMIN"] = (round(min(temps), 3), "[C] lowest sensor temperature of the frames")
            extra["CCDTMAX"] = (round(max(temps), 3), "[C] highest sensor temperature of the frames")
        previous = _previous_defects(index, entry)
        result = build_master(entry.calib_kind, paths, output=Path(entry.master_target), params=params,
                              extra_header=extra, defect_bias=_defect_bias(index, entry),
                              defect_ladder=_defect_ladder(index, entry))
        stats = dict(result.stats)
        view = index.set_master(entry_id, result.path, stats)
        health_warnings = _health(index, view, health)
        return {"entry_id": entry_id, "master": str(result.path), "stats": view.master_stats or stats,
                "review": view.review, "review_reason": view.review_reason, "n_frames": len(paths),
                "seconds": round(time.monotonic() - started, 3),
                "defect_drift": _defect_drift(previous, result.path), "health_warnings": health_warnings}
    finally:
        index.close()


def _health(index: LibraryIndex, entry: EntryView, health: dict[str, Any] | None) -> list[str]:
    """Record the new master's statistics in the camera's history (:mod:`daemon.health`); its warnings."""
    from daemon.health import record_master_history, warnings_for_entry
    from daemon.settings import HealthSettings

    settings = HealthSettings.model_validate(health or {})
    try:
        record_master_history(index, entry, settings)
        return warnings_for_entry(index, entry, settings)
    except Exception:  # the history is an observation: it must never cost the master
        log.exception("entry %s: camera health not recorded", entry.id)
        return []


def _defect_bias(index: LibraryIndex, entry: EntryView) -> str | None:
    """The usable master bias of a dark's key, for its defect map's ``D − B`` (``None``: the map uses ``D``)."""
    if entry.kind not in ("dark", "flatdark"):
        return None
    bias = index.usable_master(entry.with_kind("bias"), expired_ok=True)
    return bias.master if bias is not None and bias.master and Path(bias.master).is_file() else None


def _defect_ladder(index: LibraryIndex, entry: EntryView) -> list[tuple[float, str]]:
    """Usable master darks of the same key at other exposures: ``(exposure_s, path)`` for the WARM test."""
    if entry.kind != "dark":
        return []
    ladder: dict[float, str] = {}
    for other in index.entries(camera=entry.camera, kind="dark", status="ready"):
        if (other.id != entry.id and other.exposure_s != entry.exposure_s and other.master
                and not entry.key.matches(other.key, ignore=("exposure_s",))
                and other.exposure_s not in ladder and index.master_problem(other) is None):
            ladder[other.exposure_s] = other.master
    return sorted(ladder.items())


def _previous_defects(index: LibraryIndex, entry: EntryView) -> DefectMap | None:
    """The defect map of this key's previous master (this entry's, else the last usable one), or ``None``."""
    from calib.defects import read_master_defects

    previous = entry.master
    if not previous:
        other = index.usable_master(entry.key_only(), expired_ok=True, exclude_id=entry.id)
        previous = other.master if other is not None else None
    try:
        return read_master_defects(previous) if previous and Path(previous).is_file() else None
    except (OSError, ValueError) as exc:
        log.warning("entry %s: previous master %s unreadable for the defect drift (%s)", entry.id, previous, exc)
        return None


def _defect_drift(previous: DefectMap | None, master: Path) -> str | None:
    """:func:`calib.defects.hot_pixel_drift` of the new master against the previous one: the warning, or ``None``."""
    from calib.defects import hot_pixel_drift, read_master_defects

    current = read_master_defects(master)
    if previous is None or current is None:
        return None
    try:
        return hot_pixel_drift(previous, current).warning
    except ValueError as exc:  # another frame size or thresholds: not comparable
        log.info("defect drift not compared: %s", exc)
        return None


def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str | None]:
    """Check typed params (:class:`IntegrateParams`) against the library; returns (params, camera=None): it does not
    use the camera."""
    from calib.integration import IntegrationParams

    entry_id = int(params["entry_id"])
    entry = index.get(entry_id)
    if entry is None:
        raise ValueError(f"integrate: no library entry with id {entry_id}")
    if entry.frames == 0:
        raise ValueError(f"integrate: entry {entry_id} has no accepted frames")
    options = {k: params[k] for k in INTEGRATION_OPTIONS if params.get(k) is not None}
    try:
        IntegrationParams(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"integrate: {exc}") from exc
    return {**params, "entry_id": entry_id}, None


def run(ctx: JobContext) -> dict[str, Any]:
    entry_id = int(ctx.params["entry_id"])
    ctx.progress(0, 1, step=f"integrating entry {entry_id}")
    options = {k: ctx.params[k] for k in INTEGRATION_OPTIONS if k in ctx.params}
    future = ctx.pool.submit(build_entry_master, ctx.settings.library.model_dump(mode="json"), entry_id,
                             job_id=ctx.job_id, options=options, health=ctx.settings.health.model_dump(mode="json"))
    outcome = future.result()
    if outcome["review"]:
        ctx.warn(f"entry {entry_id}: new master held for review ({outcome['review_reason']})")
    if outcome.get("defect_drift"):
        ctx.warn(f"entry {entry_id}: {outcome['defect_drift']}")
    for message in outcome.get("health_warnings") or []:
        ctx.warn(message)
    ctx.progress(1, 1, step=f"master written: {outcome['master']}")
    return outcome
