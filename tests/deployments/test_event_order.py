"""Event ids grow in commit order within a workspace, whatever order the inserts ran in: a
watcher that has read up to id N and then reads `id > N` never misses an event committed
later with a smaller id."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from app.config import Settings
from app.db.engine import create_engine, create_sessionmaker
from app.events.service import NewEvent, read_after, record
from app.models.workspaces import Workspace


async def test_ids_follow_commit_order_not_insert_order(
    api: httpx.AsyncClient, standalone_settings: Settings
) -> None:
    response = await api.post("/api/v1/workspaces", json={"metadata": {"name": "ordered"}})
    assert response.status_code == 201, response.text
    engine = create_engine(standalone_settings)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as reader:
            workspace = await reader.scalar(select(Workspace.id).where(Workspace.name == "ordered"))
            assert workspace is not None

        async def write(name: str) -> None:
            async with sessions.begin() as session:
                await record(session, workspace, [NewEvent("Demo", name, "Inserted", name)])

        async with sessions() as early:
            await early.begin()
            await record(early, workspace, [NewEvent("Demo", "a", "Inserted", "a")])
            # An open transaction that recorded an event holds up no other writer of the
            # workspace: the lock is taken only while a transaction commits.
            await asyncio.wait_for(write("b"), 5)
            async with sessions() as watcher:
                seen = await read_after(watcher, workspace, 0, limit=10)
            assert [e.object_name for e in seen] == ["b"]
            await asyncio.wait_for(write("c"), 5)
            await early.commit()  # the first insert commits last
        async with sessions() as watcher:
            after_b = await read_after(watcher, workspace, seen[-1].id, limit=10)
            everything = await read_after(watcher, workspace, 0, limit=10)
        # Nothing committed later hides below what the watcher has already read.
        assert [e.object_name for e in after_b] == ["c", "a"]
        assert [e.object_name for e in everything] == ["b", "c", "a"]
    finally:
        await engine.dispose()
