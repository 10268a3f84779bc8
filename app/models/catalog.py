from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin


class ChartArchive(Base):
    """A Helm chart archive. Stored in PostgreSQL, the single source of truth, so every API
    replica serves the same repository."""

    __tablename__ = "chart_archives"
    __table_args__ = (UniqueConstraint("name", "version"), UniqueConstraint("filename"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(200))
    app_version: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(String(4096))
    api_version: Mapped[str] = mapped_column(String(8))
    chart_metadata: Mapped[dict[str, Any]]
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    resource_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Application(ResourceMixin, Base):
    __tablename__ = "applications"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_applications_labels", "labels", postgresql_using="gin"),
    )

    display_name: Mapped[str | None] = mapped_column(String(253))
    description: Mapped[str | None] = mapped_column(String(4096))
    category: Mapped[str | None] = mapped_column(String(63))
    icon: Mapped[str | None] = mapped_column(String(2048))
    provisioner: Mapped[str] = mapped_column(String(16))


class ApplicationVersion(ResourceMixin, Base):
    """Immutable once created: deployments refer to it by name and must get what they saw."""

    __tablename__ = "application_versions"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("application", "version"),
        Index("ix_application_versions_labels", "labels", postgresql_using="gin"),
    )

    application: Mapped[str] = mapped_column(ForeignKey("applications.name", ondelete="RESTRICT"))
    version: Mapped[str] = mapped_column(String(128))
    helm: Mapped[dict[str, Any] | None]
    workload: Mapped[dict[str, Any] | None]
