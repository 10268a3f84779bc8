from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.auth.principal import (
    CurrentPrincipal,
    PlatformAdmin,
    WorkspaceAdmin,
    audit_trail,
    authenticate,
)
from app.db.session import SessionDep
from app.kit.crud import add_resource_routes
from app.serviceaccounts.schemas import ServiceAccountIn, ServiceAccountList, ServiceAccountOut
from app.serviceaccounts.service import ServiceAccountService

platform_router = APIRouter(
    prefix="/api/v1/serviceaccounts", tags=["serviceaccounts"], dependencies=[Depends(authenticate)]
)
workspace_router = APIRouter(
    prefix="/api/v1/workspaces/{ws}/serviceaccounts",
    tags=["serviceaccounts"],
    dependencies=[Depends(authenticate)],
)


async def platform_accounts(
    request: Request, session: SessionDep, principal: PlatformAdmin
) -> ServiceAccountService:
    return ServiceAccountService(
        session, None, audit_trail(request, principal), request.app.state.redis
    )


async def workspace_accounts(
    request: Request, session: SessionDep, access: WorkspaceAdmin, principal: CurrentPrincipal
) -> ServiceAccountService:
    trail = audit_trail(request, principal, access.workspace.name)
    return ServiceAccountService(session, access.workspace, trail, request.app.state.redis)


for router, service, kind, plural in (
    (platform_router, platform_accounts, "ServiceAccount", "ServiceAccounts"),
    (workspace_router, workspace_accounts, "WorkspaceServiceAccount", "WorkspaceServiceAccounts"),
):
    add_resource_routes(
        router,
        kind=kind,
        plural=plural,
        in_model=ServiceAccountIn,
        out_model=ServiceAccountOut,
        list_model=ServiceAccountList,
        service=service,
        read_access=[],  # the service dependency above already demands the admin role
        write_access=[],
    )
