from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from app.db.session import SessionDep
from app.kit import routes
from app.kit.body import MERGE_PATCH_TYPES, read_object
from app.kit.idempotency import create_once
from app.kit.openapi import merge_patch_body, request_body
from app.kit.paging import page_request
from app.kit.resource import validate_as
from app.regions.repository import RegionRepository
from app.regions.schemas import RegionIn, RegionList, RegionOut
from app.regions.service import RegionService

router = APIRouter(prefix="/api/v1/regions", tags=["regions"])


def region_service(request: Request, session: SessionDep) -> RegionService:
    return RegionService(session, RegionRepository(session), request.app.state.cache)


Service = Annotated[RegionService, Depends(region_service)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


@router.get("", operation_id="listRegions", response_model=RegionList)
async def list_regions(
    request: Request,
    service: Service,
    limit: Annotated[int, Query(ge=1, description=routes.LIMIT_HELP)] = 100,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
    label_selector: Annotated[str | None, Query(alias="labelSelector")] = None,
) -> Response:
    page = page_request(limit, continue_, label_selector)
    items, result = await service.list(page)
    return routes.render_list(request, RegionList, items, result)


@router.post(
    "",
    operation_id="createRegion",
    status_code=201,
    response_model=RegionOut,
    openapi_extra=request_body(RegionIn),
    responses=routes.WRITE_ERRORS,
)
async def create_region(request: Request, session: SessionDep, service: Service) -> Response:
    body = await read_object(request)

    async def create() -> routes.Created:
        out = await service.create(validate_as(RegionIn, body))
        return routes.created(request, out)

    return await create_once(request, session, body, create)


@router.get("/{name}", operation_id="readRegion", response_model=RegionOut)
async def read_region(request: Request, name: str, service: Service) -> Response:
    return routes.render_read(request, await service.read(name))


@router.put(
    "/{name}",
    operation_id="replaceRegion",
    response_model=RegionOut,
    openapi_extra=request_body(RegionIn),
    responses=routes.WRITE_ERRORS,
)
async def replace_region(
    request: Request, name: str, service: Service, if_match: IfMatch = None
) -> Response:
    body = validate_as(RegionIn, await read_object(request))
    return routes.render_object(request, await service.replace(name, body, if_match))


@router.patch(
    "/{name}",
    operation_id="patchRegion",
    response_model=RegionOut,
    openapi_extra=merge_patch_body(RegionIn),
    responses=routes.WRITE_ERRORS,
)
async def patch_region(
    request: Request, name: str, service: Service, if_match: IfMatch = None
) -> Response:
    patch = await read_object(request, accepted=MERGE_PATCH_TYPES)
    return routes.render_object(request, await service.patch(name, patch, if_match))


@router.delete("/{name}", operation_id="deleteRegion", response_model=RegionOut)
async def delete_region(
    request: Request, name: str, service: Service, if_match: IfMatch = None
) -> Response:
    return routes.render_object(request, await service.delete(name, if_match))
