"""Dispatch: makes each edge cluster hold what its deployments declare, and reports back.

One row per (deployment, cluster) is the unit of work (`RolloutTarget`), claimed with a lease
(app.controller.claims) so any number of controller replicas share the fleet and never work on
the same row at once. Each pass is level-triggered: it re-reads the desired state, renders the
objects, applies them when they differ from what was applied (server-side apply, one field
manager), otherwise re-reads them from the edge to repair drift and to follow readiness.

Rows run as independent tasks, bounded overall and per cluster, so a slow or dead cluster holds
up only its own rows. Edge errors are either permanent for the revision (the edge refused the
object: 400/403/404/422) or retried with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    Text,
    case,
    cast,
    delete,
    func,
    null,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import ObjectCache
from app.catalog.models import ApplicationVersion
from app.catalog.pull import pull_credentials
from app.clusters.kubeconfig import InvalidKubeconfig, parse_kubeconfig
from app.clusters.models import Cluster, NodeGroup
from app.clusters.schemas import effective_selector
from app.configsyncs.service import open_content
from app.controller.claims import (
    QUEUE_GAUGE_SECONDS,
    TIMESTAMP,
    claim,
    held,
    row_arrays,
    unnest_rows,
)
from app.controller.kube import (
    ClusterTarget,
    EdgeError,
    KubeClients,
    ObjectRef,
    apply_object,
    delete_object,
    read_object,
)
from app.crypto import DecryptionError, SecretBox
from app.deployments.manifests import (
    Owner,
    Placement,
    Rendered,
    contains,
    deployment_readiness,
    helm_chart_failure,
    helm_job_name,
    job_readiness,
    render,
    render_config,
    vcluster_secret_name,
    vcluster_values,
)
from app.deployments.models import (
    DISPATCH_CHANNEL,
    Rollout,
    RolloutRevision,
    RolloutTarget,
)
from app.deployments.schemas import Strategy, TargetSpec
from app.deployments.service import TargetCounts, fold_phase
from app.events.service import NewEvent, announce, record
from app.redis import RedisGateway
from app.vclusters.registration import (
    cluster_cache_key,
    reachable_kubeconfig,
    register,
    unregister,
)
from app.workspaces.models import Workspace
from app.workspaces.namespaces import default_namespace

logger = logging.getLogger(__name__)

APPLIES = Counter(
    "edge_dispatch_applies_total", "Objects sets applied to edge clusters, by result.", ["result"]
)
FAILURES = Counter(
    "edge_dispatch_failures_total", "Targets that failed for their revision, by cause.", ["cause"]
)
RETRIES = Counter("edge_dispatch_retries_total", "Edge calls scheduled for a retry.")
DRIFT_REPAIRS = Counter("edge_dispatch_drift_repairs_total", "Objects re-applied after drift.")
LOST_LEASES = Counter("edge_dispatch_lost_leases_total", "Results dropped: the lease was lost.")
TIME_TO_READY = Histogram(
    "edge_dispatch_time_to_ready_seconds",
    "From the write that made a revision to its target being Ready at the edge.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
INFLIGHT = Gauge("edge_dispatch_inflight", "Targets this controller is working on.")
DUE = Gauge("edge_dispatch_due", "Targets due for work, this controller's last look.")


def _now() -> datetime:
    return datetime.now(UTC)


async def nudge_cluster_targets(session: AsyncSession, cluster_id: int) -> None:
    """A cluster changed phase (went away, came back): look at its targets now, not after
    their backoff."""
    # Rows locked in id order, as every multi-row update of targets does: no deadlocks.
    ids = (
        select(RolloutTarget.id)
        .where(RolloutTarget.cluster_id == cluster_id)
        .order_by(RolloutTarget.id)
        .with_for_update()
    )
    await session.execute(
        update(RolloutTarget)
        .where(RolloutTarget.id.in_(ids.scalar_subquery()))
        .values(next_attempt_at=func.now(), attempts=0)
    )
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": DISPATCH_CHANNEL})


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


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clients: KubeClients,
        *,
        secrets: SecretBox,
        redis: RedisGateway,
        cache: ObjectCache,
        chart_repository: str,
        allow_private: bool,
        allow_insecure: bool,
        drift_interval: float,
        status_interval: float,
        retry_max: float,
        concurrency: int,
        per_cluster: int,
        lease_seconds: float = 120.0,
        fold_concurrency: int = 4,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clients = clients
        self._secrets = secrets
        self._redis = redis
        self._cache = cache
        self._allow_private = allow_private
        self._allow_insecure = allow_insecure
        self._chart_repository = chart_repository
        self._drift_interval = drift_interval
        self._status_interval = status_interval
        self._retry_max = retry_max
        self._concurrency = concurrency
        self._per_cluster = per_cluster
        self._lease = lease_seconds
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._leases: dict[int, uuid.UUID] = {}  # the claim token of each row in flight
        self._none_in_flight = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._slots: dict[int, asyncio.Semaphore] = {}
        self.on_done: list[Any] = []  # callbacks when a task ends (the runner claims more)
        self.next_due_in: float | None = None  # seconds until the next unclaimed row is due
        self._due_counted_at = -QUEUE_GAUGE_SECONDS
        self._results: list[_Result] = []  # passes done, waiting for their write-back
        self._writer: asyncio.Task[None] | None = None
        self._folds = Coalesced(
            self._fold_rollout, "folding the phase of rollout", concurrency=fold_concurrency
        )

    # claiming --------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due targets up to the free capacity and start a task for each."""
        capacity = self._concurrency - len(self._inflight)
        # While busy, claim a quarter of the slots at a time rather than one slot per finished
        # target: every claim is a transaction of its own, as costly as a target's load.
        if capacity <= 0 or (self._inflight and capacity < max(1, self._concurrency // 4)):
            return 0
        due = RolloutTarget.next_attempt_at <= func.now()
        # Not the rows whose passes are still finishing here: a write-back frees its row before
        # the pass's task has ended, and a nudge can make the row due at once. Claimed again,
        # such a row would hold a lease with no pass working under it until the lease ran out.
        finishing = list(self._inflight)
        ready = due & RolloutTarget.id.not_in(finishing) if finishing else due
        async with self._sessionmaker.begin() as session:
            if time.monotonic() - self._due_counted_at > QUEUE_GAUGE_SECONDS:
                self._due_counted_at = time.monotonic()
                DUE.set(float(await session.scalar(select(func.count()).where(due)) or 0))
            token, ids = await claim(
                session,
                RolloutTarget,
                ready=ready,
                order_by=RolloutTarget.next_attempt_at,
                limit=capacity,
                lease_seconds=self._lease,
            )
            # When the next row falls due, so the runner sleeps no longer than that.
            due_in = await session.scalar(
                select(
                    func.extract("epoch", func.min(RolloutTarget.next_attempt_at) - func.now())
                ).where(RolloutTarget.lock_token.is_(None))
            )
            self.next_due_in = None if due_in is None else float(due_in)
            # What each pass works from, read with the claim: no round trips of its own.
            contexts = await self._load(session, ids)
        for context in contexts:
            row_id = context.target.id
            task = asyncio.create_task(self._process(context, token))
            self._inflight[row_id] = task
            self._leases[row_id] = token
            task.add_done_callback(functools.partial(self._finished, row_id))
        if self._leases and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_leases())
        INFLIGHT.set(len(self._inflight))
        return len(ids)

    def _finished(self, row_id: int, task: asyncio.Task[None]) -> None:
        if self._inflight.get(row_id) is task:
            del self._inflight[row_id]
            del self._leases[row_id]
            if not self._leases:
                self._none_in_flight.set()
        INFLIGHT.set(len(self._inflight))
        for callback in self.on_done:
            callback()

    async def drain(self, deadline: float) -> None:
        """Let in-flight targets finish (bounded); what is cut off is redone after its lease."""
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._renewer is not None:  # ends by itself once nothing is in flight
            await self._renewer
        if self._writer is not None:  # the results of passes cut off are written, or dropped
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._folds.close()

    # one target ------------------------------------------------------------------------------

    async def _process(self, context: Context, token: uuid.UUID) -> None:
        row_id = context.target.id
        try:
            slot = self._slots.setdefault(context.cluster.id, asyncio.Semaphore(self._per_cluster))
            async with slot:
                outcome = await self._reconcile(context)
            await self._write(row_id, token, context, outcome)
        except Exception:
            # Most likely the database went away: the lease expires and the pass is redone.
            logger.warning("dispatch of target %d failed; will retry", row_id, exc_info=True)

    async def _renew_leases(self) -> None:
        """Renew the leases of the rows in flight every third of a lease, all in one
        statement, for as long as any are in flight: however slow an edge, a lease that ran
        out would let another replica start the same work."""
        try:
            while self._leases:
                self._none_in_flight.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._none_in_flight.wait(), self._lease / 3)
                leases = list(self._leases.items())
                if not leases:
                    return
                try:
                    async with self._sessionmaker.begin() as session:
                        await session.execute(
                            update(RolloutTarget)
                            .where(tuple_(RolloutTarget.id, RolloutTarget.lock_token).in_(leases))
                            .values(lock_expires_at=func.now() + timedelta(seconds=self._lease))
                            .execution_options(synchronize_session=False)
                        )
                except Exception:
                    logger.warning("could not renew the leases of %d targets", len(leases))
        finally:
            self._renewer = None

    async def _load(self, session: AsyncSession, ids: list[int]) -> list[Context]:
        """The contexts of the claimed rows: one query for the rows and what they point at
        (revision and version may be gone: the pass says so), more only where a row asks."""
        if not ids:
            return []
        found = await session.execute(
            select(
                RolloutTarget, Rollout, Workspace.name, Cluster, RolloutRevision, ApplicationVersion
            )
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
            params = _params_for(revision, cluster) if revision else None
            placement, group_missing = await self._placement(session, cluster, params)
            failed = 0
            if (deployment.strategy or {}).get("failurePolicy") == "Pause":  # only Pause asks
                if deployment.id not in failed_per_rollout:
                    failed_per_rollout[deployment.id] = await _failed_targets(session, deployment)
                failed = failed_per_rollout[deployment.id]
            context = Context(
                target, deployment, workspace, cluster, revision, params, version,
                placement, group_missing, failed,
            )  # fmt: skip
            contexts.append(context)
        return contexts

    async def _placement(
        self, session: AsyncSession, cluster: Cluster, params: TargetSpec | None
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

    async def _reconcile(self, ctx: Context) -> Outcome:
        target, cluster = ctx.target, ctx.cluster
        if not cluster.enabled or cluster.kubeconfig_ciphertext is None:
            why = "disabled" if not cluster.enabled else "has no kubeconfig"
            return Outcome({"message": f"cluster {cluster.name} {why}"}, delay=self._drift_interval)
        if cluster.phase == "Unreachable":
            return self._unreachable(ctx)
        if target.removing:
            return await self._remove(ctx)
        if ctx.deployment.paused:
            return Outcome({"message": "paused"}, delay=self._drift_interval)
        if target.failed_revision is not None and target.failed_revision == target.desired_revision:
            # Refused at this revision: nothing to do until the spec changes (the phase is
            # said again, as an Unreachable spell may have covered it).
            return Outcome({"phase": "Failed"}, delay=self._drift_interval)
        try:
            rendered = self._render(ctx)
        except _RenderError as exc:
            return self._failed(ctx, str(exc), cause="invalid", final=True)
        try:
            return await self._converge(ctx, rendered)
        except EdgeError as exc:
            if exc.permanent:
                APPLIES.labels("failure").inc()
                outcome = self._failed(ctx, str(exc), cause="rejected", final=True)
            else:
                outcome = self._retry(ctx, str(exc))
        except Exception as exc:  # e.g. the cluster's address is now refused: say so, retry
            logger.warning("dispatch to %s failed", cluster.name, exc_info=True)
            outcome = self._retry(ctx, f"{type(exc).__name__}: {exc}")
        known = _refs(target.applied_objects)
        if any(ref not in known for ref in ctx.touched):
            outcome.values["applied_objects"] = [
                r.as_dict() for r in [*known, *(t for t in ctx.touched if t not in known)]
            ]
        return outcome

    def _render(self, ctx: Context) -> Rendered:
        if ctx.revision is None or ctx.revision_params is None:
            raise _RenderError(f"revision {ctx.target.desired_revision} is missing")
        namespace = ctx.revision.namespace or default_namespace(ctx.workspace)
        if ctx.deployment.kind == "ConfigSync":
            try:
                content = open_content(
                    self._secrets, ctx.deployment.workspace_id, ctx.deployment.name,
                    ctx.revision.content,
                )  # fmt: skip
            except DecryptionError as exc:
                raise _RenderError(f"the configuration cannot be decrypted: {exc}") from exc
            return render_config(
                workspace=ctx.workspace,
                name=ctx.deployment.name,
                namespace=namespace,
                revision=ctx.target.desired_revision,
                data=content["data"],
                binary_data=content["binaryData"],
                secret=bool(ctx.revision.content.get("secret")),
            )
        if ctx.node_group_missing:
            raise _RenderError(
                f"node group {ctx.revision_params.nodeGroupRef!r} no longer exists on "
                f"cluster {ctx.cluster.name}"
            )
        if ctx.deployment.kind == "VCluster":
            return self._render_vcluster(ctx, namespace)
        if ctx.version is None:
            raise _RenderError(
                f"application version {ctx.revision.application_version!r} no longer exists"
            )
        source = {"helm": ctx.version.helm, "workload": ctx.version.workload}
        return render(
            workspace=ctx.workspace,
            deployment=ctx.deployment.name,
            namespace=namespace,
            revision=ctx.target.desired_revision,
            version=source,
            replicas=ctx.revision_params.replicas,
            values=ctx.revision_params.values,
            placement=ctx.placement,
            chart_repository=self._chart_repository,
            chart_credentials=pull_credentials(self._secrets, ctx.workspace),
        )

    def _render_vcluster(self, ctx: Context, namespace: str) -> Rendered:
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
            chart_repository=self._chart_repository,
            chart_credentials=pull_credentials(self._secrets, ctx.workspace),
        )

    def _client_target(self, cluster: Cluster) -> ClusterTarget:
        assert cluster.kubeconfig_key_id is not None
        assert cluster.kubeconfig_ciphertext is not None
        return ClusterTarget(
            cluster.id,
            str(cluster.uid),
            cluster.name,
            cluster.kubeconfig_key_id,
            cluster.kubeconfig_ciphertext,
        )

    async def _converge(self, ctx: Context, rendered: Rendered) -> Outcome:
        target = ctx.target
        api = await self._clients.client_for(self._client_target(ctx.cluster))
        params = ctx.revision_params
        assert params is not None
        values: dict[str, Any] = {
            "node_group": params.nodeGroupRef,
            "replicas": params.replicas,
            "values": params.values,
            "last_sync_time": _now(),
        }
        outcome = Outcome(values)
        new_revision = target.applied_revision != target.desired_revision
        if new_revision or target.applied_hash != rendered.hash:
            strategy = Strategy.model_validate(ctx.deployment.strategy or {})
            if (
                new_revision
                and strategy.failurePolicy == "Pause"
                and ctx.failed_targets > strategy.maxUnavailableClusters
            ):
                values |= {
                    "phase": "Pending",
                    "message": f"rollout paused: {ctx.failed_targets} clusters failed "
                    f"(maxUnavailableClusters {strategy.maxUnavailableClusters})",
                }
                outcome.delay = self._drift_interval
                return outcome
            await self._apply(api, ctx, rendered)
            APPLIES.labels("success").inc()
            values |= {
                "applied_revision": target.desired_revision,
                "applied_hash": rendered.hash,
                "applied_objects": [ObjectRef.of(o).as_dict() for o in rendered.objects],
                "applied_at": _now(),
                "ready_at": None,
                "phase": "Applied",
            }
            if new_revision:
                values["previous_revision"] = target.applied_revision
        else:
            drifted = await self._drifted(api, ctx, rendered)
            if drifted:
                await self._apply(api, ctx, rendered)
                DRIFT_REPAIRS.inc(len(drifted))
                outcome.events.append(
                    ("Normal", "DriftRepaired", f"{'; '.join(drifted)}: re-applied")
                )
        return await self._follow(api, ctx, rendered, outcome)

    async def _apply(self, api: Any, ctx: Context, rendered: Rendered) -> None:
        await self._refuse_foreign(api, ctx, rendered)
        for obj in rendered.objects:
            # Remembered before the call: a partial apply must still be cleaned up later.
            ref = ObjectRef.of(obj)
            ctx.touched.append(ref)
            ctx.live[ref] = await apply_object(api, obj)
        # Objects an earlier revision made that this one no longer has.
        current = {ObjectRef.of(o) for o in rendered.objects}
        for ref in _refs(ctx.target.applied_objects):
            if ref not in current and ref.kind != "Namespace":
                await self._delete_owned(api, ctx, ref)

    async def _refuse_foreign(self, api: Any, ctx: Context, rendered: Rendered) -> None:
        """Before the first write of each object this target has not applied yet: refuse
        (permanently, for this revision) when the edge has it and it is not this owner's.
        Objects applied before are this owner's (the drift check reads them again). In a
        namespace that does not exist yet nothing else can: one read for a new target."""
        applied = set(_refs(ctx.target.applied_objects))
        namespace_is_new = False
        for obj in rendered.objects:
            ref = ObjectRef.of(obj)
            if ref in applied or (namespace_is_new and ref.namespace is not None):
                continue
            live = await read_object(api, ref)
            if live is None and ref.kind == "Namespace":
                namespace_is_new = True
            refusal = ctx.owner.refusal(live, ref.kind, str(ref))
            if refusal is not None:
                raise EdgeError(refusal, permanent=True)

    async def _delete_owned(self, api: Any, ctx: Context, ref: ObjectRef) -> bool:
        """Delete `ref` at the edge if it is this owner's; False (and left there) if not."""
        live = await read_object(api, ref)
        if live is None:
            return True
        refusal = ctx.owner.refusal(live, ref.kind, str(ref))
        if refusal is not None:
            logger.warning("not deleting at %s: %s", ctx.cluster.name, refusal)
            return False
        await delete_object(api, ref)
        return True

    async def _drifted(self, api: Any, ctx: Context, rendered: Rendered) -> list[str]:
        drifted = []
        for obj in rendered.objects:
            ref = ObjectRef.of(obj)
            live = await read_object(api, ref)
            if live is None:
                drifted.append(f"{ref} was deleted at the edge")
                continue
            refusal = ctx.owner.refusal(live, ref.kind, str(ref))
            if refusal is not None:  # replaced at the edge by someone else's: not repaired
                raise EdgeError(refusal, permanent=True)
            ctx.live[ref] = live
            if not contains(live, obj):
                drifted.append(f"{ref} was changed at the edge")
        return drifted

    async def _follow(
        self, api: Any, ctx: Context, rendered: Rendered, outcome: Outcome
    ) -> Outcome:
        """Read readiness back: Ready, still progressing, or failed (the edge says so, or the
        progress deadline passed)."""
        target = ctx.target
        if ctx.deployment.kind == "VCluster":
            ready, ready_replicas, message, failed = await self._vcluster_readiness(
                api, ctx, rendered, outcome
            )
        else:
            ready, ready_replicas, message, failed = await self._readiness(api, ctx, rendered)
        values = outcome.values
        if ready_replicas is None:  # a Helm release: its pods are the chart's business
            wanted = ctx.revision_params.replicas if ctx.revision_params else None
            ready_replicas = (wanted or 0) if ready else 0
        values["ready_replicas"] = ready_replicas
        if failed:
            return self._failed(ctx, message or "failed at the edge", cause="edge", base=outcome)
        if ready:
            was_ready = (
                target.phase == "Ready" and target.applied_revision == target.desired_revision
            )
            values |= {"phase": "Ready", "message": _rollback_note(target), "attempts": 0}
            if target.ready_at is None or "applied_at" in values:
                values["ready_at"] = _now()
            outcome.delay = self._drift_interval
            if not was_ready and ctx.revision is not None:
                outcome.ready_after = (_now() - ctx.revision.created_at).total_seconds()
            return outcome
        strategy = Strategy.model_validate(ctx.deployment.strategy or {})
        applied_at = values.get("applied_at") or target.applied_at or _now()
        # Only a revision that never became Ready can miss its deadline; one that was Ready
        # and wobbles (a pod restarts) is followed, not failed.
        first_rollout = "applied_at" in values or target.ready_at is None
        overdue = (_now() - applied_at).total_seconds() > strategy.progressDeadlineSeconds
        if first_rollout and overdue:
            return self._failed(
                ctx,
                f"not ready {strategy.progressDeadlineSeconds}s after apply: {message}",
                cause="deadline",
                base=outcome,
            )
        values |= {"phase": "Applied", "message": message, "attempts": 0}
        outcome.delay = self._status_interval
        return outcome

    async def _readiness(
        self, api: Any, ctx: Context, rendered: Rendered
    ) -> tuple[bool, int | None, str | None, bool]:
        """(ready, ready replicas when Deployments tell them, why not, failed at the edge)."""
        ready_all, replicas, messages = True, None, []
        for obj in rendered.objects:
            ref = ObjectRef.of(obj)
            if ref.kind == "Deployment":
                live = ctx.live.get(ref) or await read_object(api, ref)
                if live is None:
                    return False, 0, f"{ref} is missing", False
                state = deployment_readiness(live)
                if state.failed:
                    return False, state.ready_replicas, f"{ref}: {state.message}", True
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
                    return False, 0, f"{ref} is missing", False
                failure = helm_chart_failure(live)
                if failure:
                    return False, 0, f"{ref}: {failure}", True
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
        return ready_all, replicas, "; ".join(messages) or None, False

    async def _vcluster_readiness(
        self, api: Any, ctx: Context, rendered: Rendered, outcome: Outcome
    ) -> tuple[bool, int | None, str | None, bool]:
        """Ready when the chart has written the vcluster's kubeconfig Secret (then read)."""
        namespace = rendered.objects[0]["metadata"]["name"]
        secret = await read_object(
            api, ObjectRef("v1", "Secret", vcluster_secret_name(ctx.deployment.name), namespace)
        )
        config = ((secret or {}).get("data") or {}).get("config")
        if not config:
            return False, None, "waiting for the vcluster's kubeconfig Secret", False
        try:
            text = base64.b64decode(config).decode()
            endpoint = (ctx.revision.content if ctx.revision else {}).get("endpoint")
            parse_kubeconfig(
                reachable_kubeconfig(text, endpoint, ctx.cluster.server),
                allow_private=self._allow_private, allow_insecure=self._allow_insecure,
            )  # fmt: skip
        except (ValueError, InvalidKubeconfig) as exc:
            return False, None, f"the vcluster's kubeconfig is not usable: {exc}", True
        outcome.kubeconfig = text
        return True, None, None, False

    async def _remove(self, ctx: Context) -> Outcome:
        # A vcluster's namespace is its own: it goes with it (others are shared and stay).
        owned = ctx.deployment.kind == "VCluster"
        refs = [r for r in _refs(ctx.target.applied_objects) if owned or r.kind != "Namespace"]
        left: list[ObjectRef] = []
        try:
            if refs:
                api = await self._clients.client_for(self._client_target(ctx.cluster))
                for ref in reversed(refs):
                    if not await self._delete_owned(api, ctx, ref):
                        left.append(ref)
        except Exception as exc:
            # Deletion is retried whatever the answer: giving up would leave objects behind.
            outcome = self._retry(ctx, f"removing: {exc}")
            outcome.values["phase"] = "Deleting"
            return outcome
        outcome = Outcome(remove_row=True)
        removed = [r for r in refs if r not in left]
        names = ", ".join(str(r) for r in removed) or "nothing was applied"
        outcome.events.append(("Normal", "Removed", f"removed from the cluster: {names}"))
        if left:
            outcome.events.append(
                (
                    "Warning",
                    "LeftForeignObjects",
                    "left at the edge, no longer this owner's: " + ", ".join(map(str, left)),
                )
            )
        return outcome

    def _unreachable(self, ctx: Context) -> Outcome:
        target, cluster = ctx.target, ctx.cluster
        since = cluster.last_ready_time.isoformat() if cluster.last_ready_time else "never"
        known = target.phase if target.phase != "Unreachable" else None
        message = (
            target.message
            if known is None
            else (
                f"cluster {cluster.name} is unreachable (last ready {since}); last known: {known}, "
                f"{target.ready_replicas} ready, revision {target.applied_revision}"
            )
        )
        values: dict[str, Any] = {"message": message}
        if not target.removing:
            values["phase"] = "Unreachable"
        # The prober nudges this row when the cluster comes back.
        return Outcome(values, delay=self._drift_interval)

    def _failed(
        self,
        ctx: Context,
        message: str,
        *,
        cause: str,
        base: Outcome | None = None,
        final: bool = False,
    ) -> Outcome:
        """`final`: the edge refused the objects (or they cannot be made): nothing changes
        until the spec does. Otherwise (the edge reports a failure, the deadline passed) the
        target is still followed and becomes Ready if the edge recovers."""
        target = ctx.target
        outcome = base or Outcome({"last_sync_time": _now()})
        FAILURES.labels(cause).inc()
        strategy = Strategy.model_validate(ctx.deployment.strategy or {})
        rollback_to = (
            target.applied_revision
            if target.applied_revision not in (None, target.desired_revision)
            else target.previous_revision
        )
        outcome.values |= {"attempts": 0}
        if final:
            outcome.values["failed_revision"] = target.desired_revision
        outcome.delay = self._drift_interval
        # Only a revision that never became Ready there is rolled back; a Ready one that
        # fails later is reported and followed.
        never_ready = final or target.ready_at is None or "applied_at" in outcome.values
        if strategy.failurePolicy == "Rollback" and rollback_to is not None and never_ready:
            outcome.values |= {
                "failed_revision": target.desired_revision,
                "desired_revision": rollback_to,
                "phase": "Applying",
                "message": f"revision {target.desired_revision} failed, rolling back to "
                f"{rollback_to}: {message}",
            }
            outcome.delay = 0.0
            outcome.events.append(
                ("Warning", "RollingBack", f"revision {target.desired_revision} failed: {message}")
            )
            return outcome
        outcome.values |= {"phase": "Failed", "message": message}
        return outcome

    def _retry(self, ctx: Context, message: str) -> Outcome:
        RETRIES.inc()
        attempts = ctx.target.attempts + 1
        delay = min(self._retry_max, 2.0 ** min(attempts, 20)) * random.uniform(0.5, 1.0)
        values: dict[str, Any] = {
            "attempts": attempts,
            "message": f"retrying in {delay:.0f}s (attempt {attempts}): {message}"[:1024],
        }
        if ctx.target.phase == "Pending":
            values["phase"] = "Applying"
        return Outcome(values, delay=delay)

    # write-back ------------------------------------------------------------------------------

    async def _write(self, row_id: int, token: uuid.UUID, ctx: Context, outcome: Outcome) -> None:
        """Record the pass under the lease, with its events; returns once committed. Passes
        finishing together are written in one transaction (a commit per pass was most of
        the database's work at a thousand targets)."""
        result = _Result(row_id, token, ctx, outcome, asyncio.get_running_loop().create_future())
        self._results.append(result)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_results())
        # Shielded: a pass cancelled meanwhile (the controller stops) still has its result
        # written, or dropped whole.
        await asyncio.shield(result.written)

    async def _write_results(self) -> None:
        try:
            while self._results:
                batch, self._results = self._results, []
                try:
                    committed = [(batch, await self._write_batch(batch))]
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0], exc)
                        continue
                    # One result the database refuses must not hold back the others.
                    committed = []
                    for result in batch:
                        try:
                            committed.append(([result], await self._write_batch([result])))
                        except Exception as exc:
                            _settle(result, exc)
                # Only once committed, and outside the retry above: a result written twice
                # would find its lease gone with the first write.
                for results, (written, events) in committed:
                    try:
                        await self._after_write(written, events)
                    except Exception:  # announcing is best effort; the rows are written
                        logger.warning("after a dispatch write-back", exc_info=True)
                    for result in results:
                        _settle(result, None)
        finally:
            self._writer = None

    async def _write_batch(
        self, batch: list[_Result]
    ) -> tuple[list[_Result], dict[int, list[NewEvent]]]:
        """One transaction: (the results written, their events per workspace)."""
        now = _now()
        written: list[_Result] = []
        events: dict[int, list[NewEvent]] = {}
        async with self._sessionmaker.begin() as session:
            ordered = sorted(batch, key=lambda r: r.row_id)
            # Locked in id order, as every multi-row update of targets is (no deadlocks): an
            # UPDATE over a join would lock in whatever order its plan reads the rows.
            await session.execute(
                select(RolloutTarget.id)
                .where(RolloutTarget.id.in_([r.row_id for r in ordered]))
                .order_by(RolloutTarget.id)
                .with_for_update()
            )
            updated = await self._update_rows(
                session, [r for r in ordered if not r.outcome.remove_row], now
            )
            for result in ordered:
                found = await self._write_row(session, result, updated)
                if found is not None:
                    written.append(result)
                    events.setdefault(result.ctx.deployment.workspace_id, []).extend(found)
            for workspace_id in sorted(events):  # locks at commit in one order, too
                await record(session, workspace_id, events[workspace_id])
        return written, events

    async def _update_rows(
        self, session: AsyncSession, results: list[_Result], now: datetime
    ) -> set[int]:
        """Write the passes of rows still held and still asking for what their pass worked
        on, one statement per set of columns written (most passes of a batch write the same
        set); returns the ids written. The others are left to the row-by-row path."""
        shapes: dict[tuple[str, ...], list[tuple[_Result, dict[str, Any]]]] = {}
        for result in results:
            values = _row_values(result.outcome)
            shapes.setdefault(tuple(sorted(values)), []).append((result, values))
        written: set[int] = set()
        for shape, rows in shapes.items():
            arrays = row_arrays(
                [
                    {
                        "row_id": result.row_id,
                        "lease": result.token,
                        "desired": result.ctx.target.desired_revision,
                        "was_removing": result.ctx.target.removing,
                        "seen_next": result.ctx.target.next_attempt_at,
                        "next_at": now + timedelta(seconds=result.outcome.delay),
                        "at": now,
                    }
                    | values
                    for result, values in rows
                ],
                _JSON_COLUMNS,
            )
            found = await session.execute(_batch_update(shape), arrays)
            written.update(found.scalars().all())
        return written

    async def _after_write(self, written: list[_Result], events: dict[int, list[NewEvent]]) -> None:
        for workspace_id, recorded in events.items():
            if recorded:
                await announce(self._redis, workspace_id)
        for result in written:
            if result.outcome.ready_after is not None:
                TIME_TO_READY.observe(max(0.0, result.outcome.ready_after))
            # Folded in the background. Should the fold fail, the next write-back of any of
            # the rollout's targets folds it again (within the drift interval at most).
            self._folds.request(result.ctx.deployment.id)

    async def _write_row(
        self, session: AsyncSession, result: _Result, updated: set[int]
    ) -> list[NewEvent] | None:
        """The rest of one pass's write-back (`updated`: the rows the batch's UPDATE wrote):
        its events, or None when its lease was lost."""
        row_id, token, ctx, outcome = result.row_id, result.token, result.ctx, result.outcome
        rollout = ctx.deployment
        events = _pass_events(ctx, outcome)
        if outcome.remove_row:
            written = await self._remove_row(session, row_id, token, ctx)
        elif row_id in updated:
            written = "updated"
            events.extend(_target_phase_event(rollout, ctx, outcome))
            if outcome.kubeconfig is not None:
                events.extend(await self._register(session, rollout, ctx, outcome))
        else:
            written = await self._keep_applied_facts(session, row_id, token, outcome)
            if written == "superseded":
                events.clear()
                outcome.ready_after = None
        if written == "lost":  # to another replica, or the rollout is gone: nothing written
            LOST_LEASES.inc()
            logger.info("dispatch result for target %d dropped: lease lost", row_id)
            return None
        return events

    async def _fold_rollout(self, rollout_id: int) -> None:
        """Fold the rollout's phase from its targets' committed rows, under the rollout's row
        lock: folds of other replicas queue behind it, so the last one sees every result."""
        async with self._sessionmaker.begin() as session:
            rollout = await session.scalar(
                select(Rollout).where(Rollout.id == rollout_id).with_for_update(key_share=True)
            )
            if rollout is None:  # deleted meanwhile (orphaned)
                return
            events, forgotten = await _fold(session, rollout)
            await record(session, rollout.workspace_id, events)
        if events:
            await announce(self._redis, rollout.workspace_id)
        if forgotten is not None:  # a vcluster's Cluster is gone: not from the cache either
            await self._cache.forget(cluster_cache_key(forgotten[0]), forgotten[1])

    async def _register(
        self, session: AsyncSession, rollout: Rollout, ctx: Context, outcome: Outcome
    ) -> list[NewEvent]:
        workspace = await session.get(Workspace, rollout.workspace_id)
        assert workspace is not None
        assert outcome.kubeconfig is not None
        name = await register(
            session, self._secrets, rollout,
            workspace=workspace, host=ctx.cluster, kubeconfig=outcome.kubeconfig,
            endpoint=rollout.content.get("endpoint"),
            allow_private=self._allow_private, allow_insecure=self._allow_insecure,
        )  # fmt: skip
        if ctx.target.phase == "Ready":
            return []
        return [
            NewEvent(rollout.kind, rollout.name, "Registered",
                     f"registered as cluster {name}", rollout_id=rollout.id)
        ]  # fmt: skip

    async def _remove_row(
        self, session: AsyncSession, row_id: int, token: uuid.UUID, ctx: Context
    ) -> str:
        result = await session.execute(
            delete(RolloutTarget).where(
                held(RolloutTarget, row_id, token), _unchanged_since(ctx.target)
            )
        )
        if getattr(result, "rowcount", 0) == 1:
            return "removed"
        # Targeted again meanwhile: its objects are gone, the row stays for it.
        result = await session.execute(
            update(RolloutTarget)
            .where(held(RolloutTarget, row_id, token))
            .values(
                applied_objects=[], applied_revision=None, applied_hash=None,
                lock_token=None, lock_expires_at=None,
            )
        )  # fmt: skip
        return "superseded" if getattr(result, "rowcount", 0) == 1 else "lost"

    async def _keep_applied_facts(
        self, session: AsyncSession, row_id: int, token: uuid.UUID, outcome: Outcome
    ) -> str:
        """A row the batch did not write: if still ours, a new revision or a removal came
        meanwhile; keep only the facts of what was applied, and leave the rest to the next
        pass."""
        facts = {k: v for k, v in outcome.values.items() if k in APPLIED_FACTS}
        result = await session.execute(
            update(RolloutTarget)
            .where(held(RolloutTarget, row_id, token))
            .values(**facts, lock_token=None, lock_expires_at=None)
        )
        return "superseded" if getattr(result, "rowcount", 0) == 1 else "lost"


