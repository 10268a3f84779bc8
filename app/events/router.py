"""Event lists and live streams (Server-Sent Events) of a workspace and of its objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import WorkspaceViewer, authenticate
from app.errors import invalid_field
from app.events.hub import EventHub
from app.events.service import as_json, newest_id, read_after, sse
from app.kit.resource import render
from app.models.deployments import Event

BATCH = 500
POLL_SECONDS = 2.0  # without Redis wake-ups, watchers poll this often
MAX_EVENT_ID = 2**62

router = APIRouter(
    prefix="/api/v1/workspaces/{ws}", tags=["events"], dependencies=[Depends(authenticate)]
)


class EventOut(BaseModel):
    id: int
    kind: str
    name: str
    type: str
    reason: str
    cluster: str | None = None
    phase: str | None = None
    message: str
    timestamp: str


class EventList(BaseModel):
    items: list[EventOut]
    lastId: int


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _resume_point(request: Request, since: int | None) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None:
        return since
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_EVENT_ID:
        raise invalid_field("Last-Event-ID", "must be an event id (an integer from 0)")
    return value


async def _stream(
    request: Request, workspace_id: int, where: ColumnElement[bool] | None, after: int | None
) -> AsyncIterator[str]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    hub: EventHub = request.app.state.events
    heartbeat: float = request.app.state.settings.event_heartbeat_interval
    draining: asyncio.Event = request.app.state.draining
    readers: asyncio.Semaphore = request.app.state.event_readers
    with hub.watch(workspace_id) as wake:
        if after is None:  # a new watcher: what happens from now on
            async with sessionmaker() as session:
                after = await newest_id(session, workspace_id)
        yield f"retry: 2000\n: watching from event {after}\n\n"
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while not draining.is_set() and not await request.is_disconnected():
            wake.clear()  # before reading: a wake-up during the read is not lost
            async with readers, sessionmaker() as session:
                events = await read_after(session, workspace_id, after, limit=BATCH, where=where)
            for event in events:
                # Sent one by one: a slow client slows this loop, nothing piles up in memory.
                yield sse(event)
                after = event.id
                last_sent = loop.time()
            if len(events) == BATCH:
                continue
            if loop.time() - last_sent >= heartbeat:
                # Counted from the last bytes sent: a filtered stream in a busy workspace
                # wakes often yet may send nothing, and proxies close silent streams.
                yield ": heartbeat\n\n"
                last_sent = loop.time()
            wait = heartbeat - (loop.time() - last_sent)
            if not hub.connected:
                wait = min(wait, POLL_SECONDS)
            waiters = {asyncio.create_task(wake.wait()), asyncio.create_task(draining.wait())}
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if draining.is_set():
            yield ": the server is stopping; resume with Last-Event-ID\n\n"


async def events_response(
    request: Request,
    access: WorkspaceViewer,
    *,
    where: ColumnElement[bool] | None = None,
    since: int | None = None,
    limit: int = 100,
) -> Response:
    """A live stream when asked for `text/event-stream` (resumable with Last-Event-ID), else
    the events after `since` as a list."""
    workspace_id = access.workspace.id
    after = _resume_point(request, since)
    if wants_stream(request):
        return StreamingResponse(
            _stream(request, workspace_id, where, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        events = await read_after(session, workspace_id, after or 0, limit=limit, where=where)
    items: list[dict[str, Any]] = [as_json(e) for e in events]
    return render(request, {"items": items, "lastId": events[-1].id if events else after or 0})


Since = Annotated[int | None, Query(ge=0, le=2**62, description="Events after this id.")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get(
    "/events",
    operation_id="listWorkspaceEvents",
    response_model=EventList,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def workspace_events(
    request: Request, access: WorkspaceViewer, since: Since = None, limit: Limit = 100
) -> Response:
    """Everything that happens in the workspace. `Accept: text/event-stream` streams it live."""
    return await events_response(request, access, since=since, limit=limit)


def object_filter(kind: str, name: str) -> ColumnElement[bool]:
    clause: ColumnElement[bool] = (Event.object_kind == kind) & (Event.object_name == name)
    return clause
