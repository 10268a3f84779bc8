from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditTrail
from app.auth.identity import Principal
from app.cache import ObjectCache
from app.clusters.address_guard import EndpointRefused, check_server_url
from app.clusters.agents import issue_join_token, revoke_credentials
from app.clusters.kubeconfig import InvalidKubeconfig, parse_kubeconfig
from app.clusters.schemas import (
    ClusterIn,
    ClusterOut,
    JoinToken,
    NodeGroupIn,
    NodeGroupOut,
    cluster_document,
    cluster_out,
    cluster_write_form,
    node_group_out,
)
from app.config import Settings
from app.crypto import Sealed, SecretBox
from app.errors import Conflict, invalid_field
from app.kit.paging import Page, PageRequest
from app.kit.repository import ResourceRepository
from app.kit.resource import Documents
from app.kit.selectors import Requirement, selector_clause
from app.kit.service import ResourceService
from app.models.clusters import Cluster, NodeGroup
from app.models.deployments import RolloutTarget
from app.models.references import refuse_if_used
from app.models.regions import Region
from app.models.workspaces import Workspace, WorkspaceMember
from app.workspaces.schemas import LabelSelector

# The label a vcluster's Cluster carries (app.vclusters.registration sets it).
VCLUSTER_WORKSPACE_LABEL = "edge.theriseunion.io/workspace"

_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def requirements_of(selector: LabelSelector) -> list[Requirement]:
    """A Kubernetes LabelSelector as the requirements `selector_clause` evaluates in SQL."""
    found = [Requirement(k, "=", (v,)) for k, v in selector.matchLabels.items()]
    for expression in selector.matchExpressions:
        found.append(
            Requirement(
                expression.key,
                _OPERATORS[expression.operator],  # type: ignore[arg-type]
                tuple(sorted(expression.values)),
            )
        )
    return found


def granted_clause(workspaces: list[Workspace]) -> ColumnElement[bool]:
    """Clusters granted to any of `workspaces`: by name list or by cluster selector — and a
    vcluster's Cluster to its own workspace only, whatever lists or selectors say."""
    return or_(
        false(),
        *(
            _granted_to(w.name, tuple(w.clusters or ()), json.dumps(w.cluster_selector))
            for w in workspaces
        ),
    )


# Built once per grant, not per request: parsing a selector and building its conditions cost
# a create about as much as running the query they are part of. The clause is a function of
# these values alone (the selector as JSON text, hashable), so a changed grant is another key.
@functools.lru_cache(maxsize=1024)
def _granted_to(
    workspace: str, clusters: tuple[str, ...], cluster_selector: str
) -> ColumnElement[bool]:
    grants: list[ColumnElement[bool]] = []
    shared = Cluster.provider.is_distinct_from("vcluster")
    if clusters:
        grants.append(shared & Cluster.name.in_(clusters))
    selector = json.loads(cluster_selector)
    if selector is not None:
        requirements = requirements_of(LabelSelector.model_validate(selector))
        grants.append(shared & selector_clause(Cluster.labels, requirements))
    own = Cluster.labels.contains({VCLUSTER_WORKSPACE_LABEL: workspace})
    grants.append((Cluster.provider == "vcluster") & own)
    return or_(*grants)


async def visible_clusters(session: AsyncSession, principal: Principal) -> ColumnElement[bool]:
    """Platform admins see every cluster; users the clusters of their workspaces; a workspace
    service account those of its workspace; other service accounts none."""
    if principal.is_platform_admin:
        return true()
    if principal.kind == "user":
        query = (
            select(Workspace).join(WorkspaceMember).where(WorkspaceMember.user_id == principal.id)
        )
    elif principal.workspace_id is not None:
        query = select(Workspace).where(Workspace.id == principal.workspace_id)
    else:
        return false()
    return granted_clause(list((await session.scalars(query)).all()))


class ClusterRepository(ResourceRepository[Cluster]):
    model = Cluster
    kind = "Cluster"

    def __init__(self, session: AsyncSession, visible: ColumnElement[bool]) -> None:
        super().__init__(session)
        self.visible = visible

    def scope(self) -> ColumnElement[bool]:
        return self.visible