class _RenderError(Exception):
    pass


@dataclass
class _Result:
    """A pass's result waiting for its write-back."""

    row_id: int
    token: uuid.UUID
    ctx: Context
    outcome: Outcome
    written: asyncio.Future[None]


def _settle(result: _Result, error: BaseException | None) -> None:
    if result.written.done():
        return
    if error is None:
        result.written.set_result(None)
    else:
        result.written.set_exception(error)
        result.written.exception()  # retrieved: the pass may be gone (cancelled)


class Coalesced:
    """Runs `job(key)` after each `request(key)`, in the background and never twice at once
    for a key: the requests made while it runs are served by one more run after it. A
    thousand targets finishing together cost a few folds of their rollout, not a thousand in
    a queue."""

    def __init__(self, job: Callable[[int], Awaitable[None]], what: str, concurrency: int) -> None:
        self._job = job
        self._what = what  # for the log
        # Runs of different keys at once. Each holds a database connection while it runs:
        # unbounded, many rollouts finishing together could take the whole pool and leave the
        # claims and write-backs failing with "QueuePool limit reached".
        self._running = asyncio.Semaphore(concurrency)
        self._again: set[int] = set()  # keys asked for again while their run was going
        self._runners: dict[int, asyncio.Task[None]] = {}

    def request(self, key: int) -> None:
        if key in self._runners:
            self._again.add(key)
        else:
            self._runners[key] = asyncio.create_task(self._run(key))

    async def _run(self, key: int) -> None:
        try:
            while True:
                async with self._running:
                    self._again.discard(key)
                    try:
                        await self._job(key)
                    except Exception:
                        logger.warning("%s %d failed", self._what, key, exc_info=True)
                if key not in self._again:
                    return
        finally:
            del self._runners[key]

    async def close(self) -> None:
        """Let the runs already asked for end (the controller stops)."""
        await asyncio.gather(*self._runners.values())


