from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin

PHASES = ("Pending", "Ready", "NotReady", "Unreachable", "Disabled")


class Cluster(ResourceMixin, Base):
    __tablename__ = "clusters"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_clusters_labels", "labels", postgresql_using="gin"),
        Index("ix_clusters_region", "region"),
        Index("ix_clusters_phase", "phase"),
        Index("ix_clusters_next_probe_at", "next_probe_at"),
        Index("ix_clusters_agent_credential_hash", "agent_credential_hash", unique=True),
        Index(
            "ix_clusters_agent_credential_previous_hash",
            "agent_credential_previous_hash",
            unique=True,
        ),
        Index("ix_clusters_agent_join_token_hash", "agent_join_token_hash", unique=True),
    )

    # spec
    # Region names never change, so the name itself is the reference.
    region: Mapped[str] = mapped_column(ForeignKey("regions.name", ondelete="RESTRICT"))
    zone: Mapped[str | None] = mapped_column(String(63))
    provider: Mapped[str | None] = mapped_column(String(63))
    display_name: Mapped[str | None] = mapped_column(String(253))
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    connection_type: Mapped[str] = mapped_column(String(16), default="direct")
    endpoint: Mapped[str | None] = mapped_column(String(2048))
    # The kubeconfig, encrypted (app.crypto); never returned.
    kubeconfig_key_id: Mapped[str | None] = mapped_column(String(32))
    kubeconfig_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    server: Mapped[str | None] = mapped_column(String(2048))
    # status, written by the controller's prober
    phase: Mapped[str] = mapped_column(String(16), default="Pending", server_default="Pending")
    kubernetes_version: Mapped[str | None] = mapped_column(String(64))
    node_count: Mapped[int] = mapped_column(default=0, server_default="0")
    ready_node_count: Mapped[int] = mapped_column(default=0, server_default="0")
    zones: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    # [{name, ready, labels}] as the last successful probe saw them, in name order.
    nodes: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    last_probe_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_ready_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_message: Mapped[str | None] = mapped_column(String(1024))
    # An edge behind NAT (`connection_type` agent) is reached through the agent it runs, which
    # dials out to the platform (app.tunnel). Its join token and credentials are stored as
    # SHA-256 digests (random 256-bit secrets: a slow hash would add nothing); the previous
    # credential is accepted until the agent first connects with the one that replaced it.
    agent_join_token_hash: Mapped[str | None] = mapped_column(String(64))
    agent_join_token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent_credential_hash: Mapped[str | None] = mapped_column(String(64))
    agent_credential_previous_hash: Mapped[str | None] = mapped_column(String(64))
    agent_credential_issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The agent's connection, as the API replica holding it writes it (session: which one).
    agent_session: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    agent_connected_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent_last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    agent_remote_address: Mapped[str | None] = mapped_column(String(64))
    # prober bookkeeping: when the next probe is due, and the lease of the replica probing it
    next_probe_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    lock_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lock_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NodeGroup(ResourceMixin, Base):
    """A named set of a cluster's nodes, chosen by a label selector."""

    __tablename__ = "node_groups"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    display_name: Mapped[str | None] = mapped_column(String(253))
    selector: Mapped[dict[str, Any] | None]
    taints: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default="[]")
    # status, written by the prober
    node_count: Mapped[int] = mapped_column(default=0, server_default="0")
    ready_node_count: Mapped[int] = mapped_column(default=0, server_default="0")
    nodes: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
