"""The systemd units pass ``systemd-analyze verify``, carry the required settings, and ``darkd serve`` speaks the
notify protocol (READY=1, WATCHDOG=1 while /health answers, STOPPING=1) and exits 0 on SIGTERM."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.settings import load_settings
from tests.indi_server import free_port

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
DARKD = Path(sys.executable).parent / "darkd"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (Debian package 'systemd')")

pytestmark = pytest.mark.integration


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def installed_copy(tmp_path: Path) -> Path:
    """The units as installed from this checkout (``/opt/darkd`` → the repository, whose venv has ``darkd``)."""
    out = tmp_path / "units"
    out.mkdir()
    for name in ("darkd.service", "indiserver.service"):
        text = (UNITS / name).read_text().replace("/opt/darkd", str(REPO))
        (out / name).write_text(text)
    return out


@needs_systemd
def test_units_verify_cleanly(tmp_path: Path) -> None:
    units = installed_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "indiserver.service", "darkd.service"],
                          cwd=units, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    problems = [line for line in proc.stderr.splitlines() if ".service" in line]
    assert problems == [], problems  # unknown keys are only warnings (exit 0): refuse them too


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """Control for the test above: a typo'd key and a missing binary are reported."""
    units = installed_copy(tmp_path)
    text = (units / "darkd.service").read_text()
    (units / "darkd.service").write_text(text.replace("ProtectSystem=", "ProtectSystm="))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "darkd.service"], cwd=units,
                          capture_output=True, text=True, timeout=60)
    assert "Unknown key" in proc.stderr


@needs_systemd
def test_security_exposure_is_low(tmp_path: Path) -> None:
    units = installed_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "./darkd.service"],
                          cwd=units, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for darkd\.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert float(match.group(1)) <= 4.0


def test_darkd_unit_settings() -> None:
    svc = unit("darkd.service")
    s = svc["Service"]
    assert s["Type"] == "notify" and s["Restart"] == "on-failure" and int(s["WatchdogSec"]) > 0
    assert s["User"] == "darkd" and s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["PrivateTmp"] == "yes"
    assert "darkd serve --config " in s["ExecStart"]
    assert "indiserver.service" in svc["Unit"]["After"]
    # the writable path covers the documented default library root
    default_root = load_settings(REPO / "config" / "darkd.toml", environ={}).library.root
    assert Path(default_root).is_relative_to(s["ReadWritePaths"])
    # the stop timeout leaves room for the job engine's stop timeout (30 s) and the HTTP drain
    assert int(s["TimeoutStopSec"]) > 30 + 10


def test_indiserver_unit_runs_indiserver() -> None:
    s = unit("indiserver.service")["Service"]
    assert s["ExecStart"].startswith("/usr/bin/indiserver ") and s["Restart"] == "on-failure"


def _recv_until(sock: socket.socket, wanted: str, timeout_s: float) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(wanted in m for m in messages):
            return messages
    raise AssertionError(f"{wanted!r} not received within {timeout_s} s; got {messages}")


def test_serve_notifies_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    port = free_port()
    config = tmp_path / "darkd.toml"
    config.write_text(f'[library]\nroot = "{tmp_path / "lib"}"\n[api]\nport = {port}\n'
                      f'[indi]\nport = {free_port()}\nconnect_timeout_s = 1.0\n')
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(DARKD), "serve", "--config", str(config)], env=env, stdout=log, stderr=log)
    try:
        messages = _recv_until(sock, "READY=1", 30)
        messages += _recv_until(sock, "WATCHDOG=1", 5)  # pinged every 0.2 s while /health answers
        proc.send_signal(signal.SIGTERM)
        messages += _recv_until(sock, "STOPPING=1", 30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    text = (tmp_path / "serve.log").read_text()
    assert "runtime stopped" in text and "Traceback" not in text
    assert any("STATUS=serving on 127.0.0.1" in m for m in messages)