# What a pass did at the edge: kept even when the row changed meanwhile, so that the next pass
# knows which objects exist there.
APPLIED_FACTS = frozenset(
    {"applied_revision", "applied_hash", "applied_objects", "applied_at", "previous_revision"}
)


def _unchanged_since(loaded: RolloutTarget) -> Any:
    """The row still asks for what this pass worked on (the API rewrites these when a new
    revision or a removal changes what the target should be)."""
    return (RolloutTarget.desired_revision == loaded.desired_revision) & (
        RolloutTarget.removing == loaded.removing
    )


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


def _refs(applied: list[dict[str, Any]]) -> list[ObjectRef]:
    return [ObjectRef(r["apiVersion"], r["kind"], r["name"], r.get("namespace")) for r in applied]


def _rollback_note(target: RolloutTarget) -> str | None:
    if target.failed_revision is not None and target.failed_revision != target.desired_revision:
        return (
            f"rolled back to revision {target.desired_revision} after revision "
            f"{target.failed_revision} failed"
        )
    return None


def _params_for(revision: RolloutRevision, cluster: Cluster) -> TargetSpec | None:
    """The target of that revision this cluster belongs to (named, or by its region)."""
    targets = [TargetSpec.model_validate(t) for t in revision.targets]
    for target in targets:
        if cluster.name in target.clusters:
            return target
    for target in targets:
        if not target.clusters and target.region == cluster.region:
            return target
    return None


