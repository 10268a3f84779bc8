"""Every write of several target rows at once, in one place, because of one rule: rows are
locked in id order before they are written. Every transaction that locks more than one target
row (the API's revisions and deletions, the controller's write-backs and nudges) takes them in
the same order, so no two of them can each hold a row the other waits for (no deadlocks).

An UPDATE or a SELECT … FOR UPDATE over a join locks rows in whatever order its plan reads
them: hence the explicit ordered lock first, then the write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.deployments.resolution import Resolved
from app.models.deployments import DISPATCH_CHANNEL, Rollout, RolloutTarget


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


_NOTIFY_DISPATCH = text("SELECT pg_notify(:channel, '')").bindparams(channel=DISPATCH_CHANNEL)


async def notify_dispatch(session: AsyncSession) -> None:
    """Wake the controllers; PostgreSQL delivers it when (and only if) the transaction commits."""
    await session.execute(_NOTIFY_DISPATCH)


async def point_at_revision(
    session: AsyncSession, row: Rollout, resolved: Sequence[Resolved], *, new: bool
) -> None:
    """Point every resolved cluster at the rollout's (new) revision; clusters no longer
    targeted are marked for removal (the controller deletes their objects, then the row). A
    rollout just inserted (`new`) has no targets yet: nothing to read or lock."""
    now = datetime.now(UTC)
    existing = (
        {}
        if new
        else {t.cluster_id: t for t in await lock(session, RolloutTarget.rollout_id == row.id)}
    )
    for target_of in resolved:
        target = existing.pop(target_of.cluster_id, None)
        if target is None:
            target = RolloutTarget(
                rollout_id=row.id, cluster_id=target_of.cluster_id, phase="Pending"
            )
            session.add(target)
        elif target.removing:
            target.phase = "Pending"
            target.last_transition_time = now
        target.region = target_of.region
        target.node_group = target_of.node_group
        target.replicas = target_of.replicas
        target.values = target_of.values
        if target.desired_revision != row.revision and not target.removing:
            target.phase = "Pending"  # Ready at the old revision is not Ready at this one
            target.last_transition_time = now
        target.desired_revision = row.revision
        target.removing = False
        target.failed_revision = None
        target.attempts = 0
        target.next_attempt_at = now
    for target in existing.values():
        mark_removing(target, now)
    await notify_dispatch(session)


def mark_removing(target: RolloutTarget, now: datetime) -> None:
    """The target's objects are to be deleted from its cluster (a locked row)."""
    target.removing = True
    target.phase = "Deleting"
    target.message = None
    target.last_transition_time = now
    target.attempts = 0
    target.next_attempt_at = now
