"""Writes of several target rows at once, in one place, because of one rule: rows are locked in
id order before they are written. Every transaction that locks more than one target row (the
API's revisions and deletions, the controller's write-backs and nudges) takes them in the same
order, so no two of them can each hold a row the other waits for (no deadlocks).

An UPDATE or a SELECT … FOR UPDATE over a join locks rows in whatever order its plan reads
them: hence the explicit ordered lock first, then the write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.deployments import DISPATCH_CHANNEL, RolloutTarget


async def lock(session: AsyncSession, where: ColumnElement[bool]) -> list[RolloutTarget]:
    """The target rows matching `where`, locked (FOR UPDATE) in id order."""
    rows = await session.scalars(
        select(RolloutTarget).where(where).order_by(RolloutTarget.id).with_for_update()
    )
    return list(rows.all())


async def lock_ids(session: AsyncSession, ids: Sequence[int]) -> None:
    """Lock the target rows `ids` (FOR UPDATE) in id order, loading nothing."""
    await session.execute(
        select(RolloutTarget.id)
        .where(RolloutTarget.id.in_(ids))
        .order_by(RolloutTarget.id)
        .with_for_update()
    )


async def nudge(session: AsyncSession, where: ColumnElement[bool]) -> None:
    """Make the targets matching `where` due now, not after their backoff (their rollout was
    unpaused, their cluster came back), and wake the controllers."""
    locked: Any = select(RolloutTarget.id).where(where).order_by(RolloutTarget.id).with_for_update()
    await session.execute(
        update(RolloutTarget)
        .where(RolloutTarget.id.in_(locked.scalar_subquery()))
        .values(next_attempt_at=func.now(), attempts=0)
    )
    await notify_dispatch(session)


async def notify_dispatch(session: AsyncSession) -> None:
    """Wake the controllers; PostgreSQL delivers it when (and only if) the transaction commits."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": DISPATCH_CHANNEL})
