"""Optimistic concurrency: ETag = resourceVersion; If-Match → 412, stale resourceVersion → 409."""

from __future__ import annotations

from fastapi import Request

from app.errors import Conflict, PreconditionFailed


def etag(resource_version: int) -> str:
    return f'"{resource_version}"'


def _tags(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def check_write_preconditions(
    if_match: str | None, current_version: int, body_version: str | None = None
) -> None:
    """Refuse a write based on a stale read (If-Match header or metadata.resourceVersion)."""
    if if_match is not None:
        tags = _tags(if_match)
        if "*" not in tags and etag(current_version) not in tags:
            raise PreconditionFailed(
                f"If-Match {if_match} does not match the current version "
                f"{etag(current_version)}; read the object again and retry"
            )
    if body_version is not None and body_version != str(current_version):
        raise Conflict(
            f"metadata.resourceVersion {body_version!r} is stale; the object is at "
            f"{current_version}. Read it again and retry",
            code="StaleResourceVersion",
        )


def not_modified(request: Request, current_version: int) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is None:
        return False
    tags = _tags(if_none_match)
    return "*" in tags or etag(current_version) in tags
