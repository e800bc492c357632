"""Test-only pyindi-client helper for the simulator tests: property snapshots, BLOBs, waits with timeouts.

Deliberately independent of drivers/indi (the product's client) so the simulator is checked by a second client.
"""

from __future__ import annotations

import collections
import io
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import PyIndi
from astropy.io import fits

STATES = {PyIndi.IPS_IDLE: "Idle", PyIndi.IPS_OK: "Ok", PyIndi.IPS_BUSY: "Busy", PyIndi.IPS_ALERT: "Alert"}


@dataclass
class Snapshot:
    name: str
    kind: str
    state: str
    values: dict[str, Any]
    limits: dict[str, tuple[float, float]]
    seq: int


#: stopped clients stay referenced for the rest of the run (never destroyed on their own listener thread)
_STOPPED: list[SimClient] = []


class SimClient(PyIndi.BaseClient):  # type: ignore[misc]
    """Records every definition/update of one device; BLOBs go to a deque as (bytes, format)."""

    def __init__(self, port: int, device: str) -> None:
        super().__init__()
        self.device = device
        self._cond = threading.Condition()
        self._seq = 0
        self.props: dict[str, Snapshot] = {}
        self.history: list[Snapshot] = []
        self.blobs: collections.deque[tuple[bytes, str]] = collections.deque()
        self.messages: list[str] = []
        self.removed: list[str] = []
        self.setServer("127.0.0.1", port)

    # ---- callbacks (INDI thread)
    def _store(self, prop: Any) -> None:
        if prop.getDeviceName() != self.device:
            return
        kind, values, limits = "", {}, {}
        ptype = prop.getType()
        if ptype == PyIndi.INDI_NUMBER:
            kind = "number"
            for w in PyIndi.PropertyNumber(prop):
                values[w.getName()] = float(w.getValue())
                limits[w.getName()] = (float(w.getMin()), float(w.getMax()))
        elif ptype == PyIndi.INDI_SWITCH:
            kind = "switch"
            values = {w.getName(): w.getState() == PyIndi.ISS_ON for w in PyIndi.PropertySwitch(prop)}
        elif ptype == PyIndi.INDI_TEXT:
            kind = "text"
            values = {w.getName(): str(w.getText()) for w in PyIndi.PropertyText(prop)}
        elif ptype == PyIndi.INDI_BLOB:
            kind = "blob"
            for w in PyIndi.PropertyBlob(prop):
                if int(w.getSize()) > 0:
                    with self._cond:
                        self.blobs.append((bytes(w.getblobdata()), str(w.getFormat())))
        with self._cond:
            self._seq += 1
            snap = Snapshot(prop.getName(), kind, STATES.get(prop.getState(), "Idle"), values, limits, self._seq)
            self.props[snap.name] = snap
            self.history.append(snap)
            self._cond.notify_all()

    def newProperty(self, prop: Any) -> None:  # noqa: N802
        self._store(prop)

    def updateProperty(self, prop: Any) -> None:  # noqa: N802
        self._store(prop)

    def removeProperty(self, prop: Any) -> None:  # noqa: N802
        with self._cond:
            self.props.pop(prop.getName(), None)
            self.removed.append(prop.getName())
            self._cond.notify_all()

    def newMessage(self, device: Any, message_id: int) -> None:  # noqa: N802
        with self._cond:
            self.messages.append(str(device.messageQueue(message_id)))
            self._cond.notify_all()

    # ---- test side
    def start(self, timeout_s: float = 10.0) -> SimClient:
        self.watchDevice(self.device)
        if not self.connectServer():
            raise RuntimeError("no indiserver")
        self.wait_for(lambda: "CONNECTION" in self.props, timeout_s, "CONNECTION defined")
        return self

    def stop(self) -> None:
        """Disconnect, wait for libindiclient's thread to let go, and keep this client referenced (see
        ``drivers.indi.client.IndiClient.close``: a destructor run on that thread would abort the test run)."""
        if self.isServerConnected():
            self.disconnectServer()
        deadline = time.monotonic() + 5.0
        while self.isServerConnected() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        _STOPPED.append(self)

    def seq(self) -> int:
        with self._cond:
            return self._seq

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def snap(self, name: str) -> Snapshot:
        with self._cond:
            return self.props[name]

    def value(self, name: str, element: str) -> Any:
        return self.snap(name).values[element]

    def connect_device(self, timeout_s: float = 10.0) -> None:
        self.switch("CONNECTION", ["CONNECT"])
        self.wait_for(lambda: "CCD_EXPOSURE" in self.props and "CCD1" in self.props, timeout_s, "CCD properties")
        self.setBLOBMode(PyIndi.B_ALSO, self.device, "")  # needs the device's BLOB defined first
        time.sleep(0.1)

    def _prop(self, getter: str, name: str) -> Any:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            dev = self.getDevice(self.device)
            if dev is not None and dev.isValid():
                prop = getattr(dev, getter)(name)
                if prop.isValid():
                    return prop
            time.sleep(0.05)
        raise KeyError(f"{name} not defined")

    def _outgoing(self, getter: str, name: str) -> tuple[Any, Any]:
        """``(current, out)``: the client's copy of vector ``name`` and a new, detached vector of the same name and
        elements to fill and send. Never fill the client's own copy: libindiclient's thread writes every update from
        the driver into it, so a value set there can be replaced by the driver's latest report before it is sent
        (the likely cause of a fresh-clone run that timed out waiting for the TEC limit after a -45 °C set point)."""
        current = self._prop(getter, name)
        names = [w.getName() for w in current]
        out = getattr(PyIndi, {"getNumber": "PropertyNumber", "getSwitch": "PropertySwitch",
                               "getText": "PropertyText"}[getter])(len(names))
        out.setDeviceName(self.device)
        out.setName(name)
        for widget, element in zip(out, names, strict=True):
            widget.setName(element)
        return current, out

    def number(self, name: str, values: Mapping[str, float], wait: bool = True, state: str = "Ok") -> None:
        before = self.seq()
        current, out = self._outgoing("getNumber", name)
        for mine, theirs in zip(out, current, strict=True):  # elements not given keep their current values
            mine.setValue(theirs.getValue())
        for key, value in values.items():
            out.findWidgetByName(key).setValue(float(value))
        self.sendNewNumber(out)
        if wait:
            self.wait_update(name, before, state)

    def switch(self, name: str, on: Iterable[str], wait: bool = False) -> None:
        before = self.seq()
        wanted = set(on)
        _, out = self._outgoing("getSwitch", name)
        for w in out:
            w.setState(PyIndi.ISS_ON if w.getName() in wanted else PyIndi.ISS_OFF)
        self.sendNewSwitch(out)
        if wait:
            self.wait_update(name, before)

    def text(self, name: str, values: Mapping[str, str]) -> None:
        before = self.seq()
        current, out = self._outgoing("getText", name)
        for mine, theirs in zip(out, current, strict=True):
            mine.setText(theirs.getText())
        for key, value in values.items():
            out.findWidgetByName(key).setText(value)
        self.sendNewText(out)
        self.wait_update(name, before)

    def wait_update(self, name: str, after_seq: int, state: str | None = None, timeout_s: float = 10.0) -> Snapshot:
        def ok() -> bool:
            return any(s.name == name and s.seq > after_seq and (state is None or s.state == state)
                       for s in self.history[-200:])
        self.wait_for(ok, timeout_s, f"{name} update ({state or 'any'})")
        return self.snap(name)

    def expose(self, exposure_s: float, frame_type: str = "FRAME_DARK", timeout_s: float = 30.0
               ) -> tuple[np.ndarray, fits.Header]:
        """One exposure through CCD_EXPOSURE; returns the decoded FITS (uint16, header)."""
        self.switch("CCD_FRAME_TYPE", [frame_type], wait=True)
        with self._cond:
            self.blobs.clear()
        sent = self.seq()
        self.number("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": exposure_s}, wait=False)
        self.wait_for(lambda: bool(self.blobs), timeout_s, "image BLOB")
        # the driver says CCD_EXPOSURE Ok (value 0) right after the BLOB (INDI::CCD::ExposureComplete does the same);
        # wait for it, or a next number() could send the client's copy of the vector just as that update rewrites it
        self.wait_update("CCD_EXPOSURE", sent, "Ok")
        with self._cond:
            payload, fmt = self.blobs.popleft()
        assert fmt == ".fits"
        with fits.open(io.BytesIO(payload)) as hdul:
            return np.array(hdul[0].data), hdul[0].header.copy()
