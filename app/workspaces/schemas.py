from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.kit.resource import (
    DNSLabel,
    LabelKey,
    Labels,
    LabelValue,
    ResourceIn,
    ResourceList,
    ResourceOut,
    object_meta,
)
from app.models.workspaces import Workspace

WorkspaceRole = Literal["admin", "operator", "viewer"]


class SelectorRequirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Whether values are wanted depends on the operator: a rule over two fields."""
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(BaseModel):
    """A Kubernetes LabelSelector (matchLabels AND matchExpressions)."""

    model_config = ConfigDict(extra="forbid")

    matchLabels: Labels = Field(default_factory=dict)
    matchExpressions: list[SelectorRequirement] = Field(default_factory=list)


class WorkspaceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253)
    description: str | None = Field(None, max_length=4096)
    manager: str | None = Field(None, description="User name; becomes a workspace admin.")
    clusters: list[DNSLabel] = Field(
        default_factory=list,
        description="Clusters this workspace may use (or clusterSelector).",
        json_schema_extra={"uniqueItems": True},
    )
    clusterSelector: LabelSelector | None = None

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, value: list[str]) -> list[str]:
        """uniqueItems, which the document says and pydantic does not enforce on a list."""
        if len(set(value)) != len(value):
            raise ValueError("a cluster is listed twice")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if self.clusters and self.clusterSelector is not None:
            raise ValueError("give clusters or clusterSelector, not both")
        return self


class WorkspaceStatus(BaseModel):
    pass


class WorkspaceIn(ResourceIn[WorkspaceSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["Workspace"] = "Workspace"
    spec: WorkspaceSpec = Field(default_factory=WorkspaceSpec)


class WorkspaceOut(ResourceOut[WorkspaceSpec, WorkspaceStatus]):
    kind: Literal["Workspace"] = "Workspace"


class WorkspaceList(ResourceList[WorkspaceOut]):
    kind: Literal["WorkspaceList"] = "WorkspaceList"


def workspace_out(row: Workspace) -> WorkspaceOut:
    return WorkspaceOut(
        metadata=object_meta(row),
        spec=WorkspaceSpec(
            displayName=row.display_name,
            description=row.description,
            manager=row.manager,
            clusters=list(row.clusters or []),
            clusterSelector=(
                LabelSelector.model_validate(row.cluster_selector) if row.cluster_selector else None
            ),
        ),
        status=WorkspaceStatus(),
    )


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    role: WorkspaceRole


class MemberRoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: WorkspaceRole
    user: str | None = None


class MemberOut(BaseModel):
    apiVersion: str = "edge.theriseunion.io/v1alpha1"
    kind: Literal["WorkspaceMember"] = "WorkspaceMember"
    workspace: str
    user: str
    role: WorkspaceRole


class MemberList(BaseModel):
    apiVersion: str = "edge.theriseunion.io/v1alpha1"
    kind: Literal["WorkspaceMemberList"] = "WorkspaceMemberList"
    items: list[MemberOut]
