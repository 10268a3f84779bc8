from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, ResourceMixin

PLATFORM_ADMIN = "platform-admin"
PLATFORM_REGULAR = "platform-regular"
PLATFORM_ROLES = (PLATFORM_ADMIN, PLATFORM_REGULAR)


class User(ResourceMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("identity_provider", "external_subject"),
        Index("ix_users_labels", "labels", postgresql_using="gin"),
    )

    display_name: Mapped[str | None] = mapped_column(String(253))
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    platform_role: Mapped[str] = mapped_column(
        String(32), default=PLATFORM_REGULAR, server_default=PLATFORM_REGULAR
    )
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_login_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set for users who log in through an external OIDC issuer: (issuer, subject) links them.
    identity_provider: Mapped[str | None] = mapped_column(String(512))
    external_subject: Mapped[str | None] = mapped_column(String(255))
