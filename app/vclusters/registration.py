"""A ready vcluster becomes a Cluster (provider `vcluster`) that deployments can target and the
prober checks; it goes when the vcluster goes. Written by the controller, in the transaction
that records the vcluster's target."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.kubeconfig import parse_kubeconfig
from app.clusters.models import Cluster
from app.crypto import SecretBox
from app.db.base import resource_version_seq
from app.deployments.models import Rollout
from app.redis import key as redis_key
from app.workspaces.models import Workspace

HOST_LABEL = "edge.theriseunion.io/vcluster-host"
WORKSPACE_LABEL = "edge.theriseunion.io/workspace"
VCLUSTER_LABEL = "edge.theriseunion.io/vcluster"


def vcluster_namespace(workspace: str, name: str) -> str:
    return f"vc-{workspace}-{name}"[:63].rstrip("-")


def cluster_name(workspace: str, name: str) -> str:
    """The Cluster a vcluster is registered as (cluster names are global)."""
    return vcluster_namespace(workspace, name)


def reachable_kubeconfig(text: str, endpoint: str | None, host_server: str | None) -> str:
    """The vcluster's kubeconfig pointed at an address the platform can reach: `endpoint`
    when given, else its own unless that is localhost (the in-pod default), then the host's."""
    document = yaml.safe_load(text)
    for entry in document.get("clusters") or []:
        cluster = entry.get("cluster") or {}
        server = str(cluster.get("server") or "")
        if endpoint:
            cluster["server"] = endpoint
        elif urlsplit(server).hostname in ("localhost", None) and host_server:
            cluster["server"] = host_server
    return yaml.safe_dump(document)


async def register(
    session: AsyncSession,
    secrets: SecretBox,
    rollout: Rollout,
    *,
    workspace: Workspace,
    host: Cluster,
    kubeconfig: str,
    endpoint: str | None,
    allow_private: bool,
    allow_insecure: bool,
) -> str:
    """Create or update the Cluster of a vcluster and grant it to its workspace; its name."""
    parsed = parse_kubeconfig(
        reachable_kubeconfig(kubeconfig, endpoint, host.server),
        allow_private=allow_private,
        allow_insecure=allow_insecure,
    )
    name = cluster_name(workspace.name, rollout.name)
    row = await session.scalar(select(Cluster).where(Cluster.name == name).with_for_update())
    version = int(await session.scalar(resource_version_seq.next_value()))
    if row is None:
        row = Cluster(name=name, uid=uuid.uuid4(), region=host.region, phase="Pending")
        session.add(row)
    row.provider = "vcluster"
    row.zone = host.zone
    row.display_name = f"vcluster {rollout.name} on {host.name}"
    row.labels = {
        HOST_LABEL: host.name,
        WORKSPACE_LABEL: workspace.name,
        VCLUSTER_LABEL: rollout.name,
    }
    row.resource_version = version
    sealed = secrets.seal(parsed.to_yaml(), bound_to=f"cluster:{row.uid}")
    row.kubeconfig_key_id, row.kubeconfig_ciphertext = sealed.key_id, sealed.ciphertext
    row.server = parsed.server
    row.endpoint = endpoint
    if name not in workspace.clusters:
        workspace.clusters = [*workspace.clusters, name]
        workspace.resource_version = version
    await session.flush()
    return name


async def unregister(
    session: AsyncSession, workspace: Workspace, rollout: Rollout
) -> tuple[str, int]:
    """Remove the vcluster's Cluster and its grant; (cluster name, resourceVersion of the
    deletion) for the caller to drop it from the read cache after the commit."""
    name = cluster_name(workspace.name, rollout.name)
    version = int(await session.scalar(resource_version_seq.next_value()))
    if name in workspace.clusters:
        workspace.clusters = [c for c in workspace.clusters if c != name]
        workspace.resource_version = version
    await session.execute(delete(Cluster).where(Cluster.name == name))
    return name, version


def cluster_cache_key(name: str) -> str:
    """Where the API caches a Cluster (app.clusters.service uses the same namespace)."""
    return redis_key(f"clusters/{name}", tag=f"clusters/{name}")
