"""Edges behind NAT, end to end with real parts: the guide's five emulated clusters, two of
them (shanghai, beijing) reachable only through an `edge-platform agent` process each, which
dials out to the API over HTTP; the platform has no address for them. The guide's cross-region
rollout lands on all five; an agent killed mid-rollout comes back and its cluster catches up,
with no object applied twice; a 1 MiB object and a watch go through the tunnel; the agent
refuses to reach anything but its own API server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.crypto import secret_box
from app.main import create_app
from app.tunnel.proxy import proxy_token
from tests.support.agents import AgentProcess, controller_for
from tests.support.deployments import (
    BASE,
    EXAMPLE_YAML,
    EXPECTED,
    FLEET,
    NAMESPACE,
    WORKSPACE,
    fast_settings,
    workload_version,
)
from tests.support.edge import EdgeCluster, node
from tests.support.platform import authenticated, wait_for_body
from tests.support.servers import http_server

BEHIND_NAT = ("shanghai-cluster", "beijing-cluster")


@dataclass
class Fleet:
    url: str
    client: httpx.AsyncClient
    edges: dict[str, EdgeCluster]
    agents: dict[str, AgentProcess]
    settings: Settings

    async def wait_for(self, path: str, check: Any, within: float = 45.0) -> dict[str, Any]:
        def logs() -> str:
            return "\n".join(f"--- {n}\n{a.tail()}" for n, a in self.agents.items())

        return await wait_for_body(self.client, path, check, within, every=0.2, context=logs)

    async def proxy(self, method: str, cluster: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call through the tunnel as the controller makes it."""
        uid = (await self.client.get(f"/api/v1/clusters/{cluster}")).json()["metadata"]["uid"]
        token = proxy_token(secret_box(self.settings))
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return await self.client.request(
            method, f"/internal/tunnel/{uid}{path}", headers=headers, **kwargs
        )


