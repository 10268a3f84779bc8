"""Response helpers shared by every resource router (rendering, ETags, list envelopes)."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi import Request, Response

from app.kit.etag import etag, not_modified
from app.kit.idempotency import Created
from app.kit.paging import Page
from app.kit.resource import (
    Documents,
    EncodedDocument,
    EncodedDocuments,
    JSONDocument,
    ListMeta,
    ResourceList,
    ResourceOut,
    render,
    wants_yaml,
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


def render_read(request: Request, data: dict[str, Any] | EncodedDocument) -> Response:
    if isinstance(data, EncodedDocument):
        version = data.resource_version
    else:
        version = int(data["metadata"]["resourceVersion"])
    headers = {"ETag": etag(version)}
    if not_modified(request, version):
        return Response(status_code=304, headers=headers)
    if not isinstance(data, EncodedDocument):
        return render(request, data, headers=headers)
    if wants_yaml(request):
        return render(request, pydantic_core.from_json(data.body), headers=headers)
    return Response(data.body, headers=headers, media_type="application/json")


def render_list(
    request: Request,
    list_model: type[ResourceList[Any]],
    items: list[Any],
    page: Page[Any],
) -> Response:
    if isinstance(items, EncodedDocuments):
        return _render_encoded_list(request, list_model, items, page)
    if isinstance(items, Documents):
        # A plain list, as YAML's safe dumper wants.
        return render(request, _list_document(list_model, page, list(items)))
    body = list_model(
        metadata=ListMeta(continue_=page.continue_token, remainingItemCount=page.remaining),
        items=items,
    )
    return render(request, body)


def _list_document(
    list_model: type[ResourceList[Any]], page: Page[Any], items: list[Any]
) -> JSONDocument:
    fields = list_model.model_fields
    return JSONDocument(
        apiVersion=fields["apiVersion"].default,
        kind=fields["kind"].default,
        metadata={"continue": page.continue_token, "remainingItemCount": page.remaining},
        items=items,
    )


def _render_encoded_list(
    request: Request,
    list_model: type[ResourceList[Any]],
    items: EncodedDocuments,
    page: Page[Any],
) -> Response:
    """A list of items encoded already: the list is encoded with no items (they come last)
    and they are put in its empty array, byte for byte what encoding the whole would give."""
    if wants_yaml(request):
        decoded = [pydantic_core.from_json(item) for item in items]
        return render(request, _list_document(list_model, page, decoded))
    envelope = pydantic_core.to_json(_list_document(list_model, page, []))
    assert envelope.endswith(b"[]}")
    body = b"".join((envelope[:-2], b",".join(items), b"]}"))
    return Response(body, media_type="application/json")
