"""The ``darkd`` command line. Each sub-command group lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# One module per command group; each defines register(subparsers) and sets a ``func`` default returning an exit code.
COMMAND_MODULES = (
    "daemon.cli.capture",  # darkd capture, darkd camera status
    "daemon.cli.calibration",  # darkd integrate, darkd master, darkd calibrate
    "daemon.cli.measure",  # darkd measure ...
    "daemon.cli.library",  # darkd plan, darkd library, darkd library verify
    "daemon.cli.jobs",  # darkd jobs list|show|cancel|pause|resume
    "daemon.cli.serve",  # darkd serve
    "daemon.cli.demo",  # darkd demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkd", description="Dark libraries and CMOS calibration for INDI cameras.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("darkd").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
