"""Serve a FastAPI app with the real uvicorn on a free loopback port, in a thread, for integration tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.indi_server import free_port


@contextlib.contextmanager
def serve_app(app: Any, *, start_timeout_s: float = 30.0, stop_timeout_s: float = 60.0,
              log_level: str = "warning") -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) while ``app`` is being served; stop the server afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)
