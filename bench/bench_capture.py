"""darkd's per-frame overhead beyond the driver's exposure and download, at full QHY163M size, and memory over a series.

Pipeline timed per frame (what ``daemon.capture`` does after the BLOB arrives): FITS decode of the BLOB
(``drivers.indi.camera.decode_fits``), header stamping + geometry validation + overscan statistics + quality check +
FITS encoding (``daemon.capture.process_frame``), SHA-256, atomic write (``calib.frames.atomic_write_bytes``:
temporary file, fsync, rename). Frames come from ``drivers.sim.physics.SensorModel`` (FULL geometry, overscan
included) encoded as the driver would send them; a few distinct frames are generated once and cycled, so the
simulator's own cost is not counted. Memory: resident set size after the first 10 frames and at the end.

``--end-to-end N`` additionally captures N frames through a real indiserver + the simulated driver (FULL sensor) and
reports wall time per frame next to the nominal exposure.

    .venv/bin/python -m bench.bench_capture [--frames 200] [--end-to-end 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from calib.frames import atomic_write_bytes
from calib.quality import FrameExpectation, QualityThresholds
from daemon.capture import SeriesRequest, process_frame
from drivers.camera import CapturedFrame, CaptureSettings, FrameType, OverscanMode
from drivers.indi.camera import decode_fits
from drivers.profiles import load_profile


def rss_mib() -> float:
    """Current resident set size of this process (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def driver_blob(data: np.ndarray, exposure_s: float) -> bytes:
    """FITS bytes as the INDI driver sends them (BITPIX 16, BZERO 32768, the driver's usual keys)."""
    header = fits.Header()
    for key, value in (("EXPTIME", exposure_s), ("CCD-TEMP", -10.0), ("XBINNING", 1), ("YBINNING", 1),
                       ("FRAME", "Dark"), ("IMAGETYP", "Dark Frame"), ("GAIN", 120), ("OFFSET", 30),
                       ("INSTRUME", "QHY CCD QHY163M-Sim")):
        header[key] = value
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header=header, uint=True).writeto(buf)
    return buf.getvalue()


def make_blobs(n_distinct: int, exposure_s: float, synthetic: bool = False) -> list[bytes]:
    if synthetic:  # plain Gaussian frames of the same size (when the simulator is not available)
        rng = np.random.default_rng(3)
        return [driver_blob(np.clip(rng.normal(1000, 20, (3540, 4720)), 0, 65535).astype(np.uint16), exposure_s)
                for _ in range(n_distinct)]
    from drivers.sim.physics import FULL_GEOMETRY, SensorModel

    model = SensorModel(FULL_GEOMETRY, seed=7)
    rng = np.random.default_rng(11)
    return [driver_blob(model.expose("dark", exposure_s, -10.0, 120, 30, overscan_include=True, rng=rng),
                        exposure_s) for _ in range(n_distinct)]


def run_pipeline(blobs: list[bytes], frames: int, out_dir: Path) -> dict[str, list[float]]:
    profile = load_profile("qhy163m")
    request = SeriesRequest(FrameType.DARK, 60.0, frames, -10.0, CaptureSettings(gain=120, offset=30),
                            name_prefix="bench")
    settings = CaptureSettings(gain=120, offset=30, binning=1, overscan=OverscanMode.INCLUDE)
    thresholds = QualityThresholds()
    expected = FrameExpectation(0.0, 1e6)  # exercise the leak check without rejecting
    timings: dict[str, list[float]] = {k: [] for k in ("decode", "process", "sha256", "write", "total")}
    rss: list[float] = []
    now = datetime.now(UTC)
    for i in range(frames):
        t0 = time.perf_counter()
        data, header = decode_fits(blobs[i % len(blobs)])
        t1 = time.perf_counter()
        frame = CapturedFrame(data=data, header=header, frame_type=FrameType.DARK, exposure_s=60.0,
                              set_point_c=-10.0, temperature_start_c=-10.02, temperature_end_c=-9.98,
                              cooler_power_start_pct=55.0, cooler_power_end_pct=56.0, started_utc=now,
                              finished_utc=now, overscan=OverscanMode.INCLUDE, settings=settings)
        processed = process_frame(frame, request, profile, i + 1, expected, thresholds)
        t2 = time.perf_counter()
        digest = hashlib.sha256(processed.payload).hexdigest()
        t3 = time.perf_counter()
        atomic_write_bytes(out_dir / f"bench_{i % 4:04d}.fits", processed.payload)  # 4 names: bounded disk use
        t4 = time.perf_counter()
        assert processed.verdict.ok and len(digest) == 64
        del data, header, frame, processed
        for key, value in (("decode", t1 - t0), ("process", t2 - t1), ("sha256", t3 - t2), ("write", t4 - t3),
                           ("total", t4 - t0)):
            timings[key].append(value)
        rss.append(rss_mib())
    timings["rss_mib"] = rss
    return timings


