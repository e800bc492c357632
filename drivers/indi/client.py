"""A thread-safe bridge over ``pyindi-client``: snapshots of properties, BLOBs in a queue, waits with timeouts.

``PyIndi.BaseClient`` calls back on its own thread. The callbacks here only copy what arrived (property values, BLOB
bytes, messages) into plain Python objects under one :class:`threading.Condition` and notify it; callers wait on the
condition with a deadline (no polling loops) and get :class:`drivers.camera.CameraTimeout` or
:class:`drivers.camera.CameraDisconnected` instead of a hang. Sending goes through the ``PyIndi`` property objects, as
the library intends.

References: INDI client API (``libindiclient`` ``BaseClient``), pyindi-client 2.x examples.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import PyIndi

from drivers.camera import CameraDisconnected, CameraError, CameraTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATE_NAMES = {PyIndi.IPS_IDLE: "Idle", PyIndi.IPS_OK: "Ok", PyIndi.IPS_BUSY: "Busy", PyIndi.IPS_ALERT: "Alert"}
_PERM_NAMES = {PyIndi.IP_RO: "ro", PyIndi.IP_WO: "wo", PyIndi.IP_RW: "rw"}
_TYPE_NAMES = {
    PyIndi.INDI_NUMBER: "number",
    PyIndi.INDI_SWITCH: "switch",
    PyIndi.INDI_TEXT: "text",
    PyIndi.INDI_LIGHT: "light",
    PyIndi.INDI_BLOB: "blob",
}
MAX_MESSAGES = 200


class PropertyMissing(CameraError):
    """The device does not define a property (or element) that the operation needs."""


class PropertyAlert(CameraError):
    """The driver answered a request with the Alert state (refused, failed)."""


@dataclass(frozen=True)
class PropertySnapshot:
    """A copy of one INDI property as last seen: ``values`` maps element name to float (number), bool (switch), str."""

    device: str
    name: str
    kind: str  # "number" | "switch" | "text" | "light" | "blob"
    state: str  # "Idle" | "Ok" | "Busy" | "Alert"
    values: dict[str, Any]
    limits: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # number: element -> (min, max, step)
    version: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # element name -> its label ("Gain", "Cooling Power (%)")
    permission: str = "rw"  # "ro" | "wo" | "rw": a write-only vector's values say nothing about the device
    label: str = ""  # the vector's label

    @property
    def writable(self) -> bool:
        return self.permission != "ro"

    @property
    def readable(self) -> bool:
        """False for write-only vectors (e.g. ZWO ``CCD_COOLER``): verify them by their effect, not by reading."""
        return self.permission != "wo"

    def number(self, element: str) -> float:
        if element not in self.values:
            raise PropertyMissing(f"{self.device}: {self.name} has no element {element} (has {sorted(self.values)})")
        return float(self.values[element])

    def on_switches(self) -> list[str]:
        return [k for k, v in self.values.items() if v]


@dataclass(frozen=True)
class BlobData:
    """A BLOB as received: element name, format (e.g. ``.fits``), bytes, and the UTC time it arrived."""

    device: str
    name: str
    element: str
    fmt: str
    payload: bytes | bytearray
    received_utc: datetime


CLOSE_TIMEOUT_S = 5.0  # how long close() waits for libindiclient to report the disconnection
CLOSE_LINGER_S = 0.1  # then this long for its thread to return from its last callback


def _detached(prop: Any, device: str, name: str, element_names: list[str]) -> Any:
    """``prop`` (a new, empty ``PyIndi.Property*`` of ``len(element_names)`` elements) named as ``device``'s vector
    ``name``, to be filled and sent.

    Never the client's own copy of the vector: libindiclient's thread writes every update from the driver into that
    copy without a lock we could take, so a value set there can be overwritten before it is sent. Seen in a fresh-clone
    test run: a set point of -10 °C went out as the temperature the driver had just reported (its acknowledgement of
    the previous set point arrived in between), and the camera settled at that temperature instead.
    """
    prop.setDeviceName(device)
    prop.setName(name)
    for widget, element in zip(prop, element_names, strict=True):
        widget.setName(element)
    return prop


class IndiClient(PyIndi.BaseClient):
    """One connection to an ``indiserver``. Thread-safe; all waits take ``timeout_s``.

    ``epoch(device)`` increases whenever the device is removed or its ``CONNECTION`` drops, so a caller can tell that
    something it started (an exposure) cannot complete any more. ``server_lost`` is set by ``serverDisconnected``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7624) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self._cond = threading.Condition()
        #: one property write at a time: libindiclient's sendNew* is not safe from two threads at once (their XML
        #: interleaves on the socket: the driver logs "oneNumber requires 'device' attribute" and ignores both), and
        #: the element values are set on libindiclient's shared copy of the property just before sending
        self._send_lock = threading.Lock()
        self._props: dict[tuple[str, str], PropertySnapshot] = {}
        self._devices: set[str] = set()
        self._epochs: dict[str, int] = collections.defaultdict(int)
        self._blobs: dict[str, collections.deque[BlobData]] = collections.defaultdict(collections.deque)
        self._messages: collections.deque[tuple[datetime, str, str]] = collections.deque(maxlen=MAX_MESSAGES)
        self._version = 0
        self._server_up = False
        self._server_lost_code: int | None = None
        self._listeners: list[Callable[[PropertySnapshot], None]] = []
        self._last_define_s = time.monotonic()

    # ---------------------------------------------------------------- connection
    def open(self, timeout_s: float = 10.0) -> None:
        """Connect to the server. Raises :class:`CameraDisconnected` when nothing listens at host:port."""
        self.setServer(self.host, self.port)
        self.setConnectionTimeout(max(1, int(timeout_s)), 0)
        if not self.connectServer():
            raise CameraDisconnected(f"no INDI server at {self.host}:{self.port} (is indiserver running?)")
        with self._cond:
            self._server_up = True
            self._server_lost_code = None
            self._cond.notify_all()

    def close(self, linger_s: float = CLOSE_LINGER_S) -> None:
        """Disconnect from the server (idempotent) and wait until the client's thread has let go of it.

        ``disconnectServer`` only asks libindiclient's listener thread to close the socket; the thread then delivers
        its last callbacks and ends, and the client's destructor joins it. Were the last Python reference dropped while
        that thread still ran a callback, the destructor would run on the thread itself and the join would abort the
        process (``std::system_error``). So: wait for the disconnection (bounded), then ``linger_s`` more for the
        last callback to return. Callers also keep closed clients referenced for a while (``IndiCamera._retire``).
        """
        try:
            if self.isServerConnected():
                self.disconnectServer()
            deadline = time.monotonic() + CLOSE_TIMEOUT_S
            while self.isServerConnected() and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:
            log.debug("disconnectServer failed", exc_info=True)
        with self._cond:
            self._server_up = False
            self._cond.notify_all()
        time.sleep(linger_s)

    @property
    def server_up(self) -> bool:
        with self._cond:
            return self._server_up

    def add_listener(self, callback: Callable[[PropertySnapshot], None]) -> None:
        """Call ``callback(snapshot)`` (on the INDI thread; keep it short) for every property definition/update."""
        with self._cond:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[PropertySnapshot], None]) -> None:
        with self._cond:
            if callback in self._listeners:
                self._listeners.remove(callback)

    # ---------------------------------------------------------------- callbacks (INDI thread)
    def _store(self, prop: Any) -> PropertySnapshot | None:
        kind = _TYPE_NAMES.get(prop.getType())
        if kind is None:
            return None
        device, name = prop.getDeviceName(), prop.getName()
        values: dict[str, Any] = {}
        limits: dict[str, tuple[float, float, float]] = {}
        labels: dict[str, str] = {}
        if kind == "number":
            for w in PyIndi.PropertyNumber(prop):
                values[w.getName()] = float(w.getValue())
                limits[w.getName()] = (float(w.getMin()), float(w.getMax()), float(w.getStep()))
                labels[w.getName()] = str(w.getLabel())
        elif kind == "switch":
            for w in PyIndi.PropertySwitch(prop):
                values[w.getName()] = w.getState() == PyIndi.ISS_ON
                labels[w.getName()] = str(w.getLabel())
        elif kind == "text":
            for w in PyIndi.PropertyText(prop):
                values[w.getName()] = str(w.getText())
                labels[w.getName()] = str(w.getLabel())
        elif kind == "light":
            for w in PyIndi.PropertyLight(prop):
                values[w.getName()] = _STATE_NAMES.get(w.getState(), "Idle")
        permission = _PERM_NAMES.get(prop.getPermission(), "rw")
        prop_label = str(prop.getLabel() or "")
        blobs: list[BlobData] = []
        if kind == "blob":
            now = datetime.now(UTC)
            for w in PyIndi.PropertyBlob(prop):
                size = int(w.getSize())
                if size <= 0:
                    continue
                payload = w.getblobdata()  # a fresh bytearray owned by us (no second copy)
                blobs.append(BlobData(device, name, w.getName(), str(w.getFormat()), payload, now))
                values[w.getName()] = size
        with self._cond:
            self._version += 1
            snap = PropertySnapshot(device, name, kind, _STATE_NAMES.get(prop.getState(), "Idle"), values, limits,
                                    self._version, labels, permission, prop_label)
            self._props[(device, name)] = snap
            self._devices.add(device)
            if name == "CONNECTION" and not values.get("CONNECT", False):
                self._epochs[device] += 1
            for blob in blobs:
                self._blobs[device].append(blob)
            listeners = list(self._listeners)
            self._cond.notify_all()
        for callback in listeners:
            try:
                callback(snap)
            except Exception:
                log.exception("property listener failed")
        return snap

    def newDevice(self, device: Any) -> None:  # noqa: N802 - PyIndi callback name
        with self._cond:
            self._devices.add(device.getDeviceName())
            self._cond.notify_all()

    def removeDevice(self, device: Any) -> None:  # noqa: N802
        name = device.getDeviceName()
        with self._cond:
            self._devices.discard(name)
            self._epochs[name] += 1
            for key in [k for k in self._props if k[0] == name]:
                del self._props[key]
            self._cond.notify_all()
        log.warning("INDI device %s removed", name)

    def newProperty(self, prop: Any) -> None:  # noqa: N802
        try:
            with self._cond:
                self._last_define_s = time.monotonic()
            self._store(prop)
        except Exception:
            log.exception("newProperty failed")

    def updateProperty(self, prop: Any) -> None:  # noqa: N802
        try:
            self._store(prop)
        except Exception:
            log.exception("updateProperty failed")

    def removeProperty(self, prop: Any) -> None:  # noqa: N802
        try:
            key = (prop.getDeviceName(), prop.getName())
        except Exception:
            return
        with self._cond:
            self._props.pop(key, None)
            if key[1] in ("CONNECTION", "CCD_EXPOSURE"):
                self._epochs[key[0]] += 1
            self._cond.notify_all()

    def newMessage(self, device: Any, message_id: int) -> None:  # noqa: N802
        try:
            text = str(device.messageQueue(message_id))
            name = device.getDeviceName()
        except Exception:
            return
        with self._cond:
            self._messages.append((datetime.now(UTC), name, text))
            self._cond.notify_all()
        log.info("INDI %s: %s", name, text)

    def serverConnected(self) -> None:  # noqa: N802
        with self._cond:
            self._server_up = True
            self._cond.notify_all()

    def serverDisconnected(self, code: int) -> None:  # noqa: N802
        with self._cond:
            self._server_up = False
            self._server_lost_code = int(code)
            for device in list(self._epochs) + list(self._devices):
                self._epochs[device] += 1
            self._cond.notify_all()
        if code != 0:
            log.warning("INDI server %s:%s disconnected (code %s)", self.host, self.port, code)

    # ---------------------------------------------------------------- reading
    def devices(self) -> list[str]:
        with self._cond:
            return sorted(self._devices)

    def get(self, device: str, name: str) -> PropertySnapshot | None:
        with self._cond:
            return self._props.get((device, name))

    def require(self, device: str, name: str) -> PropertySnapshot:
        snap = self.get(device, name)
        if snap is None:
            raise PropertyMissing(f"{device}: property {name} is not defined")
        return snap

    def properties(self, device: str) -> dict[str, PropertySnapshot]:
        with self._cond:
            return {n: s for (d, n), s in self._props.items() if d == device}

    def epoch(self, device: str) -> int:
        with self._cond:
            return self._epochs[device]

    def messages(self, device: str | None = None, since: datetime | None = None) -> list[str]:
        with self._cond:
            return [t for when, d, t in self._messages
                    if (device is None or d == device) and (since is None or when >= since)]

    def version(self) -> int:
        with self._cond:
            return self._version

    # ---------------------------------------------------------------- waiting
    def wait_for(self, predicate: Callable[[], T | None], timeout_s: float, what: str, *,
                 device: str | None = None, epoch: int | None = None) -> T:
        """Wait until ``predicate()`` (called with the lock held) returns a truthy value and return it.

        Raises :class:`CameraDisconnected` when the server goes away or (with ``device`` and ``epoch``) the device
        drops; :class:`CameraTimeout` naming ``what`` after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if not self._server_up:
                    raise CameraDisconnected(f"INDI server {self.host}:{self.port} went away while waiting for {what}")
                if device is not None and epoch is not None and self._epochs[device] != epoch:
                    raise CameraDisconnected(f"{device} disconnected while waiting for {what}")
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeout(f"timed out after {timeout_s:.1f} s waiting for {what}")
                self._cond.wait(remaining)

    def wait_property(self, device: str, name: str, timeout_s: float) -> PropertySnapshot:
        """Wait until ``device`` defines ``name``."""
        return self.wait_for(lambda: self._props.get((device, name)), timeout_s, f"{device} property {name}")

    def wait_update(self, device: str, name: str, after_version: int, timeout_s: float,
                    accept: Callable[[PropertySnapshot], bool] | None = None, *, epoch: int | None = None
                    ) -> PropertySnapshot:
        """Wait for an update of ``name`` newer than ``after_version`` (and accepted by ``accept``)."""

        def ready() -> PropertySnapshot | None:
            snap = self._props.get((device, name))
            if snap is None or snap.version <= after_version:
                return None
            return snap if accept is None or accept(snap) else None

        return self.wait_for(ready, timeout_s, f"{device} {name} update", device=device, epoch=epoch)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Wait until no new property was defined for ``quiet_s`` (a driver defines its properties in a burst).

        Returns after ``timeout_s`` at the latest, without error: this only lets a burst of definitions settle.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                now = time.monotonic()
                wait_s = min(self._last_define_s + quiet_s - now, deadline - now)
                if wait_s <= 0:
                    return
                self._cond.wait(wait_s)

    def notify(self) -> None:
        """Wake every waiter so it re-checks its predicate (e.g. after an abort request)."""
        with self._cond:
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the condition (wakes early on no event; used for pacing, never for polling state)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)

    # ---------------------------------------------------------------- BLOBs
    def clear_blobs(self, device: str) -> None:
        with self._cond:
            self._blobs[device].clear()

    def wait_blob(self, device: str, timeout_s: float, *, epoch: int | None = None,
                  alert: Callable[[], str | None] | None = None) -> BlobData:
        """Wait for the next BLOB from ``device``; ``alert()`` (under the lock) returning a text aborts with it."""

        def ready() -> BlobData | None:
            if self._blobs[device]:
                return self._blobs[device].popleft()
            if alert is not None:
                reason = alert()
                if reason:
                    raise PropertyAlert(reason)
            return None

        return self.wait_for(ready, timeout_s, f"image from {device}", device=device, epoch=epoch)

    def set_blob_mode(self, device: str, only: bool = False) -> None:
        with self._send_lock:  # also a write on the socket (see ``_send_lock``)
            self.setBLOBMode(PyIndi.B_ONLY if only else PyIndi.B_ALSO, device, "")

    # ---------------------------------------------------------------- sending
    def _device(self, device: str) -> Any:
        dev = self.getDevice(device)
        if dev is None or not dev.isValid():
            raise CameraDisconnected(f"INDI device {device} is not available")
        return dev

    def send_number(self, device: str, name: str, values: Mapping[str, float]) -> int:
        """Set elements of number vector ``name``; returns the version before sending (for :meth:`wait_update`)."""
        return self._send_elements(device, name, "number", values, lambda widget, value: widget.setValue(float(value)))

    def send_switch(self, device: str, name: str, on: Iterable[str]) -> int:
        """Turn exactly the elements ``on`` of switch vector ``name`` on (others off); returns the prior version."""
        with self._send_lock:
            before = self.version()
            wanted = set(on)
            prop = self._device(device).getSwitch(name)
            if not prop.isValid():
                raise PropertyMissing(f"{device}: switch property {name} is not defined")
            names = [w.getName() for w in prop]
            unknown = wanted - set(names)
            if unknown:
                raise PropertyMissing(f"{device}: {name} has no element(s) {sorted(unknown)} (has {sorted(names)})")
            out = _detached(PyIndi.PropertySwitch(len(names)), device, name, names)
            for w in out:
                w.setState(PyIndi.ISS_ON if w.getName() in wanted else PyIndi.ISS_OFF)
            self.sendNewSwitch(out)
            return before

    def send_text(self, device: str, name: str, values: Mapping[str, str]) -> int:
        """Set elements of text vector ``name``; returns the version before sending (for :meth:`wait_update`)."""
        return self._send_elements(device, name, "text", values, lambda widget, value: widget.setText(str(value)))

    def _send_elements(self, device: str, name: str, kind: Literal["number", "text"], values: Mapping[str, Any],
                       assign: Callable[[Any, Any], None]) -> int:
        """Set the elements ``values`` of ``device``'s ``kind`` vector ``name`` (``assign(widget, value)``) and send
        the vector, one write at a time on this connection; returns the version before sending."""
        with self._send_lock:
            before = self.version()
            dev = self._device(device)
            prop = dev.getNumber(name) if kind == "number" else dev.getText(name)
            if not prop.isValid():
                raise PropertyMissing(f"{device}: {kind} property {name} is not defined")
            names = [w.getName() for w in prop]
            out = _detached(PyIndi.PropertyNumber(len(names)) if kind == "number" else PyIndi.PropertyText(len(names)),
                            device, name, names)
            for mine, theirs in zip(out, prop, strict=True):  # elements not given keep the driver's current values
                if kind == "number":
                    mine.setValue(theirs.getValue())
                else:
                    mine.setText(theirs.getText())
            for element, value in values.items():
                widget = out.findWidgetByName(element)
                if widget is None:
                    raise PropertyMissing(f"{device}: {name} has no element {element}")
                assign(widget, value)
            if kind == "number":
                self.sendNewNumber(out)
            else:
                self.sendNewText(out)
            return before
