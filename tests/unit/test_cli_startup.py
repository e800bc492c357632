"""The ``darkd`` command imports only what the chosen command needs (issue 16: start-up time).

Not a timed test: it checks which packages a command imports, in a fresh interpreter. Wall times are measured by
``bench/bench_cli_startup.py`` (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from daemon.cli import COMMAND_MODULES, LazyChoices, build_parser
from daemon.jobs.queue import JobQueue
from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import load_settings
from drivers.camera import FrameType, OverscanMode

HEAVY = ("numpy", "astropy", "sqlalchemy", "alembic", "pydantic", "fastapi", "uvicorn", "matplotlib", "numba",
         "calib", "drivers", "daemon.settings", "daemon.library", "http")  # http: http.client pulls in ssl and email

PROBE = """
import json, sys
from daemon.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] if not m.startswith('daemon.') else '.'.join(m.split('.')[:2])
                         for m in sys.modules})))
"""


def imported_by(*argv: str, config: Path | None = None) -> set[str]:
    env = {**os.environ, "DARKD_CONFIG": str(config)} if config is not None else None
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                          check=True, timeout=120)
    return set(json.loads(proc.stdout.splitlines()[-1]))


# A command whose help lists choices defined by a heavy module (``integrate --help``: the rejection methods) imports
# that module to print them; these do not.
@pytest.mark.parametrize("argv", [("--help",), ("camera", "status", "--help"), ("camera", "health", "--help"),
                                  ("library", "--help"), ("measure", "--help"), ("demo", "--help")])
def test_help_imports_none_of_the_heavy_stack(argv: tuple[str, ...]) -> None:
    loaded = imported_by(*argv)
    assert not loaded & set(HEAVY), f"darkd {' '.join(argv)} imported {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("argv", [("library",), ("jobs", "list")])
def test_library_commands_import_the_index_but_not_astropy_numpy_or_the_api(tmp_path: Path,
                                                                            argv: tuple[str, ...]) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{tmp_path / "library"}"\n', encoding="utf-8")
    LibraryIndex.open(load_settings(config).library).close()  # an existing (empty) index, as in use
    loaded = imported_by(*argv, config=config)
    assert "daemon.library" in loaded, "the probe must really have opened the index"
    assert not loaded & {"numpy", "astropy", "fastapi", "uvicorn", "calib", "matplotlib", "drivers", "alembic"}


# The read-only listings query the index with SQLAlchemy Core (daemon.library.tables); the ORM is loaded by writes only.
ORM_PROBE = """
import sys
from daemon.cli import main
main(sys.argv[1:])
print(sorted(m for m in sys.modules if m == "sqlalchemy.orm" or m == "daemon.library.models"))
"""


@pytest.mark.parametrize("argv", [("library",), ("library", "--json"), ("jobs", "list"), ("jobs", "list", "--json")])
def test_listing_the_library_or_the_jobs_does_not_import_the_orm(tmp_path: Path, argv: tuple[str, ...]) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{tmp_path / "library"}"\n', encoding="utf-8")
    index = LibraryIndex.open(load_settings(config).library)
    try:  # not empty: an entry with a frame, and a job
        entry = index.upsert_entry(LibraryKey(camera="cam", kind="dark", exposure_s=60, set_point_c=-10, gain=120,
                                              offset=30, width_px=64, height_px=48), frames_target=2)
        frame = Path(entry.frames_dir) / "f0.fits"
        frame.write_bytes(b"x")
        index.record_frame(entry.id, frame, "ab" * 32, 0, temperature_start_c=-10.1, temperature_end_c=-9.9)
        JobQueue(index).add_job("measure", {})
    finally:
        index.close()
    proc = subprocess.run([sys.executable, "-c", ORM_PROBE, *argv], capture_output=True, text=True, check=True,
                          env={**os.environ, "DARKD_CONFIG": str(config)}, timeout=120)
    listing, modules = proc.stdout.rsplit("\n", 2)[:2]
    assert ("60s" if argv == ("library",) else "dark" if argv[0] == "library" else "measure") in listing, listing
    assert modules == "[]", f"darkd {' '.join(argv)} imported {modules}"


# The console script's ``run``: the collector stays off through a brief command and everything alive is frozen at the
# end (so the exit does not free the module graph object by object); any other command runs with the collector on.
RUN_PROBE = """
import gc, json, sys
from daemon.cli import run
code = run()
print(json.dumps({"code": code, "gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def _run_probe(*argv: str, config: Path) -> dict[str, int | bool]:
    proc = subprocess.run([sys.executable, "-c", RUN_PROBE, *argv], capture_output=True, text=True, check=True,
                          env={**os.environ, "DARKD_CONFIG": str(config)}, timeout=120)
    result: dict[str, int | bool] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(("argv", "brief"), [(("library",), True), (("jobs", "list"), True),
                                             (("library", "verify", "--no-checksums"), False)])
def test_the_console_script_pauses_the_collector_only_for_brief_commands(tmp_path: Path, argv: tuple[str, ...],
                                                                         brief: bool) -> None:
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{tmp_path / "library"}"\n', encoding="utf-8")
    LibraryIndex.open(load_settings(config).library).close()
    result = _run_probe(*argv, config=config)
    assert result["code"] == 0
    assert result["gc_enabled"] is not brief, result
    assert int(result["frozen"]) > 10_000, result  # the imported stack, frozen once the command returned


def test_the_collector_stays_off_through_darkd_integrate(tmp_path: Path) -> None:
    """``darkd integrate`` leaves no cyclic garbage worth collecting (the inputs' headers; daemon.cli.collector_off),
    so it runs with the collector off, as a brief command does, and writes its master as usual."""
    import numpy as np

    from calib.frames import write_frame

    frames = [write_frame(tmp_path / f"f{i}.fits", np.full((12, 16), 100.0 + i), bitpix16=True) for i in range(3)]
    out = tmp_path / "master.fits"
    proc = subprocess.run([sys.executable, "-c", RUN_PROBE, "integrate", *map(str, frames), "-o", str(out),
                           "--rejection", "none"], capture_output=True, text=True, check=True, timeout=120,
                          env={**os.environ, "DARKD_NO_NUMBA": "1"})  # the collector, not the kernels, is tested
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0 and result["gc_enabled"] is False, result
    assert out.exists()


def test_the_darkd_console_script_is_run() -> None:
    """``darkd`` must start through :func:`daemon.cli.run` (the start-up measures above live there), not ``main``."""
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "darkd"]
    assert script.value == "daemon.cli:run"


def test_an_index_behind_the_head_is_still_upgraded(tmp_path: Path) -> None:
    """Skipping Alembic when the stored revision is the head must not skip a due migration."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from daemon.library.store import alembic_config, head_revision, make_engine, migrate

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()  # Alembic's own answer
    assert head is not None and head_revision() == head
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    migrate(engine, "0002")
    with engine.begin() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0002"
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head
    engine.dispose()


def _lazy_choices(parser: argparse.ArgumentParser) -> Iterator[tuple[str, LazyChoices]]:
    for action in parser._actions:
        if isinstance(action.choices, LazyChoices):
            yield f"{parser.prog} {action.dest}", action.choices
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _lazy_choices(sub)


def test_every_lazy_choice_resolves_to_its_source() -> None:
    found = dict(_lazy_choices(build_parser()))
    assert len(found) >= 8, sorted(found)
    for where, choices in found.items():
        assert len(choices) > 0, where
    assert list(found["darkd capture type"]) == [t.value for t in FrameType]
    assert list(found["darkd capture overscan"]) == [m.value for m in OverscanMode]


def test_lazy_choices_check_values_and_list_them_in_help() -> None:
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    parser.add_argument("--type", choices=LazyChoices("drivers.camera", "FrameType"), metavar="TYPE",
                        help="frame type: %(choices)s")
    assert parser.parse_args(["--type", "dark"]).type == "dark"
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--type", "darkest"])
    assert "frame type: light, bias, dark, flat" in " ".join(parser.format_help().split())


def _helps(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """Every (sub-)command's prog and help text under ``parser``."""
    yield parser.prog, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _helps(sub)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_a_command_line_builds_only_its_command_and_the_same_parser_for_it() -> None:
    """build_parser(argv) registers only the modules of the command in argv (COMMAND_MODULES): each command, with the
    sub-commands other modules add to it (``camera health``, ``library export-phd2``), is built exactly as in the full
    parser, and no other command is."""
    everything = _commands(build_parser())
    assert len(everything) >= 12, sorted(everything)
    for name, full in everything.items():
        chosen = build_parser(["-v", name, "--help"])
        assert set(_commands(chosen)) == {n for n in everything if _same_module(name, n)}
        assert dict(_helps(_commands(chosen)[name])) == dict(_helps(full)), name
    assert set(_commands(build_parser(["--help"]))) == set(everything)
    assert set(_commands(build_parser(["librar"]))) == set(everything)  # a typo: argparse lists every command


def _same_module(command: str, other: str) -> bool:
    """Whether one module of :data:`COMMAND_MODULES` adds or extends both commands (a command shares its own)."""
    return any(command in commands and other in commands for _, commands in COMMAND_MODULES)
