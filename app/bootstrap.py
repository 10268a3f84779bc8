"""First start: the `admin` user."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.passwords import hash_secret
from app.db.base import resource_version_seq
from app.models.users import PLATFORM_ADMIN, User

logger = logging.getLogger(__name__)

ADMIN = "admin"


async def ensure_admin(
    sessionmaker: async_sessionmaker[AsyncSession], password: str | None
) -> None:
    """Create `admin` with `password` if it does not exist (`dev` passes the password it keeps
    in its state folder)."""
    async with sessionmaker.begin() as session:
        if await session.scalar(select(User.id).where(User.name == ADMIN)) is not None:
            return
        if password is None:
            logger.warning("no user %r exists and ADMIN_PASSWORD is not set", ADMIN)
            return
        version = await session.scalar(resource_version_seq.next_value())
        # Several API replicas may start at once: the first insert wins, the others do nothing.
        result = await session.execute(
            insert(User)
            .values(
                name=ADMIN,
                resource_version=version,
                display_name="Platform administrator",
                password_hash=hash_secret(password),
                platform_role=PLATFORM_ADMIN,
                labels={},
                annotations={},
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(User.id)
        )
        if result.scalar() is not None:
            logger.info("created the bootstrap user %r", ADMIN)
