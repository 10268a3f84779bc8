"""The SQL of rollouts (ApplicationDeployments, ConfigSyncs, VClusters) beyond the shared
resource repository: a create in one INSERT, and the columns a deployment's document is built
from, read as rows rather than as ORM objects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import resource_version_seq
from app.kit.paging import Page, PageRequest, fetch_page_rows
from app.kit.repository import ResourceRepository
from app.models.clusters import Cluster
from app.models.deployments import Rollout, RolloutTarget
from app.models.workspaces import Workspace


def json_time_sql(column: Any) -> Any:
    """app.kit.resource.json_time in SQL: a timestamp as pydantic writes it in JSON (UTC, `Z`,
    microseconds unless 0)."""
    written = func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    return func.replace(written, ".000000Z", "Z")


# A target's part of the status, as the document shows it (json, not jsonb: json keeps the
# keys in the order written), with what the phase is folded from beside it.
_TARGET = func.json_build_array(
    func.json_build_object(
        "cluster", Cluster.name,
        "region", RolloutTarget.region,
        "nodeGroup", RolloutTarget.node_group,
        "phase", RolloutTarget.phase,
        "desiredReplicas", RolloutTarget.replicas,
        "readyReplicas", RolloutTarget.ready_replicas,
        "revision", RolloutTarget.applied_revision,
        "message", RolloutTarget.message,
        "lastTransitionTime", json_time_sql(RolloutTarget.last_transition_time),
        "lastSyncTime", json_time_sql(RolloutTarget.last_sync_time),
    ),
    RolloutTarget.removing,
    RolloutTarget.desired_revision,
)  # fmt: skip
# Each rollout's targets by cluster name, and when the last of them changed (else the rollout).
_LIVE = (
    select(
        func.json_build_object(
            "targets",
            func.coalesce(
                func.json_agg(aggregate_order_by(_TARGET, Cluster.name)),
                literal_column("'[]'::json"),
            ),
            "changed",
            json_time_sql(
                func.coalesce(func.max(RolloutTarget.last_transition_time), Rollout.updated_at)
            ),
        )
    )
    .select_from(RolloutTarget)
    .join(Cluster, Cluster.id == RolloutTarget.cluster_id)
    .where(RolloutTarget.rollout_id == Rollout.id)
    .scalar_subquery()
)
# What a deployment's document is built from, in one row per deployment: no `content`
# (ConfigSyncs and VClusters only), no dispatch bookkeeping, timestamps already in their JSON
# form, and the JSON columns with the live targets as one JSON text (`stored`), which decodes in
# a fraction of the time five values and a second query's rows took — and only when the
# document is built (rendered.py keeps documents encoded under a digest of their row).
DOCUMENT_COLUMNS = (
    Rollout.id,
    Rollout.name,
    cast(Rollout.uid, String).label("uid"),
    Rollout.resource_version,
    Rollout.generation,
    json_time_sql(Rollout.created_at).label("created"),
    json_time_sql(Rollout.deletion_timestamp).label("deleted"),
    Rollout.application_version,
    Rollout.namespace,
    Rollout.paused,
    Rollout.revision,
    cast(func.json_build_object(
        "labels", Rollout.labels,
        "annotations", Rollout.annotations,
        "targets", Rollout.targets,
        "strategy", Rollout.strategy,
        "history", Rollout.history,
        "live", _LIVE,
    ), Text).label("stored"),  # text: the driver would decode a json value on arrival
)  # fmt: skip
# A GET's read, built once (building a select of this many columns costs more than running it
# from SQLAlchemy's statement cache).
_ONE_DOCUMENT = select(*DOCUMENT_COLUMNS).where(
    Rollout.workspace_id == bindparam("workspace_id"),
    Rollout.kind == bindparam("kind"),
    Rollout.name == bindparam("name"),
)

# A create's INSERT, built once (the row's values are its parameters): building it per create
# cost more than running it. The resourceVersion is drawn inside it.
_INSERT = (
    insert(Rollout).values(resource_version=resource_version_seq.next_value()).returning(Rollout)
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
            a.key: state.dict[a.key]
            for a in state.mapper.column_attrs
            if a.key in state.dict and a.key != "resource_version"  # the INSERT draws it
        }
        try:
            created: Rollout | None = await self.session.scalar(_INSERT, values)
        except IntegrityError as exc:
            raise self.already_exists(row.name) from exc
        assert created is not None
        return created

    def documents(self) -> Select[Any]:
        return select(*DOCUMENT_COLUMNS).where(self.scope())

    async def document_page(self, page: PageRequest, query: Select[Any]) -> Page[Any]:
        return await fetch_page_rows(self.session, Rollout, query, page)

    async def document_row(self, name: str) -> Any:
        """The row of DOCUMENT_COLUMNS of `name`, or None: the whole GET in one statement."""
        found = await self.session.execute(
            _ONE_DOCUMENT, {"workspace_id": self.workspace.id, "kind": self.kind, "name": name}
        )
        return found.first()
