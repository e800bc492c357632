"""WeatherGate: the debounced "imaging impossible" verdict, its hold-off, waiting, and the INDI status rule."""

from __future__ import annotations

import threading
import time

import pytest

from daemon.jobs.build_library import validate
from daemon.jobs.weather_gate import WeatherGate, validate_weather
from drivers.weather import WeatherReading, evaluate_status

SAFE = WeatherReading(True, [], "WEATHER_STATUS")
UNSAFE = WeatherReading(False, ["WEATHER_RAIN_HOUR=Alert"], "WEATHER_STATUS")
UNKNOWN = WeatherReading(None, ["INDI server lost"])


class ScriptedMonitor:
    """A weather device whose status the test sets (the gate's input, not the code under test)."""

    def __init__(self, reading: WeatherReading) -> None:
        self.current = reading
        self.reads = 0
        self.closed = False

    def connect(self, timeout_s: float = 10.0) -> None:
        pass

    def reading(self) -> WeatherReading:
        self.reads += 1
        return self.current

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_first_reading_is_adopted_at_once() -> None:
    assert WeatherGate(ScriptedMonitor(UNSAFE), hold_s=60).imaging_impossible() is True
    assert WeatherGate(ScriptedMonitor(SAFE), hold_s=60).imaging_impossible() is False
    assert WeatherGate(ScriptedMonitor(UNKNOWN), hold_s=60).imaging_impossible() is True  # unknown: build


def test_verdict_changes_only_after_the_hold_off() -> None:
    monitor, clock = ScriptedMonitor(UNSAFE), Clock()
    gate = WeatherGate(monitor, hold_s=60, clock=clock)
    assert gate.imaging_impossible()
    monitor.current = SAFE
    for dt in (0.0, 30.0, 59.9):  # clear for less than 60 s: still building
        clock.now_s = 1000.0 + dt
        assert gate.imaging_impossible(), dt
    clock.now_s = 1060.0
    assert not gate.imaging_impossible()  # clear for 60 s: camera yielded
    monitor.current = UNSAFE
    clock.now_s = 1070.0
    assert not gate.imaging_impossible()
    clock.now_s = 1130.0
    assert gate.imaging_impossible()


def test_flickering_status_never_flips_the_verdict() -> None:
    monitor, clock = ScriptedMonitor(UNSAFE), Clock()
    gate = WeatherGate(monitor, hold_s=10, clock=clock)
    assert gate.imaging_impossible()
    flips = 0
    previous = True
    for step in range(200):  # toggles every 5 s for 1000 s: never clear for 10 s in a row
        clock.now_s = 1000.0 + 2.5 * step
        monitor.current = SAFE if (step // 2) % 2 else UNSAFE
        verdict = gate.imaging_impossible()
        flips += verdict != previous
        previous = verdict
    assert flips == 0


def test_zero_hold_follows_the_device() -> None:
    monitor = ScriptedMonitor(UNSAFE)
    gate = WeatherGate(monitor, hold_s=0)
    assert gate.imaging_impossible()
    monitor.current = SAFE
    assert not gate.imaging_impossible()
    monitor.current = UNKNOWN
    assert gate.imaging_impossible()
    assert gate.describe() == "unknown (INDI server lost)"


def test_wait_returns_when_unsafe_again_or_on_stop() -> None:
    monitor = ScriptedMonitor(SAFE)
    gate = WeatherGate(monitor, hold_s=0, poll_s=0.02)
    stop = threading.Event()
    timer = threading.Timer(0.3, lambda: setattr(monitor, "current", UNSAFE))
    started = time.monotonic()
    timer.start()
    assert gate.wait_until_impossible(stop) is True
    assert 0.25 < time.monotonic() - started < 2.0 and monitor.reads >= 5
    monitor.current = SAFE
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert gate.wait_until_impossible(stop) is False
    assert time.monotonic() - started < 1.0
    gate.close()
    assert monitor.closed


def test_indi_status_rule() -> None:
    ok = {"WEATHER_FORECAST": "Ok", "WEATHER_RAIN_HOUR": "Ok", "WEATHER_WIND_SPEED": "Busy"}
    assert evaluate_status("WEATHER_STATUS", "Ok", ok).safe is True  # Busy = warning, still safe
    rain = evaluate_status("WEATHER_STATUS", "Alert", {**ok, "WEATHER_RAIN_HOUR": "Alert"})
    assert rain.safe is False and rain.reasons == ["WEATHER_RAIN_HOUR=Alert"]
    assert evaluate_status("SAFETY_STATUS", "Alert", {"SAFE": "Idle"}).safe is False  # vector state alone
    assert evaluate_status("SAFETY", "Idle", {}).safe is True


@pytest.mark.parametrize(("params", "match"), [
    ("dome", "expected an object"),
    ({}, "device"),
    ({"device": "W", "port": 0}, "not a TCP port"),
    ({"device": "W", "port": "x"}, "weather:"),
    ({"device": "W", "hold_s": -1}, "hold_s"),
    ({"device": "W", "dome": 1}, "unknown key"),
])
def test_bad_weather_params_are_refused(params: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_weather(params)


def test_weather_param_defaults() -> None:
    assert validate_weather({"device": "Weather Simulator"}) == {
        "device": "Weather Simulator", "host": "127.0.0.1", "port": 7624, "hold_s": 60.0, "poll_s": 1.0,
        "connect_timeout_s": 10.0}


def test_build_library_checks_the_weather_param() -> None:
    with pytest.raises(ValueError, match=r"weather\.device"):
        validate({"plan": {}, "weather": {"host": "x"}}, None, None)  # type: ignore[arg-type]
