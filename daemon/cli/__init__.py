"""The ``darkd`` command line. Each sub-command group lives in its own module with a ``register(subparsers)``.

Start-up time: the parser of a command line imports only that command's modules (:func:`build_parser`), but
``darkd --help`` imports every command module, so those modules import only the standard library at module level;
each command handler imports the stack it needs (SQLAlchemy, astropy, the camera...) when it runs. Choices defined
by a heavy module are given as :class:`LazyChoices`. ``tests/unit/test_cli_startup.py`` checks it.
"""

from __future__ import annotations

import argparse
import enum
import gc
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

# One module per command group, with the top-level commands it adds or extends; each module defines
# register(subparsers) and sets a ``func`` default returning an exit code. A module that extends a command comes after
# the command's own module. build_parser registers only the modules of the command being run.
COMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("daemon.cli.capture", ("capture", "camera")),  # darkd capture, darkd camera status
    ("daemon.cli.health", ("camera",)),  # darkd camera health
    ("daemon.cli.calibration", ("integrate", "master", "calibrate")),
    ("daemon.cli.measure", ("measure",)),  # darkd measure ...
    ("daemon.cli.library", ("plan", "library")),  # darkd plan, darkd library, darkd library verify|show|accept|bad
    ("daemon.cli.export", ("library",)),  # darkd library export-phd2
    ("daemon.cli.jobs", ("jobs",)),  # darkd jobs list|show|cancel|pause|resume
    ("daemon.cli.serve", ("serve",)),
    ("daemon.cli.watch", ("watch",)),  # darkd watch DIR…
    ("daemon.cli.demo", ("demo",)),
)


class LazyChoices:
    """argparse ``choices`` read from ``module.attribute`` (a sequence, or an Enum class: its values) on first use.

    argparse uses choices only to check a value, to print an error and in ``%(choices)s`` of a help text, so the module
    is imported only by the command that uses them. Give the argument a ``metavar``: without one, ``add_argument``
    lists the choices at once.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute
        self._values: tuple[str, ...] | None = None

    def values(self) -> tuple[str, ...]:
        if self._values is None:
            found = getattr(importlib.import_module(self.module), self.attribute)
            if isinstance(found, type) and issubclass(found, enum.Enum):
                self._values = tuple(str(member.value) for member in found)
            else:
                self._values = tuple(str(v) for v in found)
        return self._values

    def __contains__(self, value: object) -> bool:
        return value in self.values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.values())

    def __len__(self) -> int:
        return len(self.values())

    def __repr__(self) -> str:
        return f"LazyChoices({self.module}.{self.attribute})"


def subcommands_of(subparsers: argparse._SubParsersAction, command: str) -> argparse._SubParsersAction:
    """The sub-command list of an already registered ``command`` (e.g. ``library``, ``camera``), for a module that
    adds one of its own (``darkd library export-phd2``, ``darkd camera health``); that module comes after the
    command's own in :data:`COMMAND_MODULES`."""
    for action in subparsers.choices[command]._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"darkd {command} has no sub-commands to extend")


def _command_in(argv: Sequence[str]) -> str | None:
    """The top-level command named in ``argv`` (its first word that is not an option: the only top-level option,
    ``-v``, takes no value), when it is one of :data:`COMMAND_MODULES`'s; None otherwise (``--help``, a typo)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if any(word in commands for _, commands in COMMAND_MODULES) else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``darkd`` parser. Given the command line ``argv``, only the modules of the command it names are
    registered (building every command's parser cost ~25 ms of each start, issue 16); without ``argv``, or when it
    names no known command (``darkd --help``, a typo: argparse then lists every command), all of them."""
    parser = argparse.ArgumentParser(prog="darkd", description="Dark libraries and CMOS calibration for INDI cameras.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = None if argv is None else _command_in(argv)
    for name, commands in COMMAND_MODULES:
        if command is None or command in commands:
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the command; returns its exit code.

    In-process callers (the tests) use this; the console script is :func:`run`."""
    argv = sys.argv[1:] if argv is None else argv
    return _execute(build_parser(argv).parse_args(argv))


def _execute(args: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("darkd").warning("interrupted")
        return 130


Handler = TypeVar("Handler", bound=Callable[[argparse.Namespace], int])
_COLLECTOR_OFF = "darkd_collector_off"


def collector_off(handler: Handler) -> Handler:
    """Mark a command handler whose cyclic garbage is small and never holds its data (arrays), so :func:`run` leaves
    the cyclic garbage collector off while it runs: the collector would only walk the imported stack again. Brief
    commands (:func:`brief`) are such; so is ``darkd integrate``: its only cyclic garbage is the inputs' parsed
    headers, about 10 objects per frame and never an array (613 objects for 16 frames, 1189 for 64), while importing
    astropy and loading numba's kernels made the collector run ~270 times (~85 ms). Not for a command that runs on
    (``serve``) or whose cyclic garbage grows with its work."""
    setattr(handler, _COLLECTOR_OFF, True)
    return handler


def brief(handler: Handler) -> Handler:
    """Mark a command handler as brief: it reads or changes a few rows of the library and ends (``darkd library``,
    ``darkd jobs list``), so :func:`run` leaves the cyclic garbage collector off while it runs (:func:`collector_off`).
    Not for a command whose length depends on the data (``library verify``, ``plan``) or that runs on (``serve``)."""
    return collector_off(handler)


def run() -> int:
    """The ``darkd`` console script (``[project.scripts]``): :func:`main` in a process that ends with the command.

    Start-up time (issue 16; measured in docs/benchmarks.md, "Command start-up time"). A command that reads the
    library imports SQLAlchemy and pydantic: some 70 000 objects that live as long as the process. The cyclic garbage
    collector would walk them again and again while they accumulate (a full pass each time the survivors have grown
    by a quarter) and free next to nothing, so it is off while the command line is parsed, and stays off through a
    command marked :func:`collector_off` (a :func:`brief` one, ``darkd integrate``: its garbage goes with the
    process); every other command runs with it on. Once the command
    has returned, every object still alive is frozen out of the collector (``gc.freeze``), so the interpreter's exit
    does not collect and free the module graph one object at a time; the process gives the memory back anyway.
    ``atexit`` handlers (logging) and the flushing of stdout/stderr run as usual.
    """
    gc.disable()
    args = build_parser(sys.argv[1:]).parse_args()
    if not getattr(args.func, _COLLECTOR_OFF, False):
        gc.enable()
    code = _execute(args)
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(run())
