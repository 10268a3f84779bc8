"""One strategy per kind of rollout: how its objects are rendered for a target, how they are
read back for readiness, whether its namespace goes with it, and what its write-back and its
final deletion do beside the target rows. Everything else a pass does is the same for every
kind. A new kind is a new class here and an entry in `rollout_kinds`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.chart_pull import pull_credentials
from app.clusters.kubeconfig import InvalidKubeconfig, parse_kubeconfig
from app.configsyncs.sealing import open_content
from app.controller.dispatch.context import Context, Observed, Outcome
from app.controller.kube import ObjectRef, read_object
from app.crypto import DecryptionError, SecretBox
from app.deployments.manifests import (
    Placement,
    Rendered,
    deployment_readiness,
    helm_chart_failure,
    helm_job_name,
    job_readiness,
    render,
    render_config,
    vcluster_secret_name,
    vcluster_values,
)
from app.events.service import NewEvent
from app.models.deployments import Rollout
from app.models.workspaces import Workspace
from app.vclusters.registration import reachable_kubeconfig, register, unregister
from app.workspaces.namespaces import default_namespace


class RenderError(Exception):
    """The target's objects cannot be made (revision, version or node group gone, content
    undecryptable): a permanent failure of its revision."""


@dataclass(frozen=True)
class KindSettings:
    secrets: SecretBox
    chart_repository: str  # what HelmCharts at the edge pull from (`$PUBLIC_URL/chartrepo`)
    allow_private: bool  # the address guard's settings, for a vcluster's kubeconfig
    allow_insecure: bool


class RolloutKind:
    """The behaviour shared by every kind; subclasses say what differs."""

    # Whether the namespace the rollout's objects live in is its own, deleted with it
    # (others are shared by a workspace's rollouts and stay).
    owns_namespace = False

    def __init__(self, settings: KindSettings) -> None:
        self.settings = settings

    def render(self, ctx: Context) -> Rendered:
        if ctx.revision is None or ctx.revision_params is None:
            raise RenderError(f"revision {ctx.target.desired_revision} is missing")
        return self._render(ctx, ctx.revision.namespace or default_namespace(ctx.workspace))

    def _render(self, ctx: Context, namespace: str) -> Rendered:
        raise NotImplementedError

    async def observe(self, api: Any, ctx: Context, rendered: Rendered) -> Observed:
        """The target's objects read back. Deployments: every replica updated and ready (ready
        replicas: the fewest of any); a HelmChart: its install Job done; anything else (a
        ConfigMap, a Secret) once applied."""
        ready_all, replicas, messages = True, None, []
        for obj in rendered.objects:
            ref = ObjectRef.of(obj)
            if ref.kind == "Deployment":
                live = ctx.live.get(ref) or await read_object(api, ref)
                if live is None:
                    return Observed(False, 0, f"{ref} is missing")
                state = deployment_readiness(live)
                if state.failed:
                    return Observed(False, state.ready_replicas, f"{ref}: {state.message}", True)
                replicas = (
                    state.ready_replicas
                    if replicas is None
                    else min(replicas, state.ready_replicas)
                )
                if not state.ready:
                    ready_all = False
                    messages.append(f"{ref}: {state.message}")
            elif ref.kind == "HelmChart":
                live = ctx.live.get(ref) or await read_object(api, ref)
                if live is None:
                    return Observed(False, 0, f"{ref} is missing")
                failure = helm_chart_failure(live)
                if failure:
                    return Observed(False, 0, f"{ref}: {failure}", True)
                job_name = helm_job_name(live)
                job = None
                if job_name:
                    job = await read_object(
                        api, ObjectRef("batch/v1", "Job", job_name, ref.namespace)
                    )
                done, why = job_readiness(job)
                if not done:
                    ready_all = False
                    messages.append(f"{ref}: {why}")
        return Observed(ready_all, replicas, "; ".join(messages) or None)

    async def after_write(
        self, session: AsyncSession, ctx: Context, outcome: Outcome
    ) -> list[NewEvent]:
        """More to write with a pass's write-back, in its transaction; its events."""
        return []

    async def after_delete(self, session: AsyncSession, rollout: Rollout) -> tuple[str, int] | None:
        """More to delete with the rollout's record; a Cluster to drop from the read cache
        after the commit (name, resourceVersion of the deletion)."""
        return None

    def _chart_credentials(self, ctx: Context) -> tuple[str, str]:
        return pull_credentials(self.settings.secrets, ctx.workspace)


def _require_node_group(ctx: Context) -> None:
    if ctx.node_group_missing:
        assert ctx.revision_params is not None
        raise RenderError(
            f"node group {ctx.revision_params.nodeGroupRef!r} no longer exists on "
            f"cluster {ctx.cluster.name}"
        )


