"""Leader election through Redis, with a fencing epoch kept in PostgreSQL.

The lease is a Redis key holding this process's identity (SET NX PX), renewed every retry
period; a leader that cannot renew within the renew deadline steps down. Each new leader bumps
the epoch row in PostgreSQL, and every leader-only write checks, in its own transaction, that
the epoch is still its own: a leader paused past its lease (GC, VM freeze) cannot write once a
successor exists, even if it still believes it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.controller import LeaderEpoch
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

logger = logging.getLogger(__name__)

IS_LEADER = Gauge("edge_controller_is_leader", "1 while this controller process leads.")
EPOCH = Gauge("edge_controller_leader_epoch", "Fencing epoch of this process's leadership.")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Fenced(Exception):
    """A leader-only write was refused: a newer leader exists."""


def process_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaderElector:
    def __init__(
        self,
        name: str,
        redis: RedisGateway,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        identity: str | None = None,
    ) -> None:
        self.name = name
        self.identity = identity or process_identity()
        self._redis = redis
        self._sessionmaker = sessionmaker
        self._lease_ms = int(lease_duration * 1000)
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._key = redis_key("leader", name, tag=f"leader:{name}")
        self._renewed_at = 0.0
        self.epoch: int | None = None

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

    async def _try_acquire(self) -> bool:
        async def acquire(client: RedisClient) -> Any:
            return await client.set(self._key, self.identity, nx=True, px=self._lease_ms)

        return bool(await self._redis.run(acquire))

    async def _renew(self) -> bool:
        async def renew(client: RedisClient) -> Any:
            return await client.eval(_RENEW, 1, self._key, self.identity, str(self._lease_ms))

        return bool(await self._redis.run(renew))

    async def bump_epoch(self) -> int:
        async with self._sessionmaker.begin() as session:
            epoch = await session.scalar(
                insert(LeaderEpoch)
                .values(name=self.name, epoch=1, holder=self.identity)
                .on_conflict_do_update(
                    index_elements=["name"],
                    set_={"epoch": LeaderEpoch.epoch + 1, "holder": self.identity},
                )
                .returning(LeaderEpoch.epoch)
            )
        return int(epoch or 0)

    async def lead_alone(self) -> None:
        """Lead without an election (one controller runs): a new epoch, which still fences."""
        self.epoch = await self.bump_epoch()
        IS_LEADER.set(1)
        EPOCH.set(self.epoch)

    def _step_down(self, why: str, *, expected: bool = False) -> None:
        if self.epoch is not None:
            if expected:  # a shutdown gives the lease up; nothing for an operator to look at
                logger.info("leadership of %s given up: %s", self.name, why)
            else:
                logger.warning("leadership of %s lost: %s", self.name, why)
        self.epoch = None
        IS_LEADER.set(0)

    async def tick(self) -> None:
        """One round: acquire or renew. Never raises for Redis or database trouble."""
        now = time.monotonic()
        try:
            if self.epoch is None:
                if await self._try_acquire():
                    self.epoch = await self.bump_epoch()
                    self._renewed_at = now
                    IS_LEADER.set(1)
                    EPOCH.set(self.epoch)
                    logger.info("leading %s with epoch %d", self.name, self.epoch)
            elif await self._renew():
                self._renewed_at = now
            else:
                self._step_down("the lease is held by another process")
        except (RedisUnavailable, OSError) as exc:
            if self.epoch is not None and now - self._renewed_at > self._renew_deadline:
                self._step_down(f"could not renew within the deadline: {exc}")
        except Exception as exc:  # the epoch bump failed: the database is down
            logger.warning("leader election round failed: %s", exc)
            if self.epoch is None:
                await self.release()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._retry_period)
        await self.release()

    async def release(self) -> None:
        """Give the lease up at once so a standby takes over without waiting for expiry."""
        self._step_down("released", expected=True)

        async def release(client: RedisClient) -> Any:
            return await client.eval(_RELEASE, 1, self._key, self.identity)

        with contextlib.suppress(RedisUnavailable):
            await self._redis.run(release)

    async def fence(self, session: AsyncSession) -> None:
        """Call inside the transaction of a leader-only write: refuses it unless this process
        still holds the newest epoch (the row stays share-locked until the commit)."""
        if self.epoch is None:
            raise Fenced(f"not the leader of {self.name}")
        current = await session.scalar(
            select(LeaderEpoch.epoch)
            .where(LeaderEpoch.name == self.name)
            .with_for_update(read=True)
        )
        if current != self.epoch:
            self._step_down(f"epoch {self.epoch} superseded by {current}")
            raise Fenced(f"leadership of {self.name} passed to epoch {current}")
