"""The async engine and session factory, built from settings (one place for pool and timeouts)."""

from __future__ import annotations

import time
from typing import Any

import pydantic_core
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session

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
    engine = create_async_engine(
        target.sqlalchemy_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pool_recycle=1800,
        # Errors are logged with their statement; its parameters may hold secrets.
        hide_parameters=True,
        # json/jsonb columns decoded by pydantic-core (Rust), not the standard library: a
        # deployment's GET reads a document of a hundred targets built by PostgreSQL, and
        # decoding it was a fifth of the request's CPU.
        json_deserializer=pydantic_core.from_json,
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


# A restarted PostgreSQL leaves dead pooled connections; a connection that sat idle this long is
# pinged before use, so the service heals without a restart. One in constant use is not: a ping
# per checkout was a round trip on every request, and a connection that dies while in use
# fails its statement, which invalidates the pool's older connections anyway.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def checked_in(_: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception:  # whatever failed, this connection is not one to use
            alive = False
        if not alive:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise exc.DisconnectionError("pooled connection is dead")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Objects stay readable after commit: responses are rendered from them.
    return async_sessionmaker(engine, expire_on_commit=False)


class _ReadingSyncSession(Session):
    pass


class ReadingSession(AsyncSession):
    """A session without a transaction; see `create_reading_sessionmaker`."""

    sync_session_class = _ReadingSyncSession


def create_reading_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions without a transaction: each statement commits on its own. For requests that
    only read, at READ COMMITTED (PostgreSQL's default, and ours) that sees exactly what a
    transaction would, since each statement there takes its own snapshot too; it saves the
    BEGIN and COMMIT round trips. Not for row locks, which would end with their statement:
    asking for one is refused."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        class_=ReadingSession,
        expire_on_commit=False,
    )


@event.listens_for(_ReadingSyncSession, "do_orm_execute")
def _refuse_row_locks(state: ORMExecuteState) -> None:
    if state.is_select and getattr(state.statement, "_for_update_arg", None) is not None:
        raise RuntimeError("a row lock needs a transaction: take TransactionDep, not SessionDep")
