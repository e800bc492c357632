"""Run every benchmark in turn (``make bench``). Each prints its own figures; see docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("bench_simulator", "bench_capture", "bench_integration", "bench_build_library", "bench_api",
           "bench_cli_startup", "bench_compression")


def main() -> int:
    failed = []
    here = Path(__file__).resolve().parent
    for name in BENCHES:
        if not (here / f"{name}.py").exists():
            continue
        sys.stdout.write(f"\n=== bench.{name}\n")
        sys.stdout.flush()
        if subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=here.parent) != 0:
            failed.append(name)
    if failed:
        sys.stdout.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
