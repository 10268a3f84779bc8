from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.principal import CurrentPrincipal, audit_trail, authenticate, require_platform_admin
from app.clusters.schemas import (
    ClusterIn,
    ClusterList,
    ClusterNode,
    ClusterNodeList,
    ClusterOut,
    JoinToken,
    NodeGroupIn,
    NodeGroupList,
    NodeGroupOut,
)
from app.clusters.service import (
    ClusterRepository,
    ClusterService,
    NodeGroupService,
    visible_clusters,
)
from app.db.session import SessionDep
from app.errors import NotFound
from app.kit import responses
from app.kit.crud import add_resource_routes
from app.models.clusters import Cluster

router = APIRouter(
    prefix="/api/v1/clusters", tags=["clusters"], dependencies=[Depends(authenticate)]
)
nodegroups = APIRouter(
    prefix="/api/v1/clusters/{cluster}/nodegroups",
    tags=["clusters"],
    dependencies=[Depends(authenticate)],
)


async def cluster_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> ClusterService:
    admin = principal.is_platform_admin
    visible = await visible_clusters(session, principal)
    state = request.app.state
    return ClusterService(
        session,
        ClusterRepository(session, visible),
        state.settings,
        state.secrets,
        # The shared cache holds whole objects; callers who see a subset read PostgreSQL.
        cache=state.cache if admin else None,
        audit=audit_trail(request, principal),
    )


async def node_group_service(
    request: Request, cluster: str, session: SessionDep, principal: CurrentPrincipal
) -> NodeGroupService:
    clusters = await cluster_service(request, session, principal)
    row: Cluster | None = await clusters.repository.get(cluster)
    if row is None:
        raise NotFound(f"Cluster {cluster!r} not found")
    return NodeGroupService(session, row, audit=audit_trail(request, principal))


add_resource_routes(
    router,
    kind="Cluster",
    plural="Clusters",
    in_model=ClusterIn,
    out_model=ClusterOut,
    list_model=ClusterList,
    service=cluster_service,
    read_access=[],  # the repository shows each caller the clusters granted to them
    write_access=[Depends(require_platform_admin)],
    filters=("region", "phase", "provider"),
)
add_resource_routes(
    nodegroups,
    kind="NodeGroup",
    plural="NodeGroups",
    in_model=NodeGroupIn,
    out_model=NodeGroupOut,
    list_model=NodeGroupList,
    service=node_group_service,
    read_access=[],
    write_access=[Depends(require_platform_admin)],
)


@router.post(
    "/{name}/join-token",
    operation_id="issueClusterJoinToken",
    response_model=JoinToken,
    status_code=201,
    responses={409: responses.WRITE_ERRORS[409]},
    dependencies=[Depends(require_platform_admin)],
)
async def issue_join_token(
    name: str,
    response: Response,
    service: Annotated[ClusterService, Depends(cluster_service)],
) -> JoinToken:
    """A join token for a cluster of connection type agent, shown once, with the command that
    joins the cluster; it expires (AGENT_JOIN_TOKEN_TTL) and works once. Issuing one cuts off
    the agent the cluster had: it must join again."""
    response.headers["Cache-Control"] = "no-store"
    return await service.issue_join_token(name)


@router.get("/{name}/nodes", operation_id="listClusterNodes", response_model=ClusterNodeList)
async def list_nodes(
    name: str, service: Annotated[ClusterService, Depends(cluster_service)]
) -> ClusterNodeList:
    """The cluster's nodes (name, ready, labels) as its last successful probe saw them: what
    a node group's selector matches. Empty until the first probe answers."""
    row = await service.repository.get(name)
    if row is None:
        raise NotFound(f"Cluster {name!r} not found")
    return ClusterNodeList(items=[ClusterNode(**node) for node in row.nodes or []])
