"""The demo fleet: the deployment guide's five edge clusters in three regions, emulated on
this machine (`app.demo.emulator`) and registered with a running platform through its API, so
that a first rollout has somewhere to go.

Everything registered is labelled `theriseunion.io/demo: "true"`; `remove` deletes the demo
clusters and regions, and the rollouts of the demo workspace, and nothing else. Registering
again is harmless: what exists is kept, and a demo cluster's kubeconfig is pointed at the
emulator as it runs now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from app.demo.emulator import DemoCluster, DemoFleet, DemoNode

DEMO_LABEL = "theriseunion.io/demo"
DEMO_LABELS = {DEMO_LABEL: "true"}
WORKSPACE = "team-a"
# The built-in catalog's version the README's rollout deploys (BUILTIN_CHARTS puts it there).
VERSION = "monitoring-stack-v1.5.0"

REGIONS = {
    "east-china": "East China (华东)",
    "north-china": "North China (华北)",
    "south-china": "South China (华南)",
}


def guide_clusters() -> list[DemoCluster]:
    """The guide's clusters, with nodes labelled for the node groups its rollout names."""

    def nodes(prefix: str, zone: str, *groups: str | None) -> list[DemoNode]:
        return [DemoNode(f"{prefix}-{i}", zone, group) for i, group in enumerate(groups, 1)]

    monitoring, production, test = "monitoring-nodes", "production-nodes", "test-nodes"
    return [
        DemoCluster("shanghai-cluster", "east-china", "v1.30.4+k3s1",
                    nodes("sh", "cn-east-1a", monitoring, monitoring, None)),
        DemoCluster("hangzhou-cluster", "east-china", "v1.30.4+k3s1",
                    nodes("hz", "cn-east-1b", monitoring, monitoring)),
        DemoCluster("beijing-cluster", "north-china", "v1.29.8+k3s1",
                    nodes("bj", "cn-north-1a", production, production, production)),
        DemoCluster("tianjin-cluster", "north-china", "v1.29.8+k3s1",
                    nodes("tj", "cn-north-1b", production)),
        DemoCluster("shenzhen-cluster", "south-china", "v1.28.13+k3s1",
                    nodes("sz", "cn-south-1a", test, None)),
    ]  # fmt: skip


class DemoError(Exception):
    """The platform refused what the demo fleet needs; the message says what and why."""


@dataclass
class Platform:
    """The platform's API as an administrator."""

    client: httpx.AsyncClient

    @classmethod
    async def sign_in(cls, api_url: str, username: str, password: str) -> Platform:
        client = httpx.AsyncClient(base_url=api_url, timeout=30)
        answer = await client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": username, "password": password,
                  "client_id": "edge-console"},
        )  # fmt: skip
        if answer.status_code != 200:
            await client.aclose()
            raise DemoError(f"signing in as {username!r} at {api_url} failed: {_said(answer)}")
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return cls(client)

    async def close(self) -> None:
        await self.client.aclose()

    async def create(self, path: str, document: dict[str, Any]) -> bool:
        """Create unless it exists; True when created."""
        answer = await self.client.post(path, json=document)
        if answer.status_code == 409 and answer.json().get("code") == "AlreadyExists":
            return False
        if answer.status_code != 201:
            raise DemoError(f"POST {path} {document['metadata']['name']}: {_said(answer)}")
        return True


def _said(answer: httpx.Response) -> str:
    try:
        return f"{answer.status_code} {answer.json().get('detail', answer.text)}"
    except ValueError:
        return f"{answer.status_code} {answer.text[:200]}"


