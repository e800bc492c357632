"""Compare versions of the Winsorized kernel (``calib/kernels.py``) side by side in one process: a tool for kernel
work, not one of ``make bench``'s benchmarks.

Each version is either a copy of ``calib/kernels.py`` (e.g. ``git show HEAD~1:calib/kernels.py > /tmp/old.py``, or
an edited copy), compiled by numba just in time (no disk cache) as its own module, or a prebuilt module
(``calib/_aot_*.so``, :mod:`calib.aot`; copy the old one aside before ``make venv`` replaces it). Each version's
``winsorized_kernel`` runs the fused sort + clip + combine on the same stack — ``--rows`` full-width rows from
``--first-row`` (``--rows 0``: the whole frame) of the first N frames in ``--dir`` (the benchmark's frames,
``bench.bench_integration --dir``) — alternating between the versions ``--repeat`` times. With ``--band-rows``, each
repeat goes through the stack in bands of that many rows, as ``integrate()`` does, and the versions alternate band
by band, so a slow minute of a shared machine falls on all of them alike. Printed: the best CPU time per pixel of
each, and how many outputs differ from the first version's (combined value, rejected low, rejected high).

    .venv/bin/python -m bench.kernel_ab /tmp/old.py calib/kernels.py --dir /tmp/perf-integrate-frames
    .venv/bin/python -m bench.kernel_ab /tmp/old_aot.so calib/_aot_*.so --rows 0 --band-rows 32 --repeat 1
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

WIDTH_PX = 4656  # the benchmark frames' row length (bench.bench_integration)


def load_version(path: Path, name: str, folder: Path) -> ModuleType:
    """``path`` as module ``name``: a prebuilt extension module as it is, a copy of ``calib/kernels.py`` with
    numba's disk cache off (copies share one cache key otherwise)."""
    if path.suffix != ".py":
        spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    else:
        copy = folder / f"{name}.py"
        copy.write_text(path.read_text(encoding="utf-8").replace("cache=True", "cache=False"), encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_stack(directory: Path, n: int, rows: int, first_row: int = 1500) -> np.ndarray:
    """(n, rows × width) float32: ``rows`` rows from ``first_row`` of the first ``n`` frames (``rows`` 0: all)."""
    from astropy.io import fits

    paths = sorted((directory / f"n{n}").glob("*.fits"))[:n]
    if len(paths) < n:
        raise SystemExit(f"need {n} frames in {directory / f'n{n}'} (make them with bench.bench_integration --dir)")
    stop = None if rows == 0 else first_row + rows
    planes = [fits.getdata(p)[first_row:stop].astype(np.float32) for p in paths]
    return np.ascontiguousarray(np.stack(planes).reshape(n, -1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("versions", nargs="+", type=Path, help="copies of calib/kernels.py, or prebuilt modules")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/perf-integrate-frames"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rows", type=int, default=64, help="rows of each frame (0: the whole frame)")
    ap.add_argument("--first-row", type=int, default=1500)
    ap.add_argument("--band-rows", type=int, default=0, help="alternate the versions band by band (0: one call)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    stack = load_stack(args.dir, args.frames, args.rows, 0 if args.rows == 0 else args.first_row)
    n, pixels = stack.shape
    band_px = args.band_rows * WIDTH_PX if args.band_rows else pixels
    bands = [np.ascontiguousarray(stack[:, b0:b0 + band_px]) for b0 in range(0, pixels, band_px)]
    pair_a, pair_b = _kernel_network(n)
    with tempfile.TemporaryDirectory(prefix="darkd-kernel-ab-") as tmp:
        modules = [load_version(p, f"kernel_ab_{i}", Path(tmp)) for i, p in enumerate(args.versions)]
        outputs = [(np.empty(pixels, np.float32), np.empty(pixels, np.int32), np.empty(pixels, np.int32))
                   for _ in modules]
        best = [np.inf] * len(modules)
        for _ in range(args.repeat):
            spent = [0.0] * len(modules)
            for k, band in enumerate(bands):
                part = slice(k * band_px, k * band_px + band.shape[1])
                for i, module in enumerate(modules):
                    out = tuple(o[part] for o in outputs[i])
                    t = time.process_time()
                    module.winsorized_kernel(band, pair_a, pair_b, *out, 4.0, 3.0, False, 100, 100)
                    spent[i] += time.process_time() - t
            best = [min(b, s) for b, s in zip(best, spent, strict=True)]
    for i, path in enumerate(args.versions):
        differ = ", ".join(f"{name} {int((outputs[i][k] != outputs[0][k]).sum())}"
                           for k, name in enumerate(("value", "low", "high")))
        sys.stdout.write(f"{path}: {best[i] / pixels * 1e9:.1f} ns/px" + (f"; differ from the first: {differ}"
                                                                        if i else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
