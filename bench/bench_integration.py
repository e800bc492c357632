"""Winsorized sigma-clipped mean of full-size QHY163M stacks: darkd vs the read floor, ccdproc and Siril.

Frames: ``drivers.sim.physics.SensorModel`` (FULL geometry, effective area 4656 × 3522, 300 s darks at −10 °C, gain
120, offset 30, cosmic rays), written as 16-bit FITS with ``BZERO=32768`` into ``--dir`` (reused when present). Each
measurement runs in its own subprocess so that its peak resident set size (``VmHWM``) is its own:

* ``floor``   — read + decode every pixel of every frame with darkd's band reader (2 threads), nothing else;
* ``astropy`` — ``astropy.io.fits.getdata`` of each frame (full decode to uint16), one after the other;
* ``darkd``   — ``calib.integration.integrate`` (Winsorized sigma clipping 4σ/3σ, mean, no normalization, 1 GiB
  budget, 2 workers) + ``write_integration``;
* ``ccdproc`` — ``ccdproc.combine(method="average", sigma_clip=True, 4σ/3σ, median/std)`` on the file names;
* ``siril``   — ``siril-cli`` (Debian ``siril`` 1.0.6) ``stack ... rej w 4 3 -nonorm`` on a sequence made by an
  untimed ``convert``; its peak RSS is the child process's ``ru_maxrss``. Skipped when not installed.

The page cache is warm for every run (the files were just written or read). Wall times are the best of
``--repeat`` runs.

    .venv/bin/python -m bench.bench_integration [--frames 16 64] [--repeat 3] [--ccdproc-max 16]

``--whole-process`` measures the commands as a user runs them instead: ``darkd integrate FILES -o master.fits``
(the console script, a fresh process each time) against ``siril-cli -s`` running ``convert`` (links the same files
into a sequence) and ``stack`` in one process, alternating darkd and Siril, ``--repeat`` rounds, for each
``--methods`` entry (Siril's equivalent: winsorized ``rej w 4 3``, sigma ``rej s 4 3``, percentile ``rej p 0.2 0.1``;
minmax has none in Siril 1.0.6, so it is shown against Siril's Winsorized run). Wall, CPU (user + system, from
``wait4``) and peak RSS (``ru_maxrss`` of that child) of each process. ``--one-core`` pins both tools to CPU 0
(``taskset -c 0``) and gives darkd ``--memory-budget 512MiB --workers 1`` (a Raspberry Pi-class budget).

    .venv/bin/python -m bench.bench_integration --whole-process [--frames 16 64] [--repeat 3] \
        [--methods winsorized sigma minmax percentile] [--one-core]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BUDGET_BYTES = 1 << 30
DEFAULT_DIR = Path(tempfile.gettempdir()) / "darkd-bench-integration"


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM, MiB). ``ru_maxrss`` is not used: Linux carries it over exec
    from the parent, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_frames(directory: Path, n: int, seed: int = 1) -> list[Path]:
    """``n`` full-size simulated darks in ``directory`` (kept between runs)."""
    from astropy.io import fits

    from calib.frames import write_frame
    from drivers.sim.physics import FULL_GEOMETRY, SensorModel

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"dark_{i:03d}.fits" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    model = SensorModel(FULL_GEOMETRY, seed=seed)
    rng = np.random.default_rng(seed)
    for i, p in enumerate(paths):
        if p.exists():
            continue
        data = model.expose("dark", 300.0, -10.0, 120, 30, amp_glow="auto", overscan_include=False, rng=rng)
        header = fits.Header()
        for key, value in (("EXPTIME", 300.0), ("GAIN", 120), ("OFFSET", 30), ("XBINNING", 1), ("YBINNING", 1),
                           ("READMODE", 0), ("SET-TEMP", -10.0), ("CCD-TEMP", -10.0), ("IMAGETYP", "Dark Frame")):
            header[key] = value
        write_frame(p, data, header, bitpix16=True)
        sys.stderr.write(f"\rgenerated {i + 1}/{n}")
    sys.stderr.write("\n")
    return paths


# ---- measurements (each in its own process) ---------------------------------------------------------------------


def run_floor(paths: list[Path]) -> dict:
    from calib.integration import FrameSource

    sources = [FrameSource(p) for p in paths]
    height, width = sources[0].shape
    band = 128

    def read_band(r0: int) -> float:
        r1 = min(r0 + band, height)
        buf = np.empty((r1 - r0, width), dtype=np.float32)
        total = 0.0
        for s in sources:
            s.read_rows(r0, r1, buf)
            total += float(buf[0, 0])
        return total

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read_band, range(0, height, band)))
    wall = time.perf_counter() - t0
    for s in sources:
        s.close()
    return {"wall_s": wall}


def run_astropy(paths: list[Path]) -> dict:
    from astropy.io import fits

    t0 = time.perf_counter()
    for p in paths:
        data = fits.getdata(p)
        del data
    return {"wall_s": time.perf_counter() - t0}


def run_darkd(paths: list[Path]) -> dict:
    from calib.integration import IntegrationParams, integrate, write_integration

    params = IntegrationParams(rejection="winsorized", sigma_low=4.0, sigma_high=3.0, combine="mean",
                               memory_budget_bytes=BUDGET_BYTES, workers=2)
    out = Path(tempfile.mkdtemp(prefix="darkd-bench-")) / "master.fits"
    t0 = time.perf_counter()
    result = integrate(paths, params)
    t_int = time.perf_counter() - t0
    write_integration(result, out)
    wall = time.perf_counter() - t0
    shutil.rmtree(out.parent)
    return {"wall_s": wall, "integrate_s": t_int, "rejected_fraction": result.summary["rejected_fraction"],
            "band_rows": result.summary["band_rows"], "noise_adu": result.summary["noise_adu"]}


def run_ccdproc(paths: list[Path]) -> dict:
    import ccdproc

    t0 = time.perf_counter()
    combined = ccdproc.combine([str(p) for p in paths], method="average", sigma_clip=True,
                               sigma_clip_low_thresh=4.0, sigma_clip_high_thresh=3.0, sigma_clip_func=np.ma.median,
                               sigma_clip_dev_func=np.ma.std, unit="adu")
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "mean_adu": float(np.mean(combined.data))}


def run_siril(paths: list[Path]) -> dict:
    """Siril 1.0.6: ``convert`` (untimed; links the inputs into a sequence) then ``stack ... rej w 4 3 -nonorm``."""
    exe = shutil.which("siril-cli")
    if exe is None:
        return {"skipped": "siril-cli not installed"}
    work = Path(tempfile.mkdtemp(prefix="darkd-siril-"))
    try:
        for i, p in enumerate(paths):
            (work / f"dark_{i:05d}.fits").symlink_to(p)
        (work / "convert.ssf").write_text("requires 1.0.0\nsetext fits\nconvert dark -out=seq\n")
        (work / "stack.ssf").write_text("requires 1.0.0\nsetext fits\ncd seq\n"
                                        "stack dark rej w 4 3 -nonorm -out=result\n")
        conv = subprocess.run([exe, "-d", str(work), "-s", str(work / "convert.ssf")], capture_output=True,
                              text=True, check=False)
        if conv.returncode != 0:
            return {"error": conv.stdout[-500:] + conv.stderr[-500:]}
        t0 = time.perf_counter()
        proc = subprocess.run([exe, "-d", str(work), "-s", str(work / "stack.ssf")], capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0 or "Stacked sequence successfully" not in proc.stdout:
        return {"error": proc.stdout[-500:] + proc.stderr[-500:]}
    rejection = [line.split(":", 1)[-1].strip() for line in proc.stdout.splitlines() if "Pixel rejection in" in line]
    return {"wall_s": wall, "siril_rejection": rejection[:1],
            "child_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}


SIRIL_REJECTION = {"winsorized": "w 4 3", "sigma": "s 4 3", "percentile": "p 0.2 0.1"}
DARKD = Path(sys.executable).parent / "darkd"


def _timed(argv: list[str], cwd: Path | None = None) -> dict:
    """Run ``argv`` as a child process; wall time, CPU seconds and peak RSS (MiB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024.0,
            "returncode": proc.returncode, "output": output.decode(errors="replace")}


