"""Declarative base with a constraint naming convention, and the columns every resource has."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, MetaData, Sequence, String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONB,
        dict[str, str]: JSONB,
        list[str]: JSONB,
        list[dict[str, Any]]: JSONB,
    }


# One sequence for every kind, like etcd's revision: a resourceVersion is globally ordered, so
# caches and watchers can tell which of two copies of an object is newer.
resource_version_seq = Sequence("resource_version_seq", metadata=Base.metadata)


class ResourceMixin:
    """metadata columns of the API envelope; the domain model adds its spec/status columns."""

    # Server-set columns (timestamps) come back with the INSERT/UPDATE itself (RETURNING).
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    uid: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63))
    labels: Mapped[dict[str, str]] = mapped_column(default=dict, server_default="{}")
    annotations: Mapped[dict[str, str]] = mapped_column(default=dict, server_default="{}")
    resource_version: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    deletion_timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
