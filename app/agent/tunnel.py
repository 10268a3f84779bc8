"""The agent's WebSocket to the platform, with the `websockets` library (its asyncio API): the
library the protocol was written for, and the one of the platform's server (uvicorn), so both
ends agree on framing, limits and ping/pong; aiohttp stays the HTTP client of the API server.

The connection goes through the environment's proxy (`HTTPS_PROXY`, `NO_PROXY`: websockets'
default, `proxy=True`), follows no redirect, offers no compression (a compressed stream that
mixes Secrets with data another party chooses leaks through its length, as in CRIME; and small
edge machines are spared the CPU), and carries at most one protocol frame per message.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from app.agent.settings import AGENT_VERSION, AgentSettings
from app.tunnel.protocol import MAX_FRAME_BYTES, SUBPROTOCOL_V2, ProtocolError, TunnelClosed

PING_INTERVAL_SECONDS = 15.0
PING_TIMEOUT_SECONDS = 15.0
CLOSE_TIMEOUT_SECONDS = 5.0


class _AtMostInfo(logging.Filter):
    """websockets logs every header of the handshake (the Authorization header with the
    credential) and every frame (Secrets read through the tunnel) at DEBUG: never kept,
    whatever the log level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


websockets_logger = logging.getLogger("app.agent.websockets")
websockets_logger.setLevel(logging.INFO)  # and websockets then does not even format them
websockets_logger.addFilter(_AtMostInfo())


class WebSocketTransport:
    """A websockets connection (either end's) as the tunnel's Transport."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.ended: str | None = None  # how the connection ended, once it has

    async def send(self, message: bytes) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def receive(self) -> bytes:
        try:
            message = await self._connection.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc
        if isinstance(message, str):
            raise ProtocolError("a text message: the tunnel carries binary frames only")
        return message

    def _closed(self, exc: ConnectionClosed) -> TunnelClosed:
        self.ended = self.ended or describe_close(exc)
        return TunnelClosed(self.ended)


def describe_close(exc: ConnectionClosed) -> str:
    """How the connection ended, with the other side's close code and reason when it sent
    one (the platform says why it drops an agent)."""
    received = exc.rcvd
    if received is None:
        return "the connection was lost (no close frame)"
    reason = "".join(c for c in received.reason if c.isprintable())[:120]
    return f"closed by the platform with {received.code}" + (f": {reason}" if reason else "")


class _NoRedirects(connect):
    """A redirect would carry the credential to wherever it points (same origin keeps the
    Authorization header): the platform's tunnel answers at its own address."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def open_tunnel(
    settings: AgentSettings, credential: str, ssl_context: ssl.SSLContext | None
) -> ClientConnection:
    """The WebSocket to the platform, authenticated with the agent's credential."""
    options: dict[str, Any] = {"ssl": ssl_context} if settings.encrypted else {}
    return await _NoRedirects(
        settings.tunnel_url,
        additional_headers={"Authorization": f"Bearer {credential}"},
        user_agent_header=f"edge-agent/{AGENT_VERSION}",
        compression=None,
        subprotocols=[Subprotocol(SUBPROTOCOL_V2)],  # a platform that knows it agrees
        proxy=True,  # HTTPS_PROXY / NO_PROXY of the environment (websockets' default, said)
        open_timeout=settings.connect_timeout_seconds,
        ping_interval=PING_INTERVAL_SECONDS,
        ping_timeout=PING_TIMEOUT_SECONDS,
        close_timeout=CLOSE_TIMEOUT_SECONDS,
        max_size=MAX_FRAME_BYTES,
        logger=websockets_logger,
        **options,
    )
