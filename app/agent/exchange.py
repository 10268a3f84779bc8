"""One exchange of the tunnel: the platform's request checked, forwarded to this cluster's API
server, and the answer streamed back as it comes (a watch does not end until the platform or
the API server ends it).

The agent is not a proxy the platform can point anywhere: requests go only to the local API
server, and only to its Kubernetes API paths; the platform names a path, never an address.
What the platform sends is refused with a 403 Kubernetes Status unless:
- the method is GET, HEAD, POST, PUT, PATCH or DELETE;
- the path starts with a single `/`, holds only URL path characters (no `\\`, `#`, spaces,
  control or non-ASCII characters, nor encoded `/`, `\\` or control characters), has no `.`,
  `..` or empty segments, and is under `/api`, `/apis` or `/openapi/`, or is `/version`,
  `/healthz`, `/livez` or `/readyz`;
- the query is a string of URL query characters.
Only `Accept`, `Content-Type` and `User-Agent` are passed on (the edge's audit log then names
the platform's controller); the agent authenticates with its own credentials, so nothing the
platform sends (Authorization, Impersonate-*, hop-by-hop headers) reaches the API server.
Within those paths, what the platform may do is what the agent's RBAC allows: subresources
that reach further (services/proxy, nodes/proxy) need rights the chart does not grant, and
exec, attach and port-forward need a connection upgrade, which is never passed on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import aiohttp

from app.agent.kubeapi import USER_AGENT, LocalApiClient
from app.tunnel.protocol import Stream

logger = logging.getLogger(__name__)

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # DELETE: DeleteOptions
FORWARDED_HEADERS = {"accept": "Accept", "content-type": "Content-Type", "user-agent": "User-Agent"}
# Content-Encoding only matters if an API server compresses although asked for identity.
RETURNED_HEADERS = ("Content-Type", "Content-Encoding")
EXACT_PATHS = frozenset({"/api", "/apis", "/version", "/version/", "/healthz", "/livez", "/readyz"})
PATH_PREFIXES = ("/api/", "/apis/", "/openapi/")
MAX_PATH_CHARS = 4096
MAX_QUERY_CHARS = 16384
MAX_HEADER_CHARS = 1024
# What is read and dropped of a request body the API server did not take (a refused request,
# an early answer): the platform sends the whole body before it reads the answer, so it must
# be read for the answer to reach it. As much as the platform sends at most.
MAX_UNREAD_BODY_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_CHARS = 200

_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
_QUERY_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


# What Kubernetes (Go's strconv.ParseBool) reads as false in `watch=…` and `follow=…`.
_FALSE = frozenset({"0", "f", "F", "false", "False", "FALSE"})


class Refused(Exception):
    """The request is not one the agent forwards (the message says why)."""


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str  # as the platform wrote it (percent-encoded), checked
    query: str
    headers: dict[str, str]  # only those forwarded

    @property
    def streams(self) -> bool:
        """Whether the answer may go on without end (a watch, followed logs, a proxied
        service): its chunks are passed on as they come. A false guess only costs a message."""
        params = parse_qs(self.query, keep_blank_values=True)
        for name in ("watch", "follow"):
            if any(value not in _FALSE for value in params.get(name, ())):
                return True
        segments = self.path.split("/")
        return "watch" in segments or "proxy" in segments


def check_head(head: Any) -> ApiRequest:
    """The platform's request head as one the agent forwards, or Refused."""
    if not isinstance(head, dict):
        raise Refused("the request head is not an object")
    method = head.get("method")
    if method not in ALLOWED_METHODS:
        raise Refused(f"method {_shown(method)} is not one of {', '.join(ALLOWED_METHODS)}")
    path = check_path(head.get("path"))
    query = head.get("query")
    if query is None:
        query = ""
    if not isinstance(query, str):
        raise Refused("the query is not a string")
    if len(query) > MAX_QUERY_CHARS:
        raise Refused(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if not _QUERY_CHARACTERS.fullmatch(query) or _BAD_ESCAPE.search(query):
        raise Refused("the query has characters a URL query may not have")
    return ApiRequest(method, path, query, _forwarded_headers(head.get("headers")))


def check_path(path: Any) -> str:
    """A Kubernetes API path of the local API server, or Refused."""
    if not isinstance(path, str) or not path:
        raise Refused("no path")
    if len(path) > MAX_PATH_CHARS:
        raise Refused(f"the path is longer than {MAX_PATH_CHARS} characters")
    if not path.startswith("/") or path.startswith("//"):
        raise Refused(
            f"the path {_shown(path)} does not start with a single '/' (the agent forwards "
            "paths of its own API server, never to another address)"
        )
    if not _PATH_CHARACTERS.fullmatch(path) or _BAD_ESCAPE.search(path):
        raise Refused(
            f"the path {_shown(path)} has characters a URL path may not have (spaces, '\\', "
            "'#', '?', control or non-ASCII characters, or a bad %-escape)"
        )
    segments = path[1:].split("/")
    decoded = []
    for index, segment in enumerate(segments):
        try:
            text = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise Refused(f"the path {_shown(path)} has an escape that is not UTF-8") from None
        if text in (".", ".."):
            raise Refused(f"the path {_shown(path)} has a '.' or '..' segment")
        if "/" in text or "\\" in text or any(not c.isprintable() for c in text):
            raise Refused(f"the path {_shown(path)} has an encoded '/', '\\' or control character")
        if not text and index != len(segments) - 1:
            raise Refused(f"the path {_shown(path)} has an empty segment")
        decoded.append(text)
    # The API server routes on the decoded path: that is the one checked.
    routed = "/" + "/".join(decoded)
    if routed not in EXACT_PATHS and not routed.startswith(PATH_PREFIXES):
        raise Refused(
            f"{_shown(routed)} is not a Kubernetes API path (/api, /apis, /openapi/, /version, "
            "/healthz, /livez, /readyz)"
        )
    return path


def _forwarded_headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise Refused("the headers are not an object")
    forwarded = {}
    for name, value in headers.items():
        canonical = FORWARDED_HEADERS.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            continue  # anything else is dropped: the agent speaks for itself
        if (
            not isinstance(value, str)
            or len(value) > MAX_HEADER_CHARS
            or any(not (" " <= c <= "~") for c in value)
        ):
            raise Refused(f"header {canonical} is not printable ASCII of at most 1 KiB")
        forwarded[canonical] = value
    return forwarded


def _shown(value: Any) -> str:
    """A value of the platform's as it may appear in a message or a log line."""
    text = value if isinstance(value, str) else repr(value)
    return repr(cleaned(text, 120))


def cleaned(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Printable, on one line, at most `limit` characters."""
    words = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def status_document(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes Status, as an API server answers a failure."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


async def answer_status(stream: Stream, code: int, reason: str, message: str) -> None:
    body = json.dumps(status_document(code, reason, message)).encode()
    await stream.respond(code, {"Content-Type": "application/json"})
    await stream.send(body)
    await stream.end()


def describe_failure(exc: BaseException) -> str:
    """Why the API server gave no usable answer, briefly: aiohttp quotes what the other end
    sent in some of its errors (an invalid status line, say), and that is not repeated."""
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return f"{type(exc).__name__}: the answer is not valid HTTP"
    return f"{type(exc).__name__}: {cleaned(str(exc))}" if str(exc) else type(exc).__name__


class _RequestBody:
    """The platform's request body as it arrives: streamed to the API server, and what is
    left of it once the answer is given read and dropped."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.finished = False

    async def _read(self) -> bytes:
        chunk = await self._stream.read()
        if not chunk:
            self.finished = True
        return chunk

    async def upload(self) -> AsyncIterator[bytes] | None:
        """The body to send, or None when it is empty (then sent without one, not as an
        empty chunked body)."""
        first = await self._read()
        return self._rest(first) if first else None

    async def _rest(self, first: bytes) -> AsyncIterator[bytes]:
        yield first
        while chunk := await self._read():
            yield chunk

    async def discard(self) -> None:
        dropped = 0
        while not self.finished:
            dropped += len(await self._read())
            if dropped > MAX_UNREAD_BODY_BYTES:
                await self._stream.reset("the request body was not read")
                return


class ExchangeHandler:
    """Answers each exchange the platform opens (the Mux's `on_open`)."""

    def __init__(self, api: LocalApiClient) -> None:
        self._api = api

    async def __call__(self, stream: Stream) -> None:
        try:
            request = check_head(stream.head)
        except Refused as refusal:
            logger.warning("refused a request of the platform: %s", refusal)
            await answer_status(
                stream, 403, "Forbidden", f"the edge agent does not forward this request: {refusal}"
            )
            method = stream.head.get("method") if isinstance(stream.head, dict) else None
            if method in BODY_METHODS:
                await _RequestBody(stream).discard()
            return
        forwarding = asyncio.create_task(self._forward(stream, request))
        # On the answering side `stream.response` is not an answer: it completes when the
        # stream fails (the platform reset it, or the tunnel closed), so it tells when to stop.
        either: set[asyncio.Future[Any]] = {forwarding, stream.response}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not forwarding.done():
                forwarding.cancel()  # closes the request to the API server (a watch ends there)
                await asyncio.wait({forwarding})
            if not forwarding.cancelled():
                forwarding.exception()  # retrieved here too: this handler may be cancelled
        if forwarding.cancelled():
            logger.debug(
                "%s %s: the platform gave up; request cancelled", request.method, request.path
            )
            if not stream.done:  # a RESPONSE frame from the platform: not its to send
                await stream.reset("the platform sent a RESPONSE on its own request")
            return
        forwarding.result()  # its failure, if any, for the Mux to reset the stream with

    async def _forward(self, stream: Stream, request: ApiRequest) -> None:
        body = _RequestBody(stream) if request.method in BODY_METHODS else None
        data = await body.upload() if body is not None else None
        headers = self._api.headers({**request.headers, "Accept-Encoding": "identity"})
        headers.setdefault("User-Agent", USER_AGENT)
        answered = False
        try:
            async with self._api.session.request(
                request.method,
                self._api.url(request.path, request.query),
                headers=headers,
                data=data,
                allow_redirects=False,  # where a redirect leads is not the agent's to follow
                # Nothing the platform did not send: no default Accept or Content-Type.
                skip_auto_headers=("Accept", "Content-Type"),
                server_hostname=self._api.api.tls_server_name,
            ) as response:
                passed = {
                    name: response.headers[name]
                    for name in RETURNED_HEADERS
                    if name in response.headers
                }
                await stream.respond(response.status, passed)
                answered = True
                logger.debug("%s %s: %d", request.method, request.path, response.status)
                if request.streams:
                    async for chunk in response.content.iter_any():
                        await stream.send(chunk)
                else:  # an answer that ends, and comes whole and at once
                    await stream.send_all(response.content.iter_any())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if stream.response.done():
                return  # the platform reset the exchange meanwhile: nobody waits for it
            if answered:
                logger.info(
                    "%s %s: the API server's answer broke off: %s",
                    request.method,
                    request.path,
                    describe_failure(exc),
                )
                await stream.reset("the API server's answer broke off")
                return
            logger.warning(
                "%s %s: the API server cannot be reached: %s",
                request.method,
                request.path,
                describe_failure(exc),
            )
            await answer_status(
                stream,
                502,
                "ServiceUnavailable",
                f"the edge agent cannot reach its cluster's API server: {describe_failure(exc)}",
            )
            if body is not None:
                await body.discard()
            return
        await stream.end()
        if body is not None:
            await body.discard()  # what the API server did not read, answering early
