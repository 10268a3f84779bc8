from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import WorkspaceViewer, audit_trail, authenticate, workspace_role
from app.configsyncs.schemas import ConfigSyncIn, ConfigSyncList, ConfigSyncOut
from app.configsyncs.service import ConfigSyncService
from app.db.session import SessionDep
from app.events.router import EventList, Limit, Since, events_response, object_filter
from app.kit.crud import add_resource_routes

router = APIRouter(
    prefix="/api/v1/workspaces/{ws}/configsyncs",
    tags=["configsyncs"],
    dependencies=[Depends(authenticate)],
)


def configsync_service(
    request: Request, session: SessionDep, access: WorkspaceViewer
) -> ConfigSyncService:
    state = request.app.state
    return ConfigSyncService(
        session,
        access.workspace,
        access.principal.name,
        redis=state.redis,
        audit=audit_trail(request, access.principal, access.workspace.name),
        secrets=state.secrets,
    )


Service = Annotated[ConfigSyncService, Depends(configsync_service)]


@router.get(
    "/{name}/events",
    operation_id="listConfigSyncEvents",
    response_model=EventList,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def list_events(
    request: Request,
    name: str,
    access: WorkspaceViewer,
    service: Service,
    since: Since = None,
    limit: Limit = 100,
) -> Response:
    """Its events; `Accept: text/event-stream` streams them live (resume with Last-Event-ID)."""
    await service.read(name)
    where = object_filter(service.kind, name)
    return await events_response(request, access, where=where, since=since, limit=limit)


add_resource_routes(
    router,
    kind="ConfigSync",
    plural="ConfigSyncs",
    in_model=ConfigSyncIn,
    out_model=ConfigSyncOut,
    list_model=ConfigSyncList,
    service=configsync_service,
    read_access=[],  # configsync_service already requires membership (viewer)
    write_access=[workspace_role("operator")],
)
