"""Compare versions of the Winsorized kernel (``calib/kernels.py``) side by side in one process: a tool for kernel
work, not one of ``make bench``'s benchmarks.

Each file given is a copy of ``calib/kernels.py`` (e.g. ``git show HEAD~1:calib/kernels.py > /tmp/old.py``, or an
edited copy); each is compiled by numba just in time (no disk cache) as its own module, and its
``winsorized_kernel`` runs the fused sort + clip + combine on the same stack — ``--rows`` full-width rows of the
first N frames in ``--dir`` (the benchmark's frames, ``bench.bench_integration --dir``) — alternating between the
versions ``--repeat`` times. Printed: the best CPU time per pixel of each, and how many outputs differ from the
first file's (combined value, rejected low, rejected high).

    .venv/bin/python -m bench.kernel_ab /tmp/old.py calib/kernels.py --dir /tmp/perf-integrate-frames
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from calib.rejection import _kernel_network


def load_version(path: Path, name: str, folder: Path) -> ModuleType:
    """``path`` as module ``name``, with numba's disk cache off (copies share one cache key otherwise)."""
    copy = folder / f"{name}.py"
    copy.write_text(path.read_text(encoding="utf-8").replace("cache=True", "cache=False"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_stack(directory: Path, n: int, rows: int, first_row: int = 1500) -> np.ndarray:
    from astropy.io import fits

    paths = sorted((directory / f"n{n}").glob("*.fits"))[:n]
    if len(paths) < n:
        raise SystemExit(f"need {n} frames in {directory / f'n{n}'} (make them with bench.bench_integration --dir)")
    planes = [fits.getdata(p)[first_row:first_row + rows].astype(np.float32) for p in paths]
    return np.ascontiguousarray(np.stack(planes).reshape(n, -1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("versions", nargs="+", type=Path, help="copies of calib/kernels.py to compare")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/perf-integrate-frames"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    stack = load_stack(args.dir, args.frames, args.rows)
    n, pixels = stack.shape
    pair_a, pair_b = _kernel_network(n)
    with tempfile.TemporaryDirectory(prefix="darkd-kernel-ab-") as tmp:
        modules = [load_version(p, f"kernel_ab_{i}", Path(tmp)) for i, p in enumerate(args.versions)]
        outputs = []
        for module in modules:  # compile, and keep each version's outputs
            out = (np.empty(pixels, np.float32), np.empty(pixels, np.int32), np.empty(pixels, np.int32))
            module.winsorized_kernel(stack, pair_a, pair_b, *out, 4.0, 3.0, False, 100, 100)
            outputs.append(out)
        best = [np.inf] * len(modules)
        for _ in range(args.repeat):
            for i, module in enumerate(modules):
                t = time.process_time()
                module.winsorized_kernel(stack, pair_a, pair_b, *outputs[i], 4.0, 3.0, False, 100, 100)
                best[i] = min(best[i], time.process_time() - t)
    for i, path in enumerate(args.versions):
        differ = ", ".join(f"{name} {int((outputs[i][k] != outputs[0][k]).sum())}"
                           for k, name in enumerate(("value", "low", "high")))
        sys.stdout.write(f"{path}: {best[i] / pixels * 1e9:.1f} ns/px" + (f"; differ from the first: {differ}"
                                                                        if i else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
