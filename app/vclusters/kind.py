"""VClusters: a tenant's virtual cluster inside a shared edge cluster, provisioned by the
rollout engine (namespace `vc-<ws>-<name>`, a HelmChart for chart `vcluster` from this
platform's repository) and, once its kubeconfig Secret appears, registered as a Cluster.
Rolled out like a deployment (app/deployments/service.py); these are the rules in which it
differs, and the two things only a vcluster does: its delete, and its kubeconfig."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select

from app.cache import ObjectCache
from app.clusters.address_guard import EndpointRefused, check_server_url
from app.clusters.schemas import cluster_cache_key
from app.crypto import Sealed, SecretBox
from app.db.session import after_commit
from app.deployments.kinds import KindRules, RolloutScope, TargetsByRollout
from app.deployments.resolution import Resolved, resolve_targets
from app.deployments.schemas import TargetSpec
from app.deployments.service import RolloutService
from app.errors import Conflict, Forbidden, invalid_field
from app.kit.resource import object_meta
from app.models.catalog import ChartArchive
from app.models.clusters import Cluster
from app.models.deployments import Rollout, RolloutTarget
from app.vclusters.registration import (
    cluster_name,
    owned_by,
    unregister,
    vcluster_namespace,
)
from app.vclusters.schemas import VClusterIn, VClusterOut, VClusterSpec, VClusterStatus

# The phase of a vcluster, from the phase of its one target (its host).
PHASES = {
    "Pending": "Pending",
    "Applying": "Provisioning",
    "Applied": "Provisioning",
    "Unreachable": "Provisioning",
    "Ready": "Ready",
    "Failed": "Failed",
    "Deleting": "Deleting",
}


class VClusterRules(KindRules[VClusterSpec, VClusterOut]):
    kind = "VCluster"
    in_model = VClusterIn

    def __init__(self, scope: RolloutScope, *, allow_private: bool, allow_insecure: bool) -> None:
        super().__init__(scope)
        self.allow_private = allow_private  # the address guard's settings, for spec.endpoint
        self.allow_insecure = allow_insecure

    def spec_of(self, row: Rollout) -> VClusterSpec:
        return VClusterSpec.model_validate(row.content)

    def describe(self, row: Rollout) -> str:
        return f"vcluster chart {row.content.get('chartVersion')} on {row.content.get('cluster')}"

    async def check_content(
        self, name: str, spec: VClusterSpec, before: dict[str, Any] | None
    ) -> list[Resolved]:
        if before is not None and before["cluster"] != spec.cluster:
            raise invalid_field("spec.cluster", "a vcluster cannot move to another host")
        session, workspace = self.scope.session, self.scope.workspace
        target = TargetSpec(clusters=[spec.cluster], nodeGroupRef=spec.nodeGroupRef)
        resolved = await resolve_targets(session, workspace, targets=[target], namespace=None)
        chart = await session.scalar(
            select(ChartArchive.id).where(
                ChartArchive.name == "vcluster", ChartArchive.version == spec.chartVersion
            )
        )
        if chart is None:
            raise invalid_field(
                "spec.chartVersion",
                f"chart vcluster {spec.chartVersion} is not in this platform's repository "
                "(upload it to /chartrepo first: edge clusters install from there)",
            )
        taken = await session.scalar(
            select(Cluster).where(Cluster.name == cluster_name(workspace.name, name))
        )
        if taken is not None and not owned_by(taken, workspace.name, name):
            raise Conflict(f"cluster {taken.name} already exists", code="AlreadyExists")
        provider = await session.scalar(
            select(Cluster.provider).where(Cluster.name == spec.cluster)
        )
        if provider == "vcluster":
            raise invalid_field("spec.cluster", "vclusters cannot host vclusters")
        role = self.scope.role
        if spec.endpoint != (before or {}).get("endpoint") and role != "admin":
            # The platform sends the vcluster's admin credential to this address: choosing
            # it is as good as reading the kubeconfig, which only workspace admins may.
            raise Forbidden(
                "setting spec.endpoint needs the admin role in workspace "
                f"{workspace.name!r} (the vcluster's credential is sent there); you are {role}"
            )
        if spec.endpoint is not None:
            try:
                check_server_url(
                    spec.endpoint,
                    allow_private=self.allow_private,
                    allow_insecure=self.allow_insecure,
                )
            except EndpointRefused as exc:
                raise invalid_field("spec.endpoint", str(exc)) from None
        return resolved

    def store_spec(self, row: Rollout, spec: VClusterSpec) -> None:
        row.application_version = None
        row.content = spec.model_dump(mode="json")
        row.targets = [{"clusters": [spec.cluster], "nodeGroupRef": spec.nodeGroupRef}]
        row.namespace = vcluster_namespace(self.scope.workspace.name, row.name)

    def render(self, row: Rollout) -> VClusterOut:
        return VClusterOut(
            metadata=object_meta(row, self.scope.workspace.name),
            spec=self.spec_of(row),
            status=VClusterStatus(observedGeneration=row.generation),
        )

    async def statuses(
        self, rows: Sequence[Rollout], targets: TargetsByRollout
    ) -> dict[str, BaseModel]:
        """From its one target (its host), and whether its Cluster is registered yet."""
        refs = {row.name: cluster_name(self.scope.workspace.name, row.name) for row in rows}
        registered = set(
            (
                await self.scope.session.scalars(
                    select(Cluster.name).where(Cluster.name.in_(refs.values()))
                )
            ).all()
        )
        result: dict[str, BaseModel] = {}
        for row in rows:
            target = targets[row.id][0][0] if targets[row.id] else None
            result[row.name] = VClusterStatus(
                phase=PHASES.get(target.phase, "Pending") if target else "Pending",
                clusterRef=refs[row.name] if refs[row.name] in registered else None,
                message=target.message if target else None,
                lastTransitionTime=target.last_transition_time if target else None,
                observedGeneration=row.generation,
            )
        return result


async def delete_vcluster(
    vclusters: RolloutService[VClusterOut],
    name: str,
    if_match: str | None,
    *,
    orphan: bool,
    force: bool,
    clusters_cache: ObjectCache | None,
) -> VClusterOut:
    """A rollout's delete, refused while rollouts target the vcluster unless `force` (their
    targets there are dropped: what they made lives inside the vcluster and goes with it)."""
    session, workspace = vclusters.scope.session, vclusters.scope.workspace
    ref = cluster_name(workspace.name, name)
    cluster_id = await session.scalar(select(Cluster.id).where(Cluster.name == ref))
    if cluster_id is not None:
        users = (
            await session.execute(
                select(Rollout.kind, Rollout.name)
                .join(RolloutTarget, RolloutTarget.rollout_id == Rollout.id)
                .where(RolloutTarget.cluster_id == cluster_id)
                .order_by(Rollout.kind, Rollout.name)
            )
        ).all()
        if users and not force:
            listed = ", ".join(f"{kind} {n}" for kind, n in users)
            raise Conflict(
                f"vcluster {name!r} is still targeted by: {listed} (delete with ?force=true "
                "to drop those targets)",
                code="InUse",
            )
        if users:
            await session.execute(
                delete(RolloutTarget).where(RolloutTarget.cluster_id == cluster_id)
            )
    if orphan:  # the Cluster goes now (before the delete's event: its lock comes last)
        gone = Rollout(name=name, workspace_id=workspace.id, kind=vclusters.kind)
        cluster, version = await unregister(session, workspace, gone)
        if clusters_cache is not None:
            cache = clusters_cache

            async def forget() -> None:
                await cache.forget(cluster_cache_key(cluster), version)

            after_commit(session, forget)
    return await vclusters.delete(name, if_match, orphan=orphan)


async def read_kubeconfig(
    vclusters: RolloutService[VClusterOut], secrets: SecretBox, name: str
) -> str:
    """The vcluster's kubeconfig (as registered, pointing at its reachable address)."""
    await vclusters.read(name)  # 404 unless it exists in this workspace
    session, workspace = vclusters.scope.session, vclusters.scope.workspace
    ref = cluster_name(workspace.name, name)
    row = await session.scalar(select(Cluster).where(Cluster.name == ref))
    if row is not None and not owned_by(row, workspace.name, name):
        row = None
    if row is None or row.kubeconfig_ciphertext is None or row.kubeconfig_key_id is None:
        raise Conflict(f"vcluster {name!r} is not ready yet", code="NotReady")
    sealed = Sealed(row.kubeconfig_key_id, row.kubeconfig_ciphertext)
    return secrets.open(sealed, bound_to=f"cluster:{row.uid}").decode()
