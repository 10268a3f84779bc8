"""Request bodies: media types, size limits, safe JSON/YAML decoding, JSON merge patch."""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_BODY_BYTES = 1 << 20  # API.md: 1 MiB by default
MAX_CHART_BYTES = 20 << 20  # chart archives

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json"})


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class NoAliasLoader(yaml.SafeLoader):
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

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def decode_yaml(raw: bytes) -> Any:
    try:
        documents = list(yaml.load_all(raw, Loader=NoAliasLoader))
    except RecursionError:
        raise BadRequest("malformed YAML body: nested too deeply") from None
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
    data = decode_yaml(raw) if kind in YAML_TYPES else decode_json(raw)
    if _has_nul(data):
        raise BadRequest("NUL characters are not accepted")
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be an object, not {type(data).__name__}")
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
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
    """Refuse oversized bodies for every route, including ones that never call `read_raw`
    (form posts): 413 from the declared length, or once the streamed bytes pass the limit."""

    def __init__(self, app: ASGIApp, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.limits = limits or {}

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
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


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
