"""A thread-safe publish/subscribe bus for the daemon's live events.

Producers (the job engine, the camera monitor) run in worker threads and call :meth:`EventBus.publish`; consumers
(the ``/events`` server-sent-events route, tests) call :meth:`EventBus.subscribe` and read with a timeout. A slow
subscriber never blocks a producer: when its queue is full the oldest event is dropped and counted.

Events are plain dicts with at least ``type`` (``"job"``, ``"frame"``, ``"temperature"``, ``"warning"``,
``"integrity"``, ``"disk"``, ``"watch"``) and ``time`` (ISO 8601, UTC), so they serialise to JSON unchanged.
``integrity``: a master failed its check on use and was marked bad ``{entry_id, slug, reason,
reintegration_job_id}``; ``disk``: the library disk is short of room ``{job_id, free_bytes, needed_bytes, message}``;
``watch``: the closed loop took, calibrated or put aside a light, or submitted a build (:mod:`daemon.watch`)
``{action, ...}``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES = frozenset({"job", "frame", "temperature", "warning", "integrity", "disk", "watch"})


class Subscription:
    """One consumer's queue. Use as a context manager, or call :meth:`close` when done."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=maxsize)
        self.dropped = 0

    def _offer(self, event: dict[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next event, or ``None`` if none arrived within ``timeout_s`` seconds."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of events to every current subscriber; never blocks the publisher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self.published = 0

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, maxsize)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def publish(self, event_type: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send ``{"type": event_type, "time": now, **payload}`` to every subscriber and return it."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; expected one of {sorted(EVENT_TYPES)}")
        event = {"type": event_type, "time": datetime.now(UTC).isoformat(), **(payload or {})}
        with self._lock:
            subscribers = list(self._subscribers)
            self.published += 1
        for sub in subscribers:
            sub._offer(event)
        return event

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