async def register(platform: Platform, fleet: DemoFleet) -> list[str]:
    """Register the fleet's regions, clusters, node groups and a workspace granted the demo
    clusters. What was created, in words."""
    created: list[str] = []
    for name, display in REGIONS.items():
        region = {
            "metadata": {"name": name, "labels": DEMO_LABELS},
            "spec": {"displayName": display},
        }
        if await platform.create("/api/v1/regions", region):
            created.append(f"region {name}")
    for cluster in fleet.clusters.values():
        connection = {"type": "direct", "kubeconfig": fleet.kubeconfig(cluster.name)}
        document = {
            "metadata": {"name": cluster.name, "labels": DEMO_LABELS},
            "spec": {"region": cluster.region, "provider": "k3s", "connection": connection},
        }
        if await platform.create("/api/v1/clusters", document):
            created.append(f"cluster {cluster.name}")
        else:
            await _repoint(platform, cluster.name, connection)
        for group in sorted({node.group for node in cluster.nodes if node.group}):
            path = f"/api/v1/clusters/{cluster.name}/nodegroups"
            if await platform.create(path, {"metadata": {"name": group}}):
                created.append(f"node group {cluster.name}/{group}")
    workspace = {
        "metadata": {"name": WORKSPACE, "labels": DEMO_LABELS},
        "spec": {
            "displayName": "Team A (demo)",
            "clusterSelector": {"matchLabels": DEMO_LABELS},
        },
    }
    if await platform.create("/api/v1/workspaces", workspace):
        created.append(f"workspace {WORKSPACE}")
    return created


async def has_rollout_version(platform: Platform) -> bool:
    """Whether the catalog holds the version the README's rollout deploys."""
    found = await platform.client.get(f"/api/v1/applicationversions/{VERSION}")
    return found.status_code == 200


async def _repoint(platform: Platform, name: str, connection: dict[str, Any]) -> None:
    """An existing demo cluster gets the emulator's address as it is now; a cluster of the
    same name that is not a demo one is left alone."""
    found = await platform.client.get(f"/api/v1/clusters/{name}")
    if found.status_code != 200:
        raise DemoError(f"GET cluster {name}: {_said(found)}")
    if found.json()["metadata"].get("labels", {}).get(DEMO_LABEL) != "true":
        raise DemoError(
            f"a cluster named {name!r} exists and is not a demo cluster: the demo fleet needs "
            "the name (it leaves that cluster alone)"
        )
    answer = await platform.client.patch(
        f"/api/v1/clusters/{name}",
        json={"spec": {"connection": connection}},
        headers={"content-type": "application/merge-patch+json"},
    )
    if answer.status_code != 200:
        raise DemoError(f"PATCH cluster {name}: {_said(answer)}")


async def remove(platform: Platform) -> tuple[list[str], list[str]]:
    """Delete the rollouts of the demo workspace (orphaned: the emulated objects go with the
    emulator), the demo clusters, then the demo regions. What was deleted and what was kept
    (with the platform's reason), in words. The workspace and the catalog entries stay: they
    may hold the user's own work."""
    removed: list[str] = []
    kept: list[str] = []
    workspace = await platform.client.get(f"/api/v1/workspaces/{WORKSPACE}")
    demo_workspace = (
        workspace.status_code == 200
        and workspace.json()["metadata"].get("labels", {}).get(DEMO_LABEL) == "true"
    )
    if demo_workspace:
        for kind in ("applicationdeployments", "configsyncs"):
            base = f"/api/v1/workspaces/{WORKSPACE}/{kind}"
            for item in await _items(platform, base, {}):
                name = item["metadata"]["name"]
                answer = await platform.client.delete(
                    f"{base}/{name}", params={"propagationPolicy": "Orphan"}
                )
                if answer.status_code not in (200, 202, 204, 404):
                    raise DemoError(f"DELETE {kind} {name}: {_said(answer)}")
                removed.append(f"{kind[:-1]} {WORKSPACE}/{name}")
    selector = {"labelSelector": f"{DEMO_LABEL}=true"}
    for kind in ("clusters", "regions"):
        for item in await _items(platform, f"/api/v1/{kind}", selector):
            name = item["metadata"]["name"]
            answer = await platform.client.delete(f"/api/v1/{kind}/{name}")
            if answer.status_code == 409:  # still used: the platform says by what
                kept.append(f"{kind[:-1]} {name}: {_said(answer)}")
            elif answer.status_code in (200, 202, 204, 404):
                removed.append(f"{kind[:-1]} {name}")
            else:
                raise DemoError(f"DELETE {kind[:-1]} {name}: {_said(answer)}")
    return removed, kept


async def _items(platform: Platform, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    answer = await platform.client.get(path, params={**params, "limit": "500"})
    if answer.status_code != 200:
        raise DemoError(f"GET {path}: {_said(answer)}")
    items: list[dict[str, Any]] = answer.json()["items"]
    return items
