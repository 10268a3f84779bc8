"""The request session: committed or rolled back at the edge, never by services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

logger = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the request's transaction has committed (e.g. refresh a cache)."""
    session.info.setdefault("after_commit", []).append(callback)


# Requests of these methods only read: their session has no transaction (see
# app.db.engine.create_reading_sessionmaker). One that must write, or lock rows, takes
# TransactionDep instead.
READING_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency; use with `scope="function"` so the commit precedes the response.

    A write is acknowledged only after its commit succeeded: a failing commit raises and the
    client gets an error, not a 2xx for data that was never stored.
    """
    reading = request.method in READING_METHODS
    async for session in _session(request, reading=reading):
        yield session


async def get_transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """A session in a transaction whatever the method (a GET that records a login)."""
    async for session in _session(request, reading=False):
        yield session


async def _session(request: Request, *, reading: bool) -> AsyncIterator[AsyncSession]:
    state = request.app.state
    sessionmaker: async_sessionmaker[AsyncSession] = (
        state.reading_sessionmaker if reading else state.sessionmaker
    )
    # Leaving the block on an exception closes the session, which rolls the transaction back.
    async with sessionmaker() as session:
        yield session
        await session.commit()
        await run_after_commit(session)


async def run_after_commit(session: AsyncSession) -> None:
    """What `after_commit` registered; call once the session's transaction has committed."""
    for callback in session.info.pop("after_commit", []):
        try:
            await callback()
        except Exception:
            # Post-commit work is best effort (caches); the write itself is durable.
            logger.warning("after-commit callback failed", exc_info=True)


# The one way routes get a session: committed before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
TransactionDep = Annotated[AsyncSession, Depends(get_transaction, scope="function")]
