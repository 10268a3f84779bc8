from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin


class ServiceAccount(ResourceMixin, Base):
    """Platform scope when `workspace_id` is NULL (role: platform-*), else a workspace role."""

    __tablename__ = "service_accounts"
    __table_args__ = (UniqueConstraint("workspace_id", "name", postgresql_nulls_not_distinct=True),)

    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    client_id: Mapped[str] = mapped_column(String(255), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(253))
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
