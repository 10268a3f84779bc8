"""Claiming target rows, keeping their leases, running a pass for each, draining on stop.

Rows are claimed with a lease (app.controller.claims) so any number of controller replicas
share the fleet and never work on the same row at once; each claimed row runs as its own task,
bounded overall and per cluster, so a slow or dead cluster holds up only its own rows. The
context of every claimed row is read with the claim (one transaction); the pass itself is the
reconciler's, its result the write-back's, the rollout's phase the folder's."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.controller.claims import QUEUE_GAUGE_SECONDS, claim
from app.controller.dispatch.context import Context, load_contexts
from app.controller.dispatch.decisions import Timing
from app.controller.dispatch.folding import Coalesced, PhaseFolder
from app.controller.dispatch.kinds import KindSettings, rollout_kinds
from app.controller.dispatch.metrics import DUE, INFLIGHT
from app.controller.dispatch.reconciler import Reconciler
from app.controller.dispatch.writeback import WriteBack
from app.controller.kube_clients import KubeClients
from app.crypto import SecretBox
from app.models.deployments import RolloutTarget
from app.redis import RedisGateway

logger = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clients: KubeClients,
        *,
        secrets: SecretBox,
        redis: RedisGateway,
        cache: ObjectCache,
        chart_repository: str,
        allow_private: bool,
        allow_insecure: bool,
        drift_interval: float,
        status_interval: float,
        retry_max: float,
        concurrency: int,
        per_cluster: int,
        lease_seconds: float = 120.0,
        fold_concurrency: int = 4,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._concurrency = concurrency
        self._per_cluster = per_cluster
        self._lease = lease_seconds
        kinds = rollout_kinds(
            KindSettings(secrets, chart_repository, allow_private, allow_insecure)
        )
        self._reconciler = Reconciler(
            clients, kinds, Timing(drift_interval, status_interval, retry_max)
        )
        folder = PhaseFolder(sessionmaker, redis, cache, kinds)
        self._folds = Coalesced(folder.fold, "folding the phase of rollout", fold_concurrency)
        self._writeback = WriteBack(sessionmaker, redis, kinds, self._folds.request)
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._leases: dict[int, uuid.UUID] = {}  # the claim token of each row in flight
        self._none_in_flight = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._slots: dict[int, asyncio.Semaphore] = {}
        # Callbacks when a task ends (the runner claims more).
        self.on_done: list[Callable[[], None]] = []
        self.next_due_in: float | None = None  # seconds until the next unclaimed row is due
        self._due_counted_at = -QUEUE_GAUGE_SECONDS

    async def run_once(self) -> int:
        """Claim due targets up to the free capacity and start a task for each."""
        capacity = self._concurrency - len(self._inflight)
        # While busy, claim a quarter of the slots at a time rather than one slot per finished
        # target: every claim is a transaction of its own, as costly as a target's load.
        if capacity <= 0 or (self._inflight and capacity < max(1, self._concurrency // 4)):
            return 0
        due = RolloutTarget.next_attempt_at <= func.now()
        # Not the rows whose passes are still finishing here: a write-back frees its row before
        # the pass's task has ended, and a nudge can make the row due at once. Claimed again,
        # such a row would hold a lease with no pass working under it until the lease ran out.
        finishing = list(self._inflight)
        ready = due & RolloutTarget.id.not_in(finishing) if finishing else due
        async with self._sessionmaker.begin() as session:
            if time.monotonic() - self._due_counted_at > QUEUE_GAUGE_SECONDS:
                self._due_counted_at = time.monotonic()
                DUE.set(float(await session.scalar(select(func.count()).where(due)) or 0))
            token, ids = await claim(
                session,
                RolloutTarget,
                ready=ready,
                order_by=RolloutTarget.next_attempt_at,
                limit=capacity,
                lease_seconds=self._lease,
            )
            # When the next row falls due, so the runner sleeps no longer than that.
            due_in = await session.scalar(
                select(
                    func.extract("epoch", func.min(RolloutTarget.next_attempt_at) - func.now())
                ).where(RolloutTarget.lock_token.is_(None))
            )
            self.next_due_in = None if due_in is None else float(due_in)
            # What each pass works from, read with the claim: no round trips of its own.
            contexts = await load_contexts(session, ids)
        for context in contexts:
            row_id = context.target.id
            task = asyncio.create_task(self._process(context, token))
            self._inflight[row_id] = task
            self._leases[row_id] = token
            task.add_done_callback(functools.partial(self._finished, row_id))
        if self._leases and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases())
        INFLIGHT.set(len(self._inflight))
        return len(ids)

    def _finished(self, row_id: int, task: asyncio.Task[None]) -> None:
        if self._inflight.get(row_id) is task:
            del self._inflight[row_id]
            del self._leases[row_id]
            if not self._leases:
                self._none_in_flight.set()
        INFLIGHT.set(len(self._inflight))
        for callback in self.on_done:
            callback()

    async def drain(self, deadline: float) -> None:
        """Let in-flight targets finish (bounded); what is cut off is redone after its lease."""
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._renewer is not None:  # ends by itself once nothing is in flight
            await self._renewer
        await self._writeback.close()  # the results of passes cut off are written, or dropped
        await self._folds.close()

    async def _process(self, context: Context, token: uuid.UUID) -> None:
        row_id = context.target.id
        try:
            slot = self._slots.setdefault(context.cluster.id, asyncio.Semaphore(self._per_cluster))
            async with slot:
                outcome = await self._reconciler.reconcile(context)
            await self._writeback.write(row_id, token, context, outcome)
        except Exception:
            # Most likely the database went away: the lease expires and the pass is redone.
            logger.warning("dispatch of target %d failed; will retry", row_id, exc_info=True)

    async def _renew_leases(self) -> None:
        """Renew the leases of the rows in flight every third of a lease, all in one
        statement, for as long as any are in flight: however slow an edge, a lease that ran
        out would let another replica start the same work."""
        try:
            while self._leases:
                self._none_in_flight.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._none_in_flight.wait(), self._lease / 3)
                leases = list(self._leases.items())
                if not leases:
                    return
                try:
                    async with self._sessionmaker.begin() as session:
                        await session.execute(
                            update(RolloutTarget)
                            .where(tuple_(RolloutTarget.id, RolloutTarget.lock_token).in_(leases))
                            .values(lock_expires_at=func.now() + timedelta(seconds=self._lease))
                            .execution_options(synchronize_session=False)
                        )
                except Exception:
                    logger.warning("could not renew the leases of %d targets", len(leases))
        finally:
            self._renewer = None
