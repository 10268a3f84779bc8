"""The controller's way to an agent cluster's API: `/internal/tunnel/<cluster uid>/<path>` on
any API replica. The replica holding the agent's connection relays the request over it; any
other forwards it once to that replica (by the registry in Redis). Callers prove themselves
with a token derived from ENCRYPTION_KEY, which only the platform's processes hold.

Answers are Kubernetes' own, streamed (a watch included); when the agent cannot be reached
the answer is a Kubernetes Status (503: retried by the controller like any unreachable edge).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.crypto import SecretBox
from app.tunnel.hub import AgentConnection, TunnelHub
from app.tunnel.protocol import StreamReset, TunnelClosed

logger = logging.getLogger(__name__)

PROXY_PREFIX = "/internal/tunnel/"
PROXY_TOKEN_PURPOSE = "agent-tunnel-proxy"  # noqa: S105 (what the token is derived for)
FORWARDED_HEADER = "x-edge-tunnel-forwarded"
# Headers that travel to the agent and back; the agent authenticates with its own credentials.
REQUEST_HEADERS = ("accept", "content-type", "user-agent")
RESPONSE_HEADERS = ("content-type", "content-encoding")
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # as the controller's own bound on an answer
HEAD_TIMEOUT_SECONDS = 30.0  # for the answer's status line; its body may stream for ever


def proxy_token(secrets: SecretBox) -> str:
    return secrets.token_for(PROXY_TOKEN_PURPOSE)


def status(code: int, message: str) -> Response:
    """A Kubernetes Status answer, as an API server gives one."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "ServiceUnavailable" if code == 503 else "InternalError",
        "code": code,
    }
    return Response(json.dumps(body), status_code=code, media_type="application/json")


class TunnelProxy:
    def __init__(self, hub: TunnelHub, secrets: SecretBox) -> None:
        self._hub = hub
        self._secrets = secrets
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not self._secrets.verify_token(PROXY_TOKEN_PURPOSE, token):
            return Response(status_code=401)
        uid, _, rest = request.url.path[len(PROXY_PREFIX) :].partition("/")
        path = "/" + rest
        connection = self._hub.local(uid)
        if connection is not None:
            return await _relay(connection, request, path)
        if request.headers.get(FORWARDED_HEADER) is None:
            holder = await self._hub.holder(uid)
            if holder is not None and holder != self._hub.advertise_url:
                return await self._forward(holder, request, uid, path)
        return status(503, "the cluster's agent is not connected to the platform")

    async def _forward(self, holder: str, request: Request, uid: str, path: str) -> Response:
        """Pass the request to the replica holding the agent's connection (once: it answers
        itself or says the agent is gone)."""
        body = await _read_body(request)
        if body is None:
            return status(413, f"request body larger than {MAX_REQUEST_BYTES} bytes")
        headers = {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        headers["Authorization"] = request.headers["authorization"]
        headers[FORWARDED_HEADER] = "1"
        url = f"{holder}{PROXY_PREFIX}{uid}{path}"
        if request.url.query:
            url += f"?{request.url.query}"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=None),
                auto_decompress=False,
            )
        try:
            answer = await self._session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.info("forwarding to the replica holding cluster %s's agent failed: %s", uid, exc)
            return status(503, "the platform replica holding the agent's connection is unreachable")

        async def relayed() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.content.iter_any():
                    yield chunk
            finally:
                answer.release()

        passed = {k: v for k in RESPONSE_HEADERS if (v := answer.headers.get(k)) is not None}
        return StreamingResponse(relayed(), status_code=answer.status, headers=passed)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_body(request: Request) -> bytes | None:
    """The whole body, None past MAX_REQUEST_BYTES."""
    try:
        return b"".join([chunk async for chunk in _limited(request)])
    except BodyTooLarge:
        return None


class BodyTooLarge(Exception):
    pass


def _without_body(request: Request) -> bool:
    """Whether the request has no body, by its headers (its OPEN can then end it)."""
    headers = request.headers
    if "transfer-encoding" in headers:
        return False
    return headers.get("content-length", "0").strip() == "0"


async def _limited(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives, BodyTooLarge past MAX_REQUEST_BYTES."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise BodyTooLarge
        yield chunk


async def _relay(connection: AgentConnection, request: Request, path: str) -> Response:
    """One exchange over the agent's connection, the answer streamed back as it comes."""
    head = {
        "method": request.method,
        "path": path,
        "query": request.url.query,
        "headers": {k: v for k in REQUEST_HEADERS if (v := request.headers.get(k)) is not None},
    }
    bodiless = _without_body(request)
    try:
        stream = await connection.mux.open(head, end=bodiless)
    except TunnelClosed:
        return status(503, "the cluster's agent is not connected to the platform")
    try:
        if not bodiless:
            await stream.send_all(_limited(request))
        answer = await asyncio.wait_for(stream.response, HEAD_TIMEOUT_SECONDS)
    except BodyTooLarge:
        await stream.reset("request body too large")
        return status(413, f"request body larger than {MAX_REQUEST_BYTES} bytes")
    except TimeoutError:
        await stream.reset("no answer in time")
        return status(504, "the cluster's agent did not answer in time")
    except (TunnelClosed, StreamReset) as exc:
        await stream.reset("cancelled")
        return status(503, f"the exchange with the cluster's agent failed: {exc}"[:300])
    except BaseException:
        await stream.reset("the platform's caller went away")
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream.chunks():
                yield chunk
        finally:
            # The caller went away (a watch closed) or the body ended early: tell the agent,
            # which cancels its request to the API server.
            if not stream.done:
                await stream.reset("the platform's caller went away")

    headers = answer.get("headers") or {}
    passed = {k: str(v) for k, v in headers.items() if k.lower() in RESPONSE_HEADERS}
    code = answer.get("status")
    if not isinstance(code, int) or not 100 <= code <= 599:
        await stream.reset("an invalid status")
        return status(502, "the cluster's agent answered with an invalid status")
    return StreamingResponse(body(), status_code=code, headers=passed)
