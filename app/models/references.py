"""The one check other kinds make before they are deleted: no deployment may still use them."""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict
from app.models.deployments import Rollout, RolloutTarget


async def refuse_if_used(
    session: AsyncSession, what: str, where: ColumnElement[bool], *, via_targets: bool = False
) -> None:
    """409 naming the rollouts (up to 20) that match `where`; `via_targets` joins their
    per-cluster targets (to ask about clusters)."""
    query = select(Rollout.kind, Rollout.name).distinct()
    if via_targets:
        query = query.join(RolloutTarget, RolloutTarget.rollout_id == Rollout.id)
    found = (
        await session.execute(query.where(where).order_by(Rollout.kind, Rollout.name).limit(20))
    ).all()
    if found:
        users = ", ".join(f"{kind} {name}" for kind, name in found)
        raise Conflict(f"{what} is still used by: {users}", code="InUse")
