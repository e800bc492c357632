"""``GET /events``: server-sent events (job progress, frames, temperature, warnings) so a monitor needs no polling.

One :class:`EventHub` per app bridges the thread-safe :class:`daemon.events.EventBus` to asyncio: a single thread
reads one bus subscription and hands each event to every connected client's ``asyncio.Queue`` with
``loop.call_soon_threadsafe`` — no request handler ever blocks the event loop or holds a thread-pool worker.
A slow client loses its oldest events (counted in an SSE comment), never slows the others.
At most ``max_clients`` streams are open at once (``[api] max_sse_clients``): one more is refused with ``503
too_many_event_streams`` and a ``Retry-After``, so event streams can never exhaust the daemon's file descriptors
and starve ``/health`` or a capture job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from daemon.api.auth import require
from daemon.api.errors import ApiError
from daemon.api.models import ErrorOut
from daemon.events import EVENT_TYPES, EventBus

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
CLIENT_QUEUE = 1000


class _Client:
    def __init__(self, loop: asyncio.AbstractEventLoop, types: frozenset[str]) -> None:
        self.loop = loop
        self.types = types
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.dropped = 0

    def offer(self, event: dict[str, Any]) -> None:  # runs on the loop
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(event)


class TooManyClients(RuntimeError):
    """Every event-stream slot is taken."""


class EventHub:
    """Fans bus events out to SSE clients on one event loop. ``start()`` in the app's lifespan, ``stop()`` after."""

    def __init__(self, bus: EventBus, max_clients: int = 200) -> None:
        self.bus = bus
        self.max_clients = max_clients
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # called in the hub's thread for every event

    def start(self) -> None:
        self._stop.clear()
        sub = self.bus.subscribe(maxsize=10_000)
        self._thread = threading.Thread(target=self._pump, args=(sub,), name="sse-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _pump(self, sub: Any) -> None:
        with sub:
            while not self._stop.is_set():
                event = sub.get(timeout_s=0.1)
                if event is None:
                    continue
                for listener in self.listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("event listener failed")
                with self._lock:
                    clients = list(self._clients)
                for client in clients:
                    if event.get("type") in client.types:
                        with contextlib.suppress(RuntimeError):  # loop closed while shutting down
                            client.loop.call_soon_threadsafe(client.offer, event)

    def connect(self, types: frozenset[str]) -> _Client:
        """Register a client; raises :class:`TooManyClients` when ``max_clients`` are already connected."""
        client = _Client(asyncio.get_running_loop(), types)
        with self._lock:
            if len(self._clients) >= self.max_clients:
                raise TooManyClients(f"{len(self._clients)} event streams are open (the limit is {self.max_clients})")
            self._clients.add(client)
        return client

    def disconnect(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)


router = APIRouter(tags=["events"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                                               422: {"model": ErrorOut}, 503: {"model": ErrorOut}})


def _format(event: dict[str, Any]) -> str:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


@router.get("/events", dependencies=[Depends(require("read"))], response_class=StreamingResponse,
            summary="Server-sent events: job, frame, temperature, warning",
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "an endless stream of 'event: TYPE / data: JSON' records"}})
async def events(
    request: Request,
    types: Annotated[str | None, Query(max_length=200, description="comma-separated subset of: "
                                       + ", ".join(sorted(EVENT_TYPES)))] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="close after this many events")] = None,
) -> StreamingResponse:
    wanted = frozenset(t.strip() for t in types.split(",") if t.strip()) if types else EVENT_TYPES
    unknown = sorted(wanted - EVENT_TYPES)
    if unknown or not wanted:
        raise ApiError(422, "invalid_event_type", f"unknown event type(s) {', '.join(unknown) or '(none)'}; "
                       f"choose from {', '.join(sorted(EVENT_TYPES))}")
    hub: EventHub = request.app.state.event_hub
    try:
        client = hub.connect(wanted)
    except TooManyClients as exc:
        raise ApiError(503, "too_many_event_streams", f"{exc}; close one or retry later ([api] max_sse_clients)",
                       headers={"Retry-After": "30"}) from exc

    async def stream() -> AsyncIterator[str]:
        sent = 0
        try:
            yield ": connected\n\n"
            while limit is None or sent < limit:
                try:
                    event = await asyncio.wait_for(client.queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield f": keepalive dropped={client.dropped}\n\n"
                    continue
                sent += 1
                yield _format(event)
        finally:
            hub.disconnect(client)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
