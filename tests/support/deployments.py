"""The deployment guide's fleet and example rollout, and the platform that runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.controller.runner import Controller
from tests.support.edge import EdgeCluster
from tests.support.platform import make_settings, wait_for_body

WORKSPACE = "team-a"
NAMESPACE = "ws-team-a"
BASE = f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments"

FLEET = {
    "shanghai-cluster": ("east-china", [("sh-1", "monitoring-nodes"), ("sh-2", None)]),
    "hangzhou-cluster": ("east-china", [("hz-1", "monitoring-nodes")]),
    "beijing-cluster": ("north-china", [("bj-1", "production-nodes"),
                                        ("bj-2", "production-nodes")]),
    "tianjin-cluster": ("north-china", [("tj-1", "production-nodes")]),
    "shenzhen-cluster": ("south-china", [("sz-1", "test-nodes")]),
}  # fmt: skip

EXAMPLE_YAML = """\
apiVersion: edge.theriseunion.io/v1alpha1
kind: ApplicationDeployment
metadata:
  name: cross-region-app
spec:
  applicationVersionRef: monitoring-stack-v2.0.0
  targets:
    # 华东区所有集群
    - region: east-china
      clusters:
        - shanghai-cluster
        - hangzhou-cluster
      nodeGroupRef: monitoring-nodes
      replicas: 2

    # 华北区生产集群
    - region: north-china
      clusters:
        - beijing-cluster
      nodeGroupRef: production-nodes
      replicas: 3

    # 华南区测试集群
    - region: south-china
      clusters:
        - shenzhen-cluster
      nodeGroupRef: test-nodes
      replicas: 1
"""
EXPECTED = {  # cluster: (replicas, node group)
    "shanghai-cluster": (2, "monitoring-nodes"),
    "hangzhou-cluster": (2, "monitoring-nodes"),
    "beijing-cluster": (3, "production-nodes"),
    "shenzhen-cluster": (1, "test-nodes"),
}


def workload_version(version: str) -> dict[str, Any]:
    def deployment(name: str, image: str) -> dict[str, Any]:
        container = {"name": name, "image": image, "ports": [{"containerPort": 9090}]}
        template = {"spec": {"containers": [container]}}
        return {"name": name, "spec": {"replicas": 1, "template": template}}

    return {
        "metadata": {"name": f"monitoring-stack-v{version}"},
        "spec": {
            "application": "monitoring-stack",
            "version": version,
            "workload": {
                "deployments": [
                    deployment("prometheus", f"prom/prometheus:v{version}"),
                    deployment("grafana", f"grafana/grafana:{version}"),
                ]
            },
        },
    }


@dataclass
class Platform:
    app: FastAPI
    client: httpx.AsyncClient
    fleet: dict[str, EdgeCluster]
    settings: Settings
    controllers: list[tuple[Controller, asyncio.Event, asyncio.Task[None]]] = field(
        default_factory=list
    )

    def start_controller(self) -> Controller:
        state = self.app.state
        controller = Controller(
            self.settings, state.sessionmaker, state.redis, state.cache, state.secrets
        )
        stop = asyncio.Event()
        self.controllers.append((controller, stop, asyncio.create_task(controller.run(stop))))
        return controller

    async def stop_controllers(self) -> None:
        for _, stop, _ in self.controllers:
            stop.set()
        await asyncio.gather(*(task for _, _, task in self.controllers), return_exceptions=True)
        self.controllers.clear()

    async def wait_for(
        self, path: str, check: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        """GET `path` until `check(body)` holds; fails with the last body seen."""
        return await wait_for_body(self.client, path, check, within)

    async def ready(self, name: str, within: float = 30.0) -> dict[str, Any]:
        return await self.wait_for(
            f"{BASE}/{name}", lambda d: d["status"]["phase"] == "Ready", within
        )


def targets_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["cluster"]: t for t in body["status"]["targets"]}


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Short intervals for tests; `overrides` names Redis (`redis_url=` or `redis_addresses=`)
    and any other setting."""
    fast = {
        "allow_insecure_cluster_endpoints": True,  # the emulators speak plain HTTP
        "cluster_probe_interval": 0.2,
        "cluster_unreachable_after": 1.5,
        "drift_check_interval": 1.0,
        "dispatch_status_interval": 0.2,
        "dispatch_retry_max": 1.0,
        "dispatch_lease_duration": 3.0,
    }
    return make_settings(database_url, **(fast | overrides))


async def register_fleet(
    client: httpx.AsyncClient, fleet: dict[str, EdgeCluster], *, catalog: bool = True
) -> None:
    """Regions, clusters, node groups and workspace `team-a`; with `catalog`, the application
    `monitoring-stack` (workload) in versions 2.0.0 and 2.1.0."""
    for region in ("east-china", "north-china", "south-china"):
        response = await client.post("/api/v1/regions", json={"metadata": {"name": region}})
        assert response.status_code == 201, response.text
    for name, (region, nodes) in FLEET.items():
        connection = {"kubeconfig": fleet[name].kubeconfig()}
        body = {"metadata": {"name": name}, "spec": {"region": region, "connection": connection}}
        response = await client.post("/api/v1/clusters", json=body)
        assert response.status_code == 201, response.text
        for group in sorted({g for _, g in nodes if g}):
            response = await client.post(
                f"/api/v1/clusters/{name}/nodegroups", json={"metadata": {"name": group}}
            )
            assert response.status_code == 201, response.text
    response = await client.post(
        "/api/v1/workspaces",
        json={"metadata": {"name": WORKSPACE}, "spec": {"clusters": sorted(FLEET)}},
    )
    assert response.status_code == 201, response.text
    if not catalog:
        return
    response = await client.post(
        "/api/v1/applications",
        json={"metadata": {"name": "monitoring-stack"}, "spec": {"provisioner": "workload"}},
    )
    assert response.status_code == 201, response.text
    for version in ("2.0.0", "2.1.0"):
        response = await client.post("/api/v1/applicationversions", json=workload_version(version))
        assert response.status_code == 201, response.text
