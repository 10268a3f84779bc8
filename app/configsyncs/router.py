from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.auth.principal import WorkspaceViewer, audit_trail, authenticate, workspace_role
from app.configsyncs.kind import ConfigSyncRules
from app.configsyncs.schemas import ConfigSyncIn, ConfigSyncList, ConfigSyncOut
from app.db.session import SessionDep
from app.deployments.kinds import RolloutScope
from app.deployments.service import RolloutService
from app.events.routes import add_object_events_route
from app.kit.crud import add_resource_routes

router = APIRouter(
    prefix="/api/v1/workspaces/{ws}/configsyncs",
    tags=["configsyncs"],
    dependencies=[Depends(authenticate)],
)


async def configsync_service(
    request: Request, session: SessionDep, access: WorkspaceViewer
) -> RolloutService[ConfigSyncOut]:
    state = request.app.state
    scope = RolloutScope(session, access.workspace, access.principal.name, access.role)
    return RolloutService(
        ConfigSyncRules(scope, secrets=state.secrets),
        redis=state.redis,
        audit=audit_trail(request, access.principal, access.workspace.name),
    )


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
