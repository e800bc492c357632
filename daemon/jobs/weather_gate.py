"""Cloudy-night operation: build darks only while imaging is impossible.

A :class:`WeatherGate` turns the readings of a :class:`drivers.weather.WeatherMonitor` into one debounced verdict,
:meth:`WeatherGate.imaging_impossible`:

* raw verdict "impossible" = the device says **unsafe** (any ``Alert``: clouds, rain, wind…) or the status is
  **unknown** (device lost, property missing). Unknown counts as impossible because an imaging program that watches
  the same device does not image without weather data either; the job logs a warning when it happens.
* **hold-off**: the verdict changes only after the raw verdict has disagreed with it *continuously* for ``hold_s``
  seconds (a status flickering faster than that never changes it). The first reading is adopted at once.

The build-library job asks the gate before it starts (or cools for) a series and after every frame; when the sky is
clear it *yields the camera* — nothing is aborted, the frame in progress is finished and recorded, no new exposure is
started — and waits (:meth:`WeatherGate.wait_until_impossible`) until the verdict is "impossible" again. The job stays
``running`` meanwhile (its step says ``sky clear: camera yielded``): it still owns the plan, its entries and the camera
reservation, and pause/cancel work as usual (they end the wait at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from drivers.weather import WeatherMonitor, WeatherReading, open_weather_monitor

log = logging.getLogger(__name__)

DEFAULT_HOLD_S = 60.0
DEFAULT_POLL_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
WEATHER_KEYS = ("device", "host", "port", "hold_s", "poll_s", "connect_timeout_s")


def validate_weather(params: Any) -> dict[str, Any]:
    """Check a job's ``weather`` param ``{"device", "host"?, "port"?, "hold_s"?, "poll_s"?, "connect_timeout_s"?}``;
    returns it with defaults filled in. ``ValueError`` says what is wrong."""
    if not isinstance(params, Mapping):
        raise ValueError('weather: expected an object {"device": ..., "host": ..., "port": ...}')
    unknown = sorted(set(params) - set(WEATHER_KEYS))
    if unknown:
        raise ValueError(f"weather: unknown key(s) {', '.join(unknown)}")
    device = params.get("device")
    if not isinstance(device, str) or not device.strip():
        raise ValueError("weather.device (the INDI device name of the weather/safety station) is required")
    try:
        host = str(params.get("host", "127.0.0.1"))
        port = int(params.get("port", 7624))
        hold_s = float(params.get("hold_s", DEFAULT_HOLD_S))
        poll_s = float(params.get("poll_s", DEFAULT_POLL_S))
        connect_timeout_s = float(params.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weather: {exc}") from exc
    if not 0 < port < 65536:
        raise ValueError(f"weather.port {port} is not a TCP port")
    if hold_s < 0 or poll_s <= 0 or connect_timeout_s <= 0:
        raise ValueError("weather: hold_s must be >= 0, poll_s and connect_timeout_s > 0")
    return {"device": device, "host": host, "port": port, "hold_s": hold_s, "poll_s": poll_s,
            "connect_timeout_s": connect_timeout_s}


class WeatherGate:
    """Debounced "is imaging impossible?" over a weather monitor (see the module docstring). Not thread-safe: one job
    thread asks it."""

    def __init__(self, monitor: WeatherMonitor, *, hold_s: float = DEFAULT_HOLD_S, poll_s: float = DEFAULT_POLL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self.hold_s = float(hold_s)
        self.poll_s = float(poll_s)
        self._clock = clock
        self._verdict: bool | None = None  # True: imaging impossible (build)
        self._pending_since: float | None = None
        self.last: WeatherReading = WeatherReading(None, ["not read yet"])

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WeatherGate:
        """Connect a monitor from a validated ``weather`` param and wrap it (``CameraError`` when unreachable)."""
        monitor = open_weather_monitor(params)
        try:
            monitor.connect(float(params.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)))
        except Exception:
            monitor.close()
            raise
        return cls(monitor, hold_s=float(params.get("hold_s", DEFAULT_HOLD_S)),
                   poll_s=float(params.get("poll_s", DEFAULT_POLL_S)))

    def imaging_impossible(self) -> bool:
        """Read the monitor once and return the debounced verdict (True: the sky is unusable, build darks)."""
        self.last = self.monitor.reading()
        raw = self.last.safe is not True
        now = self._clock()
        if self._verdict is None:
            self._verdict = raw
        elif raw == self._verdict:
            self._pending_since = None
        elif self._pending_since is None:
            self._pending_since = now
            if self.hold_s <= 0:
                self._verdict, self._pending_since = raw, None
        elif now - self._pending_since >= self.hold_s:
            self._verdict, self._pending_since = raw, None
        return self._verdict

    def describe(self) -> str:
        """The last reading in words, e.g. ``unsafe (WEATHER_RAIN_HOUR=Alert)``."""
        state = {True: "safe", False: "unsafe", None: "unknown"}[self.last.safe]
        return f"{state} ({'; '.join(self.last.reasons)})" if self.last.reasons else state

    def wait_until_impossible(self, stop: threading.Event) -> bool:
        """Block until :meth:`imaging_impossible` (True) or ``stop`` is set (False); polls every ``poll_s``."""
        while not self.imaging_impossible():
            if stop.wait(self.poll_s):
                return False
        return True

    def close(self) -> None:
        self.monitor.close()