def _row_values(outcome: Outcome) -> dict[str, Any]:
    """The columns a pass writes, as stored."""
    values = dict(outcome.values)
    if values.get("message") is not None:
        values["message"] = str(values["message"])[:1024]
    return values


def _pass_events(ctx: Context, outcome: Outcome) -> list[NewEvent]:
    rollout = ctx.deployment
    return [
        NewEvent(rollout.kind, rollout.name, reason, message, kind, ctx.cluster.name,
                 rollout_id=rollout.id)
        for kind, reason, message in outcome.events
    ]  # fmt: skip


_JSON_COLUMNS = frozenset(
    c.name for c in RolloutTarget.__table__.columns if isinstance(c.type, JSONB)
)


@functools.lru_cache(maxsize=64)
def _batch_update(shape: tuple[str, ...]) -> Any:
    """The UPDATE of a batch's rows that write the columns `shape`, from one array per column
    (JSON columns as text), returning the ids written: each row only while our lease holds
    and while it still asks for what its pass worked on."""
    table = RolloutTarget.__table__.columns
    # The batch's own columns, beside those its passes write: which row under which lease,
    # what the pass worked on, when the row is next due (unless nudged meanwhile), when it
    # was written.
    kinds: dict[str, Any] = {
        "row_id": BigInteger, "lease": PG_UUID(as_uuid=True), "desired": Integer,
        "was_removing": Boolean, "seen_next": TIMESTAMP, "next_at": TIMESTAMP,
        "at": TIMESTAMP,
    } | {key: Text if key in _JSON_COLUMNS else table[key].type for key in shape}  # fmt: skip
    rows = unnest_rows("pass", kinds)
    t = RolloutTarget
    values: dict[str, Any] = {
        key: cast(rows.c[key], JSONB) if key in _JSON_COLUMNS else rows.c[key] for key in shape
    }
    if "phase" in shape:
        values["last_transition_time"] = case(
            (t.phase != rows.c.phase, rows.c.at), else_=t.last_transition_time
        )
    values |= {
        # Nudged during the pass (unpaused, its cluster came back): look again at once.
        "next_attempt_at": case((t.next_attempt_at != rows.c.seen_next, func.now()),
                                else_=rows.c.next_at),
        "lock_token": null(),
        "lock_expires_at": null(),
    }  # fmt: skip
    return (
        update(t)
        .where(
            t.id == rows.c.row_id,
            t.lock_token == rows.c.lease,
            t.desired_revision == rows.c.desired,
            t.removing == rows.c.was_removing,
        )
        .values(**values)
        .returning(t.id)
        .execution_options(synchronize_session=False)
    )


