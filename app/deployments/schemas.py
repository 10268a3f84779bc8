from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.clusters.schemas import Condition
from app.kit.resource import DNSLabel, ResourceIn, ResourceList, ResourceOut

TargetPhase = Literal[
    "Pending", "Applying", "Applied", "Ready", "Failed", "Unreachable", "Deleting"
]
DeploymentPhase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed", "Paused"]
Reason = Literal["Initial", "Upgrade", "Rollback"]


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(
        None,
        description="Every cluster listed must lie in it; alone, it means every cluster "
        "of the region the workspace may use.",
    )
    clusters: list[str] = Field(default_factory=list, max_length=1000)
    nodeGroupRef: str | None = Field(
        None, description="A node group that exists on each cluster of this target."
    )
    replicas: int | None = Field(None, ge=0, le=1000)
    values: dict[str, Any] = Field(
        default_factory=dict, description="Helm values for this target, over the version's."
    )

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.region is None and not self.clusters:
            raise ValueError("give a region, clusters, or both")
        return self


class Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    maxUnavailableClusters: int = Field(
        0, ge=0, le=10000, description="Failed clusters tolerated before Pause stops the rollout."
    )
    failurePolicy: Literal["Continue", "Pause", "Rollback"] = "Continue"
    progressDeadlineSeconds: int = Field(
        600, ge=10, le=86400, description="A target not Ready this long after apply is Failed."
    )


class DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicationVersionRef: str = Field(max_length=253, description="An ApplicationVersion name.")
    targets: list[TargetSpec] = Field(min_length=1, max_length=1000)
    namespace: DNSLabel | None = Field(
        None, description="Namespace at the edge; default ws-<workspace>."
    )
    strategy: Strategy = Field(default_factory=Strategy)
    paused: bool = False


class TargetStatus(BaseModel):
    cluster: str
    region: str
    nodeGroup: str | None = None
    phase: TargetPhase
    desiredReplicas: int | None = None
    readyReplicas: int = 0
    revision: int | None = Field(None, description="The revision last applied there.")
    message: str | None = None
    lastTransitionTime: datetime | None = None
    lastSyncTime: datetime | None = None


class Summary(BaseModel):
    clusters: int = 0
    ready: int = 0
    failed: int = 0
    unreachable: int = 0


class HistoryEntry(BaseModel):
    revision: int
    fromVersion: str | None = None
    toVersion: str
    reason: Reason
    operator: str | None = None
    timestamp: datetime


class DeploymentStatus(BaseModel):
    phase: DeploymentPhase = "Pending"
    observedGeneration: int = 0
    revision: int = 0
    summary: Summary = Field(default_factory=Summary)
    targets: list[TargetStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)


class ApplicationDeploymentIn(ResourceIn[DeploymentSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["ApplicationDeployment"] = "ApplicationDeployment"


class ApplicationDeploymentOut(ResourceOut[DeploymentSpec, DeploymentStatus]):
    kind: Literal["ApplicationDeployment"] = "ApplicationDeployment"


class ApplicationDeploymentList(ResourceList[ApplicationDeploymentOut]):
    kind: Literal["ApplicationDeploymentList"] = "ApplicationDeploymentList"


class ResolvedTarget(BaseModel):
    cluster: str
    region: str
    nodeGroup: str | None = None
    replicas: int | None = None


class ResolveIn(BaseModel):
    """A deployment (or just its spec) to resolve without saving it."""

    model_config = ConfigDict(extra="ignore")

    spec: DeploymentSpec


class ResolveOut(BaseModel):
    applicationVersionRef: str
    targets: list[ResolvedTarget]


class RevisionOut(BaseModel):
    revision: int
    applicationVersionRef: str
    targets: list[TargetSpec]
    namespace: str | None = None
    reason: Reason
    operator: str | None = None
    creationTimestamp: datetime


class RevisionList(BaseModel):
    items: list[RevisionOut]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: int = Field(ge=1, le=2**31 - 1, description="The revision to return to.")
