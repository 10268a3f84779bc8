"""Cluster health, probed through the real client against `kmock` edge clusters."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.controller.runner import Controller
from tests.support.edge import EdgeCluster, node

FLEET = {
    "shanghai-cluster": ("east-china", "v1.30.2", [("sh-1", "sh-a", "monitoring-nodes", True),
                                                   ("sh-2", "sh-b", "monitoring-nodes", True),
                                                   ("sh-3", "sh-b", None, False)]),
    "hangzhou-cluster": ("east-china", "v1.29.6", [("hz-1", "hz-a", "monitoring-nodes", True)]),
    "beijing-cluster": ("north-china", "v1.30.2", [("bj-1", "bj-a", "production-nodes", True),
                                                   ("bj-2", "bj-b", "production-nodes", True)]),
    "tianjin-cluster": ("north-china", "v1.28.9", [("tj-1", "tj-a", None, False)]),
    "shenzhen-cluster": ("south-china", "v1.31.0", [("sz-1", "sz-a", "test-nodes", True)]),
}  # fmt: skip


@pytest.fixture
async def fleet() -> AsyncIterator[dict[str, EdgeCluster]]:
    clusters = {}
    for name, (_, version, nodes) in FLEET.items():
        edge = EdgeCluster(version, [node(n, zone=z, group=g, ready=r) for n, z, g, r in nodes])
        clusters[name] = await edge.start()
    yield clusters
    for edge in clusters.values():
        await edge.stop()


@pytest.fixture
async def registered(
    app_client: tuple[FastAPI, httpx.AsyncClient], fleet: dict[str, EdgeCluster]
) -> tuple[FastAPI, httpx.AsyncClient, Controller]:
    app, client = app_client
    app.state.settings = app.state.settings.model_copy(
        update={
            "allow_insecure_cluster_endpoints": True,  # the emulators speak plain HTTP
            "cluster_probe_interval": 0.2,
            "cluster_unreachable_after": 1.5,
        }
    )
    for region in ("east-china", "north-china", "south-china"):
        await client.post("/api/v1/regions", json={"metadata": {"name": region}})
    for name, (region, _, nodes) in FLEET.items():
        connection = {"kubeconfig": fleet[name].kubeconfig()}
        body = {"metadata": {"name": name}, "spec": {"region": region, "connection": connection}}
        created = await client.post("/api/v1/clusters", json=body)
        assert created.status_code == 201, created.text
        for group in sorted({g for _, _, g, _ in nodes if g}):
            made = await client.post(
                f"/api/v1/clusters/{name}/nodegroups", json={"metadata": {"name": group}}
            )
            assert made.status_code == 201
    state = app.state
    controller = Controller(
        state.settings, state.sessionmaker, state.redis, state.cache, state.secrets
    )
    yield app, client, controller
    await controller.clients.close()


async def probe_until(
    controller: Controller, client: httpx.AsyncClient, check, within: float = 15
) -> dict:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await controller.prober.run_once()
        clusters = {
            c["metadata"]["name"]: c for c in (await client.get("/api/v1/clusters")).json()["items"]
        }
        if check(clusters):
            return clusters
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached: { {n: c['status']['phase'] for n, c in clusters.items()} }")


async def test_fleet_becomes_ready_with_what_the_clusters_report(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller],
) -> None:
    _, client, controller = registered
    clusters = await probe_until(
        controller, client,
        lambda cs: all(c["status"]["phase"] in ("Ready", "NotReady") for c in cs.values()),
    )  # fmt: skip
    shanghai = clusters["shanghai-cluster"]["status"]
    assert shanghai["phase"] == "Ready"
    assert shanghai["kubernetesVersion"] == "v1.30.2"
    assert (shanghai["nodeCount"], shanghai["readyNodeCount"]) == (3, 2)
    assert shanghai["zones"] == ["sh-a", "sh-b"]
    assert shanghai["lastProbeTime"] is not None
    assert shanghai["lastReadyTime"] is not None
    conditions = {c["type"]: c for c in shanghai["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Reachable"]["lastTransitionTime"]
    # A cluster that answers but has no ready node is NotReady, not Unreachable.
    assert clusters["tianjin-cluster"]["status"]["phase"] == "NotReady"
    assert clusters["shenzhen-cluster"]["status"]["kubernetesVersion"] == "v1.31.0"

    group = (
        await client.get("/api/v1/clusters/shanghai-cluster/nodegroups/monitoring-nodes")
    ).json()
    assert group["status"] == {"nodeCount": 2, "readyNodeCount": 2, "nodes": ["sh-1", "sh-2"]}
    # The nodes as the probe saw them: what a node group's selector is matched against.
    nodes = (await client.get("/api/v1/clusters/shanghai-cluster/nodes")).json()
    assert nodes["kind"] == "NodeList"
    assert [(n["name"], n["ready"]) for n in nodes["items"]] == [
        ("sh-1", True),
        ("sh-2", True),
        ("sh-3", False),
    ]
    assert nodes["items"][0]["labels"]["theriseunion.io/nodegroup"] == "monitoring-nodes"
    assert nodes["items"][2]["labels"]["topology.kubernetes.io/zone"] == "sh-b"
    missing = await client.get("/api/v1/clusters/no-such-cluster/nodes")
    assert missing.status_code == 404
    regions = {
        r["metadata"]["name"]: r["status"]
        for r in (await client.get("/api/v1/regions")).json()["items"]
    }
    assert regions["east-china"] == {"clusterCount": 2, "readyClusterCount": 2}
    assert regions["north-china"] == {"clusterCount": 2, "readyClusterCount": 1}


async def test_an_unreachable_cluster_and_its_recovery(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller], fleet: dict[str, EdgeCluster]
) -> None:
    _, client, controller = registered
    await probe_until(
        controller, client, lambda cs: cs["beijing-cluster"]["status"]["phase"] == "Ready"
    )
    await fleet["beijing-cluster"].stop()
    stopped_at = time.monotonic()
    clusters = await probe_until(
        controller, client, lambda cs: cs["beijing-cluster"]["status"]["phase"] == "Unreachable"
    )
    assert time.monotonic() - stopped_at >= 1.5  # not before the grace period
    beijing = clusters["beijing-cluster"]["status"]
    # The last-known status is kept, with its age.
    assert beijing["kubernetesVersion"] == "v1.30.2"
    assert beijing["nodeCount"] == 2
    assert beijing["lastReadyTime"] < beijing["lastProbeTime"]
    assert "probe failed" in beijing["message"]
    assert "edge-test-token" not in str(clusters)
    others = [c["status"]["phase"] for n, c in clusters.items() if n != "beijing-cluster"]
    assert "Unreachable" not in others

    await fleet["beijing-cluster"].start()  # back on the same address

    async def due_now() -> None:  # skip the backoff wait of an unreachable cluster
        from sqlalchemy import update

        from app.models.clusters import Cluster

        async with controller.sessionmaker.begin() as session:
            await session.execute(update(Cluster).values(next_probe_at=Cluster.created_at))

    await due_now()
    await probe_until(
        controller, client, lambda cs: cs["beijing-cluster"]["status"]["phase"] == "Ready"
    )


async def test_probe_metrics(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller],
) -> None:
    _, client, controller = registered
    await controller.prober.run_once()
    text = (await client.get("/metrics")).text
    assert 'edge_cluster_probes_total{result="success"}' in text
    assert "edge_cluster_probe_duration_seconds_bucket" in text
    assert "edge_controller_queue_depth" in text
    assert "edge_controller_claim_duration_seconds" in text
    # The fleet's gauges (the Grafana dashboard's), measured before that first pass probed.
    assert 'edge_clusters{phase="Pending",region="east-china"} 2.0' in text
    assert 'edge_clusters{phase="Pending",region="north-china"} 2.0' in text
    assert 'edge_clusters{phase="Ready",region="south-china"} 0.0' in text
    assert "edge_cluster_probe_age_seconds 0.0" in text

    await client.delete("/api/v1/clusters/shenzhen-cluster")
    await client.delete("/api/v1/regions/south-china")
    controller.prober._gauges_at = -1e9  # measure again on this pass
    await controller.prober.run_once()
    text = (await client.get("/metrics")).text
    assert 'edge_clusters{phase="Ready",region="east-china"} 2.0' in text
    assert 'edge_clusters{phase="NotReady",region="north-china"} 1.0' in text  # tianjin
    assert 'region="south-china"' not in text  # a region deleted leaves the dashboard
    age = re.search(r"^edge_cluster_probe_age_seconds (\S+)$", text, re.MULTILINE)
    assert age is not None
    assert 0 < float(age.group(1)) < 30


async def test_a_probe_that_changes_nothing_writes_its_times(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller],
) -> None:
    """The common case, written as the probe times alone: the rest of the status is kept as
    it was, the object gets a new resourceVersion (lastProbeTime is part of what it shows)
    and reads — served from the object cache — show it; the lease goes with the write."""
    from sqlalchemy import func, select, update

    from app.models.clusters import Cluster

    _, client, controller = registered
    await probe_until(
        controller, client, lambda cs: cs["shanghai-cluster"]["status"]["phase"] == "Ready"
    )
    before = (await client.get("/api/v1/clusters/shanghai-cluster")).json()
    async with controller.sessionmaker.begin() as session:
        await session.execute(update(Cluster).values(next_probe_at=func.now()))
    assert await controller.prober.run_once() == len(FLEET)
    after = (await client.get("/api/v1/clusters/shanghai-cluster")).json()
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after["status"]["lastProbeTime"] > before["status"]["lastProbeTime"]
    assert after["status"]["lastReadyTime"] > before["status"]["lastReadyTime"]
    for field in ("lastProbeTime", "lastReadyTime"):
        before["status"].pop(field), after["status"].pop(field)
    assert after["status"] == before["status"]  # conditions keep their transition times
    async with controller.sessionmaker() as session:
        held = await session.scalar(select(func.count()).where(Cluster.lock_token.is_not(None)))
    assert held == 0


async def test_probes_are_not_held_up_by_rows_being_added_to_the_clusters(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller],
) -> None:
    """A row that refers to a cluster (a deployment's target, a node group) locks the cluster
    FOR KEY SHARE until its transaction ends. Probes must neither skip such clusters nor wait
    for them: their claim once skipped them, and their write-back waited, which deadlocked with
    a deployment whose targets locked the same clusters in another order (500s under load)."""
    import asyncpg

    app, client, controller = registered
    adding = await asyncpg.connect(app.state.settings.database_url)
    try:
        async with adding.transaction():
            # What the foreign-key check of each such insert takes.
            await adding.execute("SELECT id FROM clusters ORDER BY id DESC FOR KEY SHARE")
            written = await asyncio.wait_for(controller.prober.run_once(), timeout=10)
    finally:
        await adding.close()
    assert written == len(FLEET)
    clusters = (await client.get("/api/v1/clusters")).json()["items"]
    assert all(c["status"]["lastProbeTime"] for c in clusters)


async def test_a_result_is_dropped_when_its_lease_was_lost(
    registered: tuple[FastAPI, httpx.AsyncClient, Controller], fleet: dict[str, EdgeCluster]
) -> None:
    """Another replica took the cluster meanwhile (the lease expired): the late result must not
    overwrite what that replica writes, while the other clusters' results are written."""
    import uuid

    from sqlalchemy import update

    from app.models.clusters import Cluster

    _, client, controller = registered
    fleet["beijing-cluster"].reachable.clear()  # its probe hangs until we let it answer
    probing = asyncio.create_task(controller.prober.run_once())
    await asyncio.sleep(1.0)
    async with controller.sessionmaker.begin() as session:
        await session.execute(
            update(Cluster)
            .where(Cluster.name == "beijing-cluster")
            .values(lock_token=uuid.uuid4(), phase="NotReady")
        )
    fleet["beijing-cluster"].reachable.set()
    await probing
    clusters = {
        c["metadata"]["name"]: c["status"]
        for c in (await client.get("/api/v1/clusters")).json()["items"]
    }
    assert clusters["beijing-cluster"]["phase"] == "NotReady"  # the other replica's
    assert clusters["beijing-cluster"]["lastProbeTime"] is None
    assert clusters["shanghai-cluster"]["phase"] == "Ready"
