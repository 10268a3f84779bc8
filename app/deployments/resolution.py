"""Target resolution: what a rollout's `spec.targets` mean as (cluster, node group, replicas),
checked against the workspace's namespaces and grants, the regions, clusters and node groups
that exist and (for deployments) the application version. Every kind of rollout resolves its
targets here; a spec at fault gets one 422 naming every field at fault."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.service import granted_clause
from app.deployments.schemas import ResolvedTarget, TargetSpec
from app.errors import Unprocessable
from app.models.catalog import ApplicationVersion
from app.models.clusters import Cluster, NodeGroup
from app.models.regions import Region
from app.models.workspaces import Workspace
from app.workspaces.namespaces import (
    claim_namespace,
    default_namespace,
    namespace_allowed,
    namespace_holder,
)


@dataclass(frozen=True)
class Resolved:
    target: int  # index in spec.targets
    cluster_id: int
    cluster: str
    region: str
    node_group: str | None
    replicas: int | None
    values: dict[str, Any]

    def out(self) -> ResolvedTarget:
        return ResolvedTarget(
            cluster=self.cluster,
            region=self.region,
            nodeGroup=self.node_group,
            replicas=self.replicas,
        )


class _Faults:
    """The fields at fault, in the order found: one 422 names them all."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def __call__(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def raise_any(self) -> None:
        if self.errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)
            raise Unprocessable(detail, errors=self.errors)


async def resolve_targets(
    session: AsyncSession,
    workspace: Workspace,
    *,
    targets: list[TargetSpec],
    namespace: str | None,
    claim: bool = False,
    version: str | None = None,
    version_exists: bool | None = None,
) -> list[Resolved]:
    """The (cluster, node group, replicas) list targets mean, after checking the namespace and
    (for deployments) the application version; 422 naming every field at fault.
    `namespace`: the edge namespace written to, checked to be the workspace's (and claimed
    for it with `claim`; a dry run only reads). `version_exists`: the caller has looked the
    version up already."""
    # Reads, in order: the namespace's holder, the version, the regions and the clusters named,
    # the clusters of each target naming a region alone, the node groups.
    fault = _Faults()
    if namespace is not None:
        await _check_namespace(session, workspace, namespace, claim=claim, fault=fault)
    if version is not None:
        await _check_version(session, version, version_exists, fault)
    granted = granted_clause([workspace])
    regions = await _existing_regions(session, targets)
    visible = await _visible_clusters(session, targets, granted)
    resolved: list[Resolved] = []
    seen: dict[int, str] = {}  # cluster id: the field that first targeted it
    for i, target in enumerate(targets):
        picked = await _pick_clusters(
            session,
            workspace,
            i,
            target,
            regions=regions,
            visible=visible,
            granted=granted,
            fault=fault,
        )
        for field, cluster in picked:
            if cluster.id in seen:
                fault(field, f"cluster {cluster.name!r} is already a target at {seen[cluster.id]}")
                continue
            seen[cluster.id] = field
            resolved.append(
                Resolved(
                    i,
                    cluster.id,
                    cluster.name,
                    cluster.region,
                    target.nodeGroupRef,
                    target.replicas,
                    target.values,
                )
            )
    await _check_node_groups(session, targets, resolved, fault)
    fault.raise_any()
    return resolved


async def _check_namespace(
    session: AsyncSession, workspace: Workspace, namespace: str, *, claim: bool, fault: _Faults
) -> None:
    """The namespace is the workspace's by name and not another workspace's (claimed for it
    with `claim`)."""
    if not namespace_allowed(workspace.name, namespace):
        fault(
            "spec.namespace",
            f"must be {default_namespace(workspace.name)!r} or start with "
            f"{default_namespace(workspace.name) + '-'!r}: a workspace writes only to its own "
            "namespaces on shared clusters",
        )
        return
    holder = await (claim_namespace if claim else namespace_holder)(session, workspace, namespace)
    if holder is not None:  # which one stays unsaid: other tenants are not to be seen
        fault("spec.namespace", f"namespace {namespace!r} belongs to another workspace")


