from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import (
    WorkspaceOperator,
    WorkspaceViewer,
    audit_trail,
    authenticate,
    workspace_role,
)
from app.db.session import SessionDep
from app.deployments.kinds import ApplicationDeploymentRules, RolloutScope, resolve_spec
from app.deployments.schemas import (
    ApplicationDeploymentIn,
    ApplicationDeploymentList,
    ApplicationDeploymentOut,
    ResolveIn,
    ResolveOut,
    RevisionList,
    RollbackIn,
)
from app.deployments.service import RolloutService
from app.events.routes import add_object_events_route
from app.kit import responses
from app.kit.body import read_object
from app.kit.crud import IfMatch, add_resource_routes
from app.kit.openapi import request_body
from app.kit.resource import render, validate_as

PREFIX = "/api/v1/workspaces/{ws}"
router = APIRouter(prefix=PREFIX, tags=["deployments"], dependencies=[Depends(authenticate)])
resources = APIRouter(prefix="/applicationdeployments")


async def deployment_service(
    request: Request, session: SessionDep, access: WorkspaceViewer
) -> RolloutService[ApplicationDeploymentOut]:
    scope = RolloutScope(session, access.workspace, access.principal.name, access.role)
    return RolloutService(
        ApplicationDeploymentRules(scope, rendered=request.app.state.rendered_deployments),
        redis=request.app.state.redis,
        audit=audit_trail(request, access.principal, access.workspace.name),
    )


Service = Annotated[RolloutService[ApplicationDeploymentOut], Depends(deployment_service)]


@router.post(
    "/applicationdeployments:resolve",
    operation_id="resolveApplicationDeployment",
    response_model=ResolveOut,
    openapi_extra=request_body(ResolveIn),
    responses=responses.WRITE_ERRORS,
    dependencies=[workspace_role("operator")],
)
async def resolve(request: Request, service: Service) -> Response:
    """The (cluster, node group, replicas) list a spec resolves to, without saving anything."""
    body = validate_as(ResolveIn, await read_object(request))
    targets = [r.out() for r in await resolve_spec(service.scope, body.spec)]
    return render(
        request, ResolveOut(applicationVersionRef=body.spec.applicationVersionRef, targets=targets)
    )


@resources.get(
    "/{name}/revisions", operation_id="listApplicationDeploymentRevisions",
    response_model=RevisionList,
)  # fmt: skip
async def list_revisions(request: Request, name: str, service: Service) -> Response:
    return render(request, RevisionList(items=await service.revisions(name)))


@resources.post(
    "/{name}/rollback",
    operation_id="rollbackApplicationDeployment",
    response_model=ApplicationDeploymentOut,
    openapi_extra=request_body(RollbackIn),
    responses=responses.WRITE_ERRORS,
)
async def rollback(
    request: Request, name: str, _: WorkspaceOperator, service: Service, if_match: IfMatch = None
) -> Response:
    """A new revision equal to the one given (reason Rollback)."""
    body = validate_as(RollbackIn, await read_object(request))
    return responses.render_object(request, await service.rollback(name, body.revision, if_match))


add_object_events_route(resources, kind="ApplicationDeployment", service=deployment_service)


add_resource_routes(
    resources,
    kind="ApplicationDeployment",
    plural="ApplicationDeployments",
    in_model=ApplicationDeploymentIn,
    out_model=ApplicationDeploymentOut,
    list_model=ApplicationDeploymentList,
    service=deployment_service,
    read_access=[],  # deployment_service already requires membership (viewer)
    write_access=[workspace_role("operator")],
)
router.include_router(resources)