def end_to_end(n: int, exposure_s: float) -> list[tuple[float, float]]:
    """(wall time of expose(), darkd post-processing time) per frame through indiserver + simulated FULL sensor."""
    import subprocess

    from drivers.indi.camera import IndiCamera
    from tests.indi_server import IndiServer, _wait_port

    env = {"DARKD_SIM_SENSOR": "FULL", "DARKD_SIM_TIME_SCALE": "100", "DARKD_SIM_SEED": "1"}
    server = IndiServer(["indi_darkd_sim_ccd"], env=env)
    server.proc = subprocess.Popen(["indiserver", "-u", f"/tmp/indiserver-bench-{server.port}", "-p",
                                    str(server.port), *server.drivers], env=server.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_port(server.port, 15)
    out: list[tuple[float, float]] = []
    camera = IndiCamera(port=server.port, profile=load_profile("qhy163m"))
    try:
        camera.connect(30)
        camera.apply_settings(CaptureSettings(gain=120, offset=30, overscan=OverscanMode.INCLUDE))
        request = SeriesRequest(FrameType.DARK, exposure_s, n, None, CaptureSettings(), name_prefix="e2e")
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                t0 = time.perf_counter()
                frame = camera.expose(FrameType.DARK, exposure_s)
                t1 = time.perf_counter()
                processed = process_frame(frame, request, camera.profile, i + 1, None, QualityThresholds())
                atomic_write_bytes(Path(tmp) / f"e2e_{i}.fits", processed.payload)
                out.append((t1 - t0, time.perf_counter() - t1))
    finally:
        camera.disconnect()
        server.stop()
    return out


def describe(values: list[float]) -> str:
    arr = np.asarray(values)
    return (f"mean {arr.mean() * 1e3:7.1f} ms  median {np.median(arr) * 1e3:7.1f} ms  "
            f"p95 {np.percentile(arr, 95) * 1e3:7.1f} ms  max {arr.max() * 1e3:7.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=3, help="distinct simulated frames to cycle through")
    parser.add_argument("--end-to-end", type=int, default=0, help="also capture N frames through indiserver")
    parser.add_argument("--synthetic", action="store_true", help="Gaussian frames instead of drivers.sim.physics")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    blobs = make_blobs(args.distinct, 60.0, args.synthetic)
    print(f"generated {len(blobs)} full-size frames ({len(blobs[0]) / 2**20:.1f} MiB each) in "
          f"{time.perf_counter() - t:.1f} s (not counted)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("DARKD_BENCH_DIR")) as tmp:
        rss_start = rss_mib()
        timings = run_pipeline(blobs, args.frames, Path(tmp))
    rss = timings.pop("rss_mib")
    print(f"per-frame overhead over {args.frames} frames (4720x3540, overscan included):")
    for key, values in timings.items():
        print(f"  {key:8s} {describe(values)}")
    print(f"memory: RSS before {rss_start:.0f} MiB, after 10 frames {rss[min(9, len(rss) - 1)]:.0f} MiB, "
          f"after {len(rss)} frames {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB")
    total = statistics.mean(timings["total"])
    print(f"target < 300 ms/frame: {'met' if total < 0.3 else 'NOT met'} (mean {total * 1e3:.0f} ms)")
    if args.end_to_end:
        results = end_to_end(args.end_to_end, 60.0)
        for i, (wall, post) in enumerate(results, 1):
            print(f"end-to-end frame {i}: expose+download {wall:.2f} s wall (60 s nominal at time scale 100 = 0.6 s), "
                  f"darkd post-processing {post * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