def whole_darkd(paths: list[Path], method: str, out_dir: Path, one_core: bool) -> dict:
    out = out_dir / f"master_{method}.fits"
    argv = [str(DARKD), "integrate", *map(str, paths), "-o", str(out), "--rejection", method]
    if one_core:
        argv = ["taskset", "-c", "0", *argv, "--memory-budget", "512MiB", "--workers", "1"]
    result = _timed(argv)
    out.unlink(missing_ok=True)
    if result["returncode"] != 0:
        result["error"] = result["output"][-500:]
    return result


def whole_siril(paths: list[Path], method: str, one_core: bool) -> dict:
    exe = shutil.which("siril-cli")
    if exe is None:
        return {"skipped": "siril-cli not installed"}
    work = Path(tempfile.mkdtemp(prefix="darkd-siril-"))
    try:
        for i, p in enumerate(paths):
            (work / f"dark_{i:05d}.fits").symlink_to(p.resolve())
        (work / "stack.ssf").write_text(f"requires 1.0.0\nsetext fits\nconvert dark -out=seq\ncd seq\n"
                                        f"stack dark rej {SIRIL_REJECTION.get(method, SIRIL_REJECTION['winsorized'])}"
                                        f" -nonorm -out=result\n")
        argv = [exe, "-d", str(work), "-s", str(work / "stack.ssf")]
        result = _timed(["taskset", "-c", "0", *argv] if one_core else argv)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result["returncode"] != 0 or "Stacked sequence successfully" not in result["output"]:
        result["error"] = result["output"][-500:]
    return result


