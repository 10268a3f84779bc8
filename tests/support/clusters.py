"""Clusters registered through the API: kubeconfigs with a known token, bodies, a fleet."""

from __future__ import annotations

import httpx
import yaml

TOKEN_VALUE = "kube-token-that-must-never-leak-0123456789"

FLEET = {
    "east-china": ["shanghai-cluster", "hangzhou-cluster"],
    "north-china": ["beijing-cluster", "tianjin-cluster"],
    "south-china": ["shenzhen-cluster"],
}


def kubeconfig(
    server: str = "https://127.0.0.1:6443", user: dict[str, object] | None = None, **extra: object
) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edge", "cluster": {"server": server}}],
        "users": [{"name": "ops", "user": user if user is not None else {"token": TOKEN_VALUE}}],
        "contexts": [{"name": "main", "context": {"cluster": "edge", "user": "ops"}}],
        "current-context": "main",
        **extra,
    }
    return yaml.safe_dump(document)


def cluster_body(name: str, region: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "edge.theriseunion.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {"region": region}},
        "spec": {"region": region, "connection": {"kubeconfig": kubeconfig()}, **spec},
    }


async def register_fleet(client: httpx.AsyncClient) -> None:
    for region, clusters in FLEET.items():
        created = await client.post("/api/v1/regions", json={"metadata": {"name": region}})
        assert created.status_code == 201, created.text
        for name in clusters:
            provider = "k3s" if name.startswith("s") else "kubeadm"
            response = await client.post(
                "/api/v1/clusters", json=cluster_body(name, region, provider=provider)
            )
            assert response.status_code == 201, response.text