def _target_phase_event(rollout: Rollout, ctx: Context, outcome: Outcome) -> list[NewEvent]:
    """An event for a target entering a new phase (the message says why)."""
    phase = outcome.values.get("phase")
    if phase is None or phase == ctx.target.phase:
        return []
    revision = outcome.values.get("desired_revision", ctx.target.desired_revision)
    message = outcome.values.get("message") or f"revision {revision} is {phase}"
    return [
        NewEvent(
            rollout.kind, rollout.name, str(phase), str(message),
            "Warning" if phase in ("Failed", "Unreachable") else "Normal",
            ctx.cluster.name, str(phase), rollout.id,
        )
    ]  # fmt: skip


async def _fold(
    session: AsyncSession, rollout: Rollout
) -> tuple[list[NewEvent], tuple[str, int] | None]:
    """Fold the targets into the rollout's phase; an event when it changes. A rollout being
    deleted whose last target is gone is deleted (its revisions with it)."""
    counts = await _count_targets(session, rollout)
    if rollout.deletion_timestamp is not None and not counts.total:
        forgotten = None
        if rollout.kind == "VCluster":
            workspace = await session.get(Workspace, rollout.workspace_id)
            assert workspace is not None
            forgotten = await unregister(session, workspace, rollout)
        await session.execute(delete(Rollout).where(Rollout.id == rollout.id))
        return [
            NewEvent(rollout.kind, rollout.name, "Deleted",
                     "removed from every cluster; the record is gone", rollout_id=rollout.id)
        ], forgotten  # fmt: skip
    phase = fold_phase(rollout, counts)
    if phase == rollout.phase:
        return [], None
    before, rollout.phase = rollout.phase, phase
    return [
        NewEvent(
            rollout.kind, rollout.name, "PhaseChanged",
            f"{before} → {phase}: {counts.message(rollout.revision)}",
            "Warning" if phase in ("Failed", "Degraded") else "Normal",
            phase=phase, rollout_id=rollout.id,
        )
    ], None  # fmt: skip


async def _count_targets(session: AsyncSession, rollout: Rollout) -> TargetCounts:
    """The counts the phase folds from, in one aggregate (no target rows loaded)."""
    t = RolloutTarget
    active = t.removing.is_(False)
    settled = t.phase.in_(("Failed", "Unreachable")) | (
        (t.phase == "Ready") & (t.applied_revision == t.desired_revision)
    )

    def count(where: Any) -> Any:
        return func.count().filter(where)

    row = (
        await session.execute(
            select(
                func.count(),
                count(active),
                count(active & (t.phase == "Ready") & (t.applied_revision == rollout.revision)),
                count(active & (t.phase == "Failed")),
                count(active & (t.phase == "Unreachable")),
                count(active & ~func.coalesce(settled, False)),
            ).where(t.rollout_id == rollout.id)
        )
    ).one()
    return TargetCounts(*(int(v) for v in row))
