"""``darkd watch DIR…``: the closed loop in the foreground (:mod:`daemon.watch`, docs/watch.md).

Runs the daemon's runtime (camera monitor, job engine, the watcher) without the HTTP API, over the folders given here
(they replace ``[watch] folders``; the rest of ``[watch]`` comes from the config). New lights are calibrated on
arrival, missing darks are built in the build window or while the sky is closed, and waiting lights are calibrated
when their darks land. Ctrl-C (or SIGTERM) stops it: the engine persists its job, the watcher's plan is in the index.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("darkd.watch")


def run(args: argparse.Namespace) -> int:
    from daemon.runtime import Runtime
    from daemon.settings import load_settings

    logging.getLogger().setLevel(logging.DEBUG if args.verbose >= 2 else logging.INFO)
    settings = load_settings(args.config)
    watch = settings.watch.model_copy(update={"folders": [Path(d).resolve() for d in args.folders]})
    if args.output is not None:
        watch.output = args.output
    if args.poll:
        watch.poll = True
    if args.interval is not None:
        watch.interval_s = args.interval
    if args.build_window is not None:
        watch.build_window = args.build_window
    settings = settings.model_copy(update={"watch": watch})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    runtime = Runtime(settings)
    try:
        runtime.start()
    except ValueError as exc:  # a bad [watch] setting (build window, weather)
        log.error("%s", exc)
        return 2
    try:
        stop.wait()
    finally:
        runtime.stop()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    watch = subparsers.add_parser("watch", help="watch lights folders: calibrate on arrival, build missing darks")
    watch.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="lights folder(s) to watch")
    watch.add_argument("--config", type=Path, help="TOML configuration (default: $DARKD_CONFIG or config/darkd.toml)")
    watch.add_argument("--output", type=Path, help="calibrated lights: relative to each folder or absolute "
                       "(default [watch] output, 'calibrated')")
    watch.add_argument("--poll", action="store_true", help="poll instead of inotify (network shares)")
    watch.add_argument("--interval", type=float, metavar="S", help="a light is complete when its size held S seconds")
    watch.add_argument("--build-window", metavar="HH:MM-HH:MM", help="local time window to build missing darks in")
    watch.set_defaults(func=run)
