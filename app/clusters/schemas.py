from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.resource import (
    API_VERSION,
    ResourceIn,
    ResourceList,
    ResourceOut,
    editable_form,
    json_time,
    object_meta,
    object_meta_document,
)
from app.models.clusters import Cluster, NodeGroup
from app.redis import key as redis_key
from app.workspaces.schemas import LabelSelector

Phase = Literal["Pending", "Ready", "NotReady", "Unreachable", "Disabled"]


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["direct", "agent"] = "direct"
    kubeconfig: str | None = Field(
        None,
        description="Kubeconfig YAML or base64. Write-only: stored encrypted, never returned. "
        "Omit it on updates to keep the stored one.",
        json_schema_extra={"writeOnly": True},
    )
    endpoint: str | None = Field(None, max_length=2048, description="Reachable API address.")


class ConnectionOut(BaseModel):
    type: Literal["direct", "agent"] = "direct"
    endpoint: str | None = None
    kubeconfigConfigured: bool = Field(False, description="A kubeconfig is stored.")


class ClusterSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(description="Name of an existing Region.")
    zone: str | None = Field(None, max_length=63)
    provider: str | None = Field(None, max_length=63)
    displayName: str | None = Field(None, max_length=253)
    enabled: bool = True


class ClusterSpecIn(ClusterSpecBase):
    connection: ConnectionIn = Field(default_factory=ConnectionIn)


class ClusterSpec(ClusterSpecBase):
    connection: ConnectionOut = Field(default_factory=ConnectionOut)


class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: datetime | None = None


class AgentStatus(BaseModel):
    """The cluster's agent and its tunnel (clusters reached through an agent only)."""

    joined: bool = Field(False, description="An agent has joined: it holds a credential.")
    connected: bool = False
    connectedSince: datetime | None = None
    lastHeartbeatTime: datetime | None = None
    version: str | None = None
    remoteAddress: str | None = Field(None, description="Where the agent connects from.")


class JoinToken(BaseModel):
    token: str = Field(description="Shown once: stored hashed; single use.")
    expiresAt: datetime
    command: str = Field(description="The command that joins the cluster (run with helm).")


class ClusterStatus(BaseModel):
    phase: Phase = "Pending"
    kubernetesVersion: str | None = None
    nodeCount: int = 0
    readyNodeCount: int = 0
    zones: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    lastProbeTime: datetime | None = None
    lastReadyTime: datetime | None = None
    message: str | None = None
    agent: AgentStatus | None = None


class ClusterNode(BaseModel):
    name: str
    ready: bool
    labels: dict[str, str] = Field(default_factory=dict)


class ClusterNodeList(BaseModel):
    """A cluster's nodes as its last successful probe saw them (what node groups select)."""

    apiVersion: str = "v1"
    kind: Literal["NodeList"] = "NodeList"
    items: list[ClusterNode]


class ClusterIn(ResourceIn[ClusterSpecIn]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["Cluster"] = "Cluster"


class ClusterOut(ResourceOut[ClusterSpec, ClusterStatus]):
    kind: Literal["Cluster"] = "Cluster"


class ClusterList(ResourceList[ClusterOut]):
    kind: Literal["ClusterList"] = "ClusterList"


def _condition_document(stored: dict[str, Any]) -> dict[str, Any]:
    changed = stored.get("lastTransitionTime")
    return {
        "type": stored["type"],
        "status": stored["status"],
        "reason": stored.get("reason"),
        "message": stored.get("message"),
        # Stored as the prober wrote it (isoformat): answered as pydantic writes timestamps.
        "lastTransitionTime": json_time(datetime.fromisoformat(changed)) if changed else None,
    }


def cluster_cache_key(name: str) -> str:
    """Where the API caches a Cluster's document (the namespace of app.clusters.service)."""
    return redis_key(f"clusters/{name}", tag=f"clusters/{name}")


def cluster_document(row: Cluster) -> dict[str, Any]:
    """A Cluster as the API answers it (ClusterOut in JSON form), built straight from its row:
    a region's list is a hundred of these, and the prober publishes one per change. Where a
    model is wanted it is validated from this, so there is one rendering."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": object_meta_document(row),
        "spec": {
            "region": row.region,
            "zone": row.zone,
            "provider": row.provider,
            "displayName": row.display_name,
            "enabled": row.enabled,
            "connection": {
                "type": row.connection_type,
                "endpoint": row.endpoint,
                "kubeconfigConfigured": row.kubeconfig_ciphertext is not None,
            },
        },
        "status": {
            "phase": row.phase,
            "kubernetesVersion": row.kubernetes_version,
            "nodeCount": row.node_count,
            "readyNodeCount": row.ready_node_count,
            "zones": list(row.zones or []),
            "conditions": [_condition_document(c) for c in row.conditions or []],
            "lastProbeTime": json_time(row.last_probe_time),
            "lastReadyTime": json_time(row.last_ready_time),
            "message": row.status_message,
            "agent": _agent_document(row) if row.connection_type == "agent" else None,
        },
    }


def _agent_document(row: Cluster) -> dict[str, Any]:
    return {
        "joined": row.agent_credential_hash is not None,
        "connected": row.agent_session is not None,
        "connectedSince": json_time(row.agent_connected_since),
        "lastHeartbeatTime": json_time(row.agent_last_heartbeat),
        "version": row.agent_version,
        "remoteAddress": row.agent_remote_address,
    }


def cluster_out(row: Cluster) -> ClusterOut:
    return ClusterOut.model_validate(cluster_document(row))


def cluster_write_form(out: ClusterOut) -> dict[str, Any]:
    """A Cluster as a write body (the stored kubeconfig is kept by leaving it out)."""
    form = editable_form(out)
    form["spec"]["connection"].pop("kubeconfigConfigured", None)
    return form


class Taint(BaseModel):
    """A taint the group's nodes carry; workloads sent to the group get a matching toleration."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=316)
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeGroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: LabelSelector | None = Field(
        None,
        description="Nodes of the group; default: label theriseunion.io/nodegroup=<name>.",
    )
    displayName: str | None = Field(None, max_length=253)
    taints: list[Taint] = Field(default_factory=list, max_length=32)


class NodeGroupStatus(BaseModel):
    nodeCount: int = 0
    readyNodeCount: int = 0
    nodes: list[str] = Field(default_factory=list)


class NodeGroupIn(ResourceIn[NodeGroupSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["NodeGroup"] = "NodeGroup"
    spec: NodeGroupSpec = Field(default_factory=NodeGroupSpec)


class NodeGroupOut(ResourceOut[NodeGroupSpec, NodeGroupStatus]):
    kind: Literal["NodeGroup"] = "NodeGroup"


class NodeGroupList(ResourceList[NodeGroupOut]):
    kind: Literal["NodeGroupList"] = "NodeGroupList"


NODEGROUP_LABEL = "theriseunion.io/nodegroup"


def effective_selector(row: NodeGroup) -> LabelSelector:
    if row.selector:
        return LabelSelector.model_validate(row.selector)
    return LabelSelector(matchLabels={NODEGROUP_LABEL: row.name})


def node_group_out(row: NodeGroup) -> NodeGroupOut:
    return NodeGroupOut(
        metadata=object_meta(row),
        spec=NodeGroupSpec(
            selector=LabelSelector.model_validate(row.selector) if row.selector else None,
            displayName=row.display_name,
            taints=[Taint.model_validate(t) for t in row.taints],
        ),
        status=NodeGroupStatus(
            nodeCount=row.node_count, readyNodeCount=row.ready_node_count, nodes=list(row.nodes)
        ),
    )
