"""The async engine and session factory, built from settings (one place for pool and timeouts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    target = settings.database
    connect_args: dict[str, Any] = {
        # Bounded waits everywhere: an unreachable database must become a 503, never a hang.
        "timeout": settings.database_connect_timeout,
        "command_timeout": settings.database_statement_timeout + settings.database_connect_timeout,
        "server_settings": {
            "application_name": "edge-platform",
            "statement_timeout": str(int(settings.database_statement_timeout * 1000)),
        },
    }
    if target.ssl is not None:
        connect_args["ssl"] = target.ssl
    return create_async_engine(
        target.sqlalchemy_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        # A restarted PostgreSQL leaves dead pooled connections; ping them before use so the
        # service heals without a restart.
        pool_pre_ping=True,
        pool_recycle=1800,
        # Errors are logged with their statement; its parameters may hold secrets.
        hide_parameters=True,
        connect_args=connect_args,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Objects stay readable after commit: responses are rendered from them.
    return async_sessionmaker(engine, expire_on_commit=False)
