"""MQTT publishing for home and observatory automation (optional: ``[mqtt] enabled = true``).

The daemon's state goes to an MQTT broker through paho-mqtt (Eclipse Paho, ≥ 2), with Home Assistant discovery, so
that Home Assistant, Node-RED or an observatory controller sees the camera, the jobs and the library without polling
the REST API. Topics (``<base>`` = ``<topic_prefix>/<node_id>``, default ``darkd/<host name>``; payloads JSON):

========================== ======== =================================================================================
topic                      retained payload
========================== ======== =================================================================================
``<base>/status``          yes      ``online`` / ``offline`` (also the last will: a daemon that dies shows offline)
``<base>/camera``          yes      ``{connected, device, temperature_c, set_point_c, cooler_power_pct, cooler_on,
                                    stable, exposing, last_error}`` of the first (default) camera, every
                                    ``state_interval_s`` when it changed
``<base>/camera/<id>``     yes      the same for each configured camera (``[[cameras]]`` id, ``topic_id``), plus
                                    ``id``; published by a daemon that knows its cameras (``camera_states``)
``<base>/job``             yes      the latest job event: ``{job_id, kind, state, progress_done, progress_total,
                                    progress_pct, step, eta_s, time}``, one message per progress step
``<base>/warning``         yes      the latest warning: ``{job_id, message, time}``
``<base>/library``         yes      coverage: ``{entries, ready, by_status: {status: n}}``, when it changed
``<base>/frame``           no       each captured frame: ``{job_id, ok, reasons, path, time}``
========================== ======== =================================================================================

Home Assistant discovery (``discovery = true``): one retained config per entity on
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (the topic layout and payload keys of
https://www.home-assistant.io/integrations/mqtt/ "MQTT Discovery"; ``node_id`` and ``object_id`` use only
``[a-zA-Z0-9_-]``), all grouped under one device, with one set of camera entities per camera on
``<base>/camera/<id>`` (object ids ``<id>_sensor_temperature`` …; a single ``default`` camera keeps the plain ids on
``<base>/camera``), with ``<base>/status`` as availability. Discovery and every
retained state are published again after each (re)connect and when Home Assistant announces itself on
``<discovery_prefix>/status`` (its birth message ``online``), so a broker restarted without persistence is complete
again at once.

With ``tls = true`` the connection is TLS (``tls_set``): the broker's certificate is checked against ``ca_file`` (or
the system's CAs) and its name against ``host`` unless ``tls_insecure``; ``cert_file``/``key_file`` are a client
certificate. A refused certificate is one error line naming the cause (:func:`_tls_failure`), then retried like a
broker that is away.

Threads (never the event loop): paho's network thread (``loop_start``: connects, reconnects with exponential back-off
from ``reconnect_min_s`` to ``reconnect_max_s``) and ``mqtt-events``, which reads the daemon's
:class:`daemon.events.EventBus`, turns events into messages and, every ``state_interval_s``, reads the camera
snapshot and the library counts (a database read: it belongs in this thread). A broker that is away costs nothing
but one log line: messages published meanwhile are dropped (QoS 0) and the retained state is republished on
reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.events import EventBus, Subscription
from daemon.jobs.states import FINAL_STATES
from daemon.settings import MqttSettings

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
_CAMERA_FIELDS = ("connected", "device", "temperature_c", "set_point_c", "cooler_power_pct", "cooler_on", "stable",
                  "exposing", "last_error")


def topic_id(text: str) -> str:
    """``text`` as a Home Assistant discovery id: only ``[a-zA-Z0-9_-]`` (other runs become ``_``), never empty."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "darkd"


def default_node_id() -> str:
    """The host name as a node id (``topic_id``): one daemon per host by default."""
    return topic_id(socket.gethostname().split(".")[0])


def _tls_failure(error: ssl.SSLError) -> str:
    """What a failed TLS handshake says, in one phrase: ``certificate verify failed: <why>`` when the broker's
    certificate was refused (``Hostname mismatch``, ``unable to get local issuer certificate`` …)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    return str(error.reason or error)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("darkd")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity: where its value is (a state topic suffix and a template) and how HA shows it."""

    object_id: str
    name: str
    topic: str  # suffix under <base>: camera, job, library, warning
    value_template: str
    component: str = "sensor"
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None
    attributes: bool = False  # the whole JSON payload as the entity's attributes


