"""The Redis factory detects cluster mode instead of guessing it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.redis import RedisGateway, RedisUnavailable, key
from tests.support.services import RedisProcess


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
