from __future__ import annotations

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin


class Region(ResourceMixin, Base):
    __tablename__ = "regions"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_regions_labels", "labels", postgresql_using="gin"),
    )

    display_name: Mapped[str | None] = mapped_column(String(253))
    description: Mapped[str | None] = mapped_column(String(4096))
