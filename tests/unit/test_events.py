"""The event bus: fan-out to every subscriber, a full queue drops the oldest event, unknown types are refused."""

from __future__ import annotations

import threading

import pytest

from daemon.events import EventBus


def test_every_subscriber_receives_each_event_in_order() -> None:
    bus = EventBus()
    with bus.subscribe() as a, bus.subscribe() as b:
        bus.publish("job", {"job_id": 1, "state": "running"})
        bus.publish("frame", {"job_id": 1, "path": "x.fits"})
        for sub in (a, b):
            first, second = sub.get(1.0), sub.get(1.0)
            assert first is not None and second is not None
            assert (first["type"], first["state"]) == ("job", "running")
            assert (second["type"], second["path"]) == ("frame", "x.fits")
            assert "time" in first
        assert a.get(0.01) is None


def test_full_queue_drops_oldest_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=2)
    for i in range(5):
        bus.publish("temperature", {"temperature_c": float(i)})
    assert sub.dropped == 3
    got = [sub.get(0.1)["temperature_c"], sub.get(0.1)["temperature_c"]]  # type: ignore[index]
    assert got == [3.0, 4.0]


def test_closed_subscription_receives_nothing_and_unknown_type_is_refused() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    sub.close()
    assert bus.subscriber_count == 0
    bus.publish("warning", {"message": "x"})
    assert sub.get(0.01) is None
    with pytest.raises(ValueError, match="unknown event type"):
        bus.publish("bogus")


def test_publish_from_threads_reaches_a_waiting_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    threads = [threading.Thread(target=bus.publish, args=("frame", {"n": i})) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = sorted(sub.get(1.0)["n"] for _ in range(20))  # type: ignore[index]
    assert seen == list(range(20))
