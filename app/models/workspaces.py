from __future__ import annotations

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
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin

WORKSPACE_ROLES = ("viewer", "operator", "admin")  # each includes the ones before it


class Workspace(ResourceMixin, Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_workspaces_labels", "labels", postgresql_using="gin"),
    )

    display_name: Mapped[str | None] = mapped_column(String(253))
    description: Mapped[str | None] = mapped_column(String(4096))
    manager: Mapped[str | None] = mapped_column(String(63))
    clusters: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    cluster_selector: Mapped[dict[str, Any] | None]


class WorkspaceMember(Base):
    __tablename__ = "workspace_members"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class NamespaceClaim(Base):
    """Which workspace an edge namespace `ws-…` belongs to, on every cluster. Names alone
    cannot say: `ws-team-b` is both workspace `team-b`'s own namespace and one workspace
    `team` may name (`ws-team-` + `b`), and long names collide once cut to 63 characters.
    The first workspace to use a namespace claims it; no other may use it afterwards."""

    __tablename__ = "namespace_claims"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
