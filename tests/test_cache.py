"""The Region read cache stays coherent across API replicas, in both Redis modes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from app.cache import ObjectCache
from app.config import Settings
from app.redis import key
from tests.support.platform import authenticated, running_app
from tests.support.regions import API, region


async def test_read_after_update_on_another_replica_is_fresh(settings: Settings) -> None:
    async with running_app(settings) as (_, replica_a), running_app(settings) as (_, replica_b):
        await authenticated(replica_a)
        await authenticated(replica_b)
        await replica_a.post(API, json=region("east-china", displayName="v1"))
        assert (await replica_a.get(f"{API}/east-china")).json()["spec"]["displayName"] == "v1"

        await replica_b.put(f"{API}/east-china", json=region("east-china", displayName="v2"))
        assert (await replica_a.get(f"{API}/east-china")).json()["spec"]["displayName"] == "v2"

        await replica_b.delete(f"{API}/east-china")
        assert (await replica_a.get(f"{API}/east-china")).status_code == 404


async def test_reads_are_served_from_redis(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = app_client
    await client.post(API, json=region("east-china"))
    await client.get(f"{API}/east-china")
    gateway = app.state.redis
    cache_key = key("regions/east-china", tag="regions/east-china")
    raw = await gateway.run(lambda c: c.get(cache_key))
    assert raw is not None
    assert b'"name":"east-china"' in raw


async def test_an_older_copy_never_replaces_a_newer_one(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A reader that loaded a row before an update must not put it back after the update."""
    app, client = app_client
    cache: ObjectCache = app.state.cache
    v1 = (await client.post(API, json=region("east-china", displayName="v1"))).json()
    v2 = (await client.put(f"{API}/east-china", json=region("east-china", displayName="v2"))).json()
    cache_key = key("regions/east-china", tag="regions/east-china")
    await cache.put(cache_key, int(v1["metadata"]["resourceVersion"]), v1)  # the slow reader
    assert (await client.get(f"{API}/east-china")).json()["spec"]["displayName"] == "v2"
    assert (await cache.get(cache_key)) == v2

    deleted = await client.delete(f"{API}/east-china")
    assert deleted.status_code == 200
    await cache.put(cache_key, int(v2["metadata"]["resourceVersion"]), v2)
    assert (await client.get(f"{API}/east-china")).status_code == 404


async def test_many_objects_are_cached_at_once_and_never_over_a_newer_copy(
    settings: Settings,
) -> None:
    """put_many (the agents' heartbeats publish hundreds of clusters at once): keys in many
    slots (several nodes of a cluster), each stored as put stores it."""
    async with running_app(settings) as (app, _):
        cache: ObjectCache = app.state.cache
        keys = [key(f"clusters/c{i}", tag=f"clusters/c{i}") for i in range(50)]
        await cache.put(keys[0], 10, {"seen": "newer"})
        await cache.put_many([(k, 5, {"seen": i}) for i, k in enumerate(keys)])
        assert await cache.get(keys[0]) == {"seen": "newer"}
        assert [await cache.get(k) for k in keys[1:]] == [{"seen": i} for i in range(1, 50)]
