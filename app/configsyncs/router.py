from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.auth.principal import WorkspaceViewer, audit_trail, authenticate, workspace_role
from app.configsyncs.schemas import ConfigSyncIn, ConfigSyncList, ConfigSyncOut
from app.configsyncs.service import ConfigSyncService
from app.db.session import SessionDep
from app.events.routes import add_object_events_route
from app.kit.crud import add_resource_routes

router = APIRouter(
    prefix="/api/v1/workspaces/{ws}/configsyncs",
    tags=["configsyncs"],
    dependencies=[Depends(authenticate)],
)


async def configsync_service(
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


add_object_events_route(router, kind="ConfigSync", service=configsync_service)


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
