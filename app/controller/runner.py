"""The controller process: elects a leader, probes clusters and dispatches deployments (any
replica, by claiming work), and runs housekeeping (leader only, fenced)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.config import Settings
from app.controller.dispatch import Dispatcher
from app.controller.kube import keepalive_for
from app.controller.kube_clients import KubeClients
from app.controller.leader import Fenced, LeaderElector
from app.controller.prober import ClusterProber
from app.controller.wakeup import Wakeups
from app.crypto import SecretBox
from app.events.service import purge_expired
from app.kit.idempotency import purge_expired_keys
from app.models.auth import TokenFamily
from app.models.deployments import DISPATCH_CHANNEL
from app.redis import RedisGateway

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
SWEEP_SECONDS = 5.0  # dispatch looks for due work at least this often, wake-ups or not
HOUSEKEEPING_SECONDS = 300.0
SHUTDOWN_DEADLINE = 20.0


class Controller:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: RedisGateway,
        cache: ObjectCache,
        secrets: SecretBox,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.elector = LeaderElector(
            "controller",
            redis,
            sessionmaker,
            lease_duration=settings.leader_elect_lease_duration,
            renew_deadline=settings.leader_elect_renew_deadline,
            retry_period=settings.leader_elect_retry_period,
        )
        self.clients = KubeClients(
            secrets,
            allow_private=bool(settings.allow_private_cluster_endpoints),
            keepalive_seconds=keepalive_for(settings.cluster_probe_interval),
            agent_proxy_url=settings.agent_proxy_url or settings.public_url,
        )
        self.prober = ClusterProber(
            sessionmaker,
            self.clients,
            cache,
            interval=settings.cluster_probe_interval,
            unreachable_after=settings.cluster_unreachable_after,
        )
        self.dispatcher = Dispatcher(
            sessionmaker,
            self.clients,
            secrets=secrets,
            redis=redis,
            cache=cache,
            chart_repository=f"{settings.public_url.rstrip('/')}/chartrepo",
            allow_private=bool(settings.allow_private_cluster_endpoints),
            allow_insecure=settings.allow_insecure_cluster_endpoints,
            drift_interval=settings.drift_check_interval,
            status_interval=settings.dispatch_status_interval,
            retry_max=settings.dispatch_retry_max,
            concurrency=settings.dispatch_concurrency,
            per_cluster=settings.dispatch_per_cluster,
            lease_seconds=settings.dispatch_lease_duration,
            # Half the pool's steady connections: the claims, the write-backs, the lease
            # renewals, the prober and the wake-up listener keep the rest. (10 at once, tried
            # with a pool of 20, doubled the API's POST p99 in the benchmark's quick pass.)
            fold_concurrency=max(1, settings.database_pool_size // 2),
        )
        self.wake = asyncio.Event()
        self.dispatcher.on_done.append(self.wake.set)  # a free slot: claim more
        engine: AsyncEngine = sessionmaker.kw["bind"]
        self.wakeups = Wakeups(engine, DISPATCH_CHANNEL, self.wake)
        self._last_housekeeping = 0.0

    async def housekeeping(self) -> None:
        """Leader-only clean-up: expired idempotency keys, login sessions and events."""
        async with self.sessionmaker.begin() as session:
            await self.elector.fence(session)
            keys = await purge_expired_keys(session)
            sessions = await session.execute(
                delete(TokenFamily).where(TokenFamily.expires_at < func.now())
            )
            events = await purge_expired(session, timedelta(seconds=self.settings.event_retention))
        logger.info(
            "housekeeping: %d idempotency keys, %d login sessions, %d events purged",
            keys,
            getattr(sessions, "rowcount", 0),
            events,
        )

    async def _probe_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await self.prober.run_once() > 0
                now = time.monotonic()
                if self.elector.is_leader and now - self._last_housekeeping > HOUSEKEEPING_SECONDS:
                    self._last_housekeeping = now
                    await self.housekeeping()
            except Fenced as exc:
                logger.warning("leader-only work refused: %s", exc)
            except Exception:
                logger.warning("probe round failed; retrying", exc_info=True)
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_SECONDS)

    async def _dispatch_loop(self, stop: asyncio.Event) -> None:
        """Claims due targets whenever woken (a write, a finished task) and on a sweep."""
        while not stop.is_set():
            self.wake.clear()
            try:
                started = await self.dispatcher.run_once()
            except Exception:
                logger.warning("dispatch round failed; retrying", exc_info=True)
                started = 0
            if started:
                continue  # there may be more due than one claim took
            due_in = self.dispatcher.next_due_in
            sleep = SWEEP_SECONDS if due_in is None else min(SWEEP_SECONDS, max(0.05, due_in))
            waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self.wake.wait())}
            await asyncio.wait(waiters, timeout=sleep, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then finish in-flight work (bounded) and let go."""
        if self.settings.leader_elect:
            election = asyncio.create_task(self.elector.run(stop))
        else:
            # A single controller leads without an election; the epoch still fences.
            election = None
            while not stop.is_set() and not self.elector.is_leader:
                try:
                    await self.elector.lead_alone()
                except Exception:
                    logger.warning("cannot record the leader epoch yet; retrying")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), TICK_SECONDS)
        loops = [
            asyncio.create_task(self._probe_loop(stop)),
            asyncio.create_task(self._dispatch_loop(stop)),
            asyncio.create_task(self.wakeups.run(stop)),
        ]
        await stop.wait()
        try:
            await asyncio.wait_for(asyncio.gather(*loops), SHUTDOWN_DEADLINE)
        except TimeoutError:
            logger.warning("in-flight probes did not finish within %ss", SHUTDOWN_DEADLINE)
        await self.dispatcher.drain(SHUTDOWN_DEADLINE)
        if election is not None:
            await election
        else:
            await self.elector.release()
        await self.clients.close()
