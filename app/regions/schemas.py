from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.resource import ResourceIn, ResourceList, ResourceOut, object_meta
from app.models.regions import Region


class RegionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253, description="Human-readable name.")
    description: str | None = Field(None, max_length=4096)


class RegionStatus(BaseModel):
    clusterCount: int = Field(0, description="Clusters registered in this region.")
    readyClusterCount: int = Field(0, description="Of those, clusters whose phase is Ready.")


class RegionIn(ResourceIn[RegionSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["Region"] = "Region"
    spec: RegionSpec = Field(default_factory=RegionSpec)


class RegionOut(ResourceOut[RegionSpec, RegionStatus]):
    kind: Literal["Region"] = "Region"


class RegionList(ResourceList[RegionOut]):
    kind: Literal["RegionList"] = "RegionList"


def region_out(row: Region) -> RegionOut:
    return RegionOut(
        metadata=object_meta(row),
        spec=RegionSpec(displayName=row.display_name, description=row.description),
        status=RegionStatus(),
    )
