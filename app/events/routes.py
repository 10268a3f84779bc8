"""The events route of an object kind, written once for deployments, config syncs and vclusters.

No `from __future__ import annotations` here: the route is a closure whose annotations name a
local variable, which FastAPI can only see when evaluated eagerly.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import WorkspaceViewer
from app.events.router import EventList, Limit, Since, events_response, object_filter


def add_object_events_route(router: APIRouter, *, kind: str, service: Callable[..., Any]) -> None:
    """`GET …/{name}/events`: the object's events (changes, every phase change of it and of
    each of its targets, drift repairs, removals) as a list, or live with
    `Accept: text/event-stream` (resume with Last-Event-ID)."""
    Service = Annotated[Any, Depends(service)]

    @router.get(
        "/{name}/events",
        operation_id=f"list{kind}Events",
        response_model=EventList,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def list_events(
        request: Request,
        name: str,
        access: WorkspaceViewer,
        objects: Service,
        since: Since = None,
        limit: Limit = 100,
    ) -> Response:
        await objects.read(name)  # 404 unless it exists and is visible
        where = object_filter(kind, name)
        return await events_response(request, access, where=where, since=since, limit=limit)

    list_events.__doc__ = add_object_events_route.__doc__
