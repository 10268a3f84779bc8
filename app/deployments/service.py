"""ApplicationDeployments: validation of a spec (its targets resolved in `resolution.py`),
revisions, rollback, deletion, and the dispatch rows the controller works from (written in the
same transaction as the change, so the controller never sees a deployment without its
targets). Reads fold the status from the targets (`status.py`). ConfigSync and VCluster
services subclass this one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import String, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditTrail
from app.db.session import after_commit
from app.deployments import target_rows
from app.deployments.repository import RolloutRepository
from app.deployments.resolution import Resolved, resolve_targets
from app.deployments.schemas import (
    ApplicationDeploymentIn,
    ApplicationDeploymentOut,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    ResolvedTarget,
    RevisionOut,
    Strategy,
    TargetSpec,
)
from app.deployments.status import deployment_document, deployment_status
from app.errors import Conflict, NotFound, invalid_field
from app.events.service import NewEvent, announce, record
from app.kit.etag import check_write_preconditions
from app.kit.paging import Page, PageRequest
from app.kit.resource import Documents, JSONDocument, object_meta
from app.kit.service import ResourceService
from app.models.catalog import ApplicationVersion
from app.models.clusters import Cluster
from app.models.deployments import (
    Rollout,
    RolloutRevision,
    RolloutTarget,
)
from app.models.workspaces import Workspace
from app.redis import RedisGateway
from app.workspaces.namespaces import default_namespace

HISTORY_LENGTH = 10


def _revision_content(spec: DeploymentSpec) -> dict[str, Any]:
    """What a revision captures: changing any of it makes a new revision (strategy and paused
    steer the rollout and do not)."""
    return {
        "applicationVersionRef": spec.applicationVersionRef,
        "targets": [t.model_dump(mode="json", exclude_none=True) for t in spec.targets],
        "namespace": spec.namespace,
    }


def deployment_spec(row: Rollout) -> DeploymentSpec:
    return DeploymentSpec(
        applicationVersionRef=row.application_version,
        targets=[TargetSpec.model_validate(t) for t in row.targets],
        namespace=row.namespace,
        strategy=Strategy.model_validate(row.strategy or {}),
        paused=row.paused,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class DeploymentService(
    ResourceService[Rollout, ApplicationDeploymentIn, ApplicationDeploymentOut]
):
    in_model: ClassVar[type[BaseModel]] = ApplicationDeploymentIn
    kind = "ApplicationDeployment"
    repository: RolloutRepository

    def __init__(
        self,
        session: AsyncSession,
        workspace: Workspace,
        operator: str | None,
        redis: RedisGateway | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        super().__init__(session, RolloutRepository(session, workspace, self.kind), audit=audit)
        self.workspace = workspace
        self.operator = operator
        self.redis = redis
        self._resolved: list[Resolved] = []
        self._content_before: dict[str, Any] | None = None

    # hooks -----------------------------------------------------------------------------------

    def new_row(self, name: str) -> Rollout:
        return Rollout(name=name, workspace_id=self.workspace.id, kind=self.kind)

    # What differs between the kinds of rollout (a ConfigSync overrides these) -------------

    def spec_of(self, row: Rollout) -> Any:
        return deployment_spec(row)

    def content_of(self, spec: Any) -> dict[str, Any]:
        """What a revision captures: changing it makes a new revision."""
        return _revision_content(spec)

    def describe(self, row: Rollout) -> str:
        return str(row.application_version)

    async def check_content(self, name: str, spec: Any) -> None:
        version, neighbours = await self._version_and_neighbours(name, spec)
        self._resolved = await resolve_targets(
            self.session, self.workspace, targets=spec.targets, namespace=self._namespace(spec),
            claim=True, version=spec.applicationVersionRef, version_exists=version is not None,
        )  # fmt: skip
        _refuse_collisions(self._namespace(spec), version, neighbours)

    def store_spec(self, row: Rollout, spec: Any) -> None:
        row.application_version = spec.applicationVersionRef
        row.targets = [t.model_dump(mode="json", exclude_none=True) for t in spec.targets]
        row.namespace = spec.namespace
        row.strategy = spec.strategy.model_dump(mode="json")
        row.paused = spec.paused

    # -----------------------------------------------------------------------------------------

    async def apply_spec(self, row: Rollout, body: Any) -> None:
        if row.deletion_timestamp is not None:
            raise Conflict(f"{self.kind} {row.name!r} is being deleted", code="BeingDeleted")
        spec = body.spec
        self._content_before = self.content_of(self.spec_of(row)) if row.revision else None
        # References are checked when what is rolled out changes: pausing or relabelling
        # works even after a grant or node group it used is gone.
        if self._content_before != self.content_of(spec):
            await self.check_content(row.name, spec)
        self.store_spec(row, spec)
        if row.id is None:  # a create: revision 1 and its history go into the INSERT itself
            self._bump_revision(row, "Initial", from_version=None)

    async def after_create(self, row: Rollout, body: Any) -> None:
        await self._record_revision(row, "Initial", new=True)
        await self._event(row, "Created", f"revision 1: {self.describe(row)}")

    async def after_update(self, row: Rollout, body: Any, *, spec_changed: bool) -> None:
        if self._content_before != self.content_of(body.spec):
            before = self._content_before or {}
            await self._new_revision(row, "Upgrade", before.get("applicationVersionRef"))
            await self._event(row, "Updated", f"revision {row.revision}: {self.describe(row)}")
        elif spec_changed:  # paused or strategy: let the controller look again now
            await target_rows.nudge(self.session, RolloutTarget.rollout_id == row.id)
            await self._event(row, "Updated", "paused" if row.paused else "strategy or resumed")

    async def _event(self, row: Rollout, reason: str, message: str) -> None:
        """Record an event of this change (last in the transaction) and announce it after."""
        await record(
            self.session, self.workspace.id,
            [NewEvent(self.kind, row.name, reason, message, rollout_id=row.id)],
        )  # fmt: skip
        redis, workspace_id = self.redis, self.workspace.id
        if redis is not None:

            async def tell() -> None:
                await announce(redis, workspace_id)

            after_commit(self.session, tell)

    def _namespace(self, spec: DeploymentSpec) -> str:
        return spec.namespace or default_namespace(self.workspace.name)

    async def _version_and_neighbours(
        self, name: str, spec: DeploymentSpec
    ) -> tuple[Any, list[Any]]:
        """In one statement: the spec's version (None if missing) and the other deployments of
        its namespace, each row (name or None for the version, workload or None)."""
        version = select(literal(None, String).label("name"), ApplicationVersion.workload).where(
            ApplicationVersion.name == spec.applicationVersionRef
        )
        namespace = self._namespace(spec)
        # No namespace in a spec means the workspace's default one. Written as a condition on
        # the column itself, so that the index on it is used.
        same_namespace = Rollout.namespace == namespace
        if namespace == default_namespace(self.workspace.name):
            same_namespace = or_(same_namespace, Rollout.namespace.is_(None))
        neighbours = (
            select(Rollout.name, ApplicationVersion.workload)
            .outerjoin(ApplicationVersion, ApplicationVersion.name == Rollout.application_version)
            .where(
                Rollout.workspace_id == self.workspace.id,
                Rollout.kind == self.kind,
                Rollout.name != name,
                same_namespace,
            )
        )
        rows = (await self.session.execute(union_all(version, neighbours))).all()
        found = next((r for r in rows if r.name is None), None)
        return found, sorted((r for r in rows if r.name is not None), key=lambda r: r.name)

    def render(self, row: Rollout) -> ApplicationDeploymentOut:
        return ApplicationDeploymentOut(
            metadata=object_meta(row, self.workspace.name),
            spec=deployment_spec(row),
            status=DeploymentStatus(
                observedGeneration=row.generation,
                revision=row.revision,
                history=[HistoryEntry.model_validate(h) for h in row.history],
            ),
        )

    # Reads. An ApplicationDeployment's document is built from the columns it shows
    # (deployment_document); the kinds built on this service render through their models.

    def _documents(self) -> bool:
        return self.kind == DeploymentService.kind

    async def read(self, name: str) -> dict[str, Any]:
        """The status is live (folded from the targets), so the row is read once for both
        instead of once for the object and again for its status."""
        if self._documents():
            found = await self.repository.document_row(name)
            if found is None:
                raise self.not_found(name)
            return JSONDocument(deployment_document(found, self.workspace.name))
        row = await self.repository.get(name)
        if row is None:
            raise self.not_found(name)
        status = (await self.statuses([row], await self._targets([row])))[name]
        rendered = self.render(row).model_dump(mode="json", by_alias=True)
        return {**rendered, "status": status.model_dump(mode="json")}

    async def live_status(
        self, names: list[str], rows: Sequence[Rollout] | None = None
    ) -> dict[str, BaseModel] | None:
        if rows is None:
            rows = (
                await self.session.scalars(
                    select(Rollout).where(self.repository.scope(), Rollout.name.in_(names))
                )
            ).all()
        return await self.statuses(rows, await self._targets(rows))

    async def _targets(self, rows: Sequence[Rollout]) -> dict[int, list[tuple[RolloutTarget, str]]]:
        """Each row's targets with their cluster's name, by cluster name."""
        targets: dict[int, list[tuple[RolloutTarget, str]]] = {row.id: [] for row in rows}
        if targets:
            found = await self.session.execute(
                select(RolloutTarget, Cluster.name)
                .join(Cluster, Cluster.id == RolloutTarget.cluster_id)
                .where(RolloutTarget.rollout_id.in_(targets))
                .order_by(Cluster.name)
            )
            for target, cluster in found.all():
                targets[target.rollout_id].append((target, cluster))
        return targets

    async def statuses(
        self, rows: Sequence[Rollout], targets: dict[int, list[tuple[RolloutTarget, str]]]
    ) -> dict[str, BaseModel]:
        """The status of each of `rows` from its targets (kinds with another status adapt it)."""
        return {row.name: deployment_status(row, targets[row.id]) for row in rows}

    # revisions -------------------------------------------------------------------------------

    async def _new_revision(self, row: Rollout, reason: str, from_version: str | None) -> None:
        self._bump_revision(row, reason, from_version)
        await self._record_revision(row, reason, new=False)

    def _bump_revision(self, row: Rollout, reason: str, from_version: str | None) -> None:
        """The row's next revision and its history entry (no SQL)."""
        row.revision = (row.revision or 0) + 1
        entry = HistoryEntry(
            revision=row.revision,
            fromVersion=from_version,
            toVersion=self.describe(row),
            reason=reason,
            operator=self.operator,
            timestamp=_now(),
        )
        row.history = [*(row.history or []), entry.model_dump(mode="json")][-HISTORY_LENGTH:]

    async def _record_revision(self, row: Rollout, reason: str, *, new: bool) -> None:
        """The snapshot of the row's (just bumped) revision, and its targets pointed at it."""
        self.session.add(
            RolloutRevision(
                rollout_id=row.id,
                revision=row.revision,
                application_version=row.application_version,
                content=row.content,
                targets=row.targets,
                namespace=row.namespace,
                reason=reason,
                operator=self.operator,
            )
        )
        await target_rows.point_at_revision(self.session, row, self._resolved, new=new)
        await self.session.flush()

    async def revisions(self, name: str) -> list[RevisionOut]:
        row = await self.repository.get(name)
        if row is None:
            raise self.not_found(name)
        found = await self.session.scalars(
            select(RolloutRevision)
            .where(RolloutRevision.rollout_id == row.id)
            .order_by(RolloutRevision.revision)
        )
        return [
            RevisionOut(
                revision=r.revision,
                applicationVersionRef=r.application_version,
                targets=[TargetSpec.model_validate(t) for t in r.targets],
                namespace=r.namespace,
                reason=r.reason,
                operator=r.operator,
                creationTimestamp=r.created_at,
            )
            for r in found.all()
        ]

    async def rollback(
        self, name: str, revision: int, if_match: str | None
    ) -> ApplicationDeploymentOut:
        row = await self._locked(name)
        check_write_preconditions(if_match, row.resource_version)
        if row.deletion_timestamp is not None:
            raise Conflict(f"deployment {name!r} is being deleted", code="BeingDeleted")
        old = await self.session.scalar(
            select(RolloutRevision).where(
                RolloutRevision.rollout_id == row.id, RolloutRevision.revision == revision
            )
        )
        if old is None:
            raise invalid_field("revision", f"deployment {name!r} has no revision {revision}")
        spec = deployment_spec(row).model_copy(
            update={
                "applicationVersionRef": old.application_version,
                "targets": [TargetSpec.model_validate(t) for t in old.targets],
                "namespace": old.namespace,
            }
        )
        # The clusters and versions of then must still be valid now (grants may have changed).
        self._resolved = await self._resolve(spec)
        from_version = row.application_version
        row.application_version = old.application_version
        row.targets = old.targets
        row.namespace = old.namespace
        row = await self.repository.touch(row, spec_changed=True)
        await self._new_revision(row, "Rollback", from_version)
        await self._event(
            row,
            "RolledBack",
            f"revision {row.revision} = revision {revision}: {row.application_version}",
        )
        out = self.render(row)
        self._audit("rollback", name)
        return out

    # deletion --------------------------------------------------------------------------------

    async def delete(
        self, name: str, if_match: str | None, *, orphan: bool = False
    ) -> ApplicationDeploymentOut:
        """Removes the deployment's objects from every edge first (targets go Deleting and the
        record disappears once all confirmed); `orphan` leaves them and removes it at once."""
        row = await self._locked(name)
        locked = await target_rows.lock(self.session, RolloutTarget.rollout_id == row.id)
        if orphan or not locked:
            out = await super().delete(name, if_match)
            why = "orphaned: its objects stay on the clusters" if locked else "it had no targets"
            await self._event(row, "Deleted", f"deleted; {why}")
            return out
        check_write_preconditions(if_match, row.resource_version)
        now = _now()
        if row.deletion_timestamp is None:
            row.deletion_timestamp = now
            for target in locked:
                target_rows.mark_removing(target, now)
            row = await self.repository.touch(row, spec_changed=False)
            await target_rows.notify_dispatch(self.session)
            self._audit("delete", name)
            await self._event(row, "Deleting", f"removing it from {len(locked)} clusters")
        return self.render(row)

    async def resolve(self, spec: DeploymentSpec) -> list[ResolvedTarget]:
        return [r.out() for r in await self._resolve(spec)]

    async def _resolve(self, spec: DeploymentSpec) -> list[Resolved]:
        return await resolve_targets(
            self.session, self.workspace, targets=spec.targets, namespace=self._namespace(spec),
            version=spec.applicationVersionRef,
        )  # fmt: skip

    def not_found(self, name: str) -> NotFound:
        return NotFound(f"ApplicationDeployment {name!r} not found")

    # Last in the class: below it, `list` would name this method in annotations.
    async def list(
        self, page: PageRequest, filters: dict[str, str] | None = None
    ) -> tuple[list[Any], Page[Any]]:
        if not self._documents():
            return await super().list(page, filters)
        query = self.repository.documents()
        for column, value in (filters or {}).items():
            query = query.where(getattr(Rollout, column) == value)
        result = await self.repository.document_page(page, query)
        name = self.workspace.name
        return Documents(deployment_document(row, name) for row in result.items), result


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
