"""MQTT publishing (``daemon/mqtt.py``) against a real broker: Debian's ``mosquitto``, started by the test on a free
loopback port with its own configuration (no persistence, so a restart loses every retained message).

The daemon is the real app (FastAPI lifespan → :class:`daemon.runtime.Runtime` → real job engine and index) on the
in-process simulated camera; a job is submitted over the API. A paho subscriber checks what Home Assistant or any
automation would see: retained availability, camera state and discovery configs, job progress messages, the library
counts, that all of it is back (retained) after the broker restarts, and ``offline`` after the daemon stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from daemon.api.app import create_app
from daemon.events import EventBus
from daemon.mqtt import MqttPublisher
from daemon.planning import plan_from_keys
from daemon.runtime import Runtime
from daemon.settings import MqttSettings, Settings
from drivers.sim.factory import open_sim_camera
from tests.conftest import SIM_DEVICE
from tests.indi_server import free_port

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (Debian package mosquitto; "
                                                           "make apt installs it)")]
NODE = "pier1"
BASE = f"darkd/{NODE}"
LOCAL = ("127.0.0.1", 50000)
KEY = {"camera": SIM_DEVICE, "kind": "dark", "exposure_s": 2.0, "set_point_c": -10.0, "gain": 120, "offset": 30,
       "binning": 1, "read_mode": 0, "usb_traffic": 30, "amp_glow": "auto", "overscan": "include", "width_px": 496,
       "height_px": 368}


class Mosquitto:
    """A private mosquitto on ``port`` (loopback only, anonymous, no persistence); ``restart()`` keeps the port.
    ``tls``: the listener speaks only TLS with this certificate and key, and with ``client_ca`` it also requires a
    client certificate signed by that CA."""

    def __init__(self, folder: Path, *, tls: tuple[Path, Path] | None = None, client_ca: Path | None = None) -> None:
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest stderr",
                 "log_type all", "log_timestamp_format %H:%M:%S",
                 # run as root, mosquitto becomes user "mosquitto" before it reads the certificates; stay who we are
                 f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if client_ca is not None:
            lines += [f"cafile {client_ca}", "require_certificate true"]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"mosquitto exited: {self.log.read_text(errors='replace')}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            assert time.monotonic() < deadline, "mosquitto did not listen within 10 s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Recorder:
    """A paho subscriber that records every message (topic, payload text, retain flag) it receives."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("darkd/#", "homeassistant/#"), *,
                 tls: dict[str, Path] | None = None) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-recorder-{time.monotonic_ns()}")
        if tls is not None:  # {"ca": …, "cert": …, "key": …}
            self.client.tls_set(ca_certs=str(tls["ca"]), certfile=str(tls["cert"]), keyfile=str(tls["key"]))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 0) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, _client: Client, _userdata: Any, message: MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self._cond.notify_all()

    def wait_for(self, topic: str, predicate: Callable[[str], bool] = lambda _: True, *, retained: bool | None = None,
                 timeout_s: float = 10.0) -> str:
        """The first payload on ``topic`` meeting ``predicate`` (and the retain flag, when given)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for t, payload, retain in self.messages:
                    if t == topic and predicate(payload) and retained in (None, retain):
                        return payload
                remaining = deadline - time.monotonic()
                seen = sorted({m[0] for m in self.messages})
                assert remaining > 0, f"no message on {topic} within {timeout_s} s; topics seen: {seen}"
                self._cond.wait(remaining)

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(p) for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def recording(port: int, tls: dict[str, Path] | None = None) -> Iterator[Recorder]:
    rec = Recorder(port, tls=tls)
    try:
        yield rec
    finally:
        rec.close()


def retained(port: int, *topics: str, timeout_s: float = 10.0) -> dict[str, str]:
    """The retained payload of each topic as a subscriber arriving later gets it: first one subscriber waits until
    every topic has been published (so the broker has it), then a fresh one must receive each with the retain flag."""
    with recording(port) as early:
        for topic in topics:
            early.wait_for(topic, timeout_s=timeout_s)
    with recording(port) as late:
        return {topic: late.wait_for(topic, retained=True, timeout_s=timeout_s) for topic in topics}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path).start()
    yield server
    server.stop()


def _settings(tmp_path: Path, port: int) -> Settings:
    return Settings.model_validate({
        "camera_profile": "qhy163m-sim-small",
        "cooling": {"tolerance_c": 0.3, "hold_s": 30.0, "timeout_s": 3600.0, "warm_up_at_end": False},
        "library": {"root": str(tmp_path / "library"), "frames_dark": 3},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "node_id": NODE, "state_interval_s": 0.2,
                 "reconnect_min_s": 1, "reconnect_max_s": 1},
    })


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_state_discovery_job_progress_and_a_broker_restart(broker: Mosquitto, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="daemon.mqtt")
    settings = _settings(tmp_path, broker.port)
    camera = open_sim_camera(time_scale=None)
    runtime = Runtime(settings, camera_factory=lambda: camera, monitor_interval_s=0.1, warm_on_shutdown=False)
    with TestClient(create_app(runtime), client=LOCAL) as client:
        # retained state and Home Assistant discovery, as a subscriber arriving later sees them
        sensor_config = f"homeassistant/sensor/{NODE}/sensor_temperature/config"
        binary_config = f"homeassistant/binary_sensor/{NODE}/camera_connected/config"
        state = retained(broker.port, f"{BASE}/status", sensor_config, binary_config, f"{BASE}/camera")
        assert state[f"{BASE}/status"] == "online"
        config = json.loads(state[sensor_config])
        assert config["state_topic"] == f"{BASE}/camera" and config["availability_topic"] == f"{BASE}/status"
        assert config["unique_id"] == f"darkd_{NODE}_sensor_temperature"
        assert config["unit_of_measurement"] == "°C" and config["device"]["identifiers"] == [f"darkd_{NODE}"]
        assert json.loads(state[binary_config])["payload_on"] == "ON"
        with recording(broker.port) as rec:
            camera_state = json.loads(rec.wait_for(f"{BASE}/camera", lambda p: json.loads(p)["connected"]))
            assert camera_state["device"] == SIM_DEVICE and isinstance(camera_state["temperature_c"], float)

        # the broker goes away (and forgets every retained message): one clear log line, then a reconnect
        assert runtime.mqtt is not None and runtime.mqtt.connects == 1
        broker.restart()
        _wait(lambda: runtime.mqtt is not None and runtime.mqtt.connects >= 2, 10, "the publisher to reconnect")
        assert f"MQTT: broker 127.0.0.1:{broker.port} gone" in caplog.text
        assert "is back after" in caplog.text

        # everything retained is there again on the new broker
        state = retained(broker.port, f"{BASE}/status", sensor_config, binary_config, f"{BASE}/camera")
        assert state[f"{BASE}/status"] == "online"
        with recording(broker.port) as rec:
            # a job through the real app: progress messages, then the library counts
            plan = plan_from_keys([KEY], None, settings, ambient_c=None, readout_s=1.0).to_dict()
            r = client.post("/api/v1/jobs", json={"kind": "build-library", "params": {"plan": plan}})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            _wait(lambda: client.get(f"/api/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed", "cancelled"),
                  30, "the job to end")
            assert client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "succeeded"
            rec.wait_for(f"{BASE}/job", lambda p: json.loads(p)["state"] == "succeeded")
            jobs = [p for p in rec.payloads(f"{BASE}/job") if p["job_id"] == job_id]
            done = [p["progress_done"] for p in jobs]
            assert done == sorted(done) and done[-1] == jobs[-1]["progress_total"] == 3, done
            assert len({p["progress_done"] for p in jobs}) >= 3  # a message per frame, not only start and end
            assert jobs[-1]["progress_pct"] == 100.0 and jobs[-1]["kind"] == "build-library"
            frames = rec.payloads(f"{BASE}/frame")
            assert sum(1 for f in frames if f["job_id"] == job_id and f["ok"]) == 3
            library = json.loads(rec.wait_for(f"{BASE}/library", lambda p: json.loads(p)["ready"] == 1))
            assert library["entries"] == 1 and library["by_status"]["ready"] == 1
    # the daemon stopped: availability says so (retained)
    with recording(broker.port) as rec:
        assert rec.wait_for(f"{BASE}/status", retained=True) == "offline"


def test_a_broker_down_at_start_is_retried_with_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Start never waits for the broker; while it is away one warning is logged (retries at debug level), what was
    published meanwhile is kept, and it all arrives, retained, once the broker is there."""
    caplog.set_level(logging.DEBUG, logger="daemon.mqtt")
    broker = Mosquitto(tmp_path)  # its port, nothing listening yet
    bus = EventBus()
    publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id="pier 2!", reconnect_min_s=1,
                                           reconnect_max_s=1, state_interval_s=0.2), bus,
                              count_by_status=lambda: {"ready": 4, "planned": 2})
    started = time.monotonic()
    publisher.start()
    try:
        assert time.monotonic() - started < 1.0  # connect_async: start() does not wait for the broker
        _wait(lambda: "still unreachable" in caplog.text, 10, "a second connection attempt")
        assert caplog.text.count(f"MQTT: cannot reach broker 127.0.0.1:{broker.port}") == 1
        bus.publish("warning", {"job_id": 7, "message": "set point -25 °C unreachable"})
        _wait(lambda: "darkd/pier_2/warning" in publisher.retained_topics(), 5, "the warning to be kept")
        broker.start()
        try:
            _wait(lambda: publisher.connected, 10, "the publisher to connect")
            config_topic = "homeassistant/sensor/pier_2/last_warning/config"
            state = retained(broker.port, "darkd/pier_2/status", "darkd/pier_2/warning", "darkd/pier_2/library",
                             config_topic)
            assert state["darkd/pier_2/status"] == "online"
            warning = json.loads(state["darkd/pier_2/warning"])
            assert warning["message"] == "set point -25 °C unreachable" and warning["job_id"] == 7
            library = json.loads(state["darkd/pier_2/library"])
            assert library == {"entries": 6, "ready": 4, "by_status": {"ready": 4, "planned": 2}}
            assert json.loads(state[config_topic])["state_topic"] == "darkd/pier_2/warning"
            # Home Assistant (re)starting announces itself: discovery and state are sent again, live
            with recording(broker.port) as rec:
                rec.client.publish("homeassistant/status", "online")
                again = json.loads(rec.wait_for(config_topic, retained=False))
                assert again["unique_id"] == "darkd_pier_2_last_warning"
                rec.wait_for("darkd/pier_2/warning", retained=False)
            publisher.stop()
            with recording(broker.port) as rec:
                assert rec.wait_for("darkd/pier_2/status", retained=True) == "offline"
        finally:
            broker.stop()
    finally:
        publisher.stop()


