"""API latency under load: ``GET /api/v1/camera`` and ``GET /api/v1/library`` at 200 requests/s for 30 s while the
daemon captures full-size frames and integrates a master; plus the lag of the SSE stream. Target: p99 < 50 ms.

Set-up (all real parts): ``indiserver`` + ``indi_darkd_sim_ccd`` (FULL QHY163M geometry, time scale 100), ``darkd
serve`` in its own process. First a short build-library job (8 darks, 60 s nominal) makes an entry with frames and a
master. Then, during the measurement: a long build-library job captures full-size darks (decode, checks, SHA-256,
fsync'd write per frame in the daemon), and ``integrate`` jobs rebuild the first entry's master one after another in
the engine's worker process. The library holds ``--entries`` extra seeded entries so ``GET /library`` returns a
realistic list.

Load: open loop (requests start on a fixed schedule whatever the latency, so a stall is not hidden), alternating the
two endpoints, keep-alive connections (httpx, asyncio) from this process. Latency = response complete − scheduled
start. SSE lag = receive time − the event's ``time`` stamp.

    .venv/bin/python -m bench.bench_api [--rate 200] [--seconds 30] [--out docs/bench/api.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from daemon.library.catalog import LibraryIndex
from daemon.library.keys import LibraryKey
from daemon.settings import LibrarySettings
from tests.conftest import SIM_DEVICE, SIM_DRIVER, sim_env
from tests.indi_server import IndiServer, free_port

DARKD = Path(sys.executable).parent / "darkd"
KEY = {"camera": SIM_DEVICE, "set_point_c": -5.0, "gain": 120, "offset": 30, "binning": 1, "read_mode": 0,
       "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 4720, "height_px": 3540}
FINAL = ("succeeded", "failed", "cancelled")
DAEMON_PID: list[int] = []


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def seed_library(root: Path, n: int) -> None:
    """``n`` planned entries at other set points/exposures (no frames), so GET /library has a list to return."""
    with LibraryIndex.open(LibrarySettings(root=root)) as index:
        for i in range(n):
            key = LibraryKey(camera=SIM_DEVICE, kind="dark", exposure_s=30 + 30 * (i % 20), set_point_c=-20 - i // 20,
                             gain=120, offset=30, width_px=4720, height_px=3540)
            index.upsert_entry(key, frames_target=20)


def write_config(tmp: Path, indi_port: int, api_port: int) -> Path:
    config = tmp / "darkd.toml"
    config.write_text(f"""camera_profile = "qhy163m"
[indi]
port = {indi_port}
connect_timeout_s = 30.0
[cooling]
tolerance_c = 0.3
hold_s = 1.0
timeout_s = 300.0
unreachable_window_s = 10.0
warm_up_at_end = false
[library]
root = "{tmp / 'library'}"
[api]
port = {api_port}
""")
    return config


@contextlib.contextmanager
def daemon(tmp: Path, indi_port: int) -> Iterator[str]:
    port = free_port()
    log = (tmp / "darkd.log").open("wb")
    proc = subprocess.Popen([str(DARKD), "serve", "--config", str(write_config(tmp, indi_port, port))],
                            stdout=log, stderr=log)
    DAEMON_PID[:] = [proc.pid]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"darkd did not become ready; see {tmp / 'darkd.log'}")
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Events:
    """Follows ``/api/v1/events`` in a thread: keeps job states, counts frames, measures the lag of each event."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jobs: dict[int, str] = {}
        self.frames: list[tuple[float, int]] = []  # (receive time, job id)
        self.lags_s: list[tuple[float, float]] = []  # (receive time, lag)
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.stream("GET", f"{self.base}/api/v1/events", timeout=httpx.Timeout(None, connect=5)) as r:
            for line in r.iter_lines():
                if self.stop.is_set():
                    return
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                now = time.time()
                lag = now - datetime.fromisoformat(event["time"]).timestamp()
                with self.cond:
                    self.lags_s.append((time.monotonic(), lag))
                    if event["type"] == "job":
                        self.jobs[event["job_id"]] = event["state"]
                    elif event["type"] == "frame":
                        self.frames.append((time.monotonic(), event["job_id"]))
                    self.cond.notify_all()

    def wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=timeout_s):
                raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def renice(pids: list[int], niceness: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, niceness)


