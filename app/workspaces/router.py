from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import (
    CurrentPrincipal,
    WorkspaceAdmin,
    WorkspaceViewer,
    audit_trail,
    authenticate,
    require_platform_admin,
)
from app.db.session import SessionDep
from app.kit import responses
from app.kit.body import read_object
from app.kit.crud import add_resource_routes
from app.kit.openapi import request_body
from app.kit.resource import render, validate_as
from app.workspaces.repository import WorkspaceRepository
from app.workspaces.schemas import (
    MemberIn,
    MemberList,
    MemberOut,
    MemberRoleIn,
    WorkspaceIn,
    WorkspaceList,
    WorkspaceOut,
)
from app.workspaces.service import MemberService, WorkspaceService

router = APIRouter(
    prefix="/api/v1/workspaces", tags=["workspaces"], dependencies=[Depends(authenticate)]
)


async def workspace_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> WorkspaceService:
    # Users other than platform admins see only the workspaces they belong to (404 otherwise).
    member_of = None if principal.is_platform_admin else principal.id
    if principal.kind == "serviceaccount" and not principal.is_platform_admin:
        member_of = -1  # a workspace service account lists nothing here
    repository = WorkspaceRepository(session, member_user_id=member_of)
    return WorkspaceService(
        session, repository, audit_trail(request, principal), request.app.state.redis
    )


async def member_service_for(
    request: Request, session: SessionDep, access: WorkspaceViewer
) -> MemberService:
    service = WorkspaceService(
        session,
        WorkspaceRepository(session),
        audit_trail(request, access.principal, access.workspace.name),
        request.app.state.redis,
    )
    return MemberService(service, access.workspace)


Members = Annotated[MemberService, Depends(member_service_for)]
members = APIRouter(prefix="/{ws}/members", tags=["workspaces"])
# A member's body is read like an object's (JSON or YAML); no If-Match here, so no 412.
MEMBER_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: responses.WRITE_ERRORS[code] for code in (400, 409, 413, 415, 422)
}


@members.get("", operation_id="listWorkspaceMembers", response_model=MemberList)
async def list_members(request: Request, service: Members) -> Response:
    return render(request, MemberList(items=await service.list()))


@members.post(
    "",
    operation_id="addWorkspaceMember",
    status_code=201,
    response_model=MemberOut,
    responses=MEMBER_WRITE_ERRORS,
    openapi_extra=request_body(MemberIn),
)
async def add_member(request: Request, _: WorkspaceAdmin, service: Members) -> Response:
    body = validate_as(MemberIn, await read_object(request))
    out = await service.add(body.user, body.role)
    location = f"{request.url.path.rstrip('/')}/{out.user}"
    return render(request, out, status_code=201, headers={"Location": location})


@members.get("/{user}", operation_id="readWorkspaceMember", response_model=MemberOut)
async def read_member(request: Request, user: str, service: Members) -> Response:
    return render(request, await service.read(user))


@members.put(
    "/{user}",
    operation_id="replaceWorkspaceMember",
    response_model=MemberOut,
    responses=MEMBER_WRITE_ERRORS,
    openapi_extra=request_body(MemberRoleIn),
)
async def replace_member(
    request: Request, user: str, _: WorkspaceAdmin, service: Members
) -> Response:
    body = validate_as(MemberRoleIn, await read_object(request))
    return render(request, await service.change_role(user, body.role))


@members.delete("/{user}", operation_id="removeWorkspaceMember", response_model=MemberOut)
async def remove_member(
    request: Request, user: str, _: WorkspaceAdmin, service: Members
) -> Response:
    return render(request, await service.remove(user))


router.include_router(members)

add_resource_routes(
    router,
    kind="Workspace",
    plural="Workspaces",
    in_model=WorkspaceIn,
    out_model=WorkspaceOut,
    list_model=WorkspaceList,
    service=workspace_service,
    read_access=[],  # the repository shows each caller only their workspaces
    write_access=[Depends(require_platform_admin)],
)
