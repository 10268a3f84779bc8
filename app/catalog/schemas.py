from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.catalog.charts import (
    CHART_NAME,
    CHART_NAME_PATTERN,
    MAX_CHART_NAME_CHARS,
    SEMVER,
    SEMVER_PATTERN,
    SEMVER_WITHOUT_BUILD_PATTERN,
)
from app.kit.resource import (
    DNSLabel,
    DottedObjectMetaIn,
    ResourceIn,
    ResourceList,
    ResourceOut,
    explained,
    object_meta,
)
from app.models.catalog import Application, ApplicationVersion

Provisioner = Literal["helm", "workload"]


def _semver_problem(version: str) -> str | None:
    return None if SEMVER.fullmatch(version) else "must be SemVer 2, e.g. 1.2.3"


def _version_in_name_problem(version: str) -> str | None:
    if problem := _semver_problem(version):
        return problem
    if "+" in version:
        return "build metadata (+...) cannot be part of an object name"
    return None


def _chart_name_problem(name: str) -> str | None:
    if CHART_NAME.fullmatch(name):
        return None
    return "chart names are lower-case alphanumerics and '-', starting and ending alphanumeric"


SemVer = Annotated[str, StringConstraints(pattern=SEMVER_PATTERN), explained(_semver_problem)]
"""A SemVer 2 version, as Helm requires of charts."""

VersionInName = Annotated[
    str,
    StringConstraints(pattern=SEMVER_WITHOUT_BUILD_PATTERN),
    explained(_version_in_name_problem),
]
"""SemVer 2 without build metadata: a version that becomes part of an object's name."""

ChartName = Annotated[
    str,
    StringConstraints(pattern=CHART_NAME_PATTERN, max_length=MAX_CHART_NAME_CHARS),
    explained(_chart_name_problem),
]


class ApplicationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253)
    description: str | None = Field(None, max_length=4096)
    category: str | None = Field(None, max_length=63)
    icon: str | None = Field(None, max_length=2048, description="URL or data: URI.")
    provisioner: Provisioner = "helm"


class ApplicationStatus(BaseModel):
    latestVersion: str | None = None
    versionCount: int = 0


class ApplicationIn(ResourceIn[ApplicationSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["Application"] = "Application"
    spec: ApplicationSpec = Field(default_factory=ApplicationSpec)


class ApplicationOut(ResourceOut[ApplicationSpec, ApplicationStatus]):
    kind: Literal["Application"] = "Application"


class ApplicationList(ResourceList[ApplicationOut]):
    kind: Literal["ApplicationList"] = "ApplicationList"


def application_out(row: Application, status: ApplicationStatus | None = None) -> ApplicationOut:
    return ApplicationOut(
        metadata=object_meta(row),
        spec=ApplicationSpec(
            displayName=row.display_name,
            description=row.description,
            category=row.category,
            icon=row.icon,
            provisioner=row.provisioner,
        ),
        status=status or ApplicationStatus(),
    )


class HelmSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chart: ChartName
    version: SemVer = Field(description="Chart version (SemVer 2).")
    repository: str | None = Field(
        None, max_length=2048, description="Chart repository URL; default: this platform's."
    )
    values: dict[str, Any] = Field(default_factory=dict)


class Container(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest of a Kubernetes container

    name: DNSLabel
    image: str = Field(min_length=1)


class PodSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    containers: list[Container] = Field(min_length=1)


class PodTemplate(BaseModel):
    model_config = ConfigDict(extra="allow")

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PodSpec


class WorkloadDeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=0, le=1000)
    strategy: dict[str, Any] | None = None
    template: PodTemplate


class WorkloadDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DNSLabel
    spec: WorkloadDeploymentSpec


class WorkloadSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployments: list[WorkloadDeployment] = Field(min_length=1)


class ApplicationVersionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    application: str
    version: VersionInName = Field(description="SemVer 2, without build metadata (+...).")
    helm: HelmSource | None = None
    workload: WorkloadSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.helm is None) == (self.workload is None):
            raise ValueError("give exactly one of helm or workload")
        return self


class ApplicationVersionStatus(BaseModel):
    pass


class ApplicationVersionIn(ResourceIn[ApplicationVersionSpec]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["ApplicationVersion"] = "ApplicationVersion"
    metadata: DottedObjectMetaIn


class ApplicationVersionOut(ResourceOut[ApplicationVersionSpec, ApplicationVersionStatus]):
    kind: Literal["ApplicationVersion"] = "ApplicationVersion"


class ApplicationVersionList(ResourceList[ApplicationVersionOut]):
    kind: Literal["ApplicationVersionList"] = "ApplicationVersionList"


def version_name(application: str, version: str) -> str:
    return f"{application}-v{version}"


def application_version_out(row: ApplicationVersion) -> ApplicationVersionOut:
    return ApplicationVersionOut(
        metadata=object_meta(row),
        spec=ApplicationVersionSpec(
            application=row.application,
            version=row.version,
            helm=HelmSource.model_validate(row.helm) if row.helm else None,
            workload=WorkloadSource.model_validate(row.workload) if row.workload else None,
        ),
        status=ApplicationVersionStatus(),
    )
