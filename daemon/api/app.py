"""``create_app(runtime)``: the FastAPI application of the daemon.

Layout: ``/`` status page, ``/static/*`` its script and style, ``/health``, ``/ready`` and ``/metrics`` at the root
(where supervisors and Prometheus expect them) and the versioned API under ``/api/v1`` (OpenAPI at
``/api/v1/openapi.json``, interactive docs at ``/api/v1/docs``). The lifespan starts the runtime (unless the caller
manages it) and the SSE hub, and stops both on shutdown.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.api.auth import Authenticator
from daemon.api.errors import install_error_handlers
from daemon.api.limits import BodySizeLimit
from daemon.api.routes import camera, camera_health, events, health, jobs, library, metrics, status, watch
from daemon.api.routes.health import VERSION
from daemon.api.routes.status import STATIC_DIR
from daemon.metrics import DaemonMetrics
from daemon.runtime import Runtime

API_PREFIX = "/api/v1"


class RequestTimer:
    """ASGI middleware: time from a request's arrival to its response headers into
    ``darkd_http_request_duration_seconds{method,route,status}`` (route = the matched path template)."""

    def __init__(self, app: ASGIApp, metrics: DaemonMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                if route is None:
                    route = "unmatched"
                elif scope["path"].startswith(API_PREFIX) and not route.startswith(API_PREFIX):
                    route = API_PREFIX + route
                self.metrics.http_s.labels(method=scope["method"], route=route,
                                           status=str(message["status"])).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(runtime: Runtime, *, manage_runtime: bool = True, stop_timeout_s: float = 30.0) -> FastAPI:
    """The app for ``runtime``. With ``manage_runtime`` the lifespan calls ``runtime.start()``/``stop()``."""
    authenticator = Authenticator.from_settings(runtime.settings.api)
    hub = events.EventHub(runtime.bus, max_clients=runtime.settings.api.max_sse_clients)
    list_cache = library.ListCache(library.LIST_MAX_AGE_S)
    hub.listeners.append(list_cache.on_event)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await run_in_threadpool(runtime.start)
        hub.start()
        try:
            yield
        finally:
            hub.stop()
            if manage_runtime:
                await run_in_threadpool(runtime.stop, stop_timeout_s)

    app = FastAPI(title="darkd", version=VERSION, lifespan=lifespan,
                  description="Dark libraries and CMOS calibration for INDI cameras: camera state, library, jobs, "
                  "live events and metrics. Bearer tokens: read scope for GET, control scope for everything else.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None)
    app.state.runtime = runtime
    app.state.authenticator = authenticator
    app.state.event_hub = hub
    app.state.list_cache = list_cache
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_body_bytes=runtime.settings.api.max_body_bytes)
    app.add_middleware(RequestTimer, metrics=runtime.metrics)

    api = APIRouter(prefix=API_PREFIX)
    for module in (health, camera, camera_health, library, jobs, events, metrics, status, watch):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router, include_in_schema=False)
    app.include_router(metrics.router, include_in_schema=False)
    app.include_router(status.page_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
