"""``darkd integrate``, ``darkd master bias|dark|flat|flat-dark`` and ``darkd calibrate``.

Exit codes: 0 success; 2 bad input (unreadable or truncated FITS, mismatched frames or masters, bad arguments) —
nothing is written then; 1 an unexpected I/O failure while writing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cli import LazyChoices, collector_off

if TYPE_CHECKING:  # calib (NumPy, astropy) is imported by the command that runs (start-up time of every command)
    from calib.integration import IntegrationParams

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"512M"``, ``"2000000"`` → bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 512MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _err(text: str) -> None:
    sys.stderr.write(f"darkd: {text}\n")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _add_integration_options(p: argparse.ArgumentParser, *, normalization: str | None = "none") -> None:
    p.add_argument("--combine", choices=LazyChoices("calib.integration", "COMBINES"), default="mean",
                   metavar="COMBINE", help="per-pixel combination: %(choices)s (default mean)")
    p.add_argument("--rejection", choices=LazyChoices("calib.rejection", "METHODS"), default="winsorized",
                   metavar="METHOD", help="pixel rejection: %(choices)s (default winsorized)")
    p.add_argument("--sigma-low", type=float, default=4.0, help="low rejection threshold in sigma (default 4)")
    p.add_argument("--sigma-high", type=float, default=3.0, help="high rejection threshold in sigma (default 3)")
    if normalization is not None:
        p.add_argument("--normalization", choices=LazyChoices("calib.normalization", "NORMALIZATIONS"),
                       default=normalization, metavar="NORMALIZATION",
                       help=f"frame normalization: %(choices)s (default {normalization})")
    p.add_argument("--memory-budget", type=parse_size, default=1 << 30, help="memory budget (default 1GiB)")
    p.add_argument("--workers", type=int, default=2, help="threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_preprocessing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overscan", choices=LazyChoices("calib.geometry", "OVERSCAN_CHOICES"), default="none",
                   metavar="MODE",
                   help="%(choices)s: subtract each frame's overscan level (default none: OB-clamped CMOS cameras "
                        "need none; helps against ADC drift in fast bursts); masters and lights must match")
    p.add_argument("--trim", action="store_true", help="cut each frame to TRIMSEC (or DATASEC)")
    p.add_argument("--biassec", help="overscan section [x1:x2,y1:y2] when the header has no BIASSEC")
    p.add_argument("--trimsec", help="section kept by --trim when the header has no TRIMSEC/DATASEC")


def _prep_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {"overscan": args.overscan, "trim": args.trim, "biassec": args.biassec, "trimsec": args.trimsec}


def _params(args: argparse.Namespace, normalization: str) -> IntegrationParams:
    from calib.integration import IntegrationParams

    return IntegrationParams(combine=args.combine, rejection=args.rejection, sigma_low=args.sigma_low,
                             sigma_high=args.sigma_high, normalization=normalization,
                             memory_budget_bytes=args.memory_budget, workers=args.workers)


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from calib.frames import FrameError

        try:
            return int(func(args))
        except (FrameError, ValueError) as exc:  # includes CalibrationMismatch
            _err(str(exc))
            return 2
        except OSError as exc:
            _err(f"I/O error: {exc}")
            return 1

    run.__name__ = func.__name__
    return run


@_guard
def _integrate(args: argparse.Namespace) -> int:
    from calib.integration import integrate, write_integration

    result = integrate(args.files, _params(args, args.normalization))
    path = write_integration(result, args.output)
    summary = {k: v for k, v in result.summary.items() if not isinstance(v, list)}
    if args.json:
        _out(json.dumps({"output": str(path), **summary}))
    else:
        _out(f"{path}: {summary['n_frames']} frames, {100 * summary['rejected_fraction']:.3f} % rejected "
             f"({100 * summary['rejected_low_fraction']:.3f} % low, {100 * summary['rejected_high_fraction']:.3f} % "
             f"high), noise {summary['noise_adu']:.3f} ADU, {summary['elapsed_s']:.2f} s")
    return 0


@_guard
def _master(args: argparse.Namespace) -> int:
    from calib.masters import build_master

    kind = args.kind
    normalization = "multiplicative" if kind == "flat" else "none"
    res = build_master(kind, args.files, output=args.output, bias=args.bias, flat_dark=args.flat_dark,
                       params=_params(args, normalization), defect_bias=args.defect_bias,
                       **_prep_kwargs(args))  # type: ignore[arg-type]
    if args.json:
        _out(json.dumps({"output": str(res.path), **res.stats}))
    else:
        s = res.stats
        _out(f"{res.path}: {res.header['IMAGETYP']} from {s['n_frames']} frames, mean {s['mean_adu']:.2f} ADU, "
             f"noise {s['noise_adu']:.3f} ADU, {s['hot_pixels']} hot pixels, "
             f"{100 * s['rejected_fraction']:.3f} % rejected")
    return 0


@_guard
def _calibrate(args: argparse.Namespace) -> int:
    from calib.calibration import calibrate_files

    written = calibrate_files(args.lights, dark=args.dark, flat=args.flat, bias=args.bias,
                              output_dir=args.output_dir, pedestal_adu=args.pedestal, scale_dark=args.scale_dark,
                              temperature_tolerance_c=args.temperature_tolerance, cosmetic=args.cosmetic,
                              full_frame=args.full_frame,
                              **_prep_kwargs(args))  # type: ignore[arg-type]
    for path in written:
        _out(str(path))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("integrate", help="combine frames with pixel rejection (memory-bounded)",
                              description="Integrate FITS frames: mean/median with rejection; writes the result with "
                                          "REJ_LOW/REJ_HIGH rejection-count extensions.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--output", "-o", type=Path, required=True, help="output FITS file")
    _add_integration_options(p)
    p.set_defaults(func=collector_off(_integrate))  # its only cyclic garbage: the inputs' headers (see collector_off)

    p = subparsers.add_parser("master", help="build a master bias, dark, flat or flat-dark",
                              description="Masters: bias/dark/flat-dark without normalization or bias subtraction; "
                                          "flats minus the master bias (or flat-dark), multiplicative normalization.")
    p.add_argument("kind", choices=LazyChoices("calib.masters", "KINDS"), metavar="KIND", help="%(choices)s")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--output", "-o", type=Path, required=True, help="output FITS file")
    p.add_argument("--bias", type=Path, help="master bias subtracted from each flat (flats only)")
    p.add_argument("--flat-dark", type=Path, help="master flat-dark subtracted from each flat instead of the bias")
    p.add_argument("--defect-bias", type=Path,
                   help="master bias for the dark's defect map (hot pixels in D - B; not subtracted from the master)")
    _add_integration_options(p, normalization=None)
    _add_preprocessing_options(p)
    p.set_defaults(func=_master)

    p = subparsers.add_parser("calibrate", help="calibrate lights: (L - D) / (F - B) * mean(F - B) + pedestal",
                              description="Calibrate light frames with a matched master dark (not scaled) and "
                                          "optionally a master flat and bias; refuses mismatched masters.")
    p.add_argument("lights", nargs="+", type=Path, metavar="LIGHT")
    p.add_argument("--dark", type=Path, required=True, help="master dark matching the lights")
    p.add_argument("--flat", type=Path, help="master flat")
    p.add_argument("--bias", type=Path, help="master bias (for a raw flat, or --scale-dark)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--pedestal", type=float, default=0.0, help="ADU added to the result (default 0)")
    p.add_argument("--scale-dark", action="store_true",
                   help="use Light - Bias - k(Dark - Bias) with k by noise minimisation (invalid with OB clamping "
                        "or amp glow; warns)")
    p.add_argument("--temperature-tolerance", type=float, default=0.5, help="C (default 0.5)")
    p.add_argument("--cosmetic", action="store_true",
                   help="replace the pixels flagged in the masters' defect maps (MASK) by the median of their good "
                        "neighbours; the header records how many (COSMETIC)")
    p.add_argument("--full-frame", action="store_true",
                   help="keep the full frame (default: cut to DATASEC); pixels outside DATASEC = the pedestal")
    _add_preprocessing_options(p)
    p.set_defaults(func=_calibrate)
