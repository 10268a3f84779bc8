"""uvicorn listeners shared by the API and the controller: the side listeners that serve only
/metrics or only the health paths, on their own addresses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings, parse_bind_address

HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
METRICS_PATHS = frozenset({"/metrics"})
COMMON: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    # A stop waits this long for open responses (event streams are ended at once; this bounds
    # anything else) before cutting them.
    "timeout_graceful_shutdown": 10,
}

# The API's one WebSocket is the agents' tunnel. The agents ping every 15 s, which keeps NATs
# open and tells an agent its link is dead; the platform's own pings only find connections
# whose agent vanished without a word (a newer connection of the cluster replaces those
# anyway), so once a minute is enough: a thousand connected agents cost a third of the pings.
API_WEBSOCKETS: dict[str, Any] = {"ws_ping_interval": 60.0, "ws_ping_timeout": 30.0}


class Listener(uvicorn.Server):
    """A uvicorn server whose signals the process handles once for all its listeners (uvicorn
    would otherwise re-raise the signal after shutdown, killing the process before `dev` has
    stopped its embedded PostgreSQL and Redis)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OnlyPaths:
    """Serve a subset of an app's paths (metrics or health probes)."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.paths:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"not found\n"})
            return
        await self.app(scope, receive, send)


def side_listeners(app: ASGIApp, settings: Settings) -> list[Listener]:
    """`--metrics-bind-address` and `--health-probe-bind-address`, when set."""
    listeners = []
    for address, paths in (
        (settings.metrics_bind_address, METRICS_PATHS),
        (settings.health_probe_bind_address, HEALTH_PATHS),
    ):
        if address:
            host, port = parse_bind_address(address)
            config = uvicorn.Config(
                OnlyPaths(app, paths), host=host, port=port, lifespan="off", **COMMON
            )
            listeners.append(Listener(config))
    return listeners
