"""Weather/safety devices: is the sky usable for imaging right now?

:class:`WeatherMonitor` is the small interface the daemon uses; :class:`IndiWeatherMonitor` implements it on an INDI
weather or safety device through :class:`drivers.indi.client.IndiClient` (loaded by name on :meth:`connect`, so that
importing this module does not import PyIndi — the daemon may import it under the import-linter contract).

Rule (INDI weather interface): the light vector ``WEATHER_STATUS`` has one light per parameter, ``Ok`` (fine), ``Busy``
(warning) or ``Alert`` (danger). The sky is **unsafe** when any light, or the vector's own state, is ``Alert``;
``Busy`` counts as safe. A device without ``WEATHER_STATUS`` but with a safety light vector (``SAFETY_STATUS`` or
``SAFETY``) is read the same way. No such property (yet), or no connection: the status is **unknown** (``safe=None``).
The reading also carries the ambient temperature when the device reports one (``WEATHER_PARAMETERS.
WEATHER_TEMPERATURE``): the build job stamps it on its frames as ``AMBTEMP`` (a camera's health compares cooler power
at equal ambient).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.camera import CameraTimeout

log = logging.getLogger(__name__)

INDI_CLIENT_MODULE = "drivers.indi.client"
STATUS_PROPERTIES = ("WEATHER_STATUS", "SAFETY_STATUS", "SAFETY")  # first one the device defines is used
ALERT = "Alert"
AMBIENT_PROPERTY = ("WEATHER_PARAMETERS", "WEATHER_TEMPERATURE")  # the ambient temperature a weather device reports


@dataclass(frozen=True)
class WeatherReading:
    """One look at the weather: ``safe`` True (imaging possible), False (unsafe: clouds, rain…) or None (unknown);
    ``reasons`` names the elements in Alert (or why the status is unknown)."""

    safe: bool | None
    reasons: list[str] = field(default_factory=list)
    source: str = ""
    #: the ambient temperature the device reports (INDI ``WEATHER_PARAMETERS.WEATHER_TEMPERATURE``, °C), if any
    ambient_c: float | None = None

    @property
    def unsafe(self) -> bool:
        return self.safe is False


class WeatherMonitor(Protocol):
    """What the daemon needs from a weather/safety device."""

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (and switch the device on if needed). Raises ``drivers.camera.CameraError`` subclasses."""

    def reading(self) -> WeatherReading:
        """The latest status (non-blocking; ``safe=None`` when unknown)."""

    def close(self) -> None:
        """Disconnect (idempotent)."""


def evaluate_status(name: str, state: str, lights: Mapping[str, str]) -> WeatherReading:
    """Apply the rule of the module docstring to one light vector (``state`` and light values are INDI state names)."""
    alerts = [element for element, value in lights.items() if value == ALERT]
    if state == ALERT and not alerts:
        alerts = [f"{name} (vector state)"]
    if alerts:
        return WeatherReading(False, [f"{a}=Alert" for a in alerts], name)
    return WeatherReading(True, [], name)


class IndiWeatherMonitor:
    """A weather/safety device on an ``indiserver`` (see the module docstring)."""

    def __init__(self, device: str, host: str = "127.0.0.1", port: int = 7624) -> None:
        self.device = device
        self.host = host
        self.port = port
        self._client: Any = None
        self._retired: collections.deque[Any] = collections.deque(maxlen=4)  # see IndiCamera._retire

    def connect(self, timeout_s: float = 10.0) -> None:
        """Open the client, switch ``CONNECTION`` on when it is off, wait for a status property (up to ``timeout_s``).

        A device that never defines a status property is not an error here: :meth:`reading` reports it unknown."""
        client_module = importlib.import_module(INDI_CLIENT_MODULE)
        client = client_module.IndiClient(self.host, self.port)
        client.open(timeout_s)
        self._client = client
        connection = client.wait_property(self.device, "CONNECTION", timeout_s)
        if not connection.values.get("CONNECT", False):
            client.send_switch(self.device, "CONNECTION", ["CONNECT"])
        try:  # the predicate runs under the client's RLock, so client.get (re-entrant) is safe
            client.wait_for(lambda: any(client.get(self.device, n) for n in STATUS_PROPERTIES),
                            timeout_s, f"{self.device} weather status")
        except CameraTimeout:
            log.warning("%s defines none of %s after %.0f s", self.device, ", ".join(STATUS_PROPERTIES), timeout_s)

    def reading(self) -> WeatherReading:
        client = self._client
        if client is None:
            return WeatherReading(None, ["not connected"], self.device)
        if not client.server_up:
            return WeatherReading(None, [f"INDI server {self.host}:{self.port} lost"], self.device)
        ambient_c = self._ambient_c(client)
        for name in STATUS_PROPERTIES:
            snap = client.get(self.device, name)
            if snap is not None and snap.kind == "light":
                reading = evaluate_status(name, snap.state, {k: str(v) for k, v in snap.values.items()})
                return dataclasses.replace(reading, ambient_c=ambient_c)
        return WeatherReading(None, [f"{self.device} has no {'/'.join(STATUS_PROPERTIES)} light vector"], self.device,
                              ambient_c)

    def _ambient_c(self, client: Any) -> float | None:
        """``WEATHER_PARAMETERS.WEATHER_TEMPERATURE`` (°C, the INDI weather interface's name), when defined."""
        snap = client.get(self.device, AMBIENT_PROPERTY[0])
        value = snap.values.get(AMBIENT_PROPERTY[1]) if snap is not None and snap.kind == "number" else None
        return float(value) if isinstance(value, int | float) and abs(value) < 100 else None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            self._retired.append(client)  # never the last reference while its INDI thread may still run a callback


def open_weather_monitor(params: Mapping[str, Any]) -> WeatherMonitor:
    """A monitor from a job's ``weather`` param ``{"device": str, "host": str, "port": int}`` (not yet connected)."""
    return IndiWeatherMonitor(str(params["device"]), str(params.get("host", "127.0.0.1")),
                              int(params.get("port", 7624)))
