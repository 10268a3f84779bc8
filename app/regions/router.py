from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.auth.principal import CurrentPrincipal, audit_trail, authenticate, require_platform_admin
from app.db.session import SessionDep
from app.kit.crud import add_resource_routes
from app.regions.repository import RegionRepository
from app.regions.schemas import RegionIn, RegionList, RegionOut
from app.regions.service import RegionService

router = APIRouter(prefix="/api/v1/regions", tags=["regions"], dependencies=[Depends(authenticate)])


async def region_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> RegionService:
    return RegionService(
        session,
        RegionRepository(session),
        request.app.state.cache,
        audit_trail(request, principal),
    )


add_resource_routes(
    router,
    kind="Region",
    plural="Regions",
    in_model=RegionIn,
    out_model=RegionOut,
    list_model=RegionList,
    service=region_service,
    read_access=[],  # every authenticated principal may read regions
    write_access=[Depends(require_platform_admin)],
)
