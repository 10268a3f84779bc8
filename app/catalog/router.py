"""The chart repository, ChartMuseum-compatible, so `helm repo add` and Helm controllers work."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from app.audit.service import AuditTrail, RequestInfo
from app.auth.identity import Principal
from app.auth.principal import (
    CurrentPrincipal,
    HelmClient,
    audit_trail,
    authenticate,
    authenticate_bearer_or_basic,
    require_helm_admin,
    require_platform_admin,
)
from app.auth.ratelimit import RateLimiter
from app.auth.schemes import BEARER_OR_BASIC, accepts
from app.catalog.chartrepo import ChartStore, chart_version_entry
from app.catalog.charts import InvalidChart, inspect_chart
from app.catalog.schemas import (
    ApplicationIn,
    ApplicationList,
    ApplicationOut,
    ApplicationVersionIn,
    ApplicationVersionList,
    ApplicationVersionOut,
)
from app.catalog.service import (
    ApplicationRepository,
    ApplicationService,
    ApplicationVersionRepository,
    ApplicationVersionService,
)
from app.client_address import client_address
from app.clusters import agents
from app.db.session import SessionDep
from app.errors import NotFound, Unauthorized, UnsupportedMediaType, invalid_field
from app.kit.body import media_type
from app.kit.crud import add_resource_routes

router = APIRouter(prefix="/chartrepo", tags=["chartrepo"])

ARCHIVE_TYPES = frozenset(
    {"application/gzip", "application/x-gzip", "application/octet-stream", "application/x-tar"}
)
Admin = Annotated[Principal, Depends(require_helm_admin)]


async def chart_store(request: Request, session: SessionDep) -> ChartStore:
    return ChartStore(session, request.app.state.redis)


Store = Annotated[ChartStore, Depends(chart_store)]


async def _archive_from(request: Request) -> bytes:
    kind = media_type(request)
    if kind == "multipart/form-data":
        form = await request.form(max_part_size=20 << 20)
        upload = form.get("chart")
        if upload is None or isinstance(upload, str):
            raise invalid_field("chart", "multipart upload needs the archive in the field 'chart'")
        return await upload.read()
    if kind not in ARCHIVE_TYPES and kind != "":
        raise UnsupportedMediaType(
            f"content type {kind!r} is not accepted; send the .tgz as application/gzip "
            "or as multipart/form-data field 'chart'"
        )
    return await request.body()


@router.post(
    "/api/charts",
    operation_id="uploadChart",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"chart": {"type": "string", "format": "binary"}},
                        "required": ["chart"],
                    }
                },
            },
        }
    },
)
async def upload_chart(
    request: Request,
    session: SessionDep,
    store: Store,
    principal: Admin,
    force: Annotated[bool, Query(description="Overwrite an existing version")] = False,
) -> JSONResponse:
    archive = await _archive_from(request)
    try:
        info = inspect_chart(archive)
    except InvalidChart as exc:
        raise invalid_field("chart", f"invalid chart archive: {exc}") from None
    created = await store.save(info, archive, force=force)
    AuditTrail(RequestInfo.of(request), principal.actor).record(
        session, action="create" if created else "update", outcome=201, kind="Chart",
        name=f"{info.name}-{info.version}",
    )  # fmt: skip
    return JSONResponse({"saved": True}, status_code=201)


async def _joining_agent(request: Request) -> Principal | None:
    """Helm installing the agent's chart with a cluster's join token (the join command): it
    may read that chart and nothing else. The token is not used up by this."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None  # refused by the usual path, with its message
    if user != agents.JOIN_CHART_USERNAME:
        return None
    limiter: RateLimiter = request.app.state.rate_limiter
    address = client_address(request) or "unknown"
    await limiter.check(f"agent-join-chart:{address}", limiter.token_per_minute)
    async with request.app.state.sessionmaker() as session:
        cluster = await agents.join_token_cluster(session, token)
    if cluster is None:
        raise Unauthorized(
            "the join token is not valid: wrong, expired or used already",
            headers={"WWW-Authenticate": 'Basic realm="edge-platform"'},
        )
    principal = Principal(kind="agentjoin", id=0, name=f"agent-join:{cluster}", platform_role=None)
    request.state.principal = principal
    return principal


@accepts(BEARER_OR_BASIC)
async def chart_reader(request: Request, session: SessionDep) -> Principal:
    """Who reads charts: Helm with a service account's Basic credentials or a bearer token,
    an edge's helm-controller, or Helm joining a cluster (the agent's chart only)."""
    joining = await _joining_agent(request)
    if joining is not None:
        return joining
    return await authenticate_bearer_or_basic(request, session)