def server_histogram(base: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of ``darkd_http_request_duration_seconds`` for the two GET routes, by ``le``."""
    out: dict[str, dict[float, float]] = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if not line.startswith("darkd_http_request_duration_seconds_bucket{"):
            continue
        labels, value = line[line.index("{") + 1:line.rindex("}")], float(line.split()[-1])
        parts = dict(item.split("=", 1) for item in labels.split(","))
        route, le = parts["route"].strip('"'), parts["le"].strip('"')
        if parts["method"] == '"GET"' and parts["status"] == '"200"' and route in ("/api/v1/camera",
                                                                                 "/api/v1/library"):
            out.setdefault(route, {})[float(le)] = out.get(route, {}).get(float(le), 0.0) + value
    return out


def server_side(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict[str, str]:
    """Per route: requests in the window, share answered within 10 ms and 50 ms, and the p99 bucket bound."""
    out = {}
    for route, buckets in after.items():
        diff = {le: n - before.get(route, {}).get(le, 0.0) for le, n in buckets.items()}
        total = diff.get(float("inf"), 0.0)
        if not total:
            continue
        p99 = next(le for le in sorted(diff) if diff[le] >= 0.99 * total)
        out[route] = (f"{total:.0f} requests, {diff.get(0.01, 0) / total:.1%} within 10 ms, "
                      f"{diff.get(0.05, 0) / total:.1%} within 50 ms, p99 ≤ {p99 * 1000:g} ms")
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (s), from /proc/PID/stat (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def process_groups(server: IndiServer) -> dict[str, list[int]]:
    daemon_pid = DAEMON_PID[0]
    sim = [server.proc.pid, *children(server.proc.pid)] if server.proc is not None else []
    return {"darkd": [daemon_pid], "darkd workers": children(daemon_pid), "indiserver + simulator": sim,
            "load generator": [os.getpid()]}


def submit(base: str, kind: str, params: dict[str, Any]) -> int:
    r = httpx.post(f"{base}/api/v1/jobs", json={"kind": kind, "params": params}, timeout=60)
    if r.status_code != 201:
        raise RuntimeError(f"POST /jobs {kind}: {r.status_code} {r.text}")
    return int(r.json()["id"])


def plan(base: str, exposure_s: float, frames: int) -> dict[str, Any]:
    body = {"keys": [{**KEY, "kind": "dark", "exposure_s": exposure_s, "frames": frames}], "include_bias": False,
            "ambient_c": 20.0}
    r = httpx.post(f"{base}/api/v1/library/plan", json=body, timeout=60)
    r.raise_for_status()
    return dict(r.json())


class Connection:
    """A minimal HTTP/1.1 keep-alive GET client on asyncio streams (httpx costs ~1 ms of CPU per request, which on
    2 cores would be taken from the server under test)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.lower() == "content-length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(base: str, rate_hz: float, seconds: float) -> dict[str, list[float]]:
    """Open-loop GETs alternating /camera and /library; latency (ms) measured from each scheduled start."""
    host, port = base.removeprefix("http://").split(":")
    paths = ["/api/v1/camera", "/api/v1/library"]
    out: dict[str, list[float]] = {p: [] for p in paths}
    errors: list[str] = []
    idle: list[Connection] = [await Connection.open(host, int(port)) for _ in range(8)]

    async def one(path: str, scheduled: float) -> None:
        conn = idle.pop() if idle else await Connection.open(host, int(port))
        try:
            try:
                status, _body = await conn.get(path)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                # the server closed this keep-alive connection while it was idle (uvicorn: after 5 s): reconnect
                # and send again, as HTTP clients do for idempotent requests
                conn.close()
                conn = await Connection.open(host, int(port))
                status, _body = await conn.get(path)
            if status != 200:
                errors.append(f"{path}: HTTP {status}")
                return
            out[path].append((time.perf_counter() - scheduled) * 1000)
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(f"{path}: {exc!r}")
            conn.close()

    tasks = []
    start = time.perf_counter() + 0.1
    n = int(rate_hz * seconds)
    for i in range(n):
        scheduled = start + i / rate_hz
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[i % 2], scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    out["errors"] = [float(len(errors))]
    if errors:
        sys.stderr.write(f"{len(errors)} errors, first: {errors[0]}\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (both endpoints together)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--entries", type=int, default=100, help="extra seeded library entries")
    parser.add_argument("--idle", action="store_true", help="also measure with no capture/integration (baseline)")
    parser.add_argument("--no-capture", action="store_true", help="busy phase without the capture job")
    parser.add_argument("--no-integration", action="store_true", help="busy phase without integrate jobs")
    parser.add_argument("--nice-workers", type=int, default=0,
                        help="renice the daemon's worker processes (integration) to this niceness (experiment)")
    parser.add_argument("--nice-sim", type=int, default=0,
                        help="renice indiserver and the simulated driver to this niceness (experiment)")
    parser.add_argument("--out", type=Path, help="write the results table (markdown) here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    seed_library(tmp / "library", args.entries)
    env = sim_env(sensor="FULL", time_scale=100)
    results: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "entries": args.entries}
    server = IndiServer([SIM_DRIVER], env=env, log_path=tmp / "indiserver.log").start()
    try:
        with daemon(tmp, server.port) as base:
            events = Events(base)
            if args.idle:
                results["idle"] = asyncio.run(load(base, args.rate, args.seconds))
            t0 = time.monotonic()
            first = submit(base, "build-library", {"plan": plan(base, 60, 8)})
            events.wait(lambda: events.jobs.get(first) in FINAL, 900, "the first build-library job")
            results["first_build_s"] = time.monotonic() - t0
            results["first_build_state"] = events.jobs[first]
            entry = next(e for e in httpx.get(f"{base}/api/v1/library?kind=dark").json() if e["frames"] > 0)
            capture = -1
            if not args.no_capture:
                capture = submit(base, "build-library", {"plan": plan(base, 120, 500)})
                events.wait(lambda: any(j == capture for _, j in events.frames), 300, "the first frame of the capture")
            integrations: list[int] = []
            stop_integrating = threading.Event()

            def keep_integrating() -> None:
                while not stop_integrating.is_set() and not args.no_integration:
                    job = submit(base, "integrate", {"entry_id": entry["id"]})
                    integrations.append(job)
                    events.wait(lambda j=job: events.jobs.get(j) in FINAL or stop_integrating.is_set(), 600,
                                f"integrate job {job}")

            integrator = threading.Thread(target=keep_integrating, daemon=True)
            integrator.start()
            time.sleep(3.0)  # let the worker process start integrating
            if args.nice_workers:
                renice(children(DAEMON_PID[0]), args.nice_workers)
            if args.nice_sim and server.proc is not None:
                renice([server.proc.pid, *children(server.proc.pid)], args.nice_sim)
            results["nice"] = {"workers": args.nice_workers, "sim": args.nice_sim}
            window_start = time.monotonic()
            groups = process_groups(server)
            cpu_before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
            busy_before = machine_busy()
            hist_before = server_histogram(base)
            results["busy"] = asyncio.run(load(base, args.rate, args.seconds))
            results["server_side"] = server_side(hist_before, server_histogram(base))
            window_end = time.monotonic()
            busy_after = machine_busy()
            results["cpu_s"] = {name: sum(cpu_seconds(p) for p in pids) - cpu_before[name]
                                for name, pids in groups.items()}
            results["machine_busy"] = ((busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1]))
            results["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
            stop_integrating.set()
            with events.cond:
                results["frames_in_window"] = sum(1 for t, j in events.frames
                                                  if j == capture and window_start <= t <= window_end)
                results["sse_lags_ms"] = [lag * 1000 for t, lag in events.lags_s if window_start <= t <= window_end]
                results["integrations"] = {j: events.jobs.get(j) for j in integrations}
            if capture > 0:
                httpx.post(f"{base}/api/v1/jobs/{capture}/cancel", timeout=60)
            integrator.join(timeout=300)
            events.stop.set()
    finally:
        server.stop()
    report(results, args.out)
    return 0


def summary(values: list[float]) -> str:
    return (f"{len(values)} | {statistics.median(values):.1f} | {percentile(values, 99):.1f} | "
            f"{max(values):.1f}") if values else "0 | – | – | –"


def report(results: dict[str, Any], out: Path | None) -> None:
    lines = ["| phase | endpoint | requests | p50 (ms) | p99 (ms) | max (ms) |", "|---|---|---|---|---|---|"]
    for phase in ("idle", "busy"):
        if phase not in results:
            continue
        for path in ("/api/v1/camera", "/api/v1/library"):
            lines.append(f"| {phase} | `GET {path}` | {summary(results[phase][path])} |")
        lines.append(f"| {phase} | errors | {int(results[phase]['errors'][0])} | | | |")
    lags = results.get("sse_lags_ms", [])
    lines.append(f"| busy | SSE event lag | {summary(lags)} |")
    states = list(results.get("integrations", {}).values())
    text = "\n".join(lines) + (
        f"\n\nrate {results['rate']:g} req/s for {results['seconds']:g} s; library entries listed: "
        f"{results['entries']} seeded + the built ones; first build-library job (8 full-size darks + master): "
        f"{results.get('first_build_state')} in {results.get('first_build_s', float('nan')):.0f} s; "
        f"frames captured during the window: {results.get('frames_in_window')}; integrate jobs during the window: "
        f"{len(states)} ({', '.join(str(s) for s in states)}); "
        f"all CPUs busy {results.get('machine_busy', float('nan')):.0%} during the window (load average "
        f"{results.get('loadavg')} at its end); CPU seconds in the window: "
        f"{', '.join(f'{k} {v:.1f}' for k, v in results.get('cpu_s', {}).items())}; "
        f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}.\n")
    for route, line in results.get("server_side", {}).items():
        text += f"\nserver side (busy), `GET {route}`: {line}"
    text += "\n"
    sys.stdout.write(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
