"""The dispatcher's decisions: wait, retry, fail, pause, roll back, Ready. Each is a function of
a target's context and what the edge showed, returning the pass's `Outcome`; none calls the
edge or the database, so each can be tested on its own (tests/controller/test_decisions.py).

Errors are of two kinds, as kopf has them: temporary (timeouts, connection errors, 429, 5xx:
retried with capped exponential backoff and jitter) and permanent for the revision (the edge
refused the objects, or they cannot be made: nothing changes until the spec does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.controller.dispatch.context import Context, Observed, Outcome
from app.controller.dispatch.metrics import FAILURES, RETRIES
from app.controller.kube import reachable
from app.deployments.schemas import Strategy
from app.models.deployments import RolloutTarget


@dataclass(frozen=True)
class Timing:
    drift_interval: float  # a settled target is looked at again after this
    status_interval: float  # an applied, not yet Ready one after this
    retry_max: float  # the cap of the retry backoff


def cluster_unusable(ctx: Context, timing: Timing) -> Outcome | None:
    """The cluster cannot be worked on now (disabled, no credentials, unreachable)."""
    cluster = ctx.cluster
    why = "disabled" if not cluster.enabled else reachable(cluster)
    if why is not None:
        return Outcome({"message": f"cluster {cluster.name} {why}"}, delay=timing.drift_interval)
    if cluster.phase == "Unreachable":
        return unreachable(ctx, timing)
    return None


def unreachable(ctx: Context, timing: Timing) -> Outcome:
    """The target keeps what it last knew and says the cluster is gone; the prober nudges
    the row when the cluster comes back."""
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
    return Outcome(values, delay=timing.drift_interval)


def held_back(ctx: Context, timing: Timing) -> Outcome | None:
    """A target that is not to be worked on although its cluster is usable."""
    target = ctx.target
    if ctx.deployment.paused:
        return Outcome({"message": "paused"}, delay=timing.drift_interval)
    if target.failed_revision is not None and target.failed_revision == target.desired_revision:
        # Refused at this revision: nothing to do until the spec changes (the phase is
        # said again, as an Unreachable spell may have covered it).
        return Outcome({"phase": "Failed"}, delay=timing.drift_interval)
    return None


def failure_pause(ctx: Context) -> str | None:
    """Why a new revision is not applied here: failurePolicy Pause and more clusters failed
    than the strategy allows."""
    strategy = Strategy.model_validate(ctx.deployment.strategy or {})
    if strategy.failurePolicy != "Pause" or ctx.failed_targets <= strategy.maxUnavailableClusters:
        return None
    return (
        f"rollout paused: {ctx.failed_targets} clusters failed "
        f"(maxUnavailableClusters {strategy.maxUnavailableClusters})"
    )


def failed(
    ctx: Context,
    message: str,
    *,
    cause: str,
    timing: Timing,
    base: Outcome | None = None,
    final: bool = False,
    at: datetime,
) -> Outcome:
    """`final`: the edge refused the objects (or they cannot be made): nothing changes
    until the spec does. Otherwise (the edge reports a failure, the deadline passed) the
    target is still followed and becomes Ready if the edge recovers. With failurePolicy
    Rollback a revision that never became Ready here goes back to the one before."""
    target = ctx.target
    outcome = base or Outcome({"last_sync_time": at})
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
    outcome.delay = timing.drift_interval
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


def retry(ctx: Context, message: str, timing: Timing, *, jitter: float | None = None) -> Outcome:
    """Try again after a capped exponential backoff; `jitter` (0.5 to 1, random when not given)
    spreads the retries of many targets that failed together."""
    RETRIES.inc()
    attempts = ctx.target.attempts + 1
    if jitter is None:
        jitter = random.uniform(0.5, 1.0)
    delay = min(timing.retry_max, 2.0 ** min(attempts, 20)) * jitter
    values: dict[str, Any] = {
        "attempts": attempts,
        "message": f"retrying in {delay:.0f}s (attempt {attempts}): {message}"[:1024],
    }
    if ctx.target.phase == "Pending":
        values["phase"] = "Applying"
    return Outcome(values, delay=delay)


def follow(
    ctx: Context, observed: Observed, outcome: Outcome, timing: Timing, *, at: datetime
) -> Outcome:
    """What the objects read back mean: Ready, still progressing, or failed (the edge says
    so, or the revision's progress deadline passed)."""
    target, values = ctx.target, outcome.values
    ready_replicas = observed.ready_replicas
    if ready_replicas is None:  # a Helm release: its pods are the chart's business
        wanted = ctx.revision_params.replicas if ctx.revision_params else None
        ready_replicas = (wanted or 0) if observed.ready else 0
    values["ready_replicas"] = ready_replicas
    if observed.failed:
        message = observed.message or "failed at the edge"
        return failed(ctx, message, cause="edge", timing=timing, base=outcome, at=at)
    if observed.ready:
        was_ready = target.phase == "Ready" and target.applied_revision == target.desired_revision
        values |= {"phase": "Ready", "message": rollback_note(target), "attempts": 0}
        if target.ready_at is None or "applied_at" in values:
            values["ready_at"] = at
        outcome.delay = timing.drift_interval
        outcome.kubeconfig = observed.kubeconfig
        if not was_ready and ctx.revision is not None:
            outcome.ready_after = (at - ctx.revision.created_at).total_seconds()
        return outcome
    strategy = Strategy.model_validate(ctx.deployment.strategy or {})
    applied_at = values.get("applied_at") or target.applied_at or at
    # Only a revision that never became Ready can miss its deadline; one that was Ready
    # and wobbles (a pod restarts) is followed, not failed.
    first_rollout = "applied_at" in values or target.ready_at is None
    overdue = (at - applied_at).total_seconds() > strategy.progressDeadlineSeconds
    if first_rollout and overdue:
        return failed(
            ctx,
            f"not ready {strategy.progressDeadlineSeconds}s after apply: {observed.message}",
            cause="deadline",
            timing=timing,
            base=outcome,
            at=at,
        )
    values |= {"phase": "Applied", "message": observed.message, "attempts": 0}
    outcome.delay = timing.status_interval
    return outcome


def rollback_note(target: RolloutTarget) -> str | None:
    if target.failed_revision is not None and target.failed_revision != target.desired_revision:
        return (
            f"rolled back to revision {target.desired_revision} after revision "
            f"{target.failed_revision} failed"
        )
    return None
