"""Frames per second the simulated QHY163M delivers at FULL size through the real indiserver to a pyindi-client,
the driver's peak memory, and the pure sensor-model time per frame.

    .venv/bin/python -m bench.bench_simulator [--frames 5] [--frame-type FRAME_BIAS] [--ignore]

Target (issue 2): a full-size frame in under 1.5 s of wall time. Results: docs/bench/simulator.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from drivers.sim.physics import FULL_GEOMETRY, SensorModel
from tests.conftest import SIM_DEVICE, SIM_DRIVER, sim_env
from tests.indi_server import IndiServer, _wait_port
from tests.integration.indi_client_helper import SimClient


class _Server(IndiServer):
    def start(self, timeout_s: float = 15.0) -> IndiServer:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            ["indiserver", "-u", f"/tmp/indiserver-darkd-bench-{self.port}", "-p", str(self.port), *self.drivers],
            env=self.env, stdout=log, stderr=log, start_new_session=True)
        _wait_port(self.port, timeout_s)
        return self


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def _driver_pid(server_pid: int) -> int:
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    if not children:
        raise RuntimeError("indiserver has no driver child process")
    return int(children[0])


def bench_model(frames: int) -> tuple[float, float]:
    model_start = time.perf_counter()
    model = SensorModel(FULL_GEOMETRY, seed=1)
    init_s = time.perf_counter() - model_start
    rng = np.random.default_rng(2)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        model.expose("dark", 60.0, -10.0, 120, 30, rng=rng)
        times.append(time.perf_counter() - t0)
    return init_s, float(np.median(times))


def bench_server(frames: int, frame_type: str, include: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = sim_env(sensor="FULL", time_scale=1000)
        log_path = Path(tmp) / "indiserver.log"
        server = _Server([SIM_DRIVER], env=env, log_path=log_path).start()
        client = SimClient(server.port, SIM_DEVICE)
        try:
            client.start()
            client.connect_device()
            if include:
                client.switch("OVERSCAN_MODE", ["INDI_ENABLED"], wait=True)
                client.wait_for(lambda: client.props["CCD_INFO"].values["CCD_MAX_X"] == FULL_GEOMETRY.full_width,
                                10, "include mode")
            assert server.proc is not None
            pid = _driver_pid(server.proc.pid)
            t0 = time.perf_counter()
            data, _ = client.expose(1.0, frame_type, timeout_s=120)  # first frame builds the fixed pattern
            first_s = time.perf_counter() - t0
            walls = []
            for _ in range(frames):
                t0 = time.perf_counter()
                data, _ = client.expose(1.0, frame_type, timeout_s=120)
                walls.append(time.perf_counter() - t0)
            mem = _status_kib(pid)
            driver_lines = [ln for ln in log_path.read_text().splitlines() if "rendered in" in ln]
            for line in driver_lines[-2:]:
                sys.stdout.write(f"  driver: {line.split('INFO drivers.sim.driver: ')[-1]}\n")
            return {"shape_h": data.shape[0], "shape_w": data.shape[1], "first_s": first_s,
                    "median_s": float(np.median(walls)), "max_s": float(np.max(walls)),
                    "fps": len(walls) / float(np.sum(walls)), "vmhwm_mib": mem["VmHWM"] / 1024,
                    "vmrss_mib": mem["VmRSS"] / 1024}
        finally:
            client.stop()
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--frame-type", default="FRAME_BIAS", choices=["FRAME_BIAS", "FRAME_DARK", "FRAME_FLAT",
                                                                       "FRAME_LIGHT"])
    parser.add_argument("--ignore", action="store_true", help="OVERSCAN_MODE Ignore (effective area only)")
    args = parser.parse_args()
    sys.stdout.write(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    init_s, model_s = bench_model(args.frames)
    sys.stdout.write(f"sensor model FULL: fixed pattern {init_s:.2f} s once, expose() median {model_s:.3f} s/frame\n")
    r = bench_server(args.frames, args.frame_type, not args.ignore)
    sys.stdout.write(
        f"through indiserver → pyindi-client, {args.frame_type} {int(r['shape_w'])}x{int(r['shape_h'])}: "
        f"first frame {r['first_s']:.2f} s, then median {r['median_s']:.3f} s/frame (max {r['max_s']:.3f}), "
        f"{r['fps']:.2f} frames/s over {args.frames} frames\n"
        f"driver memory: peak VmHWM {r['vmhwm_mib']:.0f} MiB, VmRSS at end {r['vmrss_mib']:.0f} MiB\n"
        f"target < 1.5 s per full-size frame: {'met' if r['median_s'] < 1.5 else 'NOT met'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
