"""A rollout's phase and a deployment's JSON documents. The phase rule (`fold_phase`) serves the
reads here, which fold a deployment's targets in Python, and the controller
(`app/controller/dispatch/folding.py`), which counts them in SQL after each write-back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydantic_core

from app.deployments.schemas import DeploymentPhase, DeploymentStatus, Strategy
from app.kit.resource import API_VERSION, json_time, object_meta_document
from app.models.deployments import Rollout, RolloutTarget


@dataclass(frozen=True)
class TargetCounts:
    """What a rollout's phase is folded from (counted in Python for reads, in SQL by the
    controller, which folds on every write-back and must not load every target for it)."""

    total: int
    active: int  # not being removed
    current: int  # Ready at the rollout's revision
    failed: int
    unreachable: int
    moving: int  # active and not settled

    def message(self, revision: int) -> str:
        return f"{self.current} of {self.active} clusters ready at revision {revision}"


def fold_phase(row: Rollout, counts: TargetCounts) -> DeploymentPhase:
    return _fold(row.paused, strategy_document(row.strategy), counts)


def _fold(paused: bool, strategy: dict[str, Any], counts: TargetCounts) -> DeploymentPhase:
    if paused:
        return "Paused"
    if not counts.active:
        return "Progressing" if counts.total else "Pending"
    if counts.current == counts.active:
        return "Ready"
    if counts.failed == counts.active:
        return "Failed"
    if strategy["failurePolicy"] == "Pause" and counts.failed > strategy["maxUnavailableClusters"]:
        return "Paused"
    return "Progressing" if counts.moving else "Degraded"


# Documents: the JSON form of a deployment built straight from its columns, as the models would
# render it (same fields, order, defaults and timestamp format: tests hold them to that), but
# without a model validation per object and per target; a page of a thousand is mostly that.

_STRATEGY_DEFAULTS = Strategy().model_dump(mode="json")


def strategy_document(stored: dict[str, Any] | None) -> dict[str, Any]:
    return {**_STRATEGY_DEFAULTS, **(stored or {})}


def spec_document(
    application_version: str | None,
    targets: list[dict[str, Any]],
    namespace: str | None,
    strategy: dict[str, Any],
    paused: bool,
) -> dict[str, Any]:
    """A deployment's spec in JSON form from its columns (`strategy` as strategy_document): the
    one rendering of it, which reads, writes and the DeploymentSpec built from a row share."""
    return {
        "applicationVersionRef": application_version,
        "targets": [_target_spec_document(t) for t in targets],
        "namespace": namespace,
        "strategy": strategy,
        "paused": paused,
    }


def _target_spec_document(stored: dict[str, Any]) -> dict[str, Any]:
    return {
        "region": stored.get("region"),
        "clusters": stored.get("clusters", []),
        "nodeGroupRef": stored.get("nodeGroupRef"),
        "replicas": stored.get("replicas"),
        "values": stored.get("values", {}),
    }


def _history_document(stored: dict[str, Any]) -> dict[str, Any]:
    return {
        "revision": stored["revision"],
        "fromVersion": stored.get("fromVersion"),
        "toVersion": stored["toVersion"],
        "reason": stored["reason"],
        "operator": stored.get("operator"),
        "timestamp": stored["timestamp"],  # stored as pydantic wrote it
    }


def status_document(
    row: Any,
    targets: Sequence[Sequence[Any]],
    changed: str | None,
    strategy: dict[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The deployment's status, folded from its per-cluster rows at read time. `row`: a Rollout
    or a row with its revision, generation and paused; `targets`: by cluster name, each
    (its entry in status.targets, removing, desired revision); `changed`: when the last target
    changed (else the rollout); `strategy`: as strategy_document."""
    revision = row.revision
    active = current = failed = unreachable = moving = 0
    # One pass (it runs for every deployment of a page). Moving: not settled, i.e. neither
    # Failed, Unreachable, nor Ready at the revision it should run.
    for entry, removing, desired in targets:
        if removing:
            continue
        active += 1
        phase = entry["phase"]
        if phase == "Ready":
            current += entry["revision"] == revision
            moving += entry["revision"] != desired
        elif phase == "Failed":
            failed += 1
        elif phase == "Unreachable":
            unreachable += 1
        else:
            moving += 1
    counts = TargetCounts(len(targets), active, current, failed, unreachable, moving)
    phase = _fold(row.paused, strategy, counts)
    message = counts.message(revision)
    ready = phase == "Ready"
    return {
        "phase": phase,
        "observedGeneration": row.generation,
        "revision": revision,
        "summary": {
            "clusters": counts.active,
            "ready": counts.current,
            "failed": counts.failed,
            "unreachable": counts.unreachable,
        },
        "targets": [entry for entry, _, _ in targets],
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ready else "False",
                "reason": "AllTargetsReady" if ready else phase,
                "message": message,
                "lastTransitionTime": changed,
            },
            {
                "type": "Progressing",
                "status": "True" if phase == "Progressing" else "False",
                "reason": phase,
                "message": message,
                "lastTransitionTime": changed,
            },
        ],
        "history": [_history_document(h) for h in history],
    }