class ClusterService(ResourceService[Cluster, ClusterIn, ClusterOut]):
    in_model = ClusterIn
    cache_namespace = "clusters"

    def __init__(
        self,
        session: AsyncSession,
        repository: ClusterRepository,
        settings: Settings,
        secrets: SecretBox,
        cache: ObjectCache | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        super().__init__(session, repository, cache, audit)
        self.settings = settings
        self.secrets = secrets

    async def check_delete(self, row: Cluster) -> None:
        await refuse_if_used(
            self.session,
            f"cluster {row.name!r}",
            RolloutTarget.cluster_id == row.id,
            via_targets=True,
        )

    def new_row(self, name: str) -> Cluster:
        return Cluster(name=name, uid=uuid.uuid4())

    @property
    def _allow_private(self) -> bool:
        return bool(self.settings.allow_private_cluster_endpoints)

    async def check_spec(self, body: ClusterIn) -> None:
        region = await self.session.scalar(select(Region.id).where(Region.name == body.spec.region))
        if region is None:
            raise invalid_field("spec.region", f"region {body.spec.region!r} does not exist")
        connection = body.spec.connection
        if connection.type == "agent":
            # Reached through the agent it runs: no address of the platform's choosing.
            for field in ("kubeconfig", "endpoint"):
                if getattr(connection, field) is not None:
                    raise invalid_field(
                        f"spec.connection.{field}",
                        "a cluster of connection type agent is reached through its agent: "
                        "leave it out (join the cluster with POST …/join-token)",
                    )
        if connection.endpoint is not None:
            try:
                check_server_url(
                    connection.endpoint,
                    allow_private=self._allow_private,
                    allow_insecure=self.settings.allow_insecure_cluster_endpoints,
                )
            except EndpointRefused as exc:
                raise invalid_field("spec.connection.endpoint", f"{exc}") from None
        if connection.kubeconfig is not None:
            await asyncio.to_thread(self._parse, connection.kubeconfig)

    def _parse(self, kubeconfig: str) -> Any:
        try:
            return parse_kubeconfig(
                kubeconfig,
                allow_private=self._allow_private,
                allow_insecure=self.settings.allow_insecure_cluster_endpoints,
            )
        except InvalidKubeconfig as exc:
            raise invalid_field("spec.connection.kubeconfig", f"{exc}") from None

    async def apply_spec(self, row: Cluster, body: ClusterIn) -> None:
        spec = body.spec
        row.region = spec.region
        row.zone = spec.zone
        row.provider = spec.provider
        row.display_name = spec.displayName
        row.enabled = spec.enabled
        if row.connection_type == "agent" and spec.connection.type != "agent":
            # Reached directly from now on: its agent's credential and join token end here.
            revoke_credentials(row)
            row.agent_join_token_hash = row.agent_join_token_expires_at = None
        row.connection_type = spec.connection.type
        row.endpoint = spec.connection.endpoint
        if spec.connection.kubeconfig is not None:
            parsed = self._parse(spec.connection.kubeconfig)
            sealed = self.secrets.seal(parsed.to_yaml(), bound_to=f"cluster:{row.uid}")
            row.kubeconfig_key_id, row.kubeconfig_ciphertext = sealed.key_id, sealed.ciphertext
            row.server = parsed.server
        if not spec.enabled:
            row.phase = "Disabled"
        elif row.phase in (None, "Disabled"):
            row.phase = "Pending"

    def render(self, row: Cluster) -> ClusterOut:
        return cluster_out(row)

    async def issue_join_token(self, name: str) -> JoinToken:
        """A join token for an agent cluster (shown once); the agent holding the cluster's
        current credential is cut off."""
        row = await self.locked(name)
        if row.connection_type != "agent":
            raise Conflict(
                f"cluster {name!r} is reached directly (spec.connection.type direct); set it "
                "to agent to join it through an agent"
            )
        issued = issue_join_token(
            row, public_url=self.settings.public_url, ttl_seconds=self.settings.agent_join_token_ttl
        )
        row = await self.repository.touch(row, spec_changed=False)
        self._cache_after_commit(self.render(row))
        self.record_audit("issue-join-token", name)
        return JoinToken(token=issued.token, expiresAt=issued.expires_at, command=issued.command)

    def document(self, row: Cluster) -> dict[str, Any]:
        return cluster_document(row)

    def editable(self, row: Cluster) -> dict[str, Any]:
        return cluster_write_form(self.render(row))

    # Last in the class: below it, `list` would name this method in annotations.
    async def list(
        self, page: PageRequest, filters: dict[str, str] | None = None
    ) -> tuple[list[ClusterOut] | Documents, Page[Any]]:
        """A page of documents: no model per cluster (a region's list is a hundred)."""
        result = await self._page(page, filters)
        return Documents(cluster_document(row) for row in result.items), result


class NodeGroupRepository(ResourceRepository[NodeGroup]):
    model = NodeGroup
    kind = "NodeGroup"

    def __init__(self, session: AsyncSession, cluster: Cluster) -> None:
        super().__init__(session)
        self.cluster = cluster

    def scope(self) -> ColumnElement[bool]:
        return NodeGroup.cluster_id == self.cluster.id


class NodeGroupService(ResourceService[NodeGroup, NodeGroupIn, NodeGroupOut]):
    in_model = NodeGroupIn

    def __init__(
        self, session: AsyncSession, cluster: Cluster, audit: AuditTrail | None = None
    ) -> None:
        super().__init__(session, NodeGroupRepository(session, cluster), audit=audit)
        self.cluster = cluster

    def new_row(self, name: str) -> NodeGroup:
        return NodeGroup(name=name, cluster_id=self.cluster.id)

    async def apply_spec(self, row: NodeGroup, body: NodeGroupIn) -> None:
        row.display_name = body.spec.displayName
        row.selector = body.spec.selector.model_dump(mode="json") if body.spec.selector else None
        row.taints = [t.model_dump(mode="json", exclude_none=True) for t in body.spec.taints]

    def render(self, row: NodeGroup) -> NodeGroupOut:
        return node_group_out(row)


async def rotate_kubeconfigs(session: AsyncSession, secrets: SecretBox) -> int:
    """Re-encrypt every kubeconfig not sealed with the current key; returns how many."""
    rows = (
        await session.scalars(
            select(Cluster)
            .where(
                Cluster.kubeconfig_ciphertext.is_not(None),
                Cluster.kubeconfig_key_id != secrets.current_id,
            )
            .order_by(Cluster.id)
            .with_for_update(key_share=True)
        )
    ).all()
    for row in rows:
        assert row.kubeconfig_key_id is not None
        assert row.kubeconfig_ciphertext is not None
        bound = f"cluster:{row.uid}"
        plain = secrets.open(Sealed(row.kubeconfig_key_id, row.kubeconfig_ciphertext), bound)
        sealed = secrets.seal(plain, bound)
        row.kubeconfig_key_id, row.kubeconfig_ciphertext = sealed.key_id, sealed.ciphertext
    return len(rows)
