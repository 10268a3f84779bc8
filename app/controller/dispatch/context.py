"""What one pass over one target works from (`Context`, read with the claim, in one
transaction) and what it hands back for the write-back (`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clusters.schemas import effective_selector
from app.controller.kube import ObjectRef
from app.deployments.manifests import Owner, Placement
from app.deployments.schemas import TargetSpec
from app.models.catalog import ApplicationVersion
from app.models.clusters import Cluster, NodeGroup
from app.models.deployments import Rollout, RolloutRevision, RolloutTarget
from app.models.workspaces import Workspace


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """Everything one pass over one target needs, read in one transaction."""

    target: RolloutTarget
    deployment: Rollout
    workspace: str
    cluster: Cluster
    revision: RolloutRevision | None
    revision_params: TargetSpec | None
    version: ApplicationVersion | None
    placement: Placement
    node_group_missing: bool
    failed_targets: int
    touched: list[ObjectRef] = field(default_factory=list)  # objects this pass tried to apply
    # Objects as the edge answered this pass (an apply answers with the object as stored):
    # readiness is read from them rather than asked for again.
    live: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)

    @property
    def owner(self) -> Owner:
        return Owner(self.deployment.kind, self.workspace, self.deployment.name)


@dataclass
class Outcome:
    """What a pass found and did, written back under the lease."""

    values: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    remove_row: bool = False
    ready_after: float | None = None  # seconds from the revision's write to Ready, if just now
    kubeconfig: str | None = None  # a vcluster's, read at the host once it is ready


@dataclass(frozen=True)
class Observed:
    """A target's objects as read back from the edge."""

    ready: bool
    ready_replicas: int | None  # None: the objects do not tell (a Helm release's pods)
    message: str | None = None  # why not ready
    failed: bool = False  # the edge itself says it gave up
    kubeconfig: str | None = None  # a vcluster's, once its chart wrote it


def applied_refs(applied: list[dict[str, Any]]) -> list[ObjectRef]:
    """The objects a target's row says were applied (`applied_objects`)."""
    return [ObjectRef(r["apiVersion"], r["kind"], r["name"], r.get("namespace")) for r in applied]


async def load_contexts(session: AsyncSession, ids: list[int]) -> list[Context]:
    """The contexts of the claimed rows: one query for the rows and what they point at
    (revision and version may be gone: the pass says so), more only where a row asks."""
    if not ids:
        return []
    found = await session.execute(
        select(RolloutTarget, Rollout, Workspace.name, Cluster, RolloutRevision, ApplicationVersion)
        .join(Rollout, Rollout.id == RolloutTarget.rollout_id)
        .join(Workspace, Workspace.id == Rollout.workspace_id)
        .join(Cluster, Cluster.id == RolloutTarget.cluster_id)
        .outerjoin(
            RolloutRevision,
            (RolloutRevision.rollout_id == Rollout.id)
            & (RolloutRevision.revision == RolloutTarget.desired_revision),
        )
        .outerjoin(
            ApplicationVersion, ApplicationVersion.name == RolloutRevision.application_version
        )
        .where(RolloutTarget.id.in_(ids))
    )
    contexts = []
    failed_per_rollout: dict[int, int] = {}
    for target, deployment, workspace, cluster, revision, version in found.all():
        params = params_for(revision, cluster) if revision else None
        placement, group_missing = await _placement(session, cluster, params)
        failed = 0
        if (deployment.strategy or {}).get("failurePolicy") == "Pause":  # only Pause asks
            if deployment.id not in failed_per_rollout:
                failed_per_rollout[deployment.id] = await _failed_targets(session, deployment)
            failed = failed_per_rollout[deployment.id]
        contexts.append(
            Context(
                target=target,
                deployment=deployment,
                workspace=workspace,
                cluster=cluster,
                revision=revision,
                revision_params=params,
                version=version,
                placement=placement,
                node_group_missing=group_missing,
                failed_targets=failed,
            )
        )
    return contexts


def params_for(revision: RolloutRevision, cluster: Cluster) -> TargetSpec | None:
    """The target of that revision this cluster belongs to (named, or by its region)."""
    targets = [TargetSpec.model_validate(t) for t in revision.targets]
    for target in targets:
        if cluster.name in target.clusters:
            return target
    for target in targets:
        if not target.clusters and target.region == cluster.region:
            return target
    return None


async def _placement(
    session: AsyncSession, cluster: Cluster, params: TargetSpec | None
) -> tuple[Placement, bool]:
    """Where in the cluster (its node group's selector and taints); True: the group the
    target names no longer exists."""
    if params is None or not params.nodeGroupRef:
        return Placement(), False
    group = await session.scalar(
        select(NodeGroup).where(
            NodeGroup.cluster_id == cluster.id, NodeGroup.name == params.nodeGroupRef
        )
    )
    if group is None:
        return Placement(), True
    selector = effective_selector(group)
    return Placement(
        dict(selector.matchLabels),
        [e.model_dump(mode="json") for e in selector.matchExpressions],
        list(group.taints),
    ), False


async def _failed_targets(session: AsyncSession, rollout: Rollout) -> int:
    """Targets of the rollout's current revision that failed (what failurePolicy Pause counts)."""
    count = await session.scalar(
        select(func.count()).where(
            RolloutTarget.rollout_id == rollout.id,
            RolloutTarget.phase == "Failed",
            RolloutTarget.removing.is_(False),
            RolloutTarget.failed_revision == rollout.revision,
        )
    )
    return int(count or 0)
