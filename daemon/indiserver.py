"""Start and stop a local ``indiserver`` (Debian ``indi-bin``) running our simulated QHY163M, for ``darkd demo``,
benchmarks and tests.

The server listens on a free loopback port and gets its own local socket (``-u``; indiserver's default
``/tmp/indiserver`` admits one server per machine). ``DARKD_SIM_*`` variables configure the simulated driver:
``SENSOR`` (FULL|SMALL), ``TIME_SCALE`` (simulated seconds per wall second), ``SEED``, ``AMBIENT_C``, ``LIGHT_LEAK``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SIM_DRIVER = "indi_darkd_sim_ccd"
SIM_DEVICE = "QHY CCD QHY163M-Sim"
VENV_BIN = Path(sys.executable).parent


class IndiServerError(RuntimeError):
    """indiserver is missing, did not start, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_environment(sensor: str = "SMALL", time_scale: float = 100.0, seed: int = 1, ambient_c: float = 20.0,
                    **extra: str | float | int) -> dict[str, str]:
    """``DARKD_SIM_*`` variables for the simulated driver (``extra`` names without the prefix, e.g. light_leak=1)."""
    env = {"DARKD_SIM_SENSOR": sensor.upper(), "DARKD_SIM_TIME_SCALE": f"{time_scale:g}",
           "DARKD_SIM_SEED": str(seed), "DARKD_SIM_AMBIENT_C": f"{ambient_c:g}"}
    env.update({f"DARKD_SIM_{k.upper()}": str(v) for k, v in extra.items()})
    return env


class LocalIndiServer:
    """``indiserver -u SOCKET -p PORT DRIVER...`` in its own process group; :meth:`start`/:meth:`stop` or ``with``."""

    def __init__(self, drivers: tuple[str, ...] | list[str] = (SIM_DRIVER,), *, env: Mapping[str, str] | None = None,
                 port: int | None = None, log_path: Path | None = None) -> None:
        self.drivers = list(drivers)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.env = {**os.environ, **(env or {}), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log_path = log_path
        self.socket_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> LocalIndiServer:
        """Start the server and wait until it accepts connections; :class:`IndiServerError` otherwise."""
        exe = shutil.which("indiserver", path=self.env["PATH"])
        if exe is None:
            raise IndiServerError("indiserver not found: install Debian's indi-bin (make demo does)")
        for driver in self.drivers:
            if shutil.which(driver, path=self.env["PATH"]) is None:
                raise IndiServerError(f"INDI driver {driver!r} not found on PATH (is the venv installed?)")
        self.socket_dir = Path(tempfile.mkdtemp(prefix="darkd-indi-"))
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [exe, "-v", "-u", str(self.socket_dir / "indiserver"), "-p", str(self.port), *self.drivers],
            env=self.env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise IndiServerError(f"indiserver exited with code {code} (log: {self.log_path})")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                log.info("indiserver pid %s listening on %s:%s", self.proc.pid, self.host, self.port)
                return self
            time.sleep(0.05)
        self.stop()
        raise IndiServerError(f"indiserver did not listen on port {self.port} within {timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the server's process group (server and drivers), SIGKILL after ``timeout_s``; idempotent."""
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> LocalIndiServer:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def simulated_camera_server(*, sensor: str = "SMALL", time_scale: float = 100.0, seed: int = 1,
                            ambient_c: float = 20.0, log_path: Path | None = None,
                            **extra: str | float | int) -> Iterator[LocalIndiServer]:
    """A running indiserver with the simulated QHY163M configured by the arguments (see :func:`sim_environment`)."""
    server = LocalIndiServer(env=sim_environment(sensor, time_scale, seed, ambient_c, **extra), log_path=log_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
