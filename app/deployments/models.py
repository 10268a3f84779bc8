"""ApplicationDeployments, their revisions, and one dispatch row per (deployment, cluster).

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

TARGET_PHASES = (
    "Pending",
    "Applying",
    "Applied",
    "Ready",
    "Failed",
    "Unreachable",
    "Deleting",
)


class ApplicationDeployment(ResourceMixin, Base):
    __tablename__ = "application_deployments"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        Index("ix_application_deployments_labels", "labels", postgresql_using="gin"),
        Index("ix_application_deployments_application_version", "application_version"),
    )

    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="RESTRICT"))
    # spec
    application_version: Mapped[str] = mapped_column(String(253))
    targets: Mapped[list[dict[str, Any]]]
    namespace: Mapped[str | None] = mapped_column(String(63))
    strategy: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    # status kept (the per-target part is read from the dispatch rows)
    revision: Mapped[int] = mapped_column(default=0, server_default="0")
    history: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    # Orphan: delete the record without touching the edge (chosen on DELETE).
    orphan_on_delete: Mapped[bool] = mapped_column(default=False, server_default=false())


class DeploymentRevision(Base):
    """An immutable snapshot of what a deployment declared: version, targets, namespace."""

    __tablename__ = "deployment_revisions"
    __table_args__ = (UniqueConstraint("deployment_id", "revision"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("application_deployments.id", ondelete="CASCADE")
    )
    revision: Mapped[int]
    application_version: Mapped[str] = mapped_column(String(253))
    targets: Mapped[list[dict[str, Any]]]
    namespace: Mapped[str | None] = mapped_column(String(63))
    reason: Mapped[str] = mapped_column(String(16))  # Initial | Upgrade | Rollback
    operator: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeploymentTarget(Base):
    """One edge cluster of one deployment: the dispatch row the controller claims."""

    __tablename__ = "deployment_targets"
    __table_args__ = (
        UniqueConstraint("deployment_id", "cluster_id"),
        Index("ix_deployment_targets_next_attempt_at", "next_attempt_at"),
        Index("ix_deployment_targets_cluster_id", "cluster_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("application_deployments.id", ondelete="CASCADE")
    )
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


class DeploymentEvent(Base):
    """What happened to a deployment, for people: applied, failed, repaired drift, …"""

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("application_deployments.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(8))  # Normal | Warning
    reason: Mapped[str] = mapped_column(String(63))
    cluster: Mapped[str | None] = mapped_column(String(63))
    message: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
