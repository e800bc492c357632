"""The ``measure`` job: dark current (the paper's pair method, which cannot go negative) from darks and biases, in
the engine's worker process (:func:`calib.measure.dark_current.measure_dark_current`).

Params (:class:`MeasureParams`): ``darks``, ``biases`` (lists of FITS paths) or ``dark_entry_id``/``bias_entry_id``
(the accepted frames of library entries); ``gain_e_per_adu`` (required, e⁻ per ADU of the FITS data); optional
``read_noise_e``, ``region`` (IRAF section), ``output`` (path of a JSON report to write). The result holds the report.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from calib.frames import atomic_write_bytes
from daemon.jobs.params import MAX_PATHS, Id, JobParams
from daemon.jobs.params import Path as PathParam
from daemon.jobs.states import CAPTURE_KINDS, JobKind
from daemon.library.catalog import LibraryIndex
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.jobs.engine import JobContext

KIND = JobKind.MEASURE
USES_CAMERA = KIND in CAPTURE_KINDS


class MeasureParams(JobParams):
    """Params of a ``measure`` job: frames as paths or as library entries, and the camera's gain."""

    darks: list[PathParam] | None = Field(default=None, max_length=MAX_PATHS)
    biases: list[PathParam] | None = Field(default=None, max_length=MAX_PATHS)
    dark_entry_id: Id | None = Field(default=None, description="use the accepted frames of this library entry")
    bias_entry_id: Id | None = Field(default=None, description="use the accepted frames of this library entry")
    gain_e_per_adu: float = Field(gt=0, le=1000, description="e- per ADU of the FITS data")
    read_noise_e: float | None = Field(default=None, ge=0, le=1000)
    region: str | None = Field(default=None, max_length=100, description="IRAF section, e.g. [1:100,1:100]")
    output: PathParam | None = Field(default=None, description="JSON report to write")


Params = MeasureParams


def _frames(params: dict[str, Any], index: LibraryIndex, what: str) -> list[str]:
    if params.get(f"{what}s"):
        return [str(p) for p in params[f"{what}s"]]
    entry_id = params.get(f"{what}_entry_id")
    if entry_id is None:
        return []
    return [f.path for f in index.frames_of(int(entry_id), accepted_only=True)]


def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str | None]:
    """Check typed params (:class:`MeasureParams`) against the library and files; returns (params, camera=None)."""
    importlib.import_module("calib.measure.dark_current")
    gain = float(params["gain_e_per_adu"])
    darks, biases = _frames(params, index, "dark"), _frames(params, index, "bias")
    if len(darks) < 2 or len(biases) < 2:
        raise ValueError(f"measure: needs at least 2 darks and 2 biases (got {len(darks)} and {len(biases)})")
    missing = [p for p in (*darks, *biases) if not Path(p).is_file()]
    if missing:
        raise ValueError(f"measure: frame(s) not found: {', '.join(missing[:5])}")
    return {**params, "gain_e_per_adu": gain}, None


def run(ctx: JobContext) -> dict[str, Any]:
    from calib.measure.dark_current import measure_dark_current

    darks, biases = _frames(ctx.params, ctx.index, "dark"), _frames(ctx.params, ctx.index, "bias")
    ctx.progress(0, 1, step=f"measuring dark current from {len(darks)} darks and {len(biases)} biases")
    future = ctx.pool.submit(measure_dark_current, darks, biases, float(ctx.params["gain_e_per_adu"]),
                             ctx.params.get("read_noise_e"), ctx.params.get("region"))
    report = future.result()
    if ctx.params.get("output"):
        atomic_write_bytes(ctx.params["output"], json.dumps(report, indent=2, default=str).encode())
    value = report.get("dark_current_e_per_s")
    ctx.progress(1, 1, step=f"dark current {value:.4g} e-/s/pixel" if value is not None else "dark current: n/a")
    return {"report": report, "output": ctx.params.get("output")}
