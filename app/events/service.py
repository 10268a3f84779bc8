"""Events: recorded in PostgreSQL (the truth, ordered), announced through Redis pub/sub (so a
watcher on any API replica wakes up), read back by id.

Ordering: an event's id is given at commit (a deferred trigger, see the migration
"events numbered at commit") under a per-workspace lock held until the commit ends, so ids
become visible in increasing order within a workspace — a watcher that has seen id N and reads
`id > N` later misses nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.deployments import Event
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

logger = logging.getLogger(__name__)

CHANNEL = redis_key("events", tag="events")


@dataclass(frozen=True)
class NewEvent:
    object_kind: str
    object_name: str
    reason: str
    message: str
    type: str = "Normal"
    cluster: str | None = None
    phase: str | None = None
    rollout_id: int | None = None


async def record(session: AsyncSession, workspace_id: int, events: Sequence[NewEvent]) -> None:
    """Add events to the transaction (numbered when it commits). Announce them with
    `announce` after the commit."""
    if not events:
        return
    # One INSERT of the rows, not ORM objects: nothing reads an event back in the transaction
    # that records it, so the unit of work's objects and RETURNING would be work for nothing.
    await session.execute(
        _INSERT_EVENTS,
        [
            {
                "workspace_id": workspace_id,
                "rollout_id": e.rollout_id,
                "object_kind": e.object_kind,
                "object_name": e.object_name,
                "type": e.type,
                "reason": e.reason,
                "cluster": e.cluster,
                "phase": e.phase,
                "message": e.message[:2048],
            }
            for e in events
        ],
    )


_INSERT_EVENTS = insert(Event.metadata.tables[Event.__tablename__])


async def announce(redis: RedisGateway, workspace_id: int) -> None:
    """Wake the watchers of a workspace on every API replica. Best effort: watchers also poll."""

    async def publish(client: RedisClient) -> Any:
        return await client.publish(CHANNEL, str(workspace_id))

    try:
        await redis.run(publish)
    except RedisUnavailable:
        logger.info("events of workspace %d not announced: Redis is unavailable", workspace_id)


def as_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.object_kind,
        "name": event.object_name,
        "type": event.type,
        "reason": event.reason,
        "cluster": event.cluster,
        "phase": event.phase,
        "message": event.message,
        "timestamp": event.created_at.isoformat(),
    }


def sse(event: Event) -> str:
    """One Server-Sent Events message (the id resumes a stream through Last-Event-ID)."""
    return f"id: {event.id}\nevent: {event.reason}\ndata: {json.dumps(as_json(event))}\n\n"


async def read_after(
    session: AsyncSession,
    workspace_id: int,
    after: int,
    *,
    limit: int,
    where: ColumnElement[bool] | None = None,
) -> list[Event]:
    query = (
        select(Event)
        .where(Event.workspace_id == workspace_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    if where is not None:
        query = query.where(where)
    return list((await session.scalars(query)).all())


async def newest_id(session: AsyncSession, workspace_id: int) -> int:
    found = await session.scalar(
        select(func.max(Event.id)).where(Event.workspace_id == workspace_id)
    )
    return int(found or 0)


async def purge_expired(session: AsyncSession, retention: timedelta) -> int:
    result = await session.execute(delete(Event).where(Event.created_at < func.now() - retention))
    return int(getattr(result, "rowcount", 0) or 0)
