"""Keyset pagination with opaque `continue` tokens (`limit`/`continue`, as Kubernetes lists).

Pages are ordered by name, which is unique in a list's scope; a token holds the last name
returned, so rows inserted or deleted between pages never shift later pages. A token is bound
to the query that produced it (selector and filters): reusing it with another query is a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeGuard, TypeVar

from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import ResourceMixin
from app.errors import BadRequest
from app.kit.selectors import Requirement, canonical, parse_selector, selector_clause

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # larger limits are clamped, as the Kubernetes API server does
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1

RowT = TypeVar("RowT", bound=ResourceMixin)
ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: str | int | None
    selector: list[Requirement]
    fingerprint: str


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    items: list[ItemT]
    continue_token: str | None
    remaining: int | None


def _fingerprint(selector: list[Requirement], filters: dict[str, Any]) -> str:
    text = json.dumps([canonical(selector), sorted(filters.items())], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def page_request(
    limit: int, continue_token: str | None, label_selector: str | None, **filters: Any
) -> PageRequest:
    selector = parse_selector(label_selector)
    fingerprint = _fingerprint(selector, {k: v for k, v in filters.items() if v is not None})
    after = _decode(continue_token, fingerprint) if continue_token else None
    return PageRequest(min(limit, MAX_LIMIT), after, selector, fingerprint)


def encode_token(after: str | int, fingerprint: str) -> str:
    raw = json.dumps({"v": 1, "after": after, "q": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str, fingerprint: str) -> str | int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after, query = data["after"], data["q"]
        if data.get("v") != 1 or not _is_key(after) or not isinstance(query, str):
            raise ValueError("unexpected token content")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise BadRequest("invalid continue token; start the list again without it") from None
    if query != fingerprint:
        raise BadRequest(
            "continue token was issued for a different query (labelSelector or filters)"
        )
    return after


def _is_key(after: object) -> TypeGuard[str | int]:
    """Could `after` be a key a list was paged by: a name PostgreSQL can compare, or a bigint
    id? A token is the client's to alter; a value outside these is refused here, before the
    database would fail on it."""
    if isinstance(after, bool):  # JSON true/false; Python counts them as ints
        return False
    if isinstance(after, int):
        return BIGINT_MIN <= after <= BIGINT_MAX
    if isinstance(after, str):
        # No NUL (PostgreSQL text cannot hold it) and no lone surrogate (not UTF-8).
        return "\x00" not in after and not any("\ud800" <= c <= "\udfff" for c in after)
    return False


async def fetch_page(
    session: AsyncSession, model: type[RowT], query: Select[RowT], page: PageRequest
) -> Page[RowT]:
    """Run `query` (already filtered by scope and kind-specific filters) one page at a time."""
    return await _fetch(session, model, query, page, entities=True)


async def fetch_page_rows(
    session: AsyncSession, model: type[ResourceMixin], query: Select[Any], page: PageRequest
) -> Page[Row[Any]]:
    """`fetch_page` for a query of columns (one of them `model.name`): rows, not objects, for
    lists that render their documents straight from the columns they need."""
    return await _fetch(session, model, query, page, entities=False)


async def _fetch(
    session: AsyncSession,
    model: type[ResourceMixin],
    query: Select[Any],
    page: PageRequest,
    *,
    entities: bool,
) -> Page[Any]:
    if page.after is not None and not isinstance(page.after, str):
        raise BadRequest("invalid continue token for this list")
    query = query.where(selector_clause(model.labels, page.selector))
    keyset = query.where(model.name > page.after) if page.after is not None else query
    result = await session.execute(keyset.order_by(model.name).limit(page.limit + 1))
    rows: list[Any] = list(result.scalars().all() if entities else result.all())
    if len(rows) <= page.limit:
        return Page(rows, None, None)
    rows = rows[: page.limit]
    last = rows[-1].name
    remaining_query = select(func.count()).select_from(
        query.where(model.name > last).order_by(None).subquery()
    )
    remaining = int(await session.scalar(remaining_query) or 0)
    return Page(rows, encode_token(last, page.fingerprint), remaining)
