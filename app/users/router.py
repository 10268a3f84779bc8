from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import CurrentPrincipal, audit_trail, authenticate, require_platform_admin
from app.db.session import SessionDep
from app.errors import NotFound
from app.kit import responses
from app.kit.body import MERGE_PATCH_TYPES, read_object
from app.kit.crud import IfMatch, add_resource_routes
from app.kit.openapi import merge_patch_body
from app.users.schemas import OwnSpecPatch, UserIn, UserList, UserOut
from app.users.service import UserService

router = APIRouter(prefix="/api/v1/users", tags=["users"], dependencies=[Depends(authenticate)])


async def user_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> UserService:
    return UserService(session, request.app.state.cache, audit_trail(request, principal))


Service = Annotated[UserService, Depends(user_service)]


@router.get("/me", operation_id="readCurrentUser", response_model=UserOut)
async def read_me(request: Request, principal: CurrentPrincipal, service: Service) -> Response:
    if principal.kind != "user":
        raise NotFound("service accounts have no user profile")
    return responses.render_read(request, await service.read(principal.name))


@router.patch(
    "/me",
    operation_id="patchCurrentUser",
    response_model=UserOut,
    openapi_extra=merge_patch_body(OwnSpecPatch),
    responses=responses.WRITE_ERRORS,
)
async def patch_me(
    request: Request, principal: CurrentPrincipal, service: Service, if_match: IfMatch = None
) -> Response:
    if principal.kind != "user":
        raise NotFound("service accounts have no user profile")
    patch = await read_object(request, accepted=MERGE_PATCH_TYPES)
    return responses.render_object(
        request, await service.patch_own(principal.name, patch, if_match)
    )


add_resource_routes(
    router,
    kind="User",
    plural="Users",
    in_model=UserIn,
    out_model=UserOut,
    list_model=UserList,
    service=user_service,
    read_access=[Depends(require_platform_admin)],
    write_access=[Depends(require_platform_admin)],
)