class ApplicationDeploymentKind(RolloutKind):
    """A catalog version: its Deployments (workload) or a HelmChart (helm), placed on the
    target's node group."""

    def _render(self, ctx: Context, namespace: str) -> Rendered:
        _require_node_group(ctx)
        assert ctx.revision is not None
        assert ctx.revision_params is not None
        if ctx.version is None:
            raise RenderError(
                f"application version {ctx.revision.application_version!r} no longer exists"
            )
        return render(
            workspace=ctx.workspace,
            deployment=ctx.deployment.name,
            namespace=namespace,
            revision=ctx.target.desired_revision,
            version={"helm": ctx.version.helm, "workload": ctx.version.workload},
            replicas=ctx.revision_params.replicas,
            values=ctx.revision_params.values,
            placement=ctx.placement,
            chart_repository=self.settings.chart_repository,
            chart_credentials=self._chart_credentials(ctx),
        )


class ConfigSyncKind(RolloutKind):
    """A ConfigMap or Secret (decrypted only here, for the edge); no node group."""

    def _render(self, ctx: Context, namespace: str) -> Rendered:
        assert ctx.revision is not None
        try:
            content = open_content(
                self.settings.secrets,
                ctx.deployment.workspace_id,
                ctx.deployment.name,
                ctx.revision.content,
            )
        except DecryptionError as exc:
            raise RenderError(f"the configuration cannot be decrypted: {exc}") from exc
        return render_config(
            workspace=ctx.workspace,
            name=ctx.deployment.name,
            namespace=namespace,
            revision=ctx.target.desired_revision,
            data=content["data"],
            binary_data=content["binaryData"],
            secret=bool(ctx.revision.content.get("secret")),
        )


class VClusterKind(RolloutKind):
    """The vcluster chart as a HelmChart in a namespace of its own; Ready once the chart has
    written the vcluster's kubeconfig, which the write-back registers as a Cluster."""

    owns_namespace = True

    def _render(self, ctx: Context, namespace: str) -> Rendered:
        _require_node_group(ctx)
        assert ctx.revision is not None
        spec = ctx.revision.content
        values = vcluster_values(
            values=spec.get("values") or {},
            kubernetes_version=spec.get("kubernetesVersion"),
            resources=spec.get("resources"),
            placement=ctx.placement,
        )
        chart = {"chart": "vcluster", "version": spec["chartVersion"], "values": values}
        return render(
            workspace=ctx.workspace,
            deployment=ctx.deployment.name,
            namespace=namespace,
            revision=ctx.target.desired_revision,
            version={"helm": chart},
            replicas=None,
            values={},
            placement=Placement(),  # placed through the chart's own values above
            chart_repository=self.settings.chart_repository,
            chart_credentials=self._chart_credentials(ctx),
        )

    async def observe(self, api: Any, ctx: Context, rendered: Rendered) -> Observed:
        namespace = rendered.objects[0]["metadata"]["name"]
        secret = await read_object(
            api, ObjectRef("v1", "Secret", vcluster_secret_name(ctx.deployment.name), namespace)
        )
        config = ((secret or {}).get("data") or {}).get("config")
        if not config:
            return Observed(False, None, "waiting for the vcluster's kubeconfig Secret")
        try:
            text = base64.b64decode(config).decode()
            endpoint = (ctx.revision.content if ctx.revision else {}).get("endpoint")
            parse_kubeconfig(
                reachable_kubeconfig(text, endpoint, ctx.cluster.server),
                allow_private=self.settings.allow_private,
                allow_insecure=self.settings.allow_insecure,
            )
        except (ValueError, InvalidKubeconfig) as exc:
            return Observed(False, None, f"the vcluster's kubeconfig is not usable: {exc}", True)
        return Observed(True, None, kubeconfig=text)

    async def after_write(
        self, session: AsyncSession, ctx: Context, outcome: Outcome
    ) -> list[NewEvent]:
        """Register the vcluster as a Cluster (again on every Ready pass: the kubeconfig may
        have changed); an event the first time."""
        if outcome.kubeconfig is None:
            return []
        rollout = ctx.deployment
        workspace = await session.get(Workspace, rollout.workspace_id)
        assert workspace is not None
        name = await register(
            session,
            self.settings.secrets,
            rollout,
            workspace=workspace,
            host=ctx.cluster,
            kubeconfig=outcome.kubeconfig,
            endpoint=rollout.content.get("endpoint"),
            allow_private=self.settings.allow_private,
            allow_insecure=self.settings.allow_insecure,
        )
        if ctx.target.phase == "Ready":
            return []
        message = f"registered as cluster {name}"
        return [NewEvent(rollout.kind, rollout.name, "Registered", message, rollout_id=rollout.id)]

    async def after_delete(self, session: AsyncSession, rollout: Rollout) -> tuple[str, int] | None:
        workspace = await session.get(Workspace, rollout.workspace_id)
        assert workspace is not None
        return await unregister(session, workspace, rollout)


def rollout_kinds(settings: KindSettings) -> dict[str, RolloutKind]:
    """Each kind's strategy, by `Rollout.kind`."""
    return {
        "ApplicationDeployment": ApplicationDeploymentKind(settings),
        "ConfigSync": ConfigSyncKind(settings),
        "VCluster": VClusterKind(settings),
    }