ENTITIES: tuple[Entity, ...] = (
    Entity("camera_connected", "Camera connected", "camera", "{{ 'ON' if value_json.connected else 'OFF' }}",
           component="binary_sensor", device_class="connectivity", attributes=True),
    Entity("sensor_temperature", "Sensor temperature", "camera", "{{ value_json.temperature_c }}", unit="°C",
           device_class="temperature", state_class="measurement"),
    Entity("set_point", "Set point", "camera", "{{ value_json.set_point_c }}", unit="°C", device_class="temperature"),
    Entity("cooler_power", "Cooler power", "camera", "{{ value_json.cooler_power_pct }}", unit="%",
           state_class="measurement", icon="mdi:snowflake"),
    Entity("job_state", "Job state", "job", "{{ value_json.state }}", icon="mdi:progress-clock", attributes=True),
    Entity("job_progress", "Job progress", "job", "{{ value_json.progress_pct }}", unit="%",
           state_class="measurement", icon="mdi:progress-check"),
    Entity("library_ready", "Library masters ready", "library", "{{ value_json.ready }}", state_class="measurement",
           icon="mdi:bookshelf", attributes=True),
    Entity("last_warning", "Last warning", "warning", "{{ value_json.message[:255] }}", icon="mdi:alert",
           attributes=True),
)