async def _check_version(
    session: AsyncSession, version: str, version_exists: bool | None, fault: _Faults
) -> None:
    if version_exists is None:
        version_exists = (
            await session.scalar(
                select(ApplicationVersion.id).where(ApplicationVersion.name == version)
            )
        ) is not None
    if not version_exists:
        fault("spec.applicationVersionRef", f"application version {version!r} does not exist")


# Only what is asked about is read (a target of clusters alone needs no region lookup), and of
# clusters only the columns used, not their kubeconfigs.


async def _existing_regions(session: AsyncSession, targets: list[TargetSpec]) -> set[str]:
    """Of the regions the targets name, those that exist."""
    named_regions = {t.region for t in targets if t.region}
    if not named_regions:
        return set()
    return set(await session.scalars(select(Region.name).where(Region.name.in_(named_regions))))


_NAMED_CLUSTERS = select(Cluster.id, Cluster.name, Cluster.region).where(
    Cluster.name.in_(bindparam("names", expanding=True))
)


async def _visible_clusters(
    session: AsyncSession, targets: list[TargetSpec], granted: ColumnElement[bool]
) -> dict[str, Row[int, str, str]]:
    """Of the clusters the targets name, those granted to the workspace, by name."""
    named = {n for t in targets for n in t.clusters}
    if not named:
        return {}
    found = await session.execute(_NAMED_CLUSTERS.where(granted), {"names": list(named)})
    return {c.name: c for c in found.all()}


async def _pick_clusters(
    session: AsyncSession,
    workspace: Workspace,
    i: int,
    target: TargetSpec,
    *,
    regions: set[str],
    visible: dict[str, Row[int, str, str]],
    granted: ColumnElement[bool],
    fault: _Faults,
) -> list[tuple[str, Row[int, str, str]]]:
    """The clusters target `i` names (or, naming none, every cluster of its region granted to
    the workspace), each with the field that picked it; none when its region does not exist."""
    where = f"spec.targets[{i}]"
    if target.region is not None and target.region not in regions:
        fault(f"{where}.region", f"region {target.region!r} does not exist")
        return []
    picked: list[tuple[str, Row[int, str, str]]] = []
    if target.clusters:
        for j, name in enumerate(target.clusters):
            cluster = visible.get(name)
            if cluster is None:
                # One message for missing and not granted: no existence leak across tenants.
                fault(
                    f"{where}.clusters[{j}]",
                    f"cluster {name!r} does not exist or is not granted to workspace "
                    f"{workspace.name!r}",
                )
            elif target.region is not None and cluster.region != target.region:
                fault(
                    f"{where}.clusters[{j}]",
                    f"cluster {name!r} is in region {cluster.region!r}, not {target.region!r}",
                )
            else:
                picked.append((f"{where}.clusters[{j}]", cluster))
        return picked
    in_region = (
        await session.execute(
            select(Cluster.id, Cluster.name, Cluster.region)
            .where(Cluster.region == target.region, granted)
            .order_by(Cluster.name)
        )
    ).all()
    if not in_region:
        fault(
            f"{where}.region",
            f"no cluster of region {target.region!r} is granted to workspace {workspace.name!r}",
        )
    return [(f"{where}.region", c) for c in in_region]


async def _check_node_groups(
    session: AsyncSession, targets: list[TargetSpec], resolved: list[Resolved], fault: _Faults
) -> None:
    """Each target's node group exists on every cluster it resolved to (one fault per target,
    naming the clusters without it)."""
    groups_wanted = {(r.cluster_id, r.node_group) for r in resolved if r.node_group}
    if not groups_wanted:
        return
    rows = await session.execute(
        select(NodeGroup.cluster_id, NodeGroup.name).where(
            NodeGroup.cluster_id.in_({c for c, _ in groups_wanted}),
            NodeGroup.name.in_({g for _, g in groups_wanted}),
        )
    )
    existing = {(c, g) for c, g in rows.all()}
    for i, target in enumerate(targets):
        missing = sorted(
            r.cluster
            for r in resolved
            if r.target == i and r.node_group and (r.cluster_id, r.node_group) not in existing
        )
        if missing:
            fault(
                f"spec.targets[{i}].nodeGroupRef",
                f"node group {target.nodeGroupRef!r} does not exist on {', '.join(missing)}",
            )
