from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.catalog.schemas import SemVer
from app.kit.resource import ResourceIn, ResourceList, ResourceOut

DEFAULT_CHART_VERSION = "0.30.1"
Phase = Literal["Pending", "Provisioning", "Ready", "Failed", "Deleting"]


class VClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(description="The host edge cluster (granted to the workspace).")
    nodeGroupRef: str | None = Field(None, description="Node group the control plane runs on.")
    kubernetesVersion: str | None = Field(None, max_length=32, examples=["v1.30.2"])
    chartVersion: SemVer = Field(
        DEFAULT_CHART_VERSION, description="Version of chart `vcluster` (SemVer 2)."
    )
    values: dict[str, Any] = Field(default_factory=dict, description="vcluster chart values.")
    resources: dict[str, Any] | None = Field(
        None, description="Control-plane resources (requests/limits), as in a pod spec."
    )
    endpoint: str | None = Field(
        None,
        max_length=2048,
        description="Address at which the vcluster's API is reachable from the platform; "
        "default: the address in its kubeconfig, or the host's when that is localhost.",
    )


class VClusterStatus(BaseModel):
    phase: Phase = "Pending"
    clusterRef: str | None = Field(None, description="The Cluster it is registered as.")
    message: str | None = None
    lastTransitionTime: datetime | None = None
    observedGeneration: int = 0


class VClusterIn(ResourceIn[VClusterSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["VCluster"] = "VCluster"


class VClusterOut(ResourceOut[VClusterSpec, VClusterStatus]):
    kind: Literal["VCluster"] = "VCluster"


class VClusterList(ResourceList[VClusterOut]):
    kind: Literal["VClusterList"] = "VClusterList"