def deployment_status(row: Rollout, targets: list[tuple[RolloutTarget, str]]) -> DeploymentStatus:
    """The deployment's status, folded from its per-cluster rows at read time."""
    entries = [
        (
            {
                "cluster": cluster,
                "region": t.region,
                "nodeGroup": t.node_group,
                "phase": t.phase,
                "desiredReplicas": t.replicas,
                "readyReplicas": t.ready_replicas,
                "revision": t.applied_revision,
                "message": t.message,
                "lastTransitionTime": json_time(t.last_transition_time),
                "lastSyncTime": json_time(t.last_sync_time),
            },
            t.removing,
            t.desired_revision,
        )
        for t, cluster in targets
    ]
    changed = json_time(max((t.last_transition_time for t, _ in targets), default=row.updated_at))
    strategy = strategy_document(row.strategy)
    return DeploymentStatus.model_validate(
        status_document(row, entries, changed, strategy, row.history)
    )


def deployment_document(row: Any, workspace: str) -> dict[str, Any]:
    """An ApplicationDeployment as reads return it (`ApplicationDeploymentOut` in JSON form,
    live status included), from a row of repository.DOCUMENT_COLUMNS."""
    stored = pydantic_core.from_json(row.stored)
    strategy = strategy_document(stored["strategy"])
    live = stored["live"]
    return {
        "apiVersion": API_VERSION,
        "kind": "ApplicationDeployment",
        "metadata": {
            "name": row.name,
            "workspace": workspace,
            "uid": row.uid,
            "labels": stored["labels"] or {},
            "annotations": stored["annotations"] or {},
            "resourceVersion": str(row.resource_version),
            "generation": row.generation,
            "creationTimestamp": row.created,
            "deletionTimestamp": row.deleted,
        },
        "spec": spec_document(
            row.application_version, stored["targets"], row.namespace, strategy, row.paused
        ),
        "status": status_document(
            row, live["targets"], live["changed"], strategy, stored["history"] or []
        ),
    }


def written_document(row: Rollout, workspace: str) -> dict[str, Any]:
    """An ApplicationDeployment as a write returns it: as a read would, but for the status,
    which holds only what the write itself decided (generation, revision, history); how its
    targets fare is the controller's to say, and the next read shows it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ApplicationDeployment",
        "metadata": object_meta_document(row, workspace),
        "spec": spec_document(
            row.application_version,
            row.targets,
            row.namespace,
            strategy_document(row.strategy),
            row.paused,
        ),
        "status": {
            **_WRITTEN_STATUS,
            "observedGeneration": row.generation,
            "revision": row.revision,
            "history": [_history_document(h) for h in row.history or []],
        },
    }


_WRITTEN_STATUS = DeploymentStatus().model_dump(mode="json")
