"""A ready vcluster becomes a Cluster (provider `vcluster`) that deployments can target and the
prober checks; it goes when the vcluster goes. Written by the controller, in the transaction
that records the vcluster's target."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import urlsplit

import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.kubeconfig import InvalidKubeconfig, parse_kubeconfig
from app.clusters.service import VCLUSTER_WORKSPACE_LABEL
from app.crypto import SecretBox
from app.db.base import resource_version_seq
from app.models.clusters import Cluster
from app.models.deployments import Rollout, RolloutTarget
from app.models.workspaces import Workspace

HOST_LABEL = "edge.theriseunion.io/vcluster-host"
WORKSPACE_LABEL = VCLUSTER_WORKSPACE_LABEL
VCLUSTER_LABEL = "edge.theriseunion.io/vcluster"


def vcluster_namespace(workspace: str, name: str) -> str:
    """The vcluster's namespace at its host, and the name of the Cluster it is registered as
    (both global): its name and a digest of (workspace, name), so that no two vclusters of any
    workspaces can share one however their names read."""
    digest = hashlib.sha256(f"{workspace}/{name}".encode()).hexdigest()[:8]
    return f"vc-{name[:50]}-{digest}"


cluster_name = vcluster_namespace


def owned_by(row: Cluster, workspace: str, name: str) -> bool:
    labels = row.labels or {}
    return (
        row.provider == "vcluster"
        and labels.get(WORKSPACE_LABEL) == workspace
        and labels.get(VCLUSTER_LABEL) == name
    )


def reachable_kubeconfig(text: str, endpoint: str | None, host_server: str | None) -> str:
    """The vcluster's kubeconfig pointed at an address the platform can reach: `endpoint`
    when given, else its own unless that is localhost (the in-pod default), then the host's."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        # Never the parser's message: it quotes the text, credentials included.
        raise InvalidKubeconfig("the vcluster's kubeconfig is not valid YAML") from None
    if not isinstance(document, dict):
        raise InvalidKubeconfig("the vcluster's kubeconfig is not a kubeconfig document")
    for entry in document.get("clusters") or []:
        if not isinstance(entry, dict):
            continue
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
    """Create or update the Cluster of a vcluster; its name. The Cluster's labels grant it to
    its workspace alone (app.clusters.service.granted_clause)."""
    parsed = parse_kubeconfig(
        reachable_kubeconfig(kubeconfig, endpoint, host.server),
        allow_private=allow_private,
        allow_insecure=allow_insecure,
    )
    name = cluster_name(workspace.name, rollout.name)
    row = await session.scalar(
        select(Cluster).where(Cluster.name == name).with_for_update(key_share=True)
    )
    if row is not None and not owned_by(row, workspace.name, rollout.name):
        raise InvalidKubeconfig(f"cluster {name} exists and is not this vcluster's")
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
    await session.flush()
    return name


async def unregister(
    session: AsyncSession, workspace: Workspace, rollout: Rollout
) -> tuple[str, int]:
    """Remove the vcluster's Cluster, and any rollout targets still on it (what they made lived
    inside the vcluster); (cluster name, resourceVersion of the deletion) for the caller to drop
    it from the read cache after the commit."""
    name = cluster_name(workspace.name, rollout.name)
    version = int(await session.scalar(resource_version_seq.next_value()))
    row = await session.scalar(select(Cluster).where(Cluster.name == name).with_for_update())
    if row is not None and owned_by(row, workspace.name, rollout.name):
        await session.execute(delete(RolloutTarget).where(RolloutTarget.cluster_id == row.id))
        await session.execute(delete(Cluster).where(Cluster.id == row.id))
    return name, version
