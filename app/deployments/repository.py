"""The SQL of rollouts (ApplicationDeployments, ConfigSyncs, VClusters) beyond the shared
resource repository: a create in one INSERT, and the columns a deployment's document is built
from, read as rows rather than as ORM objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Select, any_, bindparam, insert, inspect, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.models import Cluster
from app.db.base import resource_version_seq
from app.db.repository import ResourceRepository
from app.deployments.models import Rollout, RolloutTarget
from app.kit.paging import Page, PageRequest, fetch_page_rows
from app.workspaces.models import Workspace

# What a deployment's document shows: no `content` (ConfigSyncs and VClusters only) and no
# dispatch bookkeeping.
DOCUMENT_COLUMNS = (
    Rollout.id,
    Rollout.name,
    Rollout.uid,
    Rollout.labels,
    Rollout.annotations,
    Rollout.resource_version,
    Rollout.generation,
    Rollout.created_at,
    Rollout.updated_at,
    Rollout.deletion_timestamp,
    Rollout.application_version,
    Rollout.targets,
    Rollout.namespace,
    Rollout.strategy,
    Rollout.paused,
    Rollout.revision,
    Rollout.history,
)
# A target's part of the status (named as RolloutTarget's attributes, plus its cluster's name):
# not its values, applied objects or lease.
TARGET_COLUMNS = (
    RolloutTarget.rollout_id,
    Cluster.name.label("cluster"),
    RolloutTarget.region,
    RolloutTarget.node_group,
    RolloutTarget.phase,
    RolloutTarget.replicas,
    RolloutTarget.ready_replicas,
    RolloutTarget.applied_revision,
    RolloutTarget.desired_revision,
    RolloutTarget.removing,
    RolloutTarget.message,
    RolloutTarget.last_transition_time,
    RolloutTarget.last_sync_time,
)


# The reads of a GET, built once (building a select of this many columns costs more than
# running it from SQLAlchemy's statement cache).
_ONE_DOCUMENT = select(*DOCUMENT_COLUMNS).where(
    Rollout.workspace_id == bindparam("workspace_id"),
    Rollout.kind == bindparam("kind"),
    Rollout.name == bindparam("name"),
)
_TARGETS = (
    select(*TARGET_COLUMNS)
    .join(Cluster, Cluster.id == RolloutTarget.cluster_id)
    # One array parameter: the same statement (and prepared plan) for any number of ids.
    .where(RolloutTarget.rollout_id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
    .order_by(Cluster.name)
)


class RolloutRepository(ResourceRepository[Rollout]):
    """The rollouts of one kind in one workspace."""

    model = Rollout

    def __init__(self, session: AsyncSession, workspace: Workspace, kind: str) -> None:
        super().__init__(session)
        self.workspace = workspace
        self.kind = kind  # type: ignore[misc]

    def scope(self) -> Any:
        return (Rollout.workspace_id == self.workspace.id) & (Rollout.kind == self.kind)

    async def add(self, row: Rollout) -> Rollout:
        """One INSERT … RETURNING: the resourceVersion is drawn inside it, the server-set
        columns come back with it, and a duplicate name is answered by the unique constraint
        instead of a read beforehand. The failed INSERT aborts the transaction, which the
        request's session rolls back: the 409 leaves nothing behind. Returns the persistent
        object; `row` (transient) only carries the values."""
        state = inspect(row)
        values = {
            a.key: state.dict[a.key] for a in state.mapper.column_attrs if a.key in state.dict
        }
        values["resource_version"] = resource_version_seq.next_value()
        try:
            created: Rollout | None = await self.session.scalar(
                insert(Rollout).values(values).returning(Rollout)
            )
        except IntegrityError as exc:
            raise self.already_exists(row.name) from exc
        assert created is not None
        return created

    def documents(self) -> Select[Any]:
        return select(*DOCUMENT_COLUMNS).where(self.scope())

    async def document_page(self, page: PageRequest, query: Select[Any]) -> Page[Any]:
        return await fetch_page_rows(self.session, Rollout, query, page)

    async def document_row(self, name: str) -> Any:
        """The row of DOCUMENT_COLUMNS of `name`, or None."""
        found = await self.session.execute(
            _ONE_DOCUMENT, {"workspace_id": self.workspace.id, "kind": self.kind, "name": name}
        )
        return found.first()

    async def target_rows(self, ids: Sequence[int]) -> dict[int, list[Any]]:
        """The rows of TARGET_COLUMNS of each rollout of `ids`, by cluster name."""
        targets: dict[int, list[Any]] = {i: [] for i in ids}
        if targets:
            found = await self.session.execute(_TARGETS, {"ids": list(targets)})
            for target in found.all():
                targets[target.rollout_id].append(target)
        return targets