class MqttPublisher:
    """Publishes the daemon's state to one broker (see the module docstring). ``start()`` then ``stop()``."""

    def __init__(self, settings: MqttSettings, bus: EventBus, *,
                 camera_state: Callable[[], Mapping[str, Any]] | None = None,
                 camera_states: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
                 camera_ids: list[str] | None = None,
                 count_by_status: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.node_id = topic_id(settings.node_id) if settings.node_id else default_node_id()
        self.base = f"{settings.topic_prefix.strip('/')}/{self.node_id}"
        self.availability_topic = f"{self.base}/status"
        self.client_id = settings.client_id or f"darkd-{self.node_id}"
        self._camera_state = camera_state
        self._camera_states = camera_states
        #: the configured camera ids (discovery: one entity set per camera); ``None``/``["default"]``: one camera
        self.camera_ids = [topic_id(c) for c in camera_ids] if camera_ids else []
        self._count_by_status = count_by_status
        self._client: Client | None = None
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retained: dict[str, str] = {}  # topic -> last retained payload (republished on reconnect)
        self._connected = threading.Event()
        self._down_since: float | None = None  # monotonic time the broker went away (None: up, or never reached)
        self._failures = 0
        self._refresh = threading.Event()  # read camera and library now (after a reconnect / a job ended)
        self.connects = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MqttPublisher:
        """Subscribe to the bus, start paho's network thread (which connects in the background) and the event pump.
        Never blocks on the broker: a broker that is down at start is retried like one that went away."""
        from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv311

        s = self.settings
        client = Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTv311)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                           certfile=str(s.cert_file) if s.cert_file else None,
                           keyfile=str(s.key_file) if s.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if s.tls_insecure:  # encrypted, but any certificate name is accepted: a self-signed broker on the LAN
                client.tls_insecure_set(True)
        client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=s.reconnect_min_s, max_delay=s.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client
        self._stop.clear()
        self._sub = self.bus.subscribe(maxsize=1000)
        client.connect_async(s.host, s.broker_port, keepalive=s.keepalive_s)
        client.loop_start()
        self._thread = threading.Thread(target=self._pump, name="mqtt-events", daemon=True)
        self._thread.start()
        log.info("MQTT: publishing to %s:%d%s under %s/ (discovery %s)", s.host, s.broker_port,
                 " over TLS" + (" (certificate name not checked)" if s.tls_insecure else "") if s.tls else "",
                 self.base, f"under {s.discovery_prefix}/" if s.discovery else "off")
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish ``offline`` (waiting up to ``timeout_s`` for the broker to have it), disconnect, stop the threads.
        Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s + 2.0)
            self._thread = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        client, self._client = self._client, None
        if client is None:
            return
        if self._connected.is_set():
            info = client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
            # not queued (the connection was lost meanwhile): the last will says offline instead
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=timeout_s)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        log.info("MQTT: stopped")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def retained_topics(self) -> list[str]:
        """The state topics kept for republishing on (re)connect."""
        with self._lock:
            return sorted(self._retained)

    # ------------------------------------------------------------------ paho callbacks (paho's network thread)
    def _on_connect(self, client: Client, _userdata: Any, _flags: ConnectFlags, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        s = self.settings
        if reason.is_failure:  # paho retries with back-off; one error line until a connection succeeds
            with self._lock:
                self._failures += 1
                first = self._failures == 1
            log.log(logging.ERROR if first else logging.DEBUG, "MQTT: broker %s:%d refused the connection: %s "
                    "(check [mqtt] username/password)", s.host, s.broker_port, reason)
            return
        with self._lock:
            down_since, self._down_since = self._down_since, None
            self._failures = 0
            retained = dict(self._retained)
        client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        if s.discovery:
            client.subscribe(f"{s.discovery_prefix}/status")
            self._publish_discovery(client)
        for topic, payload in retained.items():
            client.publish(topic, payload, retain=True)
        # connected only now, so the republished state is on the broker before anyone is told; what changed in the
        # meantime (cached by publish_state, not sent) goes out after it
        self._connected.set()
        with self._lock:
            changed = {t: p for t, p in self._retained.items() if retained.get(t) != p}
            self.connects += 1
        for topic, payload in changed.items():
            client.publish(topic, payload, retain=True)
        if down_since is not None:
            log.warning("MQTT: broker %s:%d is back after %.0f s; state republished", s.host, s.broker_port,
                        time.monotonic() - down_since)
        else:
            log.info("MQTT: connected to broker %s:%d as %s", s.host, s.broker_port, self.client_id)
        self._refresh.set()

    def _on_disconnect(self, _client: Client, _userdata: Any, _flags: DisconnectFlags, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        self._connected.clear()
        if self._stop.is_set():
            return
        s = self.settings
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        if first:
            log.warning("MQTT: broker %s:%d gone (%s); reconnecting with back-off %d..%d s, state is kept and "
                        "republished on reconnect", s.host, s.broker_port, reason, s.reconnect_min_s, s.reconnect_max_s)

    def _on_connect_fail(self, _client: Client, _userdata: Any) -> None:
        s = self.settings
        cause = sys.exc_info()[1]  # paho calls this while it handles the connection's OSError
        with self._lock:
            self._failures += 1
            failures = self._failures
            if self._down_since is None:
                self._down_since = time.monotonic()
        if failures == 1 and isinstance(cause, ssl.SSLError):  # a TLS handshake refused: retrying will not mend it
            log.error("MQTT: TLS with broker %s:%d failed: %s (check [mqtt] ca_file, cert_file/key_file, and that "
                      "the broker's certificate names host %r, or set tls_insecure); retrying with back-off %d..%d s",
                      s.host, s.broker_port, _tls_failure(cause), s.host,
                      s.reconnect_min_s, s.reconnect_max_s)
        elif failures == 1:
            # a plain MQTT listener resets a TLS handshake (mosquitto), or answers it with what is not TLS
            plain = s.tls and (isinstance(cause, ConnectionResetError)
                               or "WRONG_VERSION_NUMBER" in str(getattr(cause, "reason", "")))
            log.warning("MQTT: cannot reach broker %s:%d%s%s; retrying with back-off %d..%d s (one line per outage)",
                        s.host, s.broker_port, f" ({cause})" if cause is not None else "",
                        " — is that port a plain MQTT listener? tls = true wants the broker's TLS port, usually 8883"
                        if plain else "", s.reconnect_min_s, s.reconnect_max_s)
        else:
            log.debug("MQTT: broker %s:%d still unreachable (%d attempts)", s.host, s.broker_port, failures)

    def _on_message(self, client: Client, _userdata: Any, message: MQTTMessage) -> None:
        if message.topic == f"{self.settings.discovery_prefix}/status" and message.payload == ONLINE.encode():
            log.info("MQTT: Home Assistant is online; discovery republished")
            self._publish_discovery(client)
            with self._lock:
                retained = dict(self._retained)
            for topic, payload in retained.items():
                client.publish(topic, payload, retain=True)

    # ------------------------------------------------------------------ discovery
    def discovery_messages(self) -> dict[str, dict[str, Any]]:
        """``{config topic: config payload}`` of every entity (Home Assistant MQTT discovery)."""
        version = _version()
        device = {"identifiers": [f"darkd_{self.node_id}"], "name": f"darkd {self.node_id}", "manufacturer": "darkd",
                  "model": "dark library daemon", "sw_version": version}
        out: dict[str, dict[str, Any]] = {}
        per_camera = self.camera_ids != [] and self.camera_ids != ["default"]
        entities: list[tuple[Entity, str, str, str]] = []  # entity, object id, name, state topic suffix
        for e in ENTITIES:
            if e.topic == "camera" and per_camera:
                entities += [(e, f"{c}_{e.object_id}", f"{c} {e.name[0].lower()}{e.name[1:]}", f"camera/{c}")
                             for c in self.camera_ids]
            else:
                entities.append((e, e.object_id, e.name, e.topic))
        for e, object_id, name, state_topic in entities:
            config: dict[str, Any] = {
                "name": name, "unique_id": f"darkd_{self.node_id}_{object_id}",
                "state_topic": f"{self.base}/{state_topic}", "value_template": e.value_template,
                "availability_topic": self.availability_topic, "payload_available": ONLINE,
                "payload_not_available": OFFLINE, "device": device,
                "origin": {"name": "darkd", "sw_version": version},
            }
            if e.component == "binary_sensor":
                config.update(payload_on="ON", payload_off="OFF")
            for key, value in (("unit_of_measurement", e.unit), ("device_class", e.device_class),
                               ("state_class", e.state_class), ("icon", e.icon)):
                if value is not None:
                    config[key] = value
            if e.attributes:
                config["json_attributes_topic"] = f"{self.base}/{state_topic}"
            out[f"{self.settings.discovery_prefix}/{e.component}/{self.node_id}/{object_id}/config"] = config
        return out

    def _publish_discovery(self, client: Client) -> None:
        for topic, config in self.discovery_messages().items():
            client.publish(topic, json.dumps(config), qos=1, retain=True)

    # ------------------------------------------------------------------ state
    def publish_state(self, suffix: str, payload: Mapping[str, Any], *, retain: bool = True,
                      only_if_changed: bool = False) -> bool:
        """Publish ``payload`` as JSON on ``<base>/<suffix>``; retained ones are kept for republishing. Returns whether
        it was sent (``False``: unchanged and ``only_if_changed``, or the broker is away)."""
        topic = f"{self.base}/{suffix}"
        text = json.dumps(payload, default=str, sort_keys=True)
        if retain:
            with self._lock:
                if only_if_changed and self._retained.get(topic) == text:
                    return False
                self._retained[topic] = text
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        return client.publish(topic, text, retain=retain).rc == 0

    def _publish_camera(self) -> None:
        """``<base>/camera`` (the first camera, as before several cameras) and ``<base>/camera/<id>`` per camera."""
        if self._camera_state is not None:
            try:
                snapshot = self._camera_state()
            except Exception:  # the monitor's snapshot must never end the publisher
                log.exception("MQTT: camera snapshot unavailable")
            else:
                self.publish_state("camera", {k: snapshot.get(k) for k in _CAMERA_FIELDS}, only_if_changed=True)
        if self._camera_states is None:
            return
        try:
            snapshots = list(self._camera_states())
        except Exception:
            log.exception("MQTT: camera snapshots unavailable")
            return
        for snap in snapshots:
            camera_id = topic_id(str(snap.get("id") or "default"))
            payload = {"id": snap.get("id"), **{k: snap.get(k) for k in _CAMERA_FIELDS}}
            self.publish_state(f"camera/{camera_id}", payload, only_if_changed=True)

    def _publish_library(self) -> None:
        if self._count_by_status is None:
            return
        try:
            counts = dict(self._count_by_status())
        except Exception:  # the index briefly unavailable: try again at the next tick
            log.exception("MQTT: library counts unavailable")
            return
        self.publish_state("library", {"entries": sum(counts.values()), "ready": counts.get("ready", 0),
                                       "by_status": counts}, only_if_changed=True)

    def handle_event(self, event: Mapping[str, Any]) -> None:
        """Turn one bus event into a message (``job``, ``warning``, ``frame``; ``temperature`` is left to the
        periodic camera snapshot)."""
        kind = event.get("type")
        if kind == "job":
            done, total = event.get("progress_done"), event.get("progress_total")
            pct = round(100.0 * done / total, 1) if isinstance(done, int) and isinstance(total, int) and total else None
            fields = ("job_id", "kind", "state", "progress_done", "progress_total", "step", "eta_s", "time")
            self.publish_state("job", {**{k: event.get(k) for k in fields}, "progress_pct": pct})
            if event.get("state") in FINAL_STATES:  # a job ended: read the library counts now
                self._refresh.set()
        elif kind == "warning":
            self.publish_state("warning", {k: event.get(k) for k in ("job_id", "message", "time")})
        elif kind == "frame":
            self.publish_state("frame", {k: event.get(k) for k in ("job_id", "ok", "reasons", "path", "time")},
                               retain=False)

    def _pump(self) -> None:
        sub = self._sub
        assert sub is not None
        next_tick = 0.0
        while not self._stop.is_set():
            event = sub.get(timeout_s=0.1)
            if event is not None:
                try:
                    self.handle_event(event)
                except Exception:  # one odd event must not end the publisher
                    log.exception("MQTT: cannot publish event %s", event.get("type"))
            now = time.monotonic()
            if now >= next_tick or self._refresh.is_set():
                self._refresh.clear()
                next_tick = now + self.settings.state_interval_s
                self._publish_camera()
                self._publish_library()
