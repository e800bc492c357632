"""Start-up time of the ``darkd`` command as the user runs it: whole processes, wall time (issue 16: ≤ 0.3 s).

Commands: ``darkd --help``, ``darkd library``, ``darkd jobs list``, ``darkd camera status --help``, and
``python -c pass`` as the interpreter's own floor. The library commands run against a real, empty library (its
SQLite index created and migrated once before timing), given by ``DARKD_CONFIG``. Runs alternate the commands
(round-robin, ``--repeats`` rounds, one untimed warm-up round so the page cache and ``__pycache__`` are warm); the
table gives min / median / max wall time of the whole process (``subprocess.run`` around the console script).

Then one ``python -X importtime`` run per command gives the cumulative import time of the big packages, to show what
each command pulls in (importtime adds its own overhead; compare its rows with each other, not with the wall time).

    .venv/bin/python -m bench.bench_cli_startup [--repeats 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DARKD = Path(sys.executable).parent / "darkd"
COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("library",), ("jobs", "list"), ("camera", "status", "--help"))
PYTHON_FLOOR = "python -c pass"
TARGET_S = 0.3
# Packages whose cumulative import time is reported per command (the heavy stack and the settings/camera modules).
PACKAGES = ("numpy", "astropy.io.fits", "sqlalchemy", "alembic", "pydantic", "fastapi", "daemon.settings",
            "drivers.camera", "daemon.library.catalog", "calib.integration")
ENTRY = "import sys; from daemon.cli import run; sys.exit(run())"  # the console script (pyproject.toml)


def _machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the start; "
            f"{_bytecode()}")


def _bytecode() -> str:
    """Whether darkd's own modules have their bytecode beside them, as an installed package has (``make venv``
    writes it): without it every command compiles them again, where PYTHONDONTWRITEBYTECODE is set."""
    import importlib.util

    import daemon.cli

    source = Path(daemon.cli.__file__)
    cached = Path(importlib.util.cache_from_source(str(source)))
    fresh = cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime
    return "darkd's bytecode written" if fresh else "darkd's bytecode NOT written (run `make venv`): each run compiles"


def _make_library(workdir: Path) -> dict[str, str]:
    """A config pointing at an empty library whose index exists (created and migrated here, untimed)."""
    root = workdir / "library"
    config = workdir / "darkd.toml"
    config.write_text(f'[library]\nroot = "{root}"\n', encoding="utf-8")
    from daemon.library.catalog import LibraryIndex
    from daemon.settings import load_settings

    LibraryIndex.open(load_settings(config).library).close()
    return {**os.environ, "DARKD_CONFIG": str(config)}


def _argv(command: tuple[str, ...] | str) -> list[str]:
    if command == PYTHON_FLOOR:
        return [sys.executable, "-c", "pass"]
    return [str(DARKD), *command]


def _label(command: tuple[str, ...] | str) -> str:
    return command if isinstance(command, str) else "darkd " + " ".join(command)


def _run_once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def wall_times(env: dict[str, str], repeats: int) -> dict[str, list[float]]:
    commands: list[tuple[str, ...] | str] = [PYTHON_FLOOR, *COMMANDS]
    times: dict[str, list[float]] = {_label(c): [] for c in commands}
    for round_no in range(repeats + 1):
        for command in commands:
            elapsed = _run_once(_argv(command), env)
            if round_no:  # round 0 warms the caches
                times[_label(command)].append(elapsed)
    return times


def import_times(env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Cumulative import time (s) of each package in :data:`PACKAGES` that the command imports."""
    out: dict[str, dict[str, float]] = {}
    for command in COMMANDS:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", ENTRY, *command], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        found: dict[str, float] = {}
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            _, cumulative, name = line.split("|", 2)
            name = name.strip()
            if name in PACKAGES and name not in found and cumulative.strip().isdigit():
                found[name] = int(cumulative) / 1e6
        out[_label(command)] = found
    return out


def to_markdown(times: dict[str, list[float]], imports: dict[str, dict[str, float]]) -> str:
    lines = ["| command | min s | median s | max s | ≤ 0.3 s (min) |", "|---|---|---|---|---|"]
    for label, values in times.items():
        over = min(values) - TARGET_S
        ok = "" if label == PYTHON_FLOOR else ("yes" if over <= 0 else f"no (+{over:.2f} s)")
        lines.append(f"| `{label}` | {min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} | {ok} |")
    lines += ["", "| command | imports (cumulative s, `-X importtime`) |", "|---|---|"]
    for label, found in imports.items():
        listed = ", ".join(f"{name} {sec:.2f}" for name, sec in sorted(found.items(), key=lambda kv: -kv[1]))
        lines.append(f"| `{label}` | {listed or 'none of the heavy packages'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="darkd-bench-cli-") as tmp:
        env = _make_library(Path(tmp))
        times = wall_times(env, args.repeats)
        imports = import_times(env)
    if args.json:
        print(json.dumps({"machine": machine, "wall_s": times, "imports_s": imports}, indent=2))
    else:
        print(f"machine: {machine}; {args.repeats} rounds\n")
        print(to_markdown(times, imports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
