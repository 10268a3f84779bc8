"""Request bodies: media types, size limits, safe JSON/YAML decoding, JSON merge patch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable
from typing import Any, NoReturn

import yaml
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, PayloadTooLarge, ServiceUnavailable, UnsupportedMediaType

MAX_BODY_BYTES = 1 << 20  # API.md: 1 MiB by default
MAX_CHART_BYTES = 20 << 20  # chart archives
MAX_YAML_BYTES = MAX_BODY_BYTES  # also where JSON may be larger (clusters)
MAX_YAML_NODES = 50_000  # a YAML body's scalars and collections; about 0.3 s to build
YAML_DECODE_SECONDS = 5.0
MAX_DEPTH = 100  # objects and arrays within each other, in any body
NESTED_TOO_DEEPLY = f"nested too deeply (more than {MAX_DEPTH} levels)"

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json"})


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """Refuses a mapping that names a key twice (YAML would keep the last one, silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the mapping itself refuses it: "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class NoAliasLoader(_UniqueKeys, yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases: they are how "billion laughs" bombs work,
    and an API object never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None) is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "YAML anchors are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


class _BodyLoader(_UniqueKeys, yaml.CSafeLoader):
    """libyaml's parser and composer, several times faster than PyYAML's own. Its composer is
    C, so anchors and aliases are refused before, by `_check_events`."""


def _check_events(raw: bytes) -> None:
    """One pass of libyaml's parser before anything is built: refuses anchors and aliases,
    and more than MAX_YAML_NODES values (building each costs microseconds of Python, so a
    megabyte of one-character items took seconds). libyaml itself refuses nesting deeper than
    1000; `read_object` then refuses more than MAX_DEPTH, as for JSON."""
    nodes = 0
    for event in yaml.parse(raw, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.AliasEvent):
            _refuse("YAML aliases are not accepted", event)
        if isinstance(event, yaml.NodeEvent):
            if event.anchor is not None:
                _refuse("YAML anchors are not accepted", event)
            nodes += 1
            if nodes > MAX_YAML_NODES:
                raise PayloadTooLarge(
                    f"a YAML body may hold at most {MAX_YAML_NODES} values; send larger "
                    "objects as JSON"
                )


def _refuse(problem: str, event: yaml.Event) -> NoReturn:
    mark = event.start_mark  # libyaml's: made PyYAML's, which the error's type expects
    where = (
        yaml.error.Mark(mark.name, mark.index, mark.line, mark.column, None, 0) if mark else None
    )
    raise yaml.constructor.ConstructorError(None, None, problem, where)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_reject_duplicate_keys)
    except RecursionError:
        raise BadRequest(f"malformed JSON body: {NESTED_TOO_DEEPLY}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def decode_yaml(raw: bytes) -> Any:
    """Blocking (a megabyte takes up to a few tenths of a second): see `_decode_yaml_in_thread`."""
    if len(raw) > MAX_YAML_BYTES:
        raise PayloadTooLarge(
            f"a YAML body may be at most {MAX_YAML_BYTES} bytes; send larger objects as JSON"
        )
    try:
        _check_events(raw)
        documents = list(yaml.load_all(raw, Loader=_BodyLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed YAML body: {_one_line(exc)}") from None
    documents = [d for d in documents if d is not None]
    if len(documents) != 1:
        raise BadRequest(f"a YAML body must hold exactly one document, found {len(documents)}")
    return documents[0]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


async def read_object(
    request: Request, *, accepted: frozenset[str] = JSON_TYPES | YAML_TYPES
) -> dict[str, Any]:
    """Decode a JSON or YAML object body. 415 for other media types, 400 if it is malformed or
    not a single mapping."""
    kind = media_type(request)
    if kind not in accepted:
        raise UnsupportedMediaType(
            f"content type {kind or '(none)'!r} is not accepted here; "
            f"use one of {', '.join(sorted(accepted))}"
        )
    raw = await request.body()  # size already bounded by BodySizeLimitMiddleware
    if not raw.strip():
        raise BadRequest("request body is empty")
    data = await _decode_yaml_in_thread(raw) if kind in YAML_TYPES else decode_json(raw)
    _check_decoded(data)
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be an object, not {type(data).__name__}")
    return data


async def _decode_yaml_in_thread(raw: bytes) -> Any:
    """Off the event loop, and waited for at most YAML_DECODE_SECONDS. The size and value
    limits keep a parse to tenths of a second, so a longer one means the process is starved of
    CPU: the request stops waiting (the thread finishes its bounded work on its own)."""
    try:
        async with asyncio.timeout(YAML_DECODE_SECONDS):
            return await asyncio.to_thread(decode_yaml, raw)
    except TimeoutError:
        raise ServiceUnavailable(
            f"the YAML body was not parsed within {YAML_DECODE_SECONDS:g}s: the server is "
            "busy; retry, or send JSON"
        ) from None


def _check_decoded(data: Any) -> None:
    """Refuse NUL characters anywhere, and nesting deeper than MAX_DEPTH, in one walk without
    recursion, before anything that recurses (merge patch, validation, storage) sees it."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise BadRequest("NUL characters are not accepted")
        elif isinstance(value, dict | list):
            if level > MAX_DEPTH:
                raise BadRequest(f"request body is {NESTED_TOO_DEEPLY}")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, level + 1) for item in items)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Recurses as deep as `patch` is nested: bodies come through
    `read_object`, which bounds that to MAX_DEPTH."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class BodySizeLimitMiddleware:
    """Every request body is read whole, within its path's size limit and `timeout` seconds,
    before the application sees the request, which then reads it from memory: 413 past the
    limit (from the declared length, or once the bytes received pass it), 408 past the
    deadline. Authentication takes a database connection, so no slow or endless body can
    hold one; this covers routes that never call `read_object` too (form posts, uploads)."""

    def __init__(
        self, app: ASGIApp, limits: dict[str, int] | None = None, *, timeout: float
    ) -> None:
        self.app = app
        self.limits = limits or {}
        self.timeout = timeout

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.limits.items():
            if path.startswith(prefix):
                return limit
        return MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _send_problem(scope, send, 400, "BadRequest", "NUL characters are not accepted")
            return
        limit = self._limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                detail = f"request body exceeds the limit of {limit} bytes"
                await _send_problem(scope, send, 413, "PayloadTooLarge", detail)
                return
        try:
            async with asyncio.timeout(self.timeout):
                body = await _read_whole(receive, limit)
        except TimeoutError:
            detail = f"the request body did not arrive within {self.timeout:g}s"
            await _send_problem(scope, send, 408, "RequestTimeout", detail)
            return
        except PayloadTooLarge as exc:
            await _send_problem(scope, send, 413, exc.code, exc.detail)
            return
        if body is None:
            return  # the client went away: nobody to answer
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # what comes after the body: the disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_whole(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None if the client disconnected before sending all of it."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_problem(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    """A problem+json answer sent before the application sees the request."""
    body = json.dumps(
        {
            "type": f"https://edge.theriseunion.io/problems/{code}",
            "title": detail,
            "status": status,
            "detail": detail,
            "code": code,
            "instance": scope["path"].replace("\x00", "\\0"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
