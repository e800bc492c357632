"""``darkd measure read-noise|gain|dark-current|dark-ladder|amp-glow`` — camera characterisation from FITS frames.

Each prints a readable table, or with ``--json`` exactly one JSON object on stdout. ``--report FILE`` also writes the
report (JSON when FILE ends in ``.json``, else the table); ``--plot DIR`` writes PNG plots. A FILE argument may be a
directory (all ``*.fit``/``*.fits``/``*.fts`` in it, sorted). Bad input (odd counts are handled, mismatched exposures,
a region over the overscan, unreadable files) ends with a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("darkd.measure")
FITS_SUFFIXES = (".fit", ".fits", ".fts")


def expand_paths(items: list[str] | None) -> list[Path]:
    """Files as given; a directory expands to its FITS files (sorted)."""
    out: list[Path] = []
    for item in items or []:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in FITS_SUFFIXES))
        else:
            out.append(p)
    return out


# Each runner imports its part of calib.measure (NumPy, astropy, matplotlib) when it runs: start-up time of darkd.
def _read_noise(args: argparse.Namespace) -> dict[str, Any]:
    from calib.measure.read_noise import measure_read_noise

    return measure_read_noise(expand_paths(args.bias), args.gain, region=args.region, k_sigma=args.k_sigma)


def _gain(args: argparse.Namespace) -> dict[str, Any]:
    from calib.measure.gain import measure_gain, measure_ptc

    pairs = [expand_paths(p) for p in args.flats]
    biases = expand_paths(args.bias)
    if len(pairs) == 1:
        return measure_gain(pairs[0], biases, region=args.region, k_sigma=args.k_sigma)
    return measure_ptc(pairs, biases, region=args.region, k_sigma=args.k_sigma)


def _dark_current(args: argparse.Namespace) -> dict[str, Any]:
    from calib.measure.dark_current import group_by_exposure, measure_dark_current, measure_dark_current_exposures
    from calib.measure.ladder import measure_dark_vs_temperature

    darks, biases = expand_paths(args.darks), expand_paths(args.bias)
    common = {"region": args.region, "k_sigma": args.k_sigma}
    if args.by_temperature:
        return measure_dark_vs_temperature(darks, biases, args.gain, args.read_noise, **common)
    if len(group_by_exposure(darks)) > 1:
        return measure_dark_current_exposures(darks, biases, args.gain, args.read_noise, confidence=args.confidence,
                                              **common)
    return measure_dark_current(darks, biases, args.gain, args.read_noise, confidence=args.confidence, **common)


def _dark_ladder(args: argparse.Namespace) -> dict[str, Any]:
    from calib.measure.ladder import measure_dark_ladder

    return measure_dark_ladder(expand_paths(args.darks), expand_paths(args.bias), region=args.region,
                               gain_e_per_adu=args.gain)


def _amp_glow(args: argparse.Namespace) -> dict[str, Any]:
    from calib.measure.amp_glow import measure_amp_glow

    return measure_amp_glow(expand_paths(args.darks), expand_paths(args.bias), gain_e_per_adu=args.gain,
                            hot_sigma=args.hot_sigma, glow_map_path=args.glow_map, hot_map_path=args.hot_map)


RUNNERS = {"read-noise": _read_noise, "gain": _gain, "dark-current": _dark_current, "dark-ladder": _dark_ladder,
           "amp-glow": _amp_glow}


def run_measure(args: argparse.Namespace) -> int:
    from calib.frames import FrameError
    from calib.measure.report import format_table, to_json, write_plots, write_report

    try:
        result = RUNNERS[args.measure_command](args)
    except (ValueError, FrameError) as exc:  # RegionError is a ValueError
        sys.stderr.write(f"darkd measure {args.measure_command}: {exc}\n")
        return 2
    if args.report:
        write_report(result, args.report)
        log.info("report written to %s", args.report)
    if args.plot:
        for path in write_plots(result, args.plot, stem=args.measure_command.replace("-", "_")):
            sys.stderr.write(f"plot: {path}\n")
    if args.json:
        sys.stdout.write(json.dumps(to_json(result)) + "\n")
    else:
        sys.stdout.write(format_table(result) + "\n")
    return 0


def _common(p: argparse.ArgumentParser, *, gain_required: bool = False,
            region_default: str = "the central half of DATASEC, no overscan, no amp-glow corners") -> None:
    p.add_argument("--region", help="measurement region '[x1:x2,y1:y2]' (1-based inclusive; default: "
                   f"{region_default})")
    p.add_argument("--gain", type=float, required=gain_required, help="gain in e⁻/ADU")
    p.add_argument("--k-sigma", type=float, default=5.0, help="outlier clipping in σ (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--report", help="also write the report to this file (.json → JSON, else text)")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    p.set_defaults(func=run_measure)


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("measure", help="camera characterisation: read noise, gain, dark current, glow")
    sub = m.add_subparsers(dest="measure_command", required=True, metavar="MEASUREMENT")
    rn = sub.add_parser("read-noise", help="read noise from >= 2 biases (σ(B1−B2)/√2, alternating sum)")
    rn.add_argument("--bias", nargs="+", required=True, metavar="FILE")
    _common(rn)
    g = sub.add_parser("gain", help="gain by photon transfer (one flat pair) or a photon-transfer curve (several)")
    g.add_argument("--flats", nargs=2, action="append", required=True, metavar=("F1", "F2"),
                   help="a pair of equal flats; repeat for several levels (PTC: full well, linearity)")
    g.add_argument("--bias", nargs=2, required=True, metavar=("B1", "B2"))
    _common(g)
    dc = sub.add_parser("dark-current", help="dark current by Buil's pair / N-frame method (+ naive methods)")
    dc.add_argument("--darks", nargs="+", required=True, metavar="FILE",
                    help="darks of one exposure (several exposures: slope of the pair variance)")
    dc.add_argument("--bias", nargs="+", default=[], metavar="FILE", help="biases (read noise and naive method)")
    dc.add_argument("--read-noise", type=float, help="read noise in e⁻ (default: measured from the biases)")
    dc.add_argument("--confidence", type=float, default=0.95, help="confidence of the interval (default 0.95)")
    dc.add_argument("--by-temperature", action="store_true",
                    help="darks at several temperatures: dark current per CCD-TEMP and the doubling temperature")
    _common(dc, gain_required=True)
    lad = sub.add_parser("dark-ladder", help="dark level against exposure: black-point over-correction, scaling")
    lad.add_argument("--darks", nargs="+", required=True, metavar="FILE", help="darks at >= 2 exposures")
    lad.add_argument("--bias", nargs="+", default=[], metavar="FILE")
    _common(lad, region_default="all of DATASEC, the frame mean")
    ag = sub.add_parser("amp-glow", help="amp-glow map, location, profile, growth; hot-pixel map")
    ag.add_argument("--darks", nargs="+", required=True, metavar="FILE", help="darks (several exposures: growth)")
    ag.add_argument("--bias", nargs="+", required=True, metavar="FILE")
    ag.add_argument("--hot-sigma", type=float, default=5.0, help="hot-pixel threshold in local σ (default 5)")
    ag.add_argument("--glow-map", help="write the glow map (FITS, float32 ADU)")
    ag.add_argument("--hot-map", help="write the hot-pixel map (FITS, 1 = hot)")
    _common(ag, region_default="not used: the map covers DATASEC")
