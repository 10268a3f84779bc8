"""Apps served over real HTTP on loopback, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

from app.config import Settings
from app.embedded import free_port
from app.main import create_app


@contextlib.asynccontextmanager
async def http_server(
    app: ASGIApp, *, lifespan: str = "on", port: int | None = None
) -> AsyncIterator[str]:
    """`app` on a loopback port (a free one unless told), with its lifespan unless the caller
    runs it ("off"); yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def api_server(settings: Settings) -> AsyncIterator[str]:
    """An API server process's worth: its own app, engine, Redis client and event hub."""
    async with http_server(create_app(settings)) as url:
        yield url
