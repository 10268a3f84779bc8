"""A rollout's phase, folded from its targets' committed rows after their write-backs, in the
background and coalesced: a thousand targets finishing together cost a few folds of their
rollout. A rollout being deleted whose last target is gone is deleted here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.clusters.schemas import cluster_cache_key
from app.controller.dispatch.kinds import RolloutKind
from app.deployments.status import TargetCounts, fold_phase
from app.events.service import NewEvent, announce, record
from app.models.deployments import Rollout, RolloutTarget
from app.redis import RedisGateway

logger = logging.getLogger(__name__)


class Coalesced:
    """Runs `job(key)` after each `request(key)`, in the background and never twice at once
    for a key: the requests made while it runs are served by one more run after it."""

    def __init__(self, job: Callable[[int], Awaitable[None]], what: str, concurrency: int) -> None:
        self._job = job
        self._what = what  # for the log
        # Runs of different keys at once. Each holds a database connection while it runs:
        # unbounded, many rollouts finishing together could take the whole pool and leave the
        # claims and write-backs failing with "QueuePool limit reached".
        self._running = asyncio.Semaphore(concurrency)
        self._again: set[int] = set()  # keys asked for again while their run was going
        self._runners: dict[int, asyncio.Task[None]] = {}

    def request(self, key: int) -> None:
        if key in self._runners:
            self._again.add(key)
        else:
            self._runners[key] = asyncio.create_task(self._run(key))

    async def _run(self, key: int) -> None:
        try:
            while True:
                async with self._running:
                    self._again.discard(key)
                    try:
                        await self._job(key)
                    except Exception:
                        logger.warning("%s %d failed", self._what, key, exc_info=True)
                if key not in self._again:
                    return
        finally:
            del self._runners[key]

    async def close(self) -> None:
        """Let the runs already asked for end (the controller stops)."""
        await asyncio.gather(*self._runners.values())


class PhaseFolder:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: RedisGateway,
        cache: ObjectCache,
        kinds: dict[str, RolloutKind],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._cache = cache
        self._kinds = kinds

    async def fold(self, rollout_id: int) -> None:
        """Fold the rollout's phase from its targets' committed rows, under the rollout's row
        lock: folds of other replicas queue behind it, so the last one sees every result."""
        async with self._sessionmaker.begin() as session:
            rollout = await session.scalar(
                select(Rollout).where(Rollout.id == rollout_id).with_for_update(key_share=True)
            )
            if rollout is None:  # deleted meanwhile (orphaned)
                return
            events, forgotten = await self._fold(session, rollout)
            await record(session, rollout.workspace_id, events)
        if events:
            await announce(self._redis, rollout.workspace_id)
        if forgotten is not None:  # a vcluster's Cluster is gone: not from the cache either
            await self._cache.forget(cluster_cache_key(forgotten[0]), forgotten[1])

    async def _fold(
        self, session: AsyncSession, rollout: Rollout
    ) -> tuple[list[NewEvent], tuple[str, int] | None]:
        """Fold the targets into the rollout's phase; an event when it changes. A rollout
        being deleted whose last target is gone is deleted (its revisions with it)."""
        counts = await _count_targets(session, rollout)
        if rollout.deletion_timestamp is not None and not counts.total:
            forgotten = await self._kinds[rollout.kind].after_delete(session, rollout)
            await session.execute(delete(Rollout).where(Rollout.id == rollout.id))
            message = "removed from every cluster; the record is gone"
            return [
                NewEvent(rollout.kind, rollout.name, "Deleted", message, rollout_id=rollout.id)
            ], forgotten
        phase = fold_phase(rollout, counts)
        if phase == rollout.phase:
            return [], None
        before, rollout.phase = rollout.phase, phase
        return [
            NewEvent(
                rollout.kind,
                rollout.name,
                "PhaseChanged",
                f"{before} → {phase}: {counts.message(rollout.revision)}",
                "Warning" if phase in ("Failed", "Degraded") else "Normal",
                phase=phase,
                rollout_id=rollout.id,
            )
        ], None


async def _count_targets(session: AsyncSession, rollout: Rollout) -> TargetCounts:
    """The counts the phase folds from, in one aggregate (no target rows loaded)."""
    t = RolloutTarget
    active = t.removing.is_(False)
    settled = t.phase.in_(("Failed", "Unreachable")) | (
        (t.phase == "Ready") & (t.applied_revision == t.desired_revision)
    )

    def count(where: Any) -> Any:
        return func.count().filter(where)

    row = (
        await session.execute(
            select(
                func.count(),
                count(active),
                count(active & (t.phase == "Ready") & (t.applied_revision == rollout.revision)),
                count(active & (t.phase == "Failed")),
                count(active & (t.phase == "Unreachable")),
                count(active & ~func.coalesce(settled, False)),
            ).where(t.rollout_id == rollout.id)
        )
    ).one()
    return TargetCounts(*(int(v) for v in row))
