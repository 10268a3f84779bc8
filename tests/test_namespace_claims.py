"""Namespace claims at the database: claimed once, answered with who holds it, and two
workspaces claiming one namespace at the same moment both learn which of them got it."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, select

from app.db.engine import create_engine, create_sessionmaker
from app.models.workspaces import Workspace
from app.workspaces.namespaces import claim_namespace
from tests.support.platform import make_settings


async def test_two_workspaces_claiming_one_namespace_at_once(clean_database: str) -> None:
    engine = create_engine(make_settings(clean_database))
    sessions = create_sessionmaker(engine)
    try:
        async with sessions.begin() as session:
            for name in ("team-a", "team-b"):
                await session.execute(
                    insert(Workspace).values(
                        name=name, resource_version=1, labels={}, annotations={}
                    )
                )
        async with sessions() as session:
            a, b = (await session.scalars(select(Workspace).order_by(Workspace.name))).all()

        async with sessions() as first, sessions() as second:
            await first.begin()
            await second.begin()
            assert await claim_namespace(first, a, "ws-shared") is None  # claimed, uncommitted
            # The second waits on the first's uncommitted claim...
            racing = asyncio.create_task(claim_namespace(second, b, "ws-shared"))
            await asyncio.sleep(0.3)
            assert not racing.done()
            await first.commit()
            # ...then sees it, though its statement began before that commit.
            assert await racing == "team-a"
            await second.rollback()

        async with sessions.begin() as session:
            assert await claim_namespace(session, a, "ws-shared") is None  # its own: kept
            assert await claim_namespace(session, b, "ws-shared") == "team-a"
            assert await claim_namespace(session, b, "ws-team-b") is None
    finally:
        await engine.dispose()
