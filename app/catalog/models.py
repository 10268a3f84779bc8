from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, LargeBinary, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


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