def test_refused_credentials_are_one_error_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Mosquitto(tmp_path)
    broker.config.write_text(broker.config.read_text(encoding="utf-8").replace("allow_anonymous true",
                                                                               "allow_anonymous false"),
                             encoding="utf-8")
    broker.start()
    publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id="pier3", username="darkd",
                                           password="wrong", reconnect_min_s=1, reconnect_max_s=1), EventBus())
    try:
        caplog.set_level(logging.DEBUG, logger="daemon.mqtt")
        publisher.start()
        _wait(lambda: caplog.text.count("refused the connection") >= 2, 10, "two refused attempts")
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "refused the connection" in r.message]
        assert len(errors) == 1 and "username/password" in errors[0].message
        assert not publisher.connected
    finally:
        publisher.stop()
        broker.stop()


# ---- TLS: certificates from the openssl command-line tool, a mosquitto listener that speaks only TLS ----------------

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate authority (P-256 key, valid 2 days): ``(certificate, key)``."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=darkd test {name}", cwd=folder)
    return folder / f"{name}.pem", folder / f"{name}.key"


def _signed(folder: Path, name: str, ca: tuple[Path, Path], alt_names: str | None) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by ``ca``, with ``alt_names`` (``subjectAltName`` value) when given."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    extra: list[str] = []
    if alt_names is not None:
        (folder / f"{name}.ext").write_text(f"subjectAltName={alt_names}\n", encoding="utf-8")
        extra = ["-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", *extra, cwd=folder)
    return folder / f"{name}.pem", folder / f"{name}.key"


needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command-line tool is not installed")


@needs_openssl
def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    """A broker that speaks only TLS and wants a client certificate: the daemon checks the broker's certificate
    against ``ca_file`` (the broker's name is 127.0.0.1) and shows its own; its state arrives, retained."""
    ca = _ca(tmp_path, "ca")
    server = _signed(tmp_path, "broker", ca, "IP:127.0.0.1,DNS:localhost")
    client = _signed(tmp_path, "darkd", ca, None)
    broker = Mosquitto(tmp_path, tls=server, client_ca=ca[0]).start()
    tls = {"ca": ca[0], "cert": client[0], "key": client[1]}
    publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id="pier4", tls=True, ca_file=ca[0],
                                           cert_file=client[0], key_file=client[1], state_interval_s=0.2), EventBus(),
                              count_by_status=lambda: {"ready": 1})
    try:
        publisher.start()
        _wait(lambda: publisher.connected, 10, "the publisher to connect over TLS")
        with recording(broker.port, tls=tls) as rec:
            assert rec.wait_for("darkd/pier4/status", retained=True) == "online"
            assert json.loads(rec.wait_for("darkd/pier4/library"))["ready"] == 1
        publisher.stop()
        with recording(broker.port, tls=tls) as rec:
            assert rec.wait_for("darkd/pier4/status", retained=True) == "offline"
    finally:
        publisher.stop()
        broker.stop()


