"""Start and stop a real ``indiserver`` (Debian ``indi-bin``) with a driver on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"indiserver did not listen on port {port} within {timeout_s} s")


class IndiServer:
    """A running ``indiserver -p PORT DRIVER...``; ``env`` sets ``DARKD_SIM_*`` before the drivers start."""

    def __init__(self, drivers: list[str], env: dict[str, str] | None = None, port: int | None = None,
                 log_path: Path | None = None) -> None:
        if shutil.which("indiserver") is None:
            raise RuntimeError("indiserver not found: install Debian's indi-bin (make test does)")
        self.drivers = drivers
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {}), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        # indiserver's default local socket (/tmp/indiserver) admits one server per machine: give each its own.
        self.local_socket = Path(tempfile.gettempdir()) / f"indiserver-darkd-{self.port}"

    def start(self, timeout_s: float = 15.0) -> IndiServer:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            ["indiserver", "-v", "-u", str(self.local_socket), "-p", str(self.port), *self.drivers],
            env=self.env, stdout=log, stderr=log, start_new_session=True,
        )
        _wait_port(self.port, timeout_s)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        """Kill -9 the server and its drivers, as a crash would."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_indiserver(drivers: list[str], env: dict[str, str] | None = None,
                       log_path: Path | None = None) -> Iterator[IndiServer]:
    server = IndiServer(drivers, env=env, log_path=log_path).start()
    try:
        yield server
    finally:
        server.stop()


def raw_definitions(port: int, device: str, wait_s: float = 2.0) -> dict[str, dict[str, object]]:
    """Every ``def*Vector`` of ``device`` as the server sends it on ``getProperties``, parsed from the raw XML.

    ``{name: {"kind", "perm", "rule", "label", "group", "elements": {name: {"label", "min", "max", "step",
    "format", "value"}}}}`` — what ``indi_getprop`` cannot show (ranges, formats, switch rules, labels).
    """
    import xml.etree.ElementTree as ET

    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(f'<getProperties version="1.7" device="{device}"/>\n'.encode())
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
    root = ET.fromstring(b"<root>" + b"".join(chunks) + b"</root>")
    result: dict[str, dict[str, object]] = {}
    for vec in root:
        if not vec.tag.startswith("def") or vec.get("device") != device:
            continue
        elements: dict[str, dict[str, object]] = {}
        for el in vec:
            info: dict[str, object] = {"label": el.get("label"), "value": (el.text or "").strip()}
            for attr in ("min", "max", "step", "format"):
                if el.get(attr) is not None:
                    info[attr] = el.get(attr)
            elements[str(el.get("name"))] = info
        result[str(vec.get("name"))] = {"kind": vec.tag[3:-6].lower(), "perm": vec.get("perm", "ro"),
                                        "rule": vec.get("rule"), "label": vec.get("label"),
                                        "group": vec.get("group"), "elements": elements}
    return result
