from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.clusters.schemas import Condition
from app.deployments.schemas import DeploymentPhase, Summary, TargetPhase, dns_label
from app.kit.resource import ResourceIn, ResourceList, ResourceOut

MAX_DATA_BYTES = 512 * 1024  # a ConfigMap holds at most 1 MiB; leave room for the envelope
KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ConfigTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    clusters: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.region is None and not self.clusters:
            raise ValueError("give a region, clusters, or both")
        return self


def _check_keys(keys: list[str]) -> None:
    for key in keys:
        if not key or len(key) > 253 or not set(key) <= KEY_CHARS or key in (".", ".."):
            raise ValueError(f"{key!r} is not a valid key (letters, digits, '-', '_', '.')")


class ConfigSyncSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(None, description="Namespace at the edge; default ws-<ws>.")
    data: dict[str, str] = Field(default_factory=dict)
    binaryData: dict[str, str] = Field(default_factory=dict, description="Base64 values.")
    secret: bool = Field(
        False,
        description="Push a Secret instead of a ConfigMap; the data is stored encrypted and "
        "never returned.",
    )
    targets: list[ConfigTarget] = Field(min_length=1, max_length=1000)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else dns_label(value)

    @model_validator(mode="after")
    def _data(self) -> Self:
        _check_keys([*self.data, *self.binaryData])
        both = set(self.data) & set(self.binaryData)
        if both:
            raise ValueError(f"keys in both data and binaryData: {', '.join(sorted(both))}")
        size = sum(len(k) + len(v.encode()) for k, v in self.data.items())
        for key, value in self.binaryData.items():
            try:
                size += len(key) + len(base64.b64decode(value, validate=True))
            except binascii.Error:
                raise ValueError(f"binaryData.{key} is not base64") from None
        if size > MAX_DATA_BYTES:
            raise ValueError(f"data totals {size} bytes; the limit is {MAX_DATA_BYTES}")
        return self


class ConfigTargetStatus(BaseModel):
    cluster: str
    region: str
    phase: TargetPhase
    appliedRevision: int | None = None
    message: str | None = None
    lastTransitionTime: datetime | None = None
    lastSyncTime: datetime | None = None


class ConfigSyncStatus(BaseModel):
    phase: DeploymentPhase = "Pending"
    observedGeneration: int = 0
    revision: int = 0
    summary: Summary = Field(default_factory=Summary)
    targets: list[ConfigTargetStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    dataKeys: list[str] = Field(default_factory=list, description="Keys pushed (values of a "
                                "secret ConfigSync are never returned).")  # fmt: skip


class ConfigSyncIn(ResourceIn[ConfigSyncSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["ConfigSync"] = "ConfigSync"


class ConfigSyncOut(ResourceOut[ConfigSyncSpec, ConfigSyncStatus]):
    kind: Literal["ConfigSync"] = "ConfigSync"


class ConfigSyncList(ResourceList[ConfigSyncOut]):
    kind: Literal["ConfigSyncList"] = "ConfigSyncList"
