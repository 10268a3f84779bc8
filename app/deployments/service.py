"""Rollouts of every kind (ApplicationDeployments, ConfigSyncs, VClusters): the flow they share —
revisions, rollback, deletion at the edge first, events, and the dispatch rows the controller
works from (written in the same transaction as the change, so the controller never sees a
rollout without its targets). What differs between the kinds is given as their rules
(`kinds.py`); reads fold the status from the targets (`status.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

from pydantic import BaseModel
from sqlalchemy import select

from app.audit.service import AuditTrail
from app.db.session import after_commit
from app.deployments import target_rows
from app.deployments.kinds import (
    KindRules,
    OutT,
    TargetsByRollout,
    deployment_spec,
    resolve_spec,
)
from app.deployments.repository import RolloutRepository
from app.deployments.resolution import Resolved
from app.deployments.schemas import HistoryEntry, RevisionOut, TargetSpec
from app.errors import Conflict, invalid_field
from app.events.service import NewEvent, announce, record
from app.kit.etag import check_write_preconditions
from app.kit.paging import Page, PageRequest
from app.kit.resource import EncodedDocument, EncodedDocuments, ResourceIn
from app.kit.service import ResourceService
from app.models.clusters import Cluster
from app.models.deployments import Rollout, RolloutRevision, RolloutTarget
from app.redis import RedisGateway

HISTORY_LENGTH = 10


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RolloutChange:
    """What `apply_spec` found, for the steps after the row is written."""

    before: dict[str, Any] | None  # what the current revision captured; None: a new rollout
    # The targets, resolved when what a revision captures changed (a new revision follows);
    # None when it did not (strategy, paused, labels).
    resolved: list[Resolved] | None


class RolloutService(ResourceService[Rollout, ResourceIn[Any], OutT, RolloutChange], Generic[OutT]):
    """The rollouts of one kind in one workspace, for one request."""

    repository: RolloutRepository

    def __init__(
        self,
        rules: KindRules[Any, OutT],
        redis: RedisGateway | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        scope = rules.scope
        repository = RolloutRepository(scope.session, scope.workspace, rules.kind)
        super().__init__(scope.session, repository, audit=audit)
        self.rules = rules
        self.scope = scope
        self.kind = rules.kind
        self.in_model = rules.in_model
        self.redis = redis

    # The kit's hooks -------------------------------------------------------------------------

    def new_row(self, name: str) -> Rollout:
        return Rollout(name=name, workspace_id=self.scope.workspace.id, kind=self.kind)

    def render(self, row: Rollout) -> OutT:
        return self.rules.render(row)

    def comparable_spec(self, row: Rollout) -> Any:
        return self.rules.comparable_spec(row)

    def editable(self, row: Rollout) -> dict[str, Any]:
        return self.rules.editable(row)

    async def apply_spec(self, row: Rollout, body: ResourceIn[Any]) -> RolloutChange:
        if row.deletion_timestamp is not None:
            raise Conflict(f"{self.kind} {row.name!r} is being deleted", code="BeingDeleted")
        rules, spec = self.rules, body.spec
        before = None
        if row.revision:
            rules.prepare_update(row, spec)
            before = rules.content_of(rules.spec_of(row))
        # References are checked when what is rolled out changes: pausing or relabelling
        # works even after a grant or node group it used is gone.
        resolved = None
        if before != rules.content_of(spec):
            resolved = await rules.check_content(row.name, spec, before)
        rules.store_spec(row, spec)
        if row.id is None:  # a create: revision 1 and its history go into the INSERT itself
            self._bump_revision(row, "Initial", from_version=None)
        return RolloutChange(before, resolved)

    async def after_create(
        self, row: Rollout, body: ResourceIn[Any], change: RolloutChange
    ) -> None:
        await self._record_revision(row, "Initial", change.resolved or [], new=True)
        await self.event(row, "Created", f"revision 1: {self.rules.describe(row)}")

    async def after_update(
        self, row: Rollout, body: ResourceIn[Any], change: RolloutChange, *, spec_changed: bool
    ) -> None:
        if change.resolved is not None:
            from_version = (change.before or {}).get("applicationVersionRef")
            await self.new_revision(row, "Upgrade", from_version, change.resolved)
            await self.event(row, "Updated", f"revision {row.revision}: {self.rules.describe(row)}")
        elif spec_changed:  # paused or strategy: let the controller look again now
            await target_rows.nudge(self.session, RolloutTarget.rollout_id == row.id)
            await self.event(row, "Updated", "paused" if row.paused else "strategy or resumed")

    # Events and revisions ---------------------------------------------------------------------

    async def event(self, row: Rollout, reason: str, message: str) -> None:
        """Record an event of this change (last in the transaction) and announce it after."""
        workspace_id = self.scope.workspace.id
        await record(
            self.session, workspace_id,
            [NewEvent(self.kind, row.name, reason, message, rollout_id=row.id)],
        )  # fmt: skip
        redis = self.redis
        if redis is not None:

            async def tell() -> None:
                await announce(redis, workspace_id)

            after_commit(self.session, tell)

    async def new_revision(
        self, row: Rollout, reason: str, from_version: str | None, resolved: list[Resolved]
    ) -> None:
        """The row's next revision, its snapshot, and its targets (`resolved`) pointed at it."""
        self._bump_revision(row, reason, from_version)
        await self._record_revision(row, reason, resolved, new=False)

    def _bump_revision(self, row: Rollout, reason: str, from_version: str | None) -> None:
        """The row's next revision and its history entry (no SQL)."""
        row.revision = (row.revision or 0) + 1
        entry = HistoryEntry(
            revision=row.revision,
            fromVersion=from_version,
            toVersion=self.rules.describe(row),
            reason=reason,
            operator=self.scope.operator,
            timestamp=_now(),
        )
        row.history = [*(row.history or []), entry.model_dump(mode="json")][-HISTORY_LENGTH:]

    async def _record_revision(
        self, row: Rollout, reason: str, resolved: list[Resolved], *, new: bool
    ) -> None:
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
                operator=self.scope.operator,
            )
        )
        await target_rows.point_at_revision(self.session, row, resolved, new=new)
        await self.session.flush()

    # Reads -------------------------------------------------------------------------------------

    async def read(self, name: str) -> dict[str, Any] | EncodedDocument:
        """The status is live (folded from the targets), so the row is read once for both
        instead of once for the object and again for its status."""
        if self.rules.reads_documents:
            found = await self.repository.document_row(name)
            if found is None:
                raise self.not_found(name)
            return EncodedDocument(self.rules.encoded(found), found.resource_version)
        row = await self.repository.get(name)
        if row is None:
            raise self.not_found(name)
        status = (await self.rules.statuses([row], await self._targets([row])))[name]
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
        return await self.rules.statuses(rows, await self._targets(rows))

    async def _targets(self, rows: Sequence[Rollout]) -> TargetsByRollout:
        """Each row's targets with their cluster's name, by cluster name."""
        targets: TargetsByRollout = {row.id: [] for row in rows}
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

    # ApplicationDeployments' revisions, read and rolled back ------------------------------------

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

    async def rollback(self, name: str, revision: int, if_match: str | None) -> OutT:
        row = await self.locked(name)
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
        resolved = await resolve_spec(self.scope, spec)
        from_version = row.application_version
        row.application_version = old.application_version
        row.targets = old.targets
        row.namespace = old.namespace
        row = await self.repository.touch(row, spec_changed=True)
        await self.new_revision(row, "Rollback", from_version, resolved)
        await self.event(
            row,
            "RolledBack",
            f"revision {row.revision} = revision {revision}: {row.application_version}",
        )
        out = self.render(row)
        self.record_audit("rollback", name)
        return out

    # Deletion ----------------------------------------------------------------------------------

    async def delete(self, name: str, if_match: str | None, *, orphan: bool = False) -> OutT:
        """Removes the rollout's objects from every edge first (targets go Deleting and the
        record disappears once all confirmed); `orphan` leaves them and removes it at once."""
        row = await self.locked(name)
        locked = await target_rows.lock(self.session, RolloutTarget.rollout_id == row.id)
        if orphan or not locked:
            out = await super().delete(name, if_match)
            why = "orphaned: its objects stay on the clusters" if locked else "it had no targets"
            await self.event(row, "Deleted", f"deleted; {why}")
            return out
        check_write_preconditions(if_match, row.resource_version)
        now = _now()
        if row.deletion_timestamp is None:
            row.deletion_timestamp = now
            for target in locked:
                target_rows.mark_removing(target, now)
            row = await self.repository.touch(row, spec_changed=False)
            await target_rows.notify_dispatch(self.session)
            self.record_audit("delete", name)
            await self.event(row, "Deleting", f"removing it from {len(locked)} clusters")
        return self.render(row)

    # Last in the class: below it, `list` would name this method in annotations.
    async def list(
        self, page: PageRequest, filters: dict[str, str] | None = None
    ) -> tuple[list[Any], Page[Any]]:
        if not self.rules.reads_documents:
            return await super().list(page, filters)
        query = self.repository.documents()
        for column, value in (filters or {}).items():
            query = query.where(getattr(Rollout, column) == value)
        result = await self.repository.document_page(page, query)
        return EncodedDocuments(self.rules.encoded(row) for row in result.items), result
