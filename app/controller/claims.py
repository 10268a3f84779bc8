"""Claiming per-object work across controller replicas, as dstack's background pipelines do.

Rows are claimed with a lease (`lock_token`, `lock_expires_at`) under
`SELECT … FOR UPDATE SKIP LOCKED`, so replicas never take the same row; the slow part
(Kubernetes calls) runs outside any transaction; results are written back only while the lease
is still held (`WHERE id = … AND lock_token = …`). A replica that died leaves leases that expire.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    bindparam,
    column,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

# How often a claim loop counts the rows due for its queue-depth gauges: a count reads the
# whole table, the claim itself only what it takes.
QUEUE_GAUGE_SECONDS = 5.0


async def claim(
    session: AsyncSession,
    model: Any,
    *,
    ready: ColumnElement[bool],
    order_by: Any,
    limit: int,
    lease_seconds: float,
) -> tuple[uuid.UUID, list[int]]:
    """Claim up to `limit` rows matching `ready` whose lease is free; returns (token, ids)."""
    token = uuid.uuid4()
    free = or_(model.lock_expires_at.is_(None), model.lock_expires_at < func.now())
    candidates = (
        select(model.id)
        .where(ready, free)
        .order_by(order_by)
        .limit(limit)
        # NO KEY UPDATE, the lock the UPDATE takes: rows locked only by inserts that refer to
        # them (foreign keys take KEY SHARE) are claimed, not skipped.
        .with_for_update(skip_locked=True, key_share=True)
    )
    result = await session.execute(
        update(model)
        .where(model.id.in_(candidates.scalar_subquery()))
        .values(lock_token=token, lock_expires_at=func.now() + timedelta(seconds=lease_seconds))
        .returning(model.id)
    )
    return token, [int(row_id) for row_id in result.scalars().all()]


def held(model: Any, row_id: int, token: uuid.UUID) -> ColumnElement[bool]:
    """The WHERE clause of a write-back: the row, and only while our lease holds."""
    clause: ColumnElement[bool] = (model.id == row_id) & (model.lock_token == token)
    return clause


async def release(session: AsyncSession, model: Any, token: uuid.UUID) -> None:
    await session.execute(
        update(model).where(model.lock_token == token).values(lock_token=None, lock_expires_at=None)
    )


# The column type of timestamps in unnest_rows: PostgreSQL's timestamptz.
TIMESTAMP = DateTime(timezone=True)


def unnest_rows(name: str, columns: dict[str, Any]) -> Any:
    """Rows of a batch of write-backs as a FROM item: one array parameter per column
    (`all_<column>`), so the statement's text (and its prepared statement) is the same whatever
    the batch size."""
    arrays = [bindparam(f"all_{key}", type_=ARRAY(kind)) for key, kind in columns.items()]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(key, kind) for key, kind in columns.items()))
        .render_derived(name=name)
    )


def row_arrays(rows: list[dict[str, Any]], json_columns: Collection[str]) -> dict[str, list[Any]]:
    """A batch's rows as the parameters of unnest_rows: one array per column, the JSON columns
    as text (the statement casts them)."""
    arrays: dict[str, list[Any]] = {f"all_{key}": [] for key in rows[0]}
    for row in rows:
        for key, value in row.items():
            if key in json_columns:
                value = json.dumps(value, separators=(",", ":"))
            arrays[f"all_{key}"].append(value)
    return arrays
