"""Each worker's own door for relayed calls, when `serve --workers N` runs several API processes.

The workers share one port, so an address in the registry naming that port reaches whichever
worker the kernel hands the connection to — with two workers, half the time not the one
holding the agent's tunnel, which then answered 503. So each worker also listens on a port of
its own, chosen by the system, that serves only the relayed calls (`/internal/tunnel/…`), and
advertises that port in the registry. With one worker (the chart's way: scale with replicas)
the main port is the advertised address and nothing here runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from app.serving import COMMON, Listener
from app.tunnel.proxy import PROXY_PREFIX

# Set by `serve --workers N` (N > 1) for its workers: the host they bind their own ports on.
RELAY_HOST_ENV = "EDGE_PLATFORM_WORKER_RELAY_HOST"
WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (recognised, not bound)


def relay_host() -> str | None:
    """The host to listen on for this worker's relayed calls; None: one worker, no need."""
    return os.environ.get(RELAY_HOST_ENV)


class WorkerRelay:
    """A listener of this worker's own, serving only the relayed calls."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        # Listening from now: calls that come before the server runs wait in the backlog.
        self._socket.listen(socket.SOMAXCONN)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server: Listener | None = None
        self._task: asyncio.Task[None] | None = None

    def advertise_url(self, advertised: str | None) -> str:
        """Where the other workers and replicas reach this worker: the host of
        TUNNEL_ADVERTISE_URL (or, unset, the bound host; loopback for a wildcard) with this
        worker's port. Plain HTTP, as the chart's pod address is."""
        host = urlsplit(advertised).hostname if advertised else None
        host = host or ("127.0.0.1" if self.host in WILDCARDS else self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self, proxy: ASGIApp) -> None:
        config = uvicorn.Config(_OnlyRelayed(proxy), lifespan="off", **COMMON)
        self._server = Listener(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._socket.close()


class _OnlyRelayed:
    def __init__(self, proxy: ASGIApp) -> None:
        self._proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROXY_PREFIX):
            await self._proxy(scope, receive, send)
            return
        if scope["type"] == "http":
            start = {"type": "http.response.start", "status": 404, "headers": []}
            await send(start)
            await send({"type": "http.response.body", "body": b""})
