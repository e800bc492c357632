"""The write of a full-size master (``calib.integration.write_integration``): direct I/O against the buffered write it
replaced, each in a fresh process, alternating, after the same idle time; and what fresh memory costs on this machine.

Why: on a virtual machine whose guest returns freed memory to the host (virtio-balloon free-page reporting, a few
seconds after it is freed), the first touch of memory the process has not used before costs far more than on bare
metal, and a buffered write of a new file needs 98 MB of such memory for its page cache. The probe shows it directly:
600 MB of anonymous memory touched right after the same amount was freed, then after ``--idle`` seconds.

    .venv/bin/python -m bench.bench_master_write [--rounds 5] [--idle 4]

Each write: a 4656 × 3522 float32 master with its two uint8 rejection maps (as ``integrate()`` gives them at
N ≤ 255), written to a new file in a temporary folder on the same file system as ``--dir`` (default: the system's
temporary folder); CPU seconds (user + system) and wall seconds of ``write_integration`` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (3522, 4656)  # the QHY163M's image area


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def probe_fresh_memory(idle_s: float, mib: int = 600) -> dict[str, float]:
    """System seconds to touch ``mib`` MiB of new anonymous memory: first, again at once, again after ``idle_s``."""
    seconds = {}
    for label, wait_s in (("first", 0.0), ("again_at_once", 0.0), (f"again_after_{idle_s:g}_s", idle_s)):
        time.sleep(wait_s)
        before = _cpu()[1]
        block = np.ones(mib * 2**20 // 8)
        seconds[label] = round(_cpu()[1] - before, 3)
        del block
    return seconds


def write_once(folder: Path, buffered: bool, idle_s: float) -> dict[str, float]:
    """Write one master with ``write_integration`` (``buffered``: direct I/O turned off, the write before direct I/O),
    ``idle_s`` after its arrays were made (making them frees memory, which a write at once would reuse while it is
    still backed by the host; in ``integrate()`` the arrays are filled over seconds, band by band)."""
    from astropy.io import fits

    from calib.integration import IntegrationResult, write_integration

    rng = np.random.default_rng(0)
    data = rng.normal(1000.0, 10.0, SHAPE).astype(np.float32)
    low, high = (rng.integers(0, 3, SHAPE, dtype=np.uint8) for _ in range(2))
    result = IntegrationResult(data, low, high, fits.Header({"IMAGETYP": "Dark Frame", "NCOMBINE": 16}), {})
    out = folder / "master.fits"
    time.sleep(idle_s)
    cpu0, sys0 = _cpu()
    t0 = time.perf_counter()
    write_integration(result, out, direct_io=not buffered)
    wall = time.perf_counter() - t0
    cpu1, sys1 = _cpu()
    size = out.stat().st_size
    out.unlink()
    return {"wall_s": wall, "cpu_s": cpu1 - cpu0, "sys_s": sys1 - sys0, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=4.0,
                        help="seconds idle between making the master's arrays and writing them (default 4)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--worker", choices=("direct", "buffered"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(write_once(args.dir, args.worker == "buffered", args.idle)))
        return 0
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("fresh memory, 600 MiB touched (system s):", probe_fresh_memory(args.idle))
    runs: dict[str, list[dict[str, float]]] = {"buffered": [], "direct": []}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="darkd-bench-write-") as folder:
        for _ in range(args.rounds):
            for kind in runs:
                cmd = [sys.executable, "-m", "bench.bench_master_write", "--worker", kind, "--dir", folder,
                       "--idle", str(args.idle)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                      cwd=Path(__file__).resolve().parent.parent)
                runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    size = runs["direct"][0]["bytes"]
    print(f"\nmaster {size / 1e6:.1f} MB, {args.rounds} rounds alternating, fresh processes, "
          f"{args.idle:g} s idle before each write")
    print("| write | wall s (median; all) | CPU s (median) | system s (median) |")
    print("|---|---|---|---|")
    for kind, results in runs.items():
        walls = [r["wall_s"] for r in results]
        print(f"| {kind} | {statistics.median(walls):.3f}; {', '.join(f'{w:.3f}' for w in walls)} | "
              f"{statistics.median(r['cpu_s'] for r in results):.3f} | "
              f"{statistics.median(r['sys_s'] for r in results):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
