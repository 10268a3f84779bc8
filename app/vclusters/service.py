"""VClusters: a tenant's virtual cluster inside a shared edge cluster, provisioned by the
rollout engine (namespace `vc-<ws>-<name>`, a HelmChart for chart `vcluster` from this
platform's repository) and, once its kubeconfig Secret appears, registered as a Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import delete, select

from app.cache import ObjectCache
from app.clusters.address_guard import EndpointRefused, check_server_url
from app.clusters.schemas import cluster_cache_key
from app.crypto import Sealed, SecretBox
from app.db.session import after_commit
from app.deployments.resolution import resolve_targets
from app.deployments.schemas import TargetSpec
from app.deployments.service import DeploymentService
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


class VClusterService(DeploymentService):
    in_model: ClassVar[type[BaseModel]] = VClusterIn
    kind = "VCluster"

    def __init__(
        self,
        *args: Any,
        secrets: SecretBox,
        allow_private: bool,
        allow_insecure: bool,
        clusters_cache: ObjectCache | None = None,
        role: str = "viewer",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.role = role  # the caller's role in the workspace
        self.secrets = secrets
        self.clusters_cache = clusters_cache
        self.allow_private = allow_private
        self.allow_insecure = allow_insecure

    def spec_of(self, row: Rollout) -> VClusterSpec:
        return VClusterSpec.model_validate(row.content)

    def content_of(self, spec: Any) -> dict[str, Any]:
        return spec.model_dump(mode="json")  # type: ignore[no-any-return]

    def describe(self, row: Rollout) -> str:
        return f"vcluster chart {row.content.get('chartVersion')} on {row.content.get('cluster')}"

    async def check_content(self, name: str, spec: Any) -> None:
        if self._content_before is not None and self._content_before["cluster"] != spec.cluster:
            raise invalid_field("spec.cluster", "a vcluster cannot move to another host")
        target = TargetSpec(clusters=[spec.cluster], nodeGroupRef=spec.nodeGroupRef)
        self._resolved = await resolve_targets(
            self.session, self.workspace, targets=[target], namespace=None
        )
        chart = await self.session.scalar(
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
        taken = await self.session.scalar(select(Cluster).where(Cluster.name == cluster_name(
            self.workspace.name, name)))  # fmt: skip
        if taken is not None and not owned_by(taken, self.workspace.name, name):
            raise Conflict(f"cluster {taken.name} already exists", code="AlreadyExists")
        provider = await self.session.scalar(
            select(Cluster.provider).where(Cluster.name == spec.cluster)
        )
        if provider == "vcluster":
            raise invalid_field("spec.cluster", "vclusters cannot host vclusters")
        endpoint_before = (self._content_before or {}).get("endpoint")
        if spec.endpoint != endpoint_before and self.role != "admin":
            # The platform sends the vcluster's admin credential to this address: choosing
            # it is as good as reading the kubeconfig, which only workspace admins may.
            raise Forbidden(
                "setting spec.endpoint needs the admin role in workspace "
                f"{self.workspace.name!r} (the vcluster's credential is sent there); "
                f"you are {self.role}"
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

    def store_spec(self, row: Rollout, spec: Any) -> None:
        row.application_version = None
        row.content = spec.model_dump(mode="json")
        row.targets = [{"clusters": [spec.cluster], "nodeGroupRef": spec.nodeGroupRef}]
        row.namespace = vcluster_namespace(self.workspace.name, row.name)

    def render(self, row: Rollout) -> VClusterOut:  # type: ignore[override]
        return VClusterOut(
            metadata=object_meta(row, self.workspace.name),
            spec=self.spec_of(row),
            status=VClusterStatus(observedGeneration=row.generation),
        )

    async def statuses(
        self, rows: Sequence[Rollout], targets: dict[int, list[tuple[RolloutTarget, str]]]
    ) -> dict[str, BaseModel]:
        """From its one target (its host), and whether its Cluster is registered yet."""
        refs = {row.name: cluster_name(self.workspace.name, row.name) for row in rows}
        registered = set(
            (
                await self.session.scalars(
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

    async def delete(
        self, name: str, if_match: str | None, *, orphan: bool = False, force: bool = False
    ) -> Any:
        """Refused while rollouts target the vcluster, unless `force` (their targets there are
        dropped: what they made lives inside the vcluster and goes with it)."""
        ref = cluster_name(self.workspace.name, name)
        cluster_id = await self.session.scalar(select(Cluster.id).where(Cluster.name == ref))
        if cluster_id is not None:
            users = (
                await self.session.execute(
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
                await self.session.execute(
                    delete(RolloutTarget).where(RolloutTarget.cluster_id == cluster_id)
                )
        if orphan:  # the Cluster goes now (before the delete's event: its lock comes last)
            gone = Rollout(name=name, workspace_id=self.workspace.id, kind=self.kind)
            cluster, version = await unregister(self.session, self.workspace, gone)
            cache = self.clusters_cache
            if cache is not None:

                async def forget() -> None:
                    await cache.forget(cluster_cache_key(cluster), version)

                after_commit(self.session, forget)
        return await super().delete(name, if_match, orphan=orphan)

    async def kubeconfig(self, name: str) -> str:
        """The vcluster's kubeconfig (as registered, pointing at its reachable address)."""
        await self.read(name)
        ref = cluster_name(self.workspace.name, name)
        row = await self.session.scalar(select(Cluster).where(Cluster.name == ref))
        if row is not None and not owned_by(row, self.workspace.name, name):
            row = None
        if row is None or row.kubeconfig_ciphertext is None or row.kubeconfig_key_id is None:
            raise Conflict(f"vcluster {name!r} is not ready yet", code="NotReady")
        sealed = Sealed(row.kubeconfig_key_id, row.kubeconfig_ciphertext)
        return self.secrets.open(sealed, bound_to=f"cluster:{row.uid}").decode()
