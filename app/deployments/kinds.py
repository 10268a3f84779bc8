"""What differs between the kinds of rollout in the API: how a kind's spec is read from and
stored in its row, what a revision of it captures, how its references are checked, how it is
rendered and how its status is folded. Everything else — revisions, target rows, events,
deletion at the edge — is the same for every kind and is `RolloutService`'s (service.py), which
is given one of these rules. The controller's side of a kind is app/controller/dispatch/kinds.py.

A kind's rules are made per request: they read the database through the request's scope and
hold nothing between calls; what one step finds for a later one is returned, not kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic

from pydantic import BaseModel
from sqlalchemy import String, bindparam, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypeVar

from app.deployments.rendered import RenderedDocuments
from app.deployments.resolution import Resolved, resolve_targets
from app.deployments.schemas import (
    ApplicationDeploymentIn,
    ApplicationDeploymentOut,
    DeploymentSpec,
)
from app.deployments.status import (
    deployment_status,
    spec_document,
    strategy_document,
    written_document,
)
from app.errors import Conflict
from app.kit.resource import ResourceIn, ResourceOut, editable_form
from app.models.catalog import ApplicationVersion
from app.models.deployments import Rollout, RolloutTarget
from app.models.workspaces import Workspace
from app.workspaces.namespaces import default_namespace

SpecT = TypeVar("SpecT", bound=BaseModel)
OutT = TypeVar("OutT", bound=ResourceOut[Any, Any])

# Each rollout's targets with their cluster's name, by rollout id (ordered by cluster name).
TargetsByRollout = dict[int, list[tuple[RolloutTarget, str]]]


@dataclass(frozen=True)
class RolloutScope:
    """The request a rollout is changed or read in: its transaction, its workspace, its caller."""

    session: AsyncSession
    workspace: Workspace
    operator: str | None  # the caller's name, recorded in revisions and their history
    role: str = "viewer"  # the caller's role in the workspace

    def namespace(self, spec_namespace: str | None) -> str:
        """The edge namespace a spec's objects go to (the workspace's own unless it names one)."""
        return spec_namespace or default_namespace(self.workspace.name)


class KindRules(Generic[SpecT, OutT]):
    """The defaults every kind shares; a kind says what differs."""

    kind: ClassVar[str]
    in_model: ClassVar[type[ResourceIn[Any]]]
    # Whether reads send the kind's JSON built straight from columns (`encoded`) rather than
    # from `render` and `statuses`: the ApplicationDeployment, read far more than the rest.
    reads_documents: ClassVar[bool] = False

    def __init__(self, scope: RolloutScope) -> None:
        self.scope = scope

    def spec_of(self, row: Rollout) -> SpecT:
        """The stored spec, in the clear."""
        raise NotImplementedError

    def content_of(self, spec: SpecT) -> dict[str, Any]:
        """What a revision captures: changing it makes a new revision (the rest of the spec —
        strategy, paused — steers the rollout and does not)."""
        return spec.model_dump(mode="json")

    def describe(self, row: Rollout) -> str:
        """The revision in a few words, for its history entry and its event."""
        raise NotImplementedError

    def prepare_update(self, row: Rollout, spec: SpecT) -> None:
        """Before an update of a stored rollout: refuse what cannot change (422) and fill in
        what reads never return, so a body read back and sent again keeps it."""

    async def check_content(
        self, name: str, spec: SpecT, before: dict[str, Any] | None
    ) -> list[Resolved]:
        """Validate the spec's references (422, 409) and resolve its targets, claiming their
        namespace; `before` is what the current revision captured (None for a new rollout).
        Runs only when what a revision captures changes."""
        raise NotImplementedError

    def store_spec(self, row: Rollout, spec: SpecT) -> None:
        raise NotImplementedError

    def render(self, row: Rollout) -> OutT:
        """The object as a write returns it (its status without the targets)."""
        raise NotImplementedError

    def comparable_spec(self, row: Rollout) -> Any:
        """The spec as compared to tell whether an update changed it (bumps `generation`)."""
        return self.render(row).spec

    def editable(self, row: Rollout) -> dict[str, Any]:
        """The object as a write body, for merge patches."""
        return editable_form(self.render(row))

    def encoded(self, row: Any) -> bytes:
        """The JSON a read sends of a row of repository.DOCUMENT_COLUMNS (kinds that read
        documents only)."""
        raise NotImplementedError

    async def statuses(
        self, rows: Sequence[Rollout], targets: TargetsByRollout
    ) -> dict[str, BaseModel]:
        """The live status of each of `rows`, by name, folded from its targets."""
        return {row.name: deployment_status(row, targets[row.id]) for row in rows}


async def resolve_spec(scope: RolloutScope, spec: DeploymentSpec) -> list[Resolved]:
    """The (cluster, node group, replicas) a deployment's spec resolves to, claiming nothing."""
    return await resolve_targets(
        scope.session, scope.workspace, targets=spec.targets,
        namespace=scope.namespace(spec.namespace), version=spec.applicationVersionRef,
    )  # fmt: skip


