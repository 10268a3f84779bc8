from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.auth.principal import (
    WorkspaceAdmin,
    WorkspaceViewer,
    audit_trail,
    authenticate,
    workspace_role,
)
from app.db.session import SessionDep
from app.deployments.kinds import RolloutScope
from app.deployments.service import RolloutService
from app.events.routes import add_object_events_route
from app.kit import responses
from app.kit.crud import IfMatch, PropagationPolicy, add_resource_routes
from app.vclusters.kind import VClusterRules, delete_vcluster, read_kubeconfig
from app.vclusters.schemas import VClusterIn, VClusterList, VClusterOut

router = APIRouter(
    prefix="/api/v1/workspaces/{ws}/vclusters",
    tags=["vclusters"],
    dependencies=[Depends(authenticate)],
)


async def vcluster_service(
    request: Request, session: SessionDep, access: WorkspaceViewer
) -> RolloutService[VClusterOut]:
    state = request.app.state
    settings = state.settings
    scope = RolloutScope(session, access.workspace, access.principal.name, access.role)
    rules = VClusterRules(
        scope,
        allow_private=bool(settings.allow_private_cluster_endpoints),
        allow_insecure=settings.allow_insecure_cluster_endpoints,
    )
    return RolloutService(
        rules,
        redis=state.redis,
        audit=audit_trail(request, access.principal, access.workspace.name),
    )


Service = Annotated[RolloutService[VClusterOut], Depends(vcluster_service)]


@router.get(
    "/{name}/kubeconfig",
    operation_id="readVClusterKubeconfig",
    response_class=Response,
    responses={200: {"content": {"application/yaml": {}}}, 409: responses.WRITE_ERRORS[409]},
)
async def kubeconfig(request: Request, name: str, _: WorkspaceAdmin, service: Service) -> Response:
    """The vcluster's kubeconfig, for workspace admins; every read is audited."""
    text = await read_kubeconfig(service, request.app.state.secrets, name)
    service.record_audit("read-kubeconfig", name)
    return Response(text, media_type="application/yaml", headers={"Cache-Control": "no-store"})


@router.delete(
    "/{name}",
    operation_id="deleteVCluster",
    response_model=VClusterOut,
    responses=responses.WRITE_ERRORS,
    dependencies=[workspace_role("operator")],
)
async def delete_one(
    request: Request,
    name: str,
    service: Service,
    if_match: IfMatch = None,
    propagation_policy: PropagationPolicy = None,
    force: Annotated[
        bool, Query(description="Also drop the targets rollouts have on this vcluster.")
    ] = False,
) -> Response:
    """Removes it from its host (HelmChart, namespace), then its Cluster record; refused while
    rollouts target it unless `force`."""
    orphan = propagation_policy == "Orphan"
    out = await delete_vcluster(
        service,
        name,
        if_match,
        orphan=orphan,
        force=force,
        clusters_cache=request.app.state.cache,
    )
    return responses.render_object(request, out)


add_object_events_route(router, kind="VCluster", service=vcluster_service)


add_resource_routes(
    router,
    kind="VCluster",
    plural="VClusters",
    in_model=VClusterIn,
    out_model=VClusterOut,
    list_model=VClusterList,
    service=vcluster_service,
    read_access=[],  # vcluster_service already requires membership (viewer)
    write_access=[workspace_role("operator")],
    with_delete=False,  # its own, above: it takes ?force=
)
