"""The API's routers, one module per resource. Handlers are thin: validation in ``daemon.api.models``, work in the
runtime; anything blocking (database, files, NumPy) runs in the thread pool, never on the event loop."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from daemon.runtime import Runtime


async def runtime_of(request: Request) -> Runtime:
    """The :class:`Runtime` the app was created with (a FastAPI dependency; async so that it runs on the loop, not
    in the thread pool)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
