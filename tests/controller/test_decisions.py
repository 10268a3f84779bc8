"""The dispatcher's decisions, one target at a time, with no edge and no database: when a
target waits, retries, fails, pauses, rolls back or becomes Ready, and what its row and the
events then say. (Through real edges: tests/deployments/test_dispatch.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.controller.dispatch import decisions
from app.controller.dispatch.context import Context, Observed, Outcome
from app.controller.dispatch.decisions import Timing
from app.deployments.manifests import Placement
from app.deployments.schemas import TargetSpec
from app.models.clusters import Cluster
from app.models.deployments import Rollout, RolloutRevision, RolloutTarget

TIMING = Timing(drift_interval=60.0, status_interval=2.0, retry_max=300.0)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def context(
    *,
    strategy: dict[str, Any] | None = None,
    paused: bool = False,
    failed_targets: int = 0,
    cluster: dict[str, Any] | None = None,
    replicas: int | None = 3,
    **target: Any,
) -> Context:
    """A target of revision 2 (unless said otherwise) on cluster `shanghai`, which is Ready."""
    row = RolloutTarget(
        id=1,
        desired_revision=2,
        applied_revision=None,
        previous_revision=None,
        failed_revision=None,
        applied_at=None,
        ready_at=None,
        removing=False,
        phase="Pending",
        message=None,
        ready_replicas=0,
        attempts=0,
        applied_objects=[],
    )
    for key, value in target.items():
        setattr(row, key, value)
    rollout = Rollout(
        id=7,
        workspace_id=1,
        kind="ApplicationDeployment",
        name="shop",
        strategy=strategy or {},
        paused=paused,
        revision=row.desired_revision,
    )
    edge = Cluster(
        id=3,
        name="shanghai",
        enabled=True,
        kubeconfig_ciphertext=b"sealed",
        phase="Ready",
        last_ready_time=NOW - timedelta(minutes=5),
    )
    for key, value in (cluster or {}).items():
        setattr(edge, key, value)
    revision = RolloutRevision(
        rollout_id=7, revision=row.desired_revision, created_at=NOW - timedelta(seconds=30)
    )
    return Context(
        target=row,
        deployment=rollout,
        workspace="team-a",
        cluster=edge,
        revision=revision,
        revision_params=TargetSpec(region="east-china", replicas=replicas),
        version=None,
        placement=Placement(),
        node_group_missing=False,
        failed_targets=failed_targets,
    )


# before any edge call ---------------------------------------------------------------------------


def test_a_usable_cluster_and_an_active_rollout_hold_nothing_back() -> None:
    ctx = context()
    assert decisions.cluster_unusable(ctx, TIMING) is None
    assert decisions.held_back(ctx, TIMING) is None


@pytest.mark.parametrize(
    ("cluster", "says"),
    [({"enabled": False}, "disabled"), ({"kubeconfig_ciphertext": None}, "has no kubeconfig")],
)
def test_a_disabled_cluster_or_one_without_credentials_is_said_and_left_alone(
    cluster: dict[str, Any], says: str
) -> None:
    outcome = decisions.cluster_unusable(context(cluster=cluster, phase="Ready"), TIMING)
    assert outcome is not None
    assert outcome.values == {"message": f"cluster shanghai {says}"}  # the phase stays
    assert outcome.delay == TIMING.drift_interval


def test_an_unreachable_cluster_keeps_what_its_target_last_knew() -> None:
    ctx = context(
        cluster={"phase": "Unreachable"}, phase="Ready", ready_replicas=3, applied_revision=2
    )
    outcome = decisions.cluster_unusable(ctx, TIMING)
    assert outcome is not None
    assert outcome.values["phase"] == "Unreachable"
    message = outcome.values["message"]
    assert message.startswith("cluster shanghai is unreachable (last ready 2026-12-04T11:55")
    assert message.endswith("last known: Ready, 3 ready, revision 2")
    # Told again while still unreachable: the first message stays (the last known is kept).
    again = decisions.unreachable(context(phase="Unreachable", message=message), TIMING)
    assert again.values["message"] == message


def test_a_target_being_removed_from_an_unreachable_cluster_stays_deleting() -> None:
    ctx = context(cluster={"phase": "Unreachable"}, phase="Deleting", removing=True)
    outcome = decisions.cluster_unusable(ctx, TIMING)
    assert outcome is not None
    assert "phase" not in outcome.values


def test_a_paused_rollout_and_a_revision_refused_here_wait_for_the_spec_to_change() -> None:
    paused = decisions.held_back(context(paused=True), TIMING)
    assert paused is not None
    assert paused.values == {"message": "paused"}
    refused = decisions.held_back(context(failed_revision=2, phase="Unreachable"), TIMING)
    assert refused is not None
    assert refused.values == {"phase": "Failed"}  # said again after an Unreachable spell
    assert refused.delay == TIMING.drift_interval
    # Refused at revision 2, now asked for revision 3: worked on.
    assert decisions.held_back(context(failed_revision=2, desired_revision=3), TIMING) is None


# retries --------------------------------------------------------------------------------------


def test_retries_back_off_exponentially_up_to_the_cap_and_say_so() -> None:
    delays = [
        decisions.retry(context(attempts=n), "timed out", TIMING, jitter=1.0).delay
        for n in range(10)
    ]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    outcome = decisions.retry(context(attempts=2), "timed out", TIMING, jitter=0.5)
    assert outcome.delay == 4.0  # jitter spreads targets that failed together
    assert outcome.values["attempts"] == 3
    assert outcome.values["message"] == "retrying in 4s (attempt 3): timed out"


def test_a_retry_moves_a_pending_target_to_applying_and_keeps_other_phases() -> None:
    assert decisions.retry(context(), "x", TIMING).values["phase"] == "Applying"
    assert "phase" not in decisions.retry(context(phase="Ready"), "x", TIMING).values


def test_a_retry_message_is_cut_to_what_the_row_holds() -> None:
    outcome = decisions.retry(context(), "x" * 5000, TIMING)
    assert len(outcome.values["message"]) == 1024


# failures, pause and rollback -----------------------------------------------------------------


def test_a_refused_revision_fails_for_good_without_a_rollback_policy() -> None:
    outcome = decisions.failed(
        context(applied_revision=1),
        "the edge said no",
        cause="rejected",
        timing=TIMING,
        final=True,
        at=NOW,
    )
    assert outcome.values["phase"] == "Failed"
    assert outcome.values["failed_revision"] == 2
    assert outcome.values["message"] == "the edge said no"
    assert "desired_revision" not in outcome.values
    assert outcome.delay == TIMING.drift_interval


def test_rollback_policy_returns_a_revision_that_never_became_ready_to_the_one_before() -> None:
    ctx = context(strategy={"failurePolicy": "Rollback"}, applied_revision=1, phase="Applying")
    outcome = decisions.failed(
        ctx, "image not found", cause="rejected", timing=TIMING, final=True, at=NOW
    )
    assert outcome.values["desired_revision"] == 1
    assert outcome.values["failed_revision"] == 2
    assert outcome.values["phase"] == "Applying"
    assert outcome.values["message"] == ("revision 2 failed, rolling back to 1: image not found")
    assert outcome.delay == 0.0  # at once
    assert outcome.events == [("Warning", "RollingBack", "revision 2 failed: image not found")]


def test_rollback_goes_to_the_previous_revision_once_the_failed_one_was_applied() -> None:
    ctx = context(strategy={"failurePolicy": "Rollback"}, applied_revision=2, previous_revision=1)
    outcome = decisions.failed(ctx, "crash", cause="edge", timing=TIMING, at=NOW)
    assert outcome.values["desired_revision"] == 1


def test_a_revision_that_was_ready_and_fails_later_is_reported_not_rolled_back() -> None:
    ctx = context(
        strategy={"failurePolicy": "Rollback"},
        applied_revision=2,
        previous_revision=1,
        ready_at=NOW - timedelta(hours=1),
        phase="Ready",
    )
    outcome = decisions.failed(ctx, "pods crash", cause="edge", timing=TIMING, at=NOW)
    assert outcome.values["phase"] == "Failed"
    assert "desired_revision" not in outcome.values
    assert "failed_revision" not in outcome.values  # still followed: Ready again if it heals


def test_a_first_revision_has_nothing_to_roll_back_to() -> None:
    ctx = context(strategy={"failurePolicy": "Rollback"}, desired_revision=1)
    outcome = decisions.failed(ctx, "no", cause="rejected", timing=TIMING, final=True, at=NOW)
    assert outcome.values["phase"] == "Failed"


@pytest.mark.parametrize(
    ("strategy", "failed", "paused"),
    [
        ({"failurePolicy": "Pause"}, 1, True),
        ({"failurePolicy": "Pause", "maxUnavailableClusters": 1}, 1, False),
        ({"failurePolicy": "Pause", "maxUnavailableClusters": 1}, 2, True),
        ({"failurePolicy": "Continue"}, 50, False),
        ({"failurePolicy": "Rollback"}, 50, False),
    ],
)
def test_pause_stops_a_new_revision_once_more_clusters_failed_than_allowed(
    strategy: dict[str, Any], failed: int, paused: bool
) -> None:
    reason = decisions.failure_pause(context(strategy=strategy, failed_targets=failed))
    assert (reason is not None) == paused
    if reason is not None:
        allowed = strategy.get("maxUnavailableClusters", 0)
        assert (
            reason == f"rollout paused: {failed} clusters failed (maxUnavailableClusters {allowed})"
        )


# following readiness --------------------------------------------------------------------------


def applied_now() -> Outcome:
    """The outcome of a pass that has just applied the revision."""
    return Outcome({"applied_at": NOW - timedelta(seconds=5), "phase": "Applied"})


def test_ready_objects_make_the_target_ready_and_time_it() -> None:
    ctx = context(phase="Applied", attempts=3)
    outcome = decisions.follow(ctx, Observed(True, 3), applied_now(), TIMING, at=NOW)
    assert outcome.values["phase"] == "Ready"
    assert outcome.values["ready_replicas"] == 3
    assert outcome.values["ready_at"] == NOW
    assert outcome.values["attempts"] == 0
    assert outcome.values["message"] is None
    assert outcome.ready_after == 30.0  # from the revision's write
    assert outcome.delay == TIMING.drift_interval


def test_a_target_ready_again_at_the_same_revision_is_not_timed_again() -> None:
    ctx = context(phase="Ready", applied_revision=2, ready_at=NOW - timedelta(hours=1))
    outcome = decisions.follow(ctx, Observed(True, 3), Outcome({}), TIMING, at=NOW)
    assert outcome.ready_after is None
    assert "ready_at" not in outcome.values  # Ready since an hour ago


def test_after_a_rollback_the_ready_target_says_which_revision_failed() -> None:
    ctx = context(desired_revision=1, failed_revision=2, applied_revision=1)
    outcome = decisions.follow(ctx, Observed(True, 3), Outcome({}), TIMING, at=NOW)
    assert outcome.values["message"] == "rolled back to revision 1 after revision 2 failed"


def test_a_helm_release_counts_its_wanted_replicas_once_ready() -> None:
    ready = decisions.follow(context(), Observed(True, None), applied_now(), TIMING, at=NOW)
    assert ready.values["ready_replicas"] == 3
    waiting = decisions.follow(
        context(), Observed(False, None, "job running"), applied_now(), TIMING, at=NOW
    )
    assert waiting.values["ready_replicas"] == 0


def test_a_vclusters_kubeconfig_goes_to_the_write_back_once_ready() -> None:
    observed = Observed(True, None, kubeconfig="apiVersion: v1")
    outcome = decisions.follow(context(), observed, applied_now(), TIMING, at=NOW)
    assert outcome.kubeconfig == "apiVersion: v1"


def test_objects_still_progressing_are_followed_at_the_status_interval() -> None:
    observed = Observed(False, 1, "1 of 3 replicas ready")
    outcome = decisions.follow(context(attempts=2), observed, applied_now(), TIMING, at=NOW)
    assert outcome.values["phase"] == "Applied"
    assert outcome.values["message"] == "1 of 3 replicas ready"
    assert outcome.values["attempts"] == 0
    assert outcome.delay == TIMING.status_interval


def test_a_revision_not_ready_by_its_deadline_fails_and_rolls_back_when_asked() -> None:
    applied = Outcome({})
    late = {"applied_revision": 2, "applied_at": NOW - timedelta(seconds=601)}
    observed = Observed(False, 1, "1 of 3 replicas ready")
    outcome = decisions.follow(context(**late), observed, applied, TIMING, at=NOW)
    assert outcome.values["phase"] == "Failed"
    assert outcome.values["message"] == "not ready 600s after apply: 1 of 3 replicas ready"
    assert "failed_revision" not in outcome.values  # followed still: Ready if it recovers

    rollback = context(strategy={"failurePolicy": "Rollback"}, previous_revision=1, **late)
    outcome = decisions.follow(rollback, observed, Outcome({}), TIMING, at=NOW)
    assert outcome.values["desired_revision"] == 1


def test_a_revision_that_was_ready_and_wobbles_is_followed_not_failed() -> None:
    ctx = context(
        phase="Ready",
        applied_revision=2,
        applied_at=NOW - timedelta(hours=2),
        ready_at=NOW - timedelta(hours=2),
    )
    observed = Observed(False, 2, "2 of 3 replicas ready")
    outcome = decisions.follow(ctx, observed, Outcome({}), TIMING, at=NOW)
    assert outcome.values["phase"] == "Applied"


def test_the_edge_giving_up_fails_the_target_with_its_reason() -> None:
    observed = Observed(False, 0, "Deployment shop: ProgressDeadlineExceeded", failed=True)
    outcome = decisions.follow(context(), observed, applied_now(), TIMING, at=NOW)
    assert outcome.values["phase"] == "Failed"
    assert outcome.values["message"] == "Deployment shop: ProgressDeadlineExceeded"