@needs_openssl
def test_a_refused_broker_certificate_is_one_error_line_and_tls_insecure_accepts_its_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The broker's certificate names another host: with the wrong CA the daemon says so once (certificate verify
    failed) and never connects; with the right CA it refuses the name (one error line); with ``tls_insecure`` it
    connects, encrypted."""
    ca = _ca(tmp_path, "ca")
    other_ca = _ca(tmp_path, "other")
    server = _signed(tmp_path, "broker", ca, "DNS:broker.invalid")
    broker = Mosquitto(tmp_path, tls=server).start()
    caplog.set_level(logging.DEBUG, logger="daemon.mqtt")
    try:
        for node, ca_file, what in (("wrongca", other_ca[0], "certificate verify failed"),
                                    ("wrongname", ca[0], "mismatch")):
            publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id=node, tls=True,
                                                   ca_file=ca_file, reconnect_min_s=1, reconnect_max_s=1), EventBus())
            caplog.clear()
            try:
                publisher.start()
                _wait(lambda: "still unreachable" in caplog.text, 10, "a second attempt")
                errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
                assert len(errors) == 1, errors
                assert f"TLS with broker 127.0.0.1:{broker.port} failed" in errors[0] and what in errors[0], errors
                assert "ca_file" in errors[0] and not publisher.connected
            finally:
                publisher.stop()
        publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id="insecure", tls=True,
                                               ca_file=ca[0], tls_insecure=True), EventBus())
        try:
            publisher.start()
            _wait(lambda: publisher.connected, 10, "the publisher to connect with tls_insecure")
        finally:
            publisher.stop()
    finally:
        broker.stop()


def test_tls_to_a_plain_listener_says_so(broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """``tls = true`` against a port that speaks plain MQTT (mosquitto resets the handshake): the one warning says
    what is likely wrong instead of only "cannot reach"."""
    caplog.set_level(logging.DEBUG, logger="daemon.mqtt")
    publisher = MqttPublisher(MqttSettings(enabled=True, port=broker.port, node_id="plain", tls=True,
                                           reconnect_min_s=1, reconnect_max_s=1), EventBus())
    try:
        publisher.start()
        _wait(lambda: "still unreachable" in caplog.text, 10, "a second attempt")
        warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "plain MQTT listener" in warnings[0] and "8883" in warnings[0], warnings
        assert not publisher.connected
    finally:
        publisher.stop()
