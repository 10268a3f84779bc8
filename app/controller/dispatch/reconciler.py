"""One pass over one target: make the edge hold what the target's revision declares, read it
back, and say what was found (`Outcome`). Level-triggered: objects that differ from what was
applied (by hash) are applied again (server-side apply, one field manager); otherwise they are
re-read from the edge to repair drift and to follow readiness. The platform writes and deletes
only its owner's objects (`Owner`): anything else at the edge is left untouched.

The edge calls live here; what they mean is `decisions`', what differs by kind `kinds`'."""

from __future__ import annotations

import logging
from typing import Any

from app.controller.dispatch import decisions
from app.controller.dispatch.context import Context, Outcome, applied_refs, now
from app.controller.dispatch.decisions import Timing
from app.controller.dispatch.kinds import RenderError, RolloutKind
from app.controller.dispatch.metrics import APPLIES, DRIFT_REPAIRS
from app.controller.kube import (
    ClusterTarget,
    EdgeError,
    ObjectRef,
    apply_object,
    delete_object,
    read_object,
)
from app.controller.kube_clients import KubeClients
from app.deployments.manifests import Rendered, contains
from app.models.clusters import Cluster

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, clients: KubeClients, kinds: dict[str, RolloutKind], timing: Timing) -> None:
        self._clients = clients
        self._kinds = kinds
        self._timing = timing

    async def reconcile(self, ctx: Context) -> Outcome:
        timing = self._timing
        outcome = decisions.cluster_unusable(ctx, timing)
        if outcome is not None:
            return outcome
        if ctx.target.removing:
            return await self._remove(ctx)
        outcome = decisions.held_back(ctx, timing)
        if outcome is not None:
            return outcome
        kind = self._kinds[ctx.deployment.kind]
        try:
            rendered = kind.render(ctx)
        except RenderError as exc:
            return decisions.failed(
                ctx, str(exc), cause="invalid", timing=timing, final=True, at=now()
            )
        try:
            return await self._converge(ctx, kind, rendered)
        except EdgeError as exc:
            if exc.permanent:
                APPLIES.labels("failure").inc()
                outcome = decisions.failed(
                    ctx, str(exc), cause="rejected", timing=timing, final=True, at=now()
                )
            else:
                outcome = decisions.retry(ctx, str(exc), timing)
        except Exception as exc:  # e.g. the cluster's address is now refused: say so, retry
            logger.warning("dispatch to %s failed", ctx.cluster.name, exc_info=True)
            outcome = decisions.retry(ctx, f"{type(exc).__name__}: {exc}", timing)
        # A pass cut short may have applied some objects: remembered, so they are cleaned up.
        known = applied_refs(ctx.target.applied_objects)
        if any(ref not in known for ref in ctx.touched):
            outcome.values["applied_objects"] = [
                r.as_dict() for r in [*known, *(t for t in ctx.touched if t not in known)]
            ]
        return outcome

    async def _client(self, cluster: Cluster) -> Any:
        return await self._clients.client_for(ClusterTarget.of(cluster))

    async def _converge(self, ctx: Context, kind: RolloutKind, rendered: Rendered) -> Outcome:
        target = ctx.target
        api = await self._client(ctx.cluster)
        params = ctx.revision_params
        assert params is not None
        values: dict[str, Any] = {
            "node_group": params.nodeGroupRef,
            "replicas": params.replicas,
            "values": params.values,
            "last_sync_time": now(),
        }
        outcome = Outcome(values)
        new_revision = target.applied_revision != target.desired_revision
        if new_revision or target.applied_hash != rendered.hash:
            paused = decisions.failure_pause(ctx) if new_revision else None
            if paused is not None:
                values |= {"phase": "Pending", "message": paused}
                outcome.delay = self._timing.drift_interval
                return outcome
            await self._apply(api, ctx, rendered)
            APPLIES.labels("success").inc()
            values |= {
                "applied_revision": target.desired_revision,
                "applied_hash": rendered.hash,
                "applied_objects": [ObjectRef.of(o).as_dict() for o in rendered.objects],
                "applied_at": now(),
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
        observed = await kind.observe(api, ctx, rendered)
        return decisions.follow(ctx, observed, outcome, self._timing, at=now())

    async def _apply(self, api: Any, ctx: Context, rendered: Rendered) -> None:
        await self._refuse_foreign(api, ctx, rendered)
        for obj in rendered.objects:
            # Remembered before the call: a partial apply must still be cleaned up later.
            ref = ObjectRef.of(obj)
            ctx.touched.append(ref)
            ctx.live[ref] = await apply_object(api, obj)
        # Objects an earlier revision made that this one no longer has.
        current = {ObjectRef.of(o) for o in rendered.objects}
        for ref in applied_refs(ctx.target.applied_objects):
            if ref not in current and ref.kind != "Namespace":
                await self._delete_owned(api, ctx, ref)

    async def _refuse_foreign(self, api: Any, ctx: Context, rendered: Rendered) -> None:
        """Before the first write of each object this target has not applied yet: refuse
        (permanently, for this revision) when the edge has it and it is not this owner's.
        Objects applied before are this owner's (the drift check reads them again). In a
        namespace that does not exist yet nothing else can: one read for a new target."""
        applied = set(applied_refs(ctx.target.applied_objects))
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

    async def _remove(self, ctx: Context) -> Outcome:
        owns_namespace = self._kinds[ctx.deployment.kind].owns_namespace
        refs = [
            r
            for r in applied_refs(ctx.target.applied_objects)
            if owns_namespace or r.kind != "Namespace"
        ]
        left: list[ObjectRef] = []
        try:
            if refs:
                api = await self._client(ctx.cluster)
                for ref in reversed(refs):
                    if not await self._delete_owned(api, ctx, ref):
                        left.append(ref)
        except Exception as exc:
            # Deletion is retried whatever the answer: giving up would leave objects behind.
            outcome = decisions.retry(ctx, f"removing: {exc}", self._timing)
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
