"""``darkd camera health [--camera NAME] [--json] [--plot DIR] [--backfill]``: a camera's health over months.

Reads the index's ``master_history`` (:mod:`daemon.health`): per camera, quantity and series the latest value, the
least-squares trend with its 1σ error (per ``[health] window_days``) and the warnings with what to rebuild. Exit code
1 when there is a warning. ``--backfill`` first records every existing master that has no history yet. ``--plot DIR``
writes one PNG per camera and quantity (matplotlib, Agg). Imports the heavy stack only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daemon.cli import subcommands_of


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(report: dict[str, Any]) -> str:
    """The report as a readable table."""
    if not report["series"]:
        return "no master history yet (build masters, or run darkd camera health --backfill)\n"
    lines = [f"{'camera':<24} {'quantity':<24} {'series':<44} {'n':>3} {'latest':>10} {'± 1σ':>9} "
             f"{'trend/' + format(report['window_days'], 'g') + ' d':>14} {'± 1σ':>9}"]
    for s in report["series"]:
        last = s["points"][-1]
        trend = s["trend"] or {}
        lines.append(f"{s['camera'][:24]:<24} {s['quantity']:<24} {s['series'][:44]:<44} {len(s['points']):>3} "
                     f"{_fmt(last['value']):>10} {_fmt(last['uncertainty'], 2):>9} "
                     f"{_fmt(trend.get('change_per_window')):>14} "
                     f"{_fmt(trend.get('change_per_window_uncertainty'), 2):>9}")
        lines.extend(f"    note: {note}" for note in s["notes"])
    for w in report["warnings"]:
        lines.append(f"WARNING {w['message']}\n        suggestion: {w['suggestion']}")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], folder: Path) -> list[Path]:
    """One PNG per camera and quantity: every series' values with error bars against time."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime

    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateFormatter, AutoDateLocator, date2num

    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in report["series"]:
        groups.setdefault((s["camera"], s["quantity"]), []).append(s)
    written = []
    for (camera, quantity), series in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for s in series:
            times = [float(date2num(datetime.fromisoformat(p["created_utc"].replace("Z", "+00:00"))))
                     for p in s["points"]]
            errors = [p["uncertainty"] or 0.0 for p in s["points"]]
            ax.errorbar(times, [p["value"] for p in s["points"]], yerr=errors, marker="o", capsize=3,
                        label=s["series"][:60])
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(AutoDateFormatter(locator))
        ax.set_title(f"{camera}: {quantity}")
        ax.set_ylabel(f"{quantity} [{series[0]['unit']}]")
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{camera}_{quantity}") + ".png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        written.append(folder / name)
    return written


def run_health(args: argparse.Namespace) -> int:
    from daemon.health import backfill, camera_health
    from daemon.library.catalog import LibraryIndex
    from daemon.settings import load_settings

    settings = load_settings(args.config)
    with LibraryIndex.open(settings.library) as index:
        if args.backfill:
            done = backfill(index, settings.health, args.camera)
            sys.stderr.write(f"back-filled {done['masters']} master(s), {done['rows']} value(s)\n")
        report = camera_health(index, settings.health, args.camera)
    if args.plot:
        for path in plot(report, Path(args.plot)):
            sys.stderr.write(f"wrote {path}\n")
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(table(report))
    return 1 if report["warnings"] else 0



def register(subparsers: argparse._SubParsersAction) -> None:
    health = subcommands_of(subparsers, "camera").add_parser(
        "health", help="a camera's health over months: trends of every master's statistics, warnings")
    health.add_argument("--camera", help="only this camera (as in the library)")
    health.add_argument("--json", action="store_true", help="machine-readable output (one JSON object)")
    health.add_argument("--plot", metavar="DIR", help="write PNG plots (one per camera and quantity) into DIR")
    health.add_argument("--backfill", action="store_true",
                        help="first record the statistics of every existing master that has no history yet")
    health.add_argument("--config", help="darkd TOML config (default config/darkd.toml or $DARKD_CONFIG)")
    health.set_defaults(func=run_health)
