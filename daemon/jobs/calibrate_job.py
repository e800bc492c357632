"""The ``calibrate`` job: calibrate lights with their matched masters from the library.

For each light the key fields its header does not state are filled by the one rule (:mod:`daemon.light_rule`: the
config's ``[lights."<camera>"]``, the frame size, the driver's recorded state; the measured temperature matched to the
nearest library set point), so lights from Ekos, N.I.N.A., SGP or the stock INDI tools need no flags; then the
selection rule (:func:`daemon.library.selection.select_for_light`) picks the dark master (every key equal, temperature
within tolerance, valid, not held for review); lights are grouped by master and each group is
calibrated by :func:`calib.calibration.calibrate_files` in the engine's worker process. A light without a matching
master is not calibrated (the refusal reason is a warning) and makes the job end ``failed`` after the others are done.

Params (:class:`CalibrateParams`): ``lights`` (FITS paths) or ``lights_dir`` (every FITS file in it);
``output_dir`` (required); ``allow_scaled`` (bool, default false: a scaled dark only when asked, with the selection's
warning); ``use_bias`` (bool, default false; a scaled dark always uses the matching bias); ``pedestal_adu`` (float,
default 0); ``cosmetic`` (bool, default false: replace the pixels flagged in the masters' defect maps by the median
of their good neighbours, :mod:`calib.cosmetic`).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from calib.frames import FrameError
from daemon.jobs.params import MAX_PATHS, JobParams
from daemon.jobs.params import Path as PathParam
from daemon.jobs.states import CAPTURE_KINDS, JobKind
from daemon.library.catalog import LibraryIndex
from daemon.library.selection import select_for_light
from daemon.light_headers import HeaderKeyError
from daemon.light_rule import LightRule
from daemon.planning import find_lights
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.jobs.engine import JobContext

KIND = JobKind.CALIBRATE
USES_CAMERA = KIND in CAPTURE_KINDS
MAX_PEDESTAL_ADU = 65_536.0


class CalibrateParams(JobParams):
    """Params of a ``calibrate`` job: the lights (a list or a folder), where to write, and how."""

    lights: list[PathParam] | None = Field(default=None, max_length=MAX_PATHS, description="FITS files to calibrate")
    lights_dir: PathParam | None = Field(default=None, description="calibrate every FITS file in this folder")
    output_dir: PathParam = Field(description="where the calibrated lights are written")
    allow_scaled: bool = Field(default=False, description="use a dark of another exposure, scaled (with a warning)")
    use_bias: bool = Field(default=False, description="subtract the matching bias too")
    pedestal_adu: float = Field(default=0.0, ge=-MAX_PEDESTAL_ADU, le=MAX_PEDESTAL_ADU)
    cosmetic: bool = Field(default=False, description="replace pixels flagged in the masters' defect maps")

    @model_validator(mode="after")
    def _some_lights(self) -> CalibrateParams:
        if not self.lights and not self.lights_dir:
            raise ValueError("give lights (paths) or lights_dir")
        return self


Params = CalibrateParams


def _lights(params: dict[str, Any]) -> list[Path]:
    if params.get("lights"):
        return [Path(p) for p in params["lights"]]
    return find_lights(params["lights_dir"], recursive=False)


def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str | None]:
    """Check typed params (:class:`CalibrateParams`) against the file system; returns (params, camera=None)."""
    importlib.import_module("calib.calibration")  # ModuleNotFoundError: this kind is not available
    lights = _lights(params)
    missing = [str(p) for p in lights if not p.is_file()]
    if missing or not lights:
        raise ValueError(f"calibrate: light(s) not found: {', '.join(missing[:5]) or 'none given'}")
    return {**params, "lights": [str(p) for p in lights]}, None


def run(ctx: JobContext) -> dict[str, Any]:
    from calib.calibration import calibrate_files

    lights = _lights(ctx.params)
    output_dir = Path(ctx.params["output_dir"])
    allow_scaled = bool(ctx.params.get("allow_scaled", False))
    use_bias = bool(ctx.params.get("use_bias", False))
    groups: dict[tuple[str, str | None, bool], list[Path]] = defaultdict(list)
    masters: dict[str, str] = {}
    refused: dict[str, str] = {}
    ctx.progress(0, len(lights), step=f"selecting masters for {len(lights)} light(s)")
    rule = LightRule(ctx.settings, ctx.index)
    for light in lights:
        try:
            info = rule.light_info(light)
        except (HeaderKeyError, FrameError) as exc:
            refused[light.name] = str(exc)
            ctx.warn(f"{light.name}: not calibrated, its header gives no library key ({exc})")
            continue
        selection = select_for_light(ctx.index, info, allow_scaled=allow_scaled)
        if selection.entry is None or selection.entry.master is None:
            refused[light.name] = "; ".join(f"#{i}: {r}" for i, r in sorted(selection.refused.items())) or \
                "no candidate master in the library"
            ctx.warn(f"{light.name}: not calibrated, no matching dark ({refused[light.name]})")
            continue
        for warning in selection.warnings:
            ctx.warn(f"{light.name}: {warning}")
        bias = None
        if selection.scaled or use_bias:
            bias_entry = select_for_light(ctx.index, info, kind="bias").require()
            bias = bias_entry.master
        groups[(selection.entry.master, bias, selection.scaled)].append(light)
        masters[light.name] = selection.entry.master
    outputs: list[str] = []
    for (dark, bias, scaled), group in groups.items():
        ctx.check()
        ctx.progress(step=f"calibrating {len(group)} light(s) with {Path(dark).parent.name}")
        future = ctx.pool.submit(calibrate_files, [str(p) for p in group], dark=dark, output_dir=output_dir,
                                 bias=bias, pedestal_adu=float(ctx.params.get("pedestal_adu", 0.0)),
                                 scale_dark=scaled, cosmetic=bool(ctx.params.get("cosmetic", False)))
        outputs += [str(p) for p in future.result()]
        ctx.progress(len(outputs) + len(refused), len(lights))
    result = {"outputs": outputs, "masters": masters, "refused": refused, "output_dir": str(output_dir)}
    ctx.save_result(result)
    if refused:
        raise RuntimeError(f"{len(refused)} of {len(lights)} light(s) have no matching master: "
                           + ", ".join(sorted(refused)))
    return result