def deployment_spec(row: Rollout) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        spec_document(
            row.application_version,
            row.targets,
            row.namespace,
            strategy_document(row.strategy),
            row.paused,
        )
    )


class ApplicationDeploymentRules(KindRules[DeploymentSpec, ApplicationDeploymentOut]):
    kind = "ApplicationDeployment"
    in_model = ApplicationDeploymentIn
    reads_documents = True

    def __init__(self, scope: RolloutScope, *, rendered: RenderedDocuments) -> None:
        super().__init__(scope)
        self.rendered = rendered  # the process's documents, kept encoded per change

    def encoded(self, row: Any) -> bytes:
        return self.rendered.encoded(row, self.scope.workspace.name)

    def spec_of(self, row: Rollout) -> DeploymentSpec:
        return deployment_spec(row)

    def content_of(self, spec: DeploymentSpec) -> dict[str, Any]:
        return {
            "applicationVersionRef": spec.applicationVersionRef,
            "targets": [t.model_dump(mode="json", exclude_none=True) for t in spec.targets],
            "namespace": spec.namespace,
        }

    def describe(self, row: Rollout) -> str:
        return str(row.application_version)

    async def check_content(
        self, name: str, spec: DeploymentSpec, before: dict[str, Any] | None
    ) -> list[Resolved]:
        version, neighbours = await self._version_and_neighbours(name, spec)
        namespace = self.scope.namespace(spec.namespace)
        resolved = await resolve_targets(
            self.scope.session, self.scope.workspace, targets=spec.targets, namespace=namespace,
            claim=True, version=spec.applicationVersionRef, version_exists=version is not None,
        )  # fmt: skip
        _refuse_collisions(namespace, version, neighbours)
        return resolved

    def store_spec(self, row: Rollout, spec: DeploymentSpec) -> None:
        row.application_version = spec.applicationVersionRef
        row.targets = [t.model_dump(mode="json", exclude_none=True) for t in spec.targets]
        row.namespace = spec.namespace
        row.strategy = spec.strategy.model_dump(mode="json")
        row.paused = spec.paused

    def render(self, row: Rollout) -> ApplicationDeploymentOut:
        return ApplicationDeploymentOut.model_validate(
            written_document(row, self.scope.workspace.name)
        )

    async def _version_and_neighbours(
        self, name: str, spec: DeploymentSpec
    ) -> tuple[Any, list[Any]]:
        """In one statement: the spec's version (None if missing) and the other deployments of
        its namespace, each row (name or None for the version, workload or None)."""
        workspace = self.scope.workspace
        namespace = self.scope.namespace(spec.namespace)
        statement = _VERSION_AND_NEIGHBOURS[namespace == default_namespace(workspace.name)]
        rows = (
            await self.scope.session.execute(
                statement,
                {
                    "version": spec.applicationVersionRef,
                    "workspace_id": workspace.id,
                    "kind": self.kind,
                    "name": name,
                    "namespace": namespace,
                },
            )
        ).all()
        found = next((r for r in rows if r.name is None), None)
        return found, sorted((r for r in rows if r.name is not None), key=lambda r: r.name)


def _version_and_neighbours_statement(default: bool) -> Any:
    """The union ApplicationDeploymentRules._version_and_neighbours runs; `default`: the
    namespace is the workspace's default one, which a spec naming no namespace means too
    (written as a condition on the column itself, so that the index on it is used)."""
    version = select(literal(None, String).label("name"), ApplicationVersion.workload).where(
        ApplicationVersion.name == bindparam("version")
    )
    same_namespace = Rollout.namespace == bindparam("namespace")
    if default:
        same_namespace = or_(same_namespace, Rollout.namespace.is_(None))
    neighbours = (
        select(Rollout.name, ApplicationVersion.workload)
        .outerjoin(ApplicationVersion, ApplicationVersion.name == Rollout.application_version)
        .where(
            Rollout.workspace_id == bindparam("workspace_id"),
            Rollout.kind == bindparam("kind"),
            Rollout.name != bindparam("name"),
            same_namespace,
        )
    )
    return union_all(version, neighbours)


# Built once for both cases: building this union cost a create more than running it (a create
# is CPU-bound in the API; see docs/performance.md).
_VERSION_AND_NEIGHBOURS = {
    default: _version_and_neighbours_statement(default) for default in (False, True)
}


def _refuse_collisions(namespace: str, version: Any, neighbours: list[Any]) -> None:
    """Two deployments of a workspace writing the same Deployment objects would fight over them
    (and deleting one would delete the other's): 409. `neighbours`: (name, workload) of the
    workspace's other deployments in `namespace`."""
    mine = _workload_names(version.workload if version else None)
    if not mine:
        return  # Helm versions write a HelmChart named after the deployment: no overlap
    for other, theirs in neighbours:
        shared = mine & _workload_names(theirs)
        if shared:
            raise Conflict(
                f"deployment {other!r} already writes Deployment(s) {', '.join(sorted(shared))}"
                f" in namespace {namespace!r}; use another spec.namespace",
                code="ObjectsTaken",
            )


def _workload_names(workload: dict[str, Any] | None) -> set[str]:
    return {d["name"] for d in (workload or {}).get("deployments", [])}
