"""`Idempotency-Key` on POST: a replay returns the first response; the same key with a
different body is a 422. Keys are kept for 24 hours.

The key row is inserted in the same transaction as the object it creates, so both commit or
neither does. A concurrent request with the same key waits on the row's unique index until
the first transaction ends, then replays its response (or, if the first failed, runs itself).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request, Response
from sqlalchemy import BigInteger, DateTime, Identity, Index, String, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.errors import BadRequest, Conflict, invalid_field
from app.kit.resource import render

KEY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255

# What a create returns: status code, the response object, extra headers (Location, ETag).
Created = tuple[int, dict[str, Any], dict[str, str]]


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("uq_idempotency_keys_scope_key", "scope", "key", unique=True),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    scope: Mapped[str] = mapped_column(String(1024))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response: Mapped[dict[str, Any] | None]
    headers: Mapped[dict[str, str]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# Shown once in a create response (service account secrets); never stored for replays.
ONE_TIME_STATUS_FIELDS = ("clientSecret",)


def _without_secrets(data: dict[str, Any]) -> dict[str, Any]:
    status = data.get("status")
    if not isinstance(status, dict) or not any(f in status for f in ONE_TIME_STATUS_FIELDS):
        return data
    return {**data, "status": {k: v for k, v in status.items() if k not in ONE_TIME_STATUS_FIELDS}}


def _body_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_once(
    request: Request,
    session: AsyncSession,
    body: dict[str, Any],
    create: Callable[[], Awaitable[Created]],
    *,
    principal: str = "anonymous",
) -> Response:
    """Run `create` at most once per Idempotency-Key and render its (stored) response."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, data, headers = await create()
        return render(request, data, status_code=status, headers=headers)
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")

    scope = f"{principal} POST {request.url.path}"
    digest = _body_hash(body)
    now = func.now()
    # An expired key may be reused: drop it first.
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.scope == scope,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at < now,
        )
    )
    claimed = await session.scalar(
        insert(IdempotencyKey)
        .values(scope=scope, key=key, request_hash=digest, expires_at=now + KEY_TTL)
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(IdempotencyKey.id)
    )
    if claimed is None:
        first = await session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        )
        if first is None or first.status_code is None or first.response is None:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry")
        if first.request_hash != digest:
            raise invalid_field(
                "Idempotency-Key",
                "already used with a different request body",
                code="IdempotencyKeyReused",
            )
        headers = {**first.headers, "Idempotent-Replayed": "true"}
        return render(request, first.response, status_code=first.status_code, headers=headers)

    status, data, headers = await create()
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claimed)
        .values(status_code=status, response=_without_secrets(data), headers=headers)
    )
    return render(request, data, status_code=status, headers=headers)


async def purge_expired_keys(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at < func.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)