ChartReader = Annotated[Principal, Depends(chart_reader)]


@router.get("/index.yaml", operation_id="getChartIndex", response_class=Response)
async def index(request: Request, store: Store, reader: ChartReader) -> Response:
    etag = await store.index_etag()
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in (request.headers.get("if-none-match") or "").split(", "):
        return Response(status_code=304, headers=headers)
    only = agents.AGENT_CHART if reader.kind == "agentjoin" else None
    document = await store.index_yaml(etag, only=only)
    return Response(document, media_type="application/x-yaml", headers=headers)


@router.get("/charts/{filename}", operation_id="downloadChart", response_class=Response)
async def download(filename: str, store: Store, reader: ChartReader) -> Response:
    agent_chart = filename.startswith(f"{agents.AGENT_CHART}-")
    row = None if reader.kind == "agentjoin" and not agent_chart else await store.archive(filename)
    if row is None:
        raise NotFound(f"chart archive {filename!r} not found")
    return Response(
        row.content,
        media_type="application/gzip",
        headers={
            "ETag": f'"{row.digest}"',
            "Content-Disposition": f'attachment; filename="{row.filename}"',
        },
    )


@router.get("/api/charts", operation_id="listCharts")
@router.head("/api/charts", operation_id="headCharts")
async def list_charts(store: Store, _: HelmClient) -> dict[str, list[dict[str, Any]]]:
    charts: dict[str, list[dict[str, Any]]] = {}
    for row in reversed(await store.versions()):
        charts.setdefault(row.name, []).append(chart_version_entry(row))
    return charts


@router.get("/api/charts/{name}", operation_id="listChartVersions")
@router.head("/api/charts/{name}", operation_id="headChartVersions")
async def chart_versions(name: str, store: Store, _: HelmClient) -> list[dict[str, Any]]:
    rows = await store.versions(name)
    if not rows:
        raise NotFound(f"chart {name!r} not found")
    return [chart_version_entry(row) for row in reversed(rows)]


@router.get("/api/charts/{name}/{version}", operation_id="readChartVersion")
@router.head("/api/charts/{name}/{version}", operation_id="headChartVersion")
async def chart_version(name: str, version: str, store: Store, _: HelmClient) -> dict[str, Any]:
    row = await store.version(name, version)
    if row is None:
        raise NotFound(f"chart {name} {version} not found")
    return chart_version_entry(row)


@router.delete("/api/charts/{name}/{version}", operation_id="deleteChartVersion")
async def delete_chart(
    request: Request, name: str, version: str, session: SessionDep, store: Store, principal: Admin
) -> dict[str, bool]:
    if not await store.delete(name, version):
        raise NotFound(f"chart {name} {version} not found")
    AuditTrail(RequestInfo.of(request), principal.actor).record(
        session, action="delete", outcome=200, kind="Chart", name=f"{name}-{version}"
    )
    return {"deleted": True}


applications_router = APIRouter(
    prefix="/api/v1/applications", tags=["catalog"], dependencies=[Depends(authenticate)]
)
versions_router = APIRouter(
    prefix="/api/v1/applicationversions", tags=["catalog"], dependencies=[Depends(authenticate)]
)


async def application_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> ApplicationService:
    return ApplicationService(
        session, ApplicationRepository(session), audit=audit_trail(request, principal)
    )


async def version_service(
    request: Request, session: SessionDep, principal: CurrentPrincipal
) -> ApplicationVersionService:
    return ApplicationVersionService(
        session, ApplicationVersionRepository(session), audit=audit_trail(request, principal)
    )


add_resource_routes(
    applications_router,
    kind="Application",
    plural="Applications",
    in_model=ApplicationIn,
    out_model=ApplicationOut,
    list_model=ApplicationList,
    service=application_service,
    read_access=[],  # the catalog is readable by every authenticated principal
    write_access=[Depends(require_platform_admin)],
    filters=("provisioner", "category"),
)
add_resource_routes(
    versions_router,
    kind="ApplicationVersion",
    plural="ApplicationVersions",
    in_model=ApplicationVersionIn,
    out_model=ApplicationVersionOut,
    list_model=ApplicationVersionList,
    service=version_service,
    read_access=[],
    write_access=[Depends(require_platform_admin)],
    filters=("application",),
)
