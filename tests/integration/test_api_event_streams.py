"""``GET /api/v1/events`` has a cap on concurrent streams (issue 15 item 7): over the cap a client gets 503 with
``Retry-After`` at once, ``/health`` keeps answering, and a slot freed by a client that leaves is usable again.

Real uvicorn on loopback, real sockets held open by raw clients (httpx streams)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daemon.api.app import create_app
from daemon.runtime import Runtime
from daemon.settings import Settings
from tests.http_server import serve_app
from tests.indi_server import free_port

pytestmark = [pytest.mark.integration]
READ = "stream-read-token"
CAP = 3


@contextlib.contextmanager
def server(tmp: Path) -> Iterator[str]:
    settings = Settings.model_validate({
        "library": {"root": str(tmp / "library")},
        "indi": {"port": free_port(), "connect_timeout_s": 0.5},
        "api": {"read_tokens": [READ], "max_sse_clients": CAP}})
    runtime = Runtime(settings, connect_camera=False, start_engine=False, warm_on_shutdown=False)
    with serve_app(create_app(runtime, stop_timeout_s=5), log_level="error") as base:
        yield base


def test_streams_over_the_cap_are_refused_and_a_freed_slot_is_reused(tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {READ}"}
    with server(tmp_path) as base, httpx.Client(base_url=base, headers=headers, timeout=10) as http, \
            contextlib.ExitStack() as streams:
        opened = []
        for _ in range(CAP):
            response = streams.enter_context(http.stream("GET", "/api/v1/events"))
            assert response.status_code == 200
            chunks = response.iter_raw()  # keep the iterator: dropping it closes the response
            assert next(chunks) == b": connected\n\n"  # the stream really is open on the server
            opened.append((response, chunks))
        refused = http.get("/api/v1/events")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "30"
        assert refused.json()["error"]["code"] == "too_many_event_streams"
        assert "limit is 3" in refused.json()["error"]["message"]
        assert http.get("/api/v1/health").status_code == 200  # the daemon itself is not starved

        opened[0][0].close()  # a client leaves; the server notices on its next write or keepalive
        for _attempt in range(100):
            with http.stream("GET", "/api/v1/events") as again:
                if again.status_code == 200:
                    assert next(again.iter_raw()) == b": connected\n\n"
                    break
                assert again.status_code == 503
            time.sleep(0.1)
        else:
            pytest.fail("a freed event-stream slot was never reused")
