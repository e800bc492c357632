"""Wall time of a build-library job on the simulated QHY163M against the sum of its exposures and readouts.

A real indiserver runs ``indi_darkd_sim_ccd``; the job engine builds a small library (bias + two darks by default)
exactly as the daemon does (cool, capture with quality checks, record, integrate in the worker process, review).

    nominal   = Σ over accepted frames (exposure_s / time_scale + readout_s)
    readout_s = mean wall time of a bare ``camera.expose(BIAS, 0)`` (driver render + BLOB transfer + decode),
                measured before the job on the same camera
    cooling   = time spent in the job's "cooling to …" steps (set point + stability hold before each series)
    overhead  = (job wall − cooling − nominal) / nominal     target < 5 %

The tail after the last frame (the last master's integration, which cannot overlap a capture) is part of the job wall
time and is reported separately.

    .venv/bin/python -m bench.bench_build_library [--full] [--time-scale 10] [--frames 10] [--exposures 10,30]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.events import EventBus
from daemon.indiserver import LocalIndiServer, sim_environment
from daemon.jobs.engine import JobEngine
from daemon.jobs.states import FINAL_STATES
from daemon.library.catalog import LibraryIndex
from daemon.planning import plan_from_keys
from daemon.settings import CoolingSettings, IndiSettings, LibrarySettings, Settings
from drivers.camera import CaptureSettings, FrameType, OverscanMode
from drivers.factory import open_indi_camera
from drivers.profiles import load_profile

AMBIENT_C = 20.0


def bare_expose_s(camera: Any, frame_type: FrameType, exposure_s: float, n: int = 4) -> float:
    """Mean wall time of ``camera.expose`` alone (first call discarded): exposure + driver + BLOB + decode."""
    camera.apply_settings(CaptureSettings(gain=120, offset=30, read_mode=0, amp_glow="auto",
                                          overscan=OverscanMode.INCLUDE))
    walls = []
    for _ in range(n):
        t0 = time.monotonic()
        camera.expose(frame_type, exposure_s)
        walls.append(time.monotonic() - t0)
    return statistics.mean(walls[1:] if n > 1 else walls)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sensor = "FULL" if args.full else "SMALL"
    profile = load_profile("qhy163m" if args.full else "qhy163m-sim-small")
    geometry = profile.geometry(OverscanMode.INCLUDE)
    workdir = Path(tempfile.mkdtemp(prefix="darkd-bench-build-"))
    server = LocalIndiServer(env=sim_environment(sensor, args.time_scale, 1, AMBIENT_C),
                             log_path=workdir / "indiserver.log").start()
    settings = Settings(camera_profile=profile.name, indi=IndiSettings(port=server.port),
                        cooling=CoolingSettings(tolerance_c=0.3, hold_s=args.hold, timeout_s=600.0,
                                                unreachable_window_s=30.0, warm_up_at_end=False),
                        library=LibrarySettings(root=workdir / "library", frames_bias=args.frames,
                                                frames_dark=args.frames))
    camera = open_indi_camera("127.0.0.1", server.port, profile=profile)
    index = LibraryIndex.open(settings.library)
    bus = EventBus()
    engine = JobEngine(settings, index, lambda: camera, bus, poll_s=0.1)
    try:
        camera.connect(30)
        readout_s = bare_expose_s(camera, FrameType.BIAS, 0.0)
        bare_s = {e: bare_expose_s(camera, FrameType.DARK, e) for e in args.exposures}
        bare_s[0.0] = readout_s
        base = {"camera": camera.capabilities.device, "set_point_c": args.set_point, "gain": 120, "offset": 30,
                "binning": 1, "read_mode": 0, "usb_traffic": 30, "amp_glow": "auto", "overscan": "include",
                "width_px": geometry.width_px, "height_px": geometry.height_px}
        keys = [{**base, "kind": "bias", "exposure_s": 0}]
        keys += [{**base, "kind": "dark", "exposure_s": e} for e in args.exposures]
        plan = plan_from_keys(keys, index, settings, ambient_c=AMBIENT_C, readout_s=readout_s)
        steps: list[tuple[float, str]] = []
        frame_times: dict[str, list[float]] = {}
        with bus.subscribe(maxsize=100_000) as sub:
            engine.start()
            t0 = time.monotonic()
            job = engine.submit("build-library", {"plan": plan.to_dict()})
            while True:
                event = sub.get(timeout_s=1.0)
                if event is not None and event["type"] == "frame":
                    frame_times.setdefault(Path(event["path"]).parent.parent.name, []).append(time.monotonic())
                if event is not None and event["type"] == "job" and event["job_id"] == job.id:
                    steps.append((time.monotonic(), event.get("step") or ""))
                    if event["state"] in FINAL_STATES:
                        break
                elif event is None and engine.get(job.id).state in FINAL_STATES:
                    break
            wall_s = time.monotonic() - t0
        final = engine.get(job.id)
    finally:
        engine.stop()
        camera.disconnect()
        index.close()
        server.stop()
    # a "cooling …" step lasts until the first frame of its series is reported, so it also holds that frame's
    # exposure and readout: take those back out (they are in the nominal time)
    series_nominal = {i.key.describe(): i.key.exposure_s / args.time_scale + readout_s for i in plan.work()}
    cooling_s = sum(b[0] - a[0] for a, b in itertools.pairwise(steps) if a[1].startswith("cooling"))
    cooling_s -= sum(next((v for k, v in series_nominal.items() if k in s), 0.0)
                     for s in (s for _, s in steps) if s.startswith("cooling to") and " for " in s)
    last_frame = max((t for t, s in steps if s.startswith("capturing")), default=t0)
    tail_s = steps[-1][0] - last_frame if steps else 0.0
    frames = sum(i.frames_target for i in plan.work())
    exposure_s = sum(i.frames_target * i.key.exposure_s / args.time_scale for i in plan.work())
    nominal_s = exposure_s + frames * readout_s
    overhead = (wall_s - cooling_s - nominal_s) / nominal_s
    per_frame = {}  # within a series: mean gap between frames vs a bare expose() of the same exposure
    for item in plan.work():
        times = frame_times.get(item.key.slug, [])
        if len(times) > 1:
            gap = statistics.mean(b - a for a, b in itertools.pairwise(times))
            per_frame[item.key.describe().split(",")[0]] = (gap, bare_s[item.key.exposure_s])
    return {"sensor": sensor, "time_scale": args.time_scale, "state": final.state, "error": final.error,
            "frames": frames, "keys": len(plan.work()), "readout_s": readout_s, "exposure_s": exposure_s,
            "nominal_s": nominal_s, "cooling_s": cooling_s, "wall_s": wall_s, "tail_s": tail_s,
            "overhead_pct": 100 * overhead, "overhead_without_tail_pct": 100 * (overhead - tail_s / nominal_s),
            "per_frame": per_frame, "result": final.result,
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "workdir": str(workdir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full-size sensor (default SMALL)")
    parser.add_argument("--time-scale", type=float, default=10.0, help="simulated s per wall s (default 10)")
    parser.add_argument("--frames", type=int, default=10, help="frames per key (default 10)")
    parser.add_argument("--exposures", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 30.0],
                        help="dark exposures in simulated seconds (default 10,30)")
    parser.add_argument("--set-point", type=float, default=-10.0, help="set point, °C (default -10; ambient 20)")
    parser.add_argument("--hold", type=float, default=2.0, help="stability hold before each series, s (default 2)")
    args = parser.parse_args(argv)
    r = run(args)
    print(f"build-library on the simulated QHY163M ({r['sensor']}, time scale {r['time_scale']:g}), {r['when']}")
    print(f"job: {r['state']}{' - ' + str(r['error']) if r['error'] else ''}; {r['keys']} keys, {r['frames']} frames")
    print(f"bare readout (expose BIAS 0 s): {r['readout_s']:.3f} s/frame")
    print(f"exposures {r['exposure_s']:.1f} s + readouts {r['frames'] * r['readout_s']:.1f} s = nominal "
          f"{r['nominal_s']:.1f} s")
    print(f"job wall {r['wall_s']:.1f} s, of which cooling/stability {r['cooling_s']:.1f} s, "
          f"tail after the last frame {r['tail_s']:.1f} s")
    print(f"overhead beyond cooling: {r['overhead_pct']:.1f} % "
          f"(without the tail {r['overhead_without_tail_pct']:.1f} %); "
          f"target < 5 %: {'met' if r['overhead_pct'] < 5 else 'MISSED'}")
    for name, (gap, bare) in r["per_frame"].items():
        print(f"  {name:24} frame every {gap:.3f} s in the job, bare expose() {bare:.3f} s: "
              f"+{1000 * (gap - bare):.0f} ms/frame")
    print(f"library: {r['workdir']}")
    return 0 if r["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