def whole_process(frames: list[int], directory: Path, repeat: int, methods: list[str], one_core: bool) -> int:
    """Alternate ``darkd integrate`` and ``siril-cli -s`` on the same files; print one table per stack size."""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
          f"{', pinned to CPU 0 (darkd: 512 MiB budget, 1 worker)' if one_core else ''}")
    out_dir = Path(tempfile.mkdtemp(prefix="darkd-bench-out-"))
    try:
        for n in frames:
            paths = make_frames(directory / f"n{n}", n)
            runs: dict[tuple[str, str], list[dict]] = {}
            loads = []
            for _ in range(repeat):
                for method in methods:
                    loads.append(os.getloadavg()[0])
                    runs.setdefault(("darkd", method), []).append(whole_darkd(paths, method, out_dir, one_core))
                    siril_method = method if method in SIRIL_REJECTION else "winsorized"
                    if method in SIRIL_REJECTION or ("siril", "winsorized") not in runs:
                        runs.setdefault(("siril", siril_method), []).append(whole_siril(paths, siril_method,
                                                                                        one_core))
            print(f"\nN = {n}: {repeat} rounds, load average (1 min) {min(loads):.1f}–{max(loads):.1f} over the run")
            print("| tool | rejection | wall s (min; all runs) | CPU s (min) | peak RSS MiB (max) | wall vs Siril |")
            print("|---|---|---|---|---|---|")
            for (tool, method), results in runs.items():
                good = [r for r in results if "wall_s" in r and "error" not in r]
                if not good:
                    print(f"| {tool} | {method} | {(results[0].get('error') or results[0].get('skipped', ''))[:80]!r}"
                          " | | | |")
                    continue
                wall = min(r["wall_s"] for r in good)
                peer = runs.get(("siril", method if method in SIRIL_REJECTION else "winsorized"), [])
                peer_good = [r["wall_s"] for r in peer if "wall_s" in r and "error" not in r]
                ratio = f"{wall / min(peer_good):.2f}" if peer_good and tool == "darkd" else ""
                every = ", ".join(f"{r['wall_s']:.2f}" for r in good)
                print(f"| {tool} | {method} | {wall:.2f}; {every} | "
                      f"{min(r['cpu_s'] for r in good):.1f} | {max(r['peak_rss_mib'] for r in good):.0f} | {ratio} |")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def run_split(paths: list[Path]) -> dict:
    """Where the time goes, step by step on one thread (CPU seconds, so other jobs on the machine disturb it little):
    read + decode (+ sha256 of each row), sort along the frame axis (:func:`sort_frames_inplace`: compiled network,
    or the NumPy one with DARKD_NO_NUMBA=1),
    clip + combine on the sorted band (compiled kernel), the kernel with its own fused sort, the NumPy fallback's
    clip + combine, and writing the master (with direct I/O, as ``write_integration`` writes it; then once more
    through the page cache, for comparison only, not in the total)."""
    from calib.integration import FrameSource, IntegrationResult, rejection_count_dtype, write_integration
    from calib.rejection import RejectionParams, kept_mean, reject_sorted, sort_frames_inplace
    from calib.rejection import winsorized_combine_numba as kernel

    sources = [FrameSource(p) for p in paths]
    n = len(sources)
    height, width = sources[0].shape
    band = 32
    totals = dict.fromkeys(("read", "sort", "clip_combine_kernel", "fused_sort_clip_kernel",
                            "clip_combine_numpy", "write"), 0.0)
    kernel(np.zeros((n, 8), dtype=np.float32), 4.0, 3.0)  # load the compiled kernel first
    data = np.empty((height, width), dtype=np.float32)
    # as integrate() runs a band (calib.integration): the stack and the rejection counts reused from band to band,
    # the combined rows written by the kernel straight into the master's array
    buffers = np.empty(n * band * width, dtype=np.float32), *(np.empty(band * width, dtype=np.int32) for _ in "lh")
    spare = np.empty(band * width, dtype=np.float32)  # the presorted kernel's combined rows, compared with the fused
    for r0 in range(0, height, band):
        r1 = min(r0 + band, height)
        pixels = (r1 - r0) * width
        stack = buffers[0][:n * pixels].reshape(n, r1 - r0, width)
        t = time.process_time()
        for i, src in enumerate(sources):
            src.read_rows(r0, r1, stack[i])
        totals["read"] += time.process_time() - t
        flat = stack.reshape(n, -1)
        t = time.process_time()
        fused = kernel(flat, 4.0, 3.0, presorted=False,
                       out=(data.reshape(-1)[r0 * width:r1 * width], buffers[1][:pixels], buffers[2][:pixels]))
        totals["fused_sort_clip_kernel"] += time.process_time() - t
        t = time.process_time()
        sort_frames_inplace(flat)
        totals["sort"] += time.process_time() - t
        t = time.process_time()
        out, _, _ = kernel(flat, 4.0, 3.0, out=(spare[:pixels], buffers[1][:pixels], buffers[2][:pixels]))
        totals["clip_combine_kernel"] += time.process_time() - t
        assert np.array_equal(out, fused[0])
        if r0 % (8 * band) == 0:  # the NumPy fallback on every 8th band only (it is slow), scaled up below
            t = time.process_time()
            lo, hi = reject_sorted(flat, np.zeros(flat.shape[1], dtype=np.int32),
                                   np.full(flat.shape[1], n, dtype=np.int32), RejectionParams())
            kept_mean(flat, lo, hi)
            totals["clip_combine_numpy"] += 8 * (time.process_time() - t)
    for s in sources:
        s.close()
    from astropy.io import fits

    out_dir = Path(tempfile.mkdtemp(prefix="darkd-bench-"))
    t = time.process_time()
    low, high = (np.zeros(data.shape, dtype=rejection_count_dtype(n)) for _ in range(2))  # as integrate() gives them
    result = IntegrationResult(data, low, high, fits.Header(), {})
    write_integration(result, out_dir / "master.fits")
    totals["write"] = time.process_time() - t
    # for comparison only (not in the total): the same master written again as before direct I/O, through the page cache
    t = time.process_time()
    write_integration(result, out_dir / "master_buffered.fits", direct_io=False)
    totals["write_buffered_for_comparison"] = time.process_time() - t
    shutil.rmtree(out_dir)
    total = sum(v for k, v in totals.items() if not k.endswith("_for_comparison"))
    return {"wall_s": total, "cpu_s_by_step": {k: round(v, 3) for k, v in totals.items()},
            "ns_per_pixel": {k: round(v / (height * width) * 1e9, 1) for k, v in totals.items()}}


