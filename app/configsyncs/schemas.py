from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.clusters.schemas import Condition
from app.deployments.schemas import DeploymentPhase, Summary, TargetPhase
from app.kit.resource import (
    DNSLabel,
    KeysMatch,
    ResourceIn,
    ResourceList,
    ResourceOut,
    explained_map,
)

MAX_DATA_BYTES = 512 * 1024  # a ConfigMap holds at most 1 MiB; leave room for the envelope
# A ConfigMap's keys: letters, digits, '-', '_' and '.', but not "." or ".." (Kubernetes').
# Patterns valid in Python, Rust (pydantic-core) and ECMA-262 (the OpenAPI document).
KEY_PATTERN = r"^(?:\.{0,2}[-_a-zA-Z0-9]|\.{3})[-._a-zA-Z0-9]*$"
MAX_KEY_CHARS = 253
# Standard base64 with its padding (as Kubernetes reads binaryData).
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_KEY, _BASE64 = re.compile(KEY_PATTERN), re.compile(BASE64_PATTERN)


def _key_problem(key: str) -> str | None:
    if len(key) <= MAX_KEY_CHARS and _KEY.fullmatch(key):
        return None
    return f"{key!r} is not a valid key (letters, digits, '-', '_', '.'; at most 253)"


def _data_problem(key: str, _value: str) -> str | None:
    return _key_problem(key)


def _binary_data_problem(key: str, value: str) -> str | None:
    if problem := _key_problem(key):
        return problem
    return None if _BASE64.fullmatch(value) else f"binaryData.{key} is not base64"


ConfigKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=MAX_KEY_CHARS)]
Base64 = Annotated[str, StringConstraints(pattern=BASE64_PATTERN)]


class ConfigTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    clusters: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.region is None and not self.clusters:
            raise ValueError("give a region, clusters, or both")
        return self


class ConfigSyncSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: DNSLabel | None = Field(None, description="Namespace at the edge; default ws-<ws>.")
    data: Annotated[dict[ConfigKey, str], explained_map(_data_problem), KeysMatch()] = Field(
        default_factory=dict
    )
    binaryData: Annotated[
        dict[ConfigKey, Base64], explained_map(_binary_data_problem), KeysMatch()
    ] = Field(default_factory=dict, description="Base64 values.")
    secret: bool = Field(
        False,
        description="Push a Secret instead of a ConfigMap; the data is stored encrypted and "
        "never returned.",
    )
    targets: list[ConfigTarget] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _data(self) -> Self:
        """Rules over several fields, which a schema cannot say: a key in one of data and
        binaryData only, and their total size."""
        both = set(self.data) & set(self.binaryData)
        if both:
            raise ValueError(f"keys in both data and binaryData: {', '.join(sorted(both))}")
        size = sum(len(k) + len(v.encode()) for k, v in self.data.items())
        for key, value in self.binaryData.items():
            size += len(key) + len(base64.b64decode(value))  # valid: see BASE64_PATTERN
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