@pytest.fixture
async def fleet(standalone_settings: Settings, tmp_path: Path) -> AsyncIterator[Fleet]:
    edges = {}
    for name, (_, nodes) in FLEET.items():
        zone = name.split("-")[0]
        edge = EdgeCluster(nodes=[node(n, zone=zone, group=g) for n, g in nodes], auto_ready=True)
        edges[name] = await edge.start()
    settings = fast_settings(
        standalone_settings.database_url, redis_url=standalone_settings.redis_url
    )
    agents: dict[str, AgentProcess] = {}
    stop = asyncio.Event()
    controller_task: asyncio.Task[None] | None = None
    try:
        async with (
            http_server(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            await authenticated(client)
            settings = settings.model_copy(update={"agent_proxy_url": url})
            await register(client, edges)
            for name in BEHIND_NAT:
                agents[name] = AgentProcess(tmp_path, name, url, edges[name])
                token = (await client.post(f"/api/v1/clusters/{name}/join-token")).json()["token"]
                agents[name].start(token)
            controller = await controller_for(settings)
            controller_task = asyncio.create_task(controller.run(stop))
            yield Fleet(url, client, edges, agents, settings)
            stop.set()
            await controller_task
    finally:
        stop.set()
        if controller_task is not None and not controller_task.done():
            await asyncio.gather(controller_task, return_exceptions=True)
        for agent in agents.values():
            agent.stop()
        for edge in edges.values():
            await edge.stop()


async def register(client: httpx.AsyncClient, edges: dict[str, EdgeCluster]) -> None:
    for region in ("east-china", "north-china", "south-china"):
        response = await client.post("/api/v1/regions", json={"metadata": {"name": region}})
        assert response.status_code == 201, response.text
    for name, (region, nodes) in FLEET.items():
        connection: dict[str, Any] = (
            {"type": "agent"} if name in BEHIND_NAT else {"kubeconfig": edges[name].kubeconfig()}
        )
        body = {"metadata": {"name": name}, "spec": {"region": region, "connection": connection}}
        response = await client.post("/api/v1/clusters", json=body)
        assert response.status_code == 201, response.text
        for group in sorted({g for _, g in nodes if g}):
            response = await client.post(
                f"/api/v1/clusters/{name}/nodegroups", json={"metadata": {"name": group}}
            )
            assert response.status_code == 201, response.text
    workspace = {"metadata": {"name": WORKSPACE}, "spec": {"clusters": sorted(FLEET)}}
    assert (await client.post("/api/v1/workspaces", json=workspace)).status_code == 201
    application = {"metadata": {"name": "monitoring-stack"}, "spec": {"provisioner": "workload"}}
    assert (await client.post("/api/v1/applications", json=application)).status_code == 201
    for version in ("2.0.0", "2.1.0"):
        response = await client.post("/api/v1/applicationversions", json=workload_version(version))
        assert response.status_code == 201, response.text


def all_ready(body: dict[str, Any]) -> bool:
    return all(c["status"]["phase"] == "Ready" for c in body["items"])


def applied_deployments(edge: EdgeCluster) -> dict[str, int]:
    return {k[2]: n for k, n in edge.applies.items() if k[0] == "deployments"}


async def test_the_guides_rollout_reaches_clusters_behind_nat_through_their_agents(
    fleet: Fleet,
) -> None:
    clusters = await fleet.wait_for("/api/v1/clusters", all_ready)
    for cluster in clusters["items"]:
        agent = cluster["status"]["agent"]
        if cluster["metadata"]["name"] in BEHIND_NAT:
            assert agent["connected"] is True
            assert agent["version"]
            assert cluster["status"]["kubernetesVersion"] == "v1.30.2"
            assert cluster["status"]["nodeCount"] >= 1
        else:
            assert agent is None

    created = await fleet.client.post(
        BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    body = await fleet.wait_for(
        f"{BASE}/cross-region-app", lambda d: d["status"]["phase"] == "Ready"
    )
    targets = {t["cluster"]: t for t in body["status"]["targets"]}
    assert set(targets) == set(EXPECTED)
    for name, (replicas, group) in EXPECTED.items():
        assert targets[name]["phase"] == "Ready"
        assert targets[name]["nodeGroup"] == group
        live = fleet.edges[name].get("deployments", NAMESPACE, "prometheus")
        assert live is not None, name
        assert live["spec"]["replicas"] == replicas
    for name in BEHIND_NAT:
        # Applied once each, through the tunnel, with the agent's own credentials.
        assert applied_deployments(fleet.edges[name]) == {"prometheus": 1, "grafana": 1}


@pytest.mark.slow
async def test_an_agent_killed_mid_rollout_comes_back_and_its_cluster_catches_up(
    fleet: Fleet,
) -> None:
    await fleet.wait_for("/api/v1/clusters", all_ready)
    shanghai = fleet.agents["shanghai-cluster"]
    shanghai.kill()
    created = await fleet.client.post(
        BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text

    def others_ready(body: dict[str, Any]) -> bool:
        return all(
            t["phase"] == "Ready"
            for t in body["status"]["targets"]
            if t["cluster"] != "shanghai-cluster"
        )

    body = await fleet.wait_for(f"{BASE}/cross-region-app", others_ready)
    waiting = next(t for t in body["status"]["targets"] if t["cluster"] == "shanghai-cluster")
    assert waiting["phase"] != "Ready"
    await fleet.wait_for(
        "/api/v1/clusters/shanghai-cluster",
        lambda c: c["status"]["phase"] == "Unreachable" and not c["status"]["agent"]["connected"],
    )
    # Restarted with the credential it stored: no new join token is needed.
    shanghai.start(token="edge-join-already-used")
    body = await fleet.wait_for(
        f"{BASE}/cross-region-app", lambda d: d["status"]["phase"] == "Ready", within=60
    )
    assert applied_deployments(fleet.edges["shanghai-cluster"]) == {"prometheus": 1, "grafana": 1}


async def test_large_objects_and_watches_go_through_the_tunnel(fleet: Fleet) -> None:
    await fleet.wait_for("/api/v1/clusters", all_ready)
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        # About 1 MiB: as large as a ConfigMap can be (and as the emulator takes).
        "data": {"blob": "x" * (1000 * 1024)},
    }
    path = "/api/v1/namespaces/default/configmaps/big"
    applied = await fleet.proxy(
        "PATCH",
        "beijing-cluster",
        f"{path}?fieldManager=test&force=true",
        content=json.dumps(big),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert applied.status_code in (200, 201), applied.text[:300]
    read = await fleet.proxy("GET", "beijing-cluster", path)
    assert read.status_code == 200
    assert read.json()["data"]["blob"] == big["data"]["blob"]

    # A watch: its answer streams while the platform's caller keeps it open.
    uid = (await fleet.client.get("/api/v1/clusters/beijing-cluster")).json()["metadata"]["uid"]
    token = proxy_token(secret_box(fleet.settings))
    watch_path = f"/internal/tunnel/{uid}/api/v1/namespaces/default/configmaps?watch=true"
    async with fleet.client.stream(
        "GET", watch_path, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as watch:
        assert watch.status_code == 200
        lines = watch.aiter_lines()
        first = json.loads(await asyncio.wait_for(anext(lines), 10))
        assert first["object"]["metadata"]["name"] == "big"


async def test_an_agent_reaches_only_its_own_api_server(fleet: Fleet) -> None:
    await fleet.wait_for("/api/v1/clusters", all_ready)
    for path in ("//evil.example/api/v1/nodes", "/metrics", "/api/v1/../../etc/passwd"):
        refused = await fleet.proxy("GET", "beijing-cluster", path)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["kind"] == "Status"
    # One cluster's agent serves that cluster only: an agent that is not connected is just
    # that, whichever other agents are.
    fleet.agents["shanghai-cluster"].kill()
    await fleet.wait_for(
        "/api/v1/clusters/shanghai-cluster", lambda c: not c["status"]["agent"]["connected"]
    )
    answer = await fleet.proxy("GET", "shanghai-cluster", "/version")
    assert answer.status_code == 503
    assert (await fleet.proxy("GET", "beijing-cluster", "/version")).status_code == 200
