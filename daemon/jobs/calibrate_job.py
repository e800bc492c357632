"""The ``calibrate`` job: calibrate lights with their matched masters from the library.

For each light the selection rule (:func:`daemon.library.selection.select_for_light`) picks the dark master (every
key equal, temperature within tolerance, valid, not held for review); lights are grouped by master and each group is
calibrated by :func:`calib.calibration.calibrate_files` in the engine's worker process. A light without a matching
master is not calibrated (the refusal reason is a warning) and makes the job end ``failed`` after the others are done.

Params: ``lights`` (list of FITS paths) or ``lights_dir`` (every FITS file in it); ``output_dir`` (required);
``allow_scaled`` (bool, default false: a scaled dark only when asked, with the selection's warning); ``use_bias``
(bool, default false; a scaled dark always uses the matching bias); ``pedestal_adu`` (float, default 0).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.library.index import LibraryIndex
from daemon.library.selection import select_for_light
from daemon.planning import find_lights
from daemon.settings import Settings

if TYPE_CHECKING:
    from daemon.jobs.engine import JobContext

KIND = "calibrate"
PARAMS = ("lights", "lights_dir", "output_dir", "allow_scaled", "use_bias", "pedestal_adu", "not_before",
          "not_after")


def _lights(params: dict[str, Any]) -> list[Path]:
    if params.get("lights"):
        return [Path(p) for p in params["lights"]]
    return find_lights(params["lights_dir"], recursive=False)


def validate(params: dict[str, Any], settings: Settings, index: LibraryIndex) -> tuple[dict[str, Any], str | None]:
    importlib.import_module("calib.calibration")  # ModuleNotFoundError: this kind is not available
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"calibrate: unknown param(s) {', '.join(unknown)}")
    if not params.get("output_dir"):
        raise ValueError("calibrate: params.output_dir is required")
    if not params.get("lights") and not params.get("lights_dir"):
        raise ValueError("calibrate: params.lights (paths) or params.lights_dir is required")
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
    for light in lights:
        selection = select_for_light(ctx.index, light, allow_scaled=allow_scaled)
        if selection.entry is None or selection.entry.master is None:
            refused[light.name] = "; ".join(f"#{i}: {r}" for i, r in sorted(selection.refused.items())) or \
                "no candidate master in the library"
            ctx.warn(f"{light.name}: not calibrated, no matching dark ({refused[light.name]})")
            continue
        for warning in selection.warnings:
            ctx.warn(f"{light.name}: {warning}")
        bias = None
        if selection.scaled or use_bias:
            bias_entry = select_for_light(ctx.index, light, kind="bias").require()
            bias = bias_entry.master
        groups[(selection.entry.master, bias, selection.scaled)].append(light)
        masters[light.name] = selection.entry.master
    outputs: list[str] = []
    for (dark, bias, scaled), group in groups.items():
        ctx.check()
        ctx.progress(step=f"calibrating {len(group)} light(s) with {Path(dark).parent.name}")
        future = ctx.pool.submit(calibrate_files, [str(p) for p in group], dark=dark, output_dir=output_dir,
                                 bias=bias, pedestal_adu=float(ctx.params.get("pedestal_adu", 0.0)),
                                 scale_dark=scaled)
        outputs += [str(p) for p in future.result()]
        ctx.progress(len(outputs) + len(refused), len(lights))
    result = {"outputs": outputs, "masters": masters, "refused": refused, "output_dir": str(output_dir)}
    ctx.save_result(result)
    if refused:
        raise RuntimeError(f"{len(refused)} of {len(lights)} light(s) have no matching master: "
                           + ", ".join(sorted(refused)))
    return result
