"""A Redis Cluster master killed under a rollout load (issue #10).

Six real Redis nodes (3 masters, 3 replicas); the master killed (`-9`) is the one holding the
controller's leader lease, and it is also the first address the API knows, so the event
subscription loses its node too. Meanwhile deployments are created and read without pause and
two controllers dispatch them to the guide's five emulated edges. Expected: a replica takes
over the slots; the API keeps answering (Redis is a cache and a wake-up channel, never the only
copy); every acknowledged deployment lands, each object applied once at the edge; exactly one
controller leads again, with a fencing epoch that refuses the other; the event subscription and
`/readyz` heal without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from app.controller.leader import Fenced
from app.controller.runner import Controller
from app.redis import key as redis_key
from tests.support.deployments import (
    BASE,
    NAMESPACE,
    Platform,
    fast_settings,
    register_fleet,
    targets_of,
)
from tests.support.edge import EdgeCluster
from tests.support.platform import authenticated, running_app
from tests.support.services import RedisProcess, start_redis_cluster

pytestmark = pytest.mark.slow

LEASE = {  # short, so a lost lease is taken over within the test's patience
    "leader_elect": True,
    "leader_elect_lease_duration": 3.0,
    "leader_elect_renew_deadline": 2.0,
    "leader_elect_retry_period": 0.5,
}


def rollout(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "applicationVersionRef": "monitoring-stack-v2.0.0",
            "namespace": f"{NAMESPACE}-{name}",
            "targets": [
                {"region": "east-china", "nodeGroupRef": "monitoring-nodes", "replicas": 2},
                {"region": "north-china", "clusters": ["beijing-cluster"], "replicas": 1},
            ],
        },
    }


def master_of(nodes: list[RedisProcess], key: str) -> RedisProcess:
    client = redis.Redis(port=nodes[0].port)
    try:
        slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for address, node in client.execute_command("CLUSTER NODES").items():
            if any(int(first) <= slot <= int(last) for first, last in node["slots"]):
                return next(n for n in nodes if n.address == address)
    finally:
        client.close()
    raise AssertionError(f"no master serves the slot of {key}")


def replica_promoted(replica: RedisProcess) -> bool:
    client = redis.Redis(port=replica.port, socket_timeout=1)
    try:
        role = client.info("replication")["role"]
        return role == "master" and client.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
    except redis.RedisError:
        return False
    finally:
        client.close()


async def test_a_master_killed_under_rollout_load(
    clean_database: str, fleet: dict[str, EdgeCluster], workdir: Path
) -> None:
    nodes = start_redis_cluster(workdir / "failover", replicas=1)
    masters, replicas = nodes[:3], nodes[3:]
    victim = master_of(masters, redis_key("leader", "controller", tag="leader:controller"))
    successor = replicas[masters.index(victim)]
    addresses = [victim.address] + [n.address for n in nodes if n is not victim]
    settings = fast_settings(clean_database, redis_addresses=addresses, **LEASE)
    try:
        async with running_app(settings) as (app, client):
            await authenticated(client)
            await register_fleet(client, fleet)
            platform = Platform(app, client, fleet, settings)
            controllers = [platform.start_controller(), platform.start_controller()]
            try:
                await under_load(platform, controllers, victim, successor)
            finally:
                await platform.stop_controllers()
    finally:
        for node in nodes:
            node.stop()


async def under_load(
    platform: Platform, controllers: list[Controller], victim: RedisProcess, successor: RedisProcess
) -> None:
    app, client, fleet = platform.app, platform.client, platform.fleet
    await until(lambda: any(c.elector.is_leader for c in controllers), "a leader")
    first_epoch = max(c.elector.epoch or 0 for c in controllers)
    assert app.state.redis.mode == "cluster"
    await until(lambda: app.state.events.connected, "the event subscription")

    answers: Counter[int] = Counter()
    slowest = 0.0
    created: list[str] = []
    acknowledged_at: list[float] = []
    stop = asyncio.Event()

    async def call(method: str, path: str, **body: Any) -> int:
        nonlocal slowest
        started = time.monotonic()
        response = await client.request(method, path, **body)
        slowest = max(slowest, time.monotonic() - started)
        answers[response.status_code] += 1
        return response.status_code

    async def write() -> None:
        for i in range(1000):
            if stop.is_set():
                return
            name = f"load-{i:03d}"
            if await call("POST", BASE, json=rollout(name)) == 201:
                created.append(name)
                acknowledged_at.append(time.monotonic())
            await asyncio.sleep(0.1)

    async def read() -> None:
        while not stop.is_set():
            await call("GET", BASE)
            await call("GET", "/api/v1/clusters")
            if created:
                await call("GET", f"{BASE}/{created[-1]}")
            await asyncio.sleep(0.02)

    load = [asyncio.create_task(write()), asyncio.create_task(read())]
    await asyncio.sleep(2)
    victim.kill()
    killed_at = time.monotonic()
    await until(lambda: replica_promoted(successor), "the replica to take over", 30)
    promoted_at = time.monotonic()
    await asyncio.sleep(4)  # load goes on against the healed cluster
    stop.set()
    await asyncio.gather(*load)

    # The API answered throughout: reads that missed the cache went to PostgreSQL.
    statuses = dict(answers)
    assert set(statuses) <= {200, 201}, statuses
    assert slowest < 5, slowest  # slower while the cluster client finds the new master; no hang
    during = [t for t in acknowledged_at if killed_at < t < promoted_at]
    assert during, "no write was acknowledged while the slots had no master"
    print(
        f"\nfailover {promoted_at - killed_at:.1f} s, {len(during)} writes acknowledged meanwhile;"
        f" answers {statuses}; slowest {slowest:.2f} s"
    )

    for name in created:
        done = await platform.ready(name, within=60)
        assert all(t["phase"] == "Ready" for t in targets_of(done).values())
    await asyncio.sleep(1.5)  # a drift check passes too, and must not re-apply
    for cluster in ("shanghai-cluster", "hangzhou-cluster", "beijing-cluster"):
        applies = fleet[cluster].applies
        ours = {k: n for k, n in applies.items() if (k[1] or k[2]).startswith(NAMESPACE)}
        # Each deployment: its namespace and the version's two Deployments, once each.
        assert len(ours) == 3 * len(created), (cluster, len(ours), len(created))
        assert set(ours.values()) == {1}, (cluster, Counter(ours.values()))

    # Exactly one leader again; only its epoch may write.
    await until(lambda: [c.elector.is_leader for c in controllers].count(True) == 1,
                "exactly one leader", 15)  # fmt: skip
    await asyncio.sleep(2)  # and it stays that way: no flapping between the two
    leaders = [c for c in controllers if c.elector.is_leader]
    assert len(leaders) == 1
    leader = leaders[0]
    assert (leader.elector.epoch or 0) >= first_epoch
    await leader.housekeeping()  # its epoch is the newest: leader-only writes pass
    other = next(c for c in controllers if c is not leader)
    with pytest.raises(Fenced):
        await other.housekeeping()
    print(f"leader epoch {first_epoch} → {leader.elector.epoch}")

    # Heals by itself: watchers' wake-ups and readiness come back without a restart.
    await until(lambda: app.state.events.connected, "the event subscription", 30)
    ready = (await client.get("/readyz")).json()
    assert ready["checks"]["redis"]["status"] == "ok", ready


async def until(condition: Any, what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
