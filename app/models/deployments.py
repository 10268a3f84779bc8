"""Rollouts — what a workspace declares for a set of edge clusters — with their revisions, one
dispatch row per (rollout, cluster), and the events people watch.

A rollout is an ApplicationDeployment or a ConfigSync (`kind`): both are rendered into
Kubernetes objects per cluster and dispatched by the same engine (app.controller.dispatch).
The dispatch rows are the controller's work queue and the per-cluster truth the API shows:
what should be at that edge (`desired_revision` and the target's parameters), what was last
applied there (`applied_revision`, `applied_hash`, `applied_objects`), and what was seen.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin

# PostgreSQL NOTIFY channel that wakes the controllers when dispatch work appears.
DISPATCH_CHANNEL = "edge_dispatch"


class Rollout(ResourceMixin, Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "kind", "name"),
        Index("ix_rollouts_labels", "labels", postgresql_using="gin"),
        Index("ix_rollouts_application_version", "application_version"),
        # A create or update compares its objects with those of its namespace's neighbours.
        Index("ix_rollouts_workspace_id_kind_namespace", "workspace_id", "kind", "namespace"),
    )

    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(32))  # ApplicationDeployment | ConfigSync
    # spec
    application_version: Mapped[str | None] = mapped_column(String(253))
    # What a ConfigSync pushes ({data, binaryData} or, for a secret, sealed); {} otherwise.
    content: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    targets: Mapped[list[dict[str, Any]]]
    namespace: Mapped[str | None] = mapped_column(String(63))
    strategy: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    # status kept (the per-target part is read from the dispatch rows)
    revision: Mapped[int] = mapped_column(default=0, server_default="0")
    # The phase last folded from the targets by the controller (events announce changes).
    phase: Mapped[str] = mapped_column(String(16), default="Pending", server_default="Pending")
    history: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")


class RolloutRevision(Base):
    """An immutable snapshot of what a deployment declared: version, targets, namespace."""

    __tablename__ = "rollout_revisions"
    __table_args__ = (UniqueConstraint("rollout_id", "revision"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    revision: Mapped[int]
    application_version: Mapped[str | None] = mapped_column(String(253))
    content: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    targets: Mapped[list[dict[str, Any]]]
    namespace: Mapped[str | None] = mapped_column(String(63))
    reason: Mapped[str] = mapped_column(String(16))  # Initial | Upgrade | Rollback
    operator: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RolloutTarget(Base):
    """One edge cluster of one deployment: the dispatch row the controller claims."""

    __tablename__ = "rollout_targets"
    __table_args__ = (
        UniqueConstraint("rollout_id", "cluster_id"),
        Index("ix_rollout_targets_next_attempt_at", "next_attempt_at"),
        Index("ix_rollout_targets_cluster_id", "cluster_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    # RESTRICT: a cluster still carrying deployments cannot vanish from under them.
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="RESTRICT"))
    region: Mapped[str] = mapped_column(String(63))
    # desired, from the deployment's resolved targets
    node_group: Mapped[str | None] = mapped_column(String(63))
    replicas: Mapped[int | None]
    values: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    desired_revision: Mapped[int]
    removing: Mapped[bool] = mapped_column(default=False, server_default=false())
    # what was done at the edge
    applied_revision: Mapped[int | None]
    applied_hash: Mapped[str | None] = mapped_column(String(64))
    applied_objects: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the applied revision was first Ready there (its progress deadline ends then).
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_revision: Mapped[int | None]
    # The revision this cluster ran before `applied_revision`: where failurePolicy Rollback goes.
    previous_revision: Mapped[int | None]
    # what was seen
    phase: Mapped[str] = mapped_column(String(16), default="Pending", server_default="Pending")
    message: Mapped[str | None] = mapped_column(String(1024))
    ready_replicas: Mapped[int] = mapped_column(default=0, server_default="0")
    last_transition_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_sync_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # scheduling and the lease of the controller replica working on it
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    lock_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lock_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """What happened, for people: created, changed, each phase change of a rollout and of its
    targets, drift repaired, removed. Ids grow in commit order within a workspace (given at
    commit by a trigger, under a per-workspace lock), so a watcher resuming after id N misses
    nothing. Kept for
    EVENT_RETENTION, also after the object is gone."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_workspace_id_id", "workspace_id", "id"),
        Index("ix_events_rollout_id_id", "rollout_id", "id"),
        Index("ix_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # No foreign key: the events of a deleted object stay readable until they expire.
    rollout_id: Mapped[int | None] = mapped_column(BigInteger)
    object_kind: Mapped[str] = mapped_column(String(32))
    object_name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(8))  # Normal | Warning
    reason: Mapped[str] = mapped_column(String(63))
    cluster: Mapped[str | None] = mapped_column(String(63))
    phase: Mapped[str | None] = mapped_column(String(16))  # the phase entered, for changes
    message: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
