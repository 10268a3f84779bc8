"""Response helpers shared by every resource router (rendering, ETags, list envelopes)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from app.kit.etag import etag, not_modified
from app.kit.idempotency import Created
from app.kit.paging import Page
from app.kit.resource import (
    Documents,
    JSONDocument,
    ListMeta,
    ResourceList,
    ResourceOut,
    render,
)

__all__ = ["Created", "created", "render_list", "render_object", "render_read"]

LIMIT_HELP = "Page size, 1-1000 (default 100); larger values are clamped to 1000."

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
# What any route may answer, documented once for all of them (problem+json bodies).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request", **_PROBLEM},
    401: {"description": "No or invalid credentials", **_PROBLEM},
    403: {"description": "Not allowed", **_PROBLEM},
    404: {"description": "Not found, or not visible to the caller", **_PROBLEM},
    422: {"description": "Invalid request", **_PROBLEM},
    429: {"description": "Rate limited; see Retry-After", **_PROBLEM},
    503: {"description": "A dependency is down; see Retry-After", **_PROBLEM},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed body", **_PROBLEM},
    409: {"description": "Conflict or stale metadata.resourceVersion", **_PROBLEM},
    412: {"description": "If-Match does not match", **_PROBLEM},
    413: {"description": "Body too large", **_PROBLEM},
    415: {"description": "Unsupported media type", **_PROBLEM},
    422: {"description": "Invalid object", **_PROBLEM},
}


def _etag_headers(data: dict[str, Any]) -> dict[str, str]:
    return {"ETag": etag(int(data["metadata"]["resourceVersion"]))}


def created(request: Request, out: ResourceOut[Any, Any]) -> Created:
    data = out.model_dump(mode="json", by_alias=True)
    location = f"{request.url.path.rstrip('/')}/{out.metadata.name}"
    return 201, data, {"Location": location, **_etag_headers(data)}


def render_object(request: Request, out: ResourceOut[Any, Any]) -> Response:
    data = out.model_dump(mode="json", by_alias=True)
    return render(request, data, headers=_etag_headers(data))


def render_read(request: Request, data: dict[str, Any]) -> Response:
    headers = _etag_headers(data)
    if not_modified(request, int(data["metadata"]["resourceVersion"])):
        return Response(status_code=304, headers=headers)
    return render(request, data, headers=headers)


def render_list(
    request: Request,
    list_model: type[ResourceList[Any]],
    items: list[Any],
    page: Page[Any],
) -> Response:
    if isinstance(items, Documents):
        fields = list_model.model_fields
        return render(request, JSONDocument(
            apiVersion=fields["apiVersion"].default,
            kind=fields["kind"].default,
            metadata={"continue": page.continue_token, "remainingItemCount": page.remaining},
            items=list(items),  # a plain list, as YAML's safe dumper wants
        ))  # fmt: skip
    body = list_model(
        metadata=ListMeta(continue_=page.continue_token, remainingItemCount=page.remaining),
        items=items,
    )
    return render(request, body)
