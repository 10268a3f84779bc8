"""The Redis factory detects cluster mode instead of guessing it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from app.redis import RedisGateway, RedisUnavailable, key
from tests.support.services import RedisProcess, start_redis_cluster


async def test_one_cluster_node_in_redis_url_gives_a_cluster_client(
    redis_cluster: list[RedisProcess],
) -> None:
    gateway = RedisGateway(url=redis_cluster[0].url)
    try:
        # Keys in many slots, owned by different nodes: only a cluster client can serve them all.
        for i in range(30):
            await gateway.run(lambda c, i=i: c.set(key(f"k{i}"), str(i)))
        assert gateway.mode == "cluster"
        assert await gateway.run(lambda c: c.get(key("k29"))) == b"29"
    finally:
        await gateway.close()


async def test_redis_addresses_of_a_cluster(redis_cluster: list[RedisProcess]) -> None:
    gateway = RedisGateway(addresses=[n.address for n in redis_cluster])
    try:
        assert (await gateway.check())["status"] == "ok"
        assert gateway.mode == "cluster"
    finally:
        await gateway.close()


async def test_several_standalone_servers_are_refused(
    redis_server: RedisProcess, workdir: Path
) -> None:
    other = RedisProcess(workdir).start()
    gateway = RedisGateway(addresses=[redis_server.address, other.address])
    try:
        with pytest.raises(RedisUnavailable, match="not a Redis Cluster"):
            await gateway.client()
    finally:
        await gateway.close()
        other.stop()


async def test_single_server(redis_server: RedisProcess) -> None:
    gateway = RedisGateway(addresses=[redis_server.address])
    try:
        assert (await gateway.check()) == {"status": "ok", "mode": "standalone"}
    finally:
        await gateway.close()


def test_hash_tags_put_related_keys_in_one_slot() -> None:
    assert key("lock", tag="cluster/a") == "edge:{cluster/a}:lock"
    assert key("regions/x") == "edge:regions/x"


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_a_burst_larger_than_the_connection_pool_waits_its_turn(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """A thousand agents reconnecting at once each write to Redis: redis-py's pool holds 100
    connections and raises past that, which must not be taken for Redis being down (the
    gateway would then skip every Redis write for a while)."""
    if mode == "cluster":
        nodes: list[RedisProcess] = request.getfixturevalue("redis_cluster")
        gateway = RedisGateway(url=nodes[0].url)
    else:
        gateway = RedisGateway(url=request.getfixturevalue("redis_server").url)
    try:
        # All in one slot in a cluster: one node's pool takes the whole burst. Each operation
        # holds its connection 200 ms (a busy event loop reads answers late just the same).
        keys = [key("burst", str(i), tag="burst") for i in range(1000)]
        await asyncio.gather(*(gateway.run(lambda c, k=k: c.blpop([k], 0.2)) for k in keys))
        assert gateway.available
        assert gateway.last_error is None
    finally:
        await gateway.close()


@pytest.mark.parametrize("given_as", ["REDIS_URL", "REDIS_ADDRESSES"])
async def test_a_stopped_server_fails_at_once_and_opens_the_guard(
    given_as: str, workdir: Path
) -> None:
    """Redis down costs a request nothing: the first call to notice fails within the timeout,
    not after redis-py's retries with backoff (a client made from an address retried ten times:
    4 s), and the next ones skip Redis."""
    server = RedisProcess(workdir).start()
    if given_as == "REDIS_URL":
        gateway = RedisGateway(url=server.url, timeout=0.5)
    else:
        gateway = RedisGateway(addresses=[server.address], timeout=0.5)
    try:
        await gateway.run(lambda c: c.set(key("k"), "1"))
        server.kill()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await gateway.run(lambda c: c.get(key("k")))
        assert time.monotonic() - started < 1.0
        assert not gateway.available
    finally:
        await gateway.close()
        server.stop()


@pytest.mark.slow
async def test_a_killed_masters_slot_fails_at_once_and_heals_after_the_failover(
    workdir: Path,
) -> None:
    """Every API request touches Redis (its rate limit) and Redis is only a cache: while a
    master's slots wait for a replica to take over (seconds), a call to them must fail at once
    and open the guard, not keep the request waiting for the failover."""
    nodes = start_redis_cluster(workdir / "failover", replicas=1)
    gateway = RedisGateway(addresses=[n.address for n in nodes])
    try:
        first_master = redis.Redis(port=nodes[0].port)
        names = (key(f"k{i}") for i in range(1000))
        # The first master serves slots 0-5460 (start_redis_cluster splits them evenly).
        name = next(n for n in names if int(first_master.cluster("KEYSLOT", n)) < 5000)
        first_master.close()
        await gateway.run(lambda c: c.set(name, "1"))

        nodes[0].kill()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await gateway.run(lambda c: c.incr(name))
        assert time.monotonic() - started < 1.0
        assert not gateway.available  # the next requests skip Redis instead of waiting

        deadline = time.monotonic() + 30
        while True:  # the replica (nodes[3]) takes the slots over; no restart needed
            await asyncio.sleep(0.5)
            try:
                await gateway.run(lambda c: c.incr(name))
                break
            except RedisUnavailable:
                assert time.monotonic() < deadline, "the slot never came back"
    finally:
        await gateway.close()
        for node in nodes:
            node.stop()
