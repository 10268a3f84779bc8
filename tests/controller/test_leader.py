"""Leader election through Redis and fencing through PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.controller.leader import Fenced, LeaderElector
from app.db.engine import create_engine, create_sessionmaker
from app.redis import RedisGateway


@pytest.fixture
async def parts(
    standalone_settings: Settings,
) -> AsyncIterator[tuple[RedisGateway, async_sessionmaker[AsyncSession]]]:
    from tests.support.platform import flush_redis

    await flush_redis(standalone_settings)
    engine = create_engine(standalone_settings)
    redis = RedisGateway(url=standalone_settings.redis_url)
    yield redis, create_sessionmaker(engine)
    await redis.close()
    await engine.dispose()


def elector(
    parts: tuple[RedisGateway, async_sessionmaker[AsyncSession]], who: str
) -> LeaderElector:
    redis, sessionmaker = parts
    return LeaderElector(
        "controller", redis, sessionmaker,
        lease_duration=1.0, renew_deadline=0.7, retry_period=0.2, identity=who,
    )  # fmt: skip


async def test_exactly_one_leads_and_a_standby_takes_over(
    parts: tuple[RedisGateway, async_sessionmaker[AsyncSession]],
) -> None:
    a, b = elector(parts, "a"), elector(parts, "b")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop_a)), asyncio.create_task(b.run(stop_b))]
    await asyncio.sleep(1.0)
    assert [a.is_leader, b.is_leader].count(True) == 1
    leader, standby, stop = (a, b, stop_a) if a.is_leader else (b, a, stop_b)
    first_epoch = leader.epoch
    stop.set()  # a clean stop releases the lease: the standby leads at once
    await asyncio.sleep(0.6)
    assert standby.is_leader
    assert standby.epoch is not None
    assert first_epoch is not None
    assert standby.epoch > first_epoch
    stop_a.set()
    stop_b.set()
    await asyncio.gather(*tasks)


async def test_a_paused_leader_cannot_write_after_a_successor(
    parts: tuple[RedisGateway, async_sessionmaker[AsyncSession]],
) -> None:
    _, sessionmaker = parts
    old, new = elector(parts, "old"), elector(parts, "new")
    await old.tick()
    assert old.is_leader
    async with sessionmaker.begin() as session:
        await old.fence(session)  # a leader-only write goes through

    # `old` freezes (no renewals) past its lease; `new` takes over.
    await asyncio.sleep(1.2)
    await new.tick()
    assert new.is_leader
    assert old.is_leader  # it has not noticed: it was paused

    with pytest.raises(Fenced):
        async with sessionmaker.begin() as session:
            await old.fence(session)
    assert not old.is_leader  # and it knows now
    async with sessionmaker.begin() as session:
        await new.fence(session)


async def test_a_leader_that_cannot_renew_steps_down(
    parts: tuple[RedisGateway, async_sessionmaker[AsyncSession]],
) -> None:
    redis, _ = parts
    leader = elector(parts, "solo")
    await leader.tick()
    assert leader.is_leader
    # Someone else's lease now sits in the key (ours expired while we were away).
    await redis.run(lambda c: c.set(leader._key, "intruder", px=5000))
    await leader.tick()
    assert not leader.is_leader