def split_ratio(steps: dict[str, float]) -> float:
    """The in-process integration of one split run against reading the frames (issue 16's ≤ 3× target): what
    ``integrate()`` + ``write_integration`` do — read, the fused sort + clip + combine, write — over the read alone."""
    if not steps:
        return float("nan")
    return (steps["read"] + steps["fused_sort_clip_kernel"] + steps["write"]) / steps["read"]


RUNNERS = {"split": run_split, "floor": run_floor, "astropy": run_astropy, "darkd": run_darkd, "ccdproc": run_ccdproc,
           "siril": run_siril}


def measure(kind: str, directory: Path, n: int) -> dict:
    """Run ``kind`` in a fresh interpreter; returns its JSON result plus its peak RSS."""
    cmd = [sys.executable, "-m", "bench.bench_integration", "--worker", kind, "--dir", str(directory),
           "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(kind: str, directory: Path, n: int, repeat: int) -> dict:
    runs = [measure(kind, directory, n) for _ in range(repeat)]
    good = [r for r in runs if "wall_s" in r]
    if not good:
        return runs[0]
    best = min(good, key=lambda r: r["wall_s"])
    best["all_wall_s"] = [round(r["wall_s"], 3) for r in good]
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in good)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64], help="stack sizes (default 16 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best wall time is kept")
    parser.add_argument("--ccdproc-max", type=int, default=16, help="run ccdproc only up to this many frames")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the frames are generated and kept")
    parser.add_argument("--split", action="store_true",
                        help="CPU seconds per step (read, sort, clip + combine, write) on one thread, --repeat runs")
    parser.add_argument("--whole-process", action="store_true",
                        help="time `darkd integrate` and `siril-cli -s` as whole processes, alternating")
    parser.add_argument("--methods", nargs="+", default=["winsorized"],
                        help="rejection methods for --whole-process (default winsorized)")
    parser.add_argument("--one-core", action="store_true",
                        help="--whole-process pinned to one CPU, darkd with a 512 MiB budget and 1 worker")
    parser.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        paths = sorted((args.dir / f"n{args.n}").glob("dark_*.fits"))[: args.n]
        result = RUNNERS[args.worker](paths)
        result["peak_rss_mib"] = peak_rss_mib()
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        result["cpu_s"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        print(json.dumps(result))
        return 0

    if args.split:
        for n in args.frames:
            make_frames(args.dir / f"n{n}", n)
            ratios = []
            for _ in range(args.repeat):
                run = {"n": n, "load_average_1min": os.getloadavg()[0], **measure("split", args.dir, n)}
                print(json.dumps(run))
                ratios.append(split_ratio(run.get("cpu_s_by_step", {})))
            print(f"N = {n}: (read + fused kernel + write) / read = {', '.join(f'{r:.2f}' for r in ratios)}; "
                  f"median {statistics.median(ratios):.2f} (target ≤ 3)")
        return 0
    if args.whole_process:
        return whole_process(args.frames, args.dir, args.repeat, args.methods, args.one_core)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = []
    for n in args.frames:
        make_frames(args.dir / f"n{n}", n)
        res = {"n": n}
        res["floor"] = _best("floor", args.dir, n, args.repeat)
        res["astropy"] = _best("astropy", args.dir, n, 1)
        res["darkd"] = _best("darkd", args.dir, n, args.repeat)
        res["ccdproc"] = _best("ccdproc", args.dir, n, 1) if n <= args.ccdproc_max else {"skipped": "--ccdproc-max"}
        res["siril"] = _best("siril", args.dir, n, 1)
        rows.append(res)
        print(json.dumps(res))
    print()
    print("| N | tool | wall s | CPU s (process total) | peak RSS MiB | ratio to darkd |")
    print("|---|---|---|---|---|---|")
    for res in rows:
        darkd = res["darkd"].get("wall_s")
        for tool in ("floor", "astropy", "darkd", "ccdproc", "siril"):
            r = res[tool]
            if "wall_s" not in r:
                print(f"| {res['n']} | {tool} | {r.get('skipped') or r.get('error', '')[:60]} | | | |")
                continue
            ratio = f"{r['wall_s'] / darkd:.2f}" if darkd else ""
            rss = r.get("child_peak_rss_mib", r["peak_rss_mib"])
            cpu = r.get("cpu_s", float("nan"))
            print(f"| {res['n']} | {tool} | {r['wall_s']:.2f} | {cpu:.1f} | {rss:.0f} | {ratio} |")
        if darkd:
            floor = min(res["floor"].get("wall_s", np.inf), res["astropy"].get("wall_s", np.inf))
            print(f"\nN={res['n']}: darkd / read floor = {darkd / floor:.2f} (target <= 3, issue 16); darkd peak RSS "
                  f"{res['darkd']['peak_rss_mib']:.0f} MiB (budget {BUDGET_BYTES / 2**20:.0f} MiB); "
                  f"{res['darkd'].get('rejected_fraction', 0) * 100:.3f} % rejected")
            if "wall_s" in res["ccdproc"]:
                print(f"N={res['n']}: ccdproc / darkd = {res['ccdproc']['wall_s'] / darkd:.1f} (target >= 8)")
            if "wall_s" in res["siril"]:
                print(f"N={res['n']}: darkd / siril = {darkd / res['siril']['wall_s']:.2f} (target <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
