"""create_app(): the API process — engine, sessions, Redis, middleware, routers, handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

import app as app_package
from app.audit.service import RequestInfo, record
from app.auditlogs.router import router as audit_router
from app.auth.access_cache import AccessCache
from app.auth.oidc import OIDCClient
from app.auth.ratelimit import PrincipalSlots, RateLimiter, ReleasePrincipalSlots
from app.auth.router import router as auth_router
from app.auth.schemes import declare_security
from app.auth.tokens import TokenIssuer
from app.bootstrap import ensure_admin
from app.broadcast import Broadcasts
from app.cache import ObjectCache
from app.catalog.builtin import default_charts_dir, load_charts
from app.catalog.router import applications_router, versions_router
from app.catalog.router import router as chartrepo_router
from app.clusters.router import nodegroups as nodegroups_router
from app.clusters.router import router as clusters_router
from app.config import Settings, load_settings
from app.configsyncs.router import router as configsyncs_router
from app.controller.runner import Controller
from app.crypto import secret_box
from app.db.engine import create_engine, create_reading_sessionmaker, create_sessionmaker
from app.deployments.rendered import RenderedDocuments
from app.deployments.router import router as deployments_router
from app.errors import install_error_handlers, is_database_unavailable
from app.events.hub import EventHub
from app.events.router import router as events_router
from app.kit.body import MAX_BODY_BYTES, MAX_CHART_BYTES, BodySizeLimitMiddleware
from app.kit.openapi import add_body_schemas, mark_public_operations
from app.kit.responses import COMMON_ERRORS
from app.observability import POOL_COLLECTOR, RequestContextMiddleware
from app.ops.docs import install_docs
from app.ops.router import router as ops_router
from app.redis import RedisGateway
from app.regions.router import router as regions_router
from app.serviceaccounts.router import platform_router as platform_accounts_router
from app.serviceaccounts.router import workspace_router as workspace_accounts_router
from app.tunnel.hub import TunnelHub
from app.tunnel.proxy import TunnelProxy
from app.tunnel.router import TunnelRoutes
from app.tunnel.router import router as agent_router
from app.tunnel.workers import WorkerRelay, relay_host
from app.users.router import router as users_router
from app.vclusters.router import router as vclusters_router
from app.workspaces.router import router as workspaces_router

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.reading_sessionmaker = create_reading_sessionmaker(engine)
    app.state.redis = RedisGateway(
        url=settings.redis_url,
        addresses=settings.redis_addresses,
        timeout=settings.redis_timeout,
    )
    app.state.cache = ObjectCache(app.state.redis)
    app.state.rendered_deployments = RenderedDocuments()
    app.state.tokens = TokenIssuer(settings)
    app.state.secrets = secret_box(settings)
    app.state.oidc = OIDCClient(settings, app.state.redis) if settings.oauth_issuer else None
    app.state.rate_limiter = RateLimiter(
        app.state.redis, settings.rate_limit_api_per_minute, settings.rate_limit_token_per_minute
    )
    charts_dir = settings.charts_dir or default_charts_dir()
    try:
        await ensure_admin(app.state.sessionmaker, settings.admin_password)
        if charts_dir is not None:
            await load_charts(
                app.state.sessionmaker, app.state.redis, charts_dir, settings.builtin_charts
            )
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        # The database is down: serve 503s until it is back; the next start does this.
        logger.warning("start-up tasks skipped: database unavailable")
    POOL_COLLECTOR.engines.append(engine)
    # What start-up allocated (modules, models, schemas) lives as long as the process; frozen,
    # the collector's full passes stop walking it again and again while requests allocate.
    gc.collect()
    gc.freeze()
    controller_stop = asyncio.Event()
    app.state.broadcasts = broadcasts = Broadcasts(app.state.redis)
    app.state.events = EventHub(broadcasts)
    app.state.access = AccessCache(broadcasts)
    listening = asyncio.create_task(broadcasts.run(controller_stop))
    advertise_url = settings.tunnel_advertise_url or settings.public_url
    worker_relay = None
    if (host := relay_host()) is not None:  # one of several workers: a port of its own
        worker_relay = WorkerRelay(host)
        advertise_url = worker_relay.advertise_url(settings.tunnel_advertise_url)
    app.state.tunnel_hub = TunnelHub(
        app.state.sessionmaker, app.state.redis, app.state.cache, advertise_url=advertise_url
    )
    app.state.tunnel_proxy = TunnelProxy(app.state.tunnel_hub, app.state.secrets)
    if worker_relay is not None:
        worker_relay.start(app.state.tunnel_proxy)
    tunnels = asyncio.create_task(app.state.tunnel_hub.run(controller_stop))
    controller = None
    if app.state.dev:  # `edge-platform dev` runs the controller in the same process
        controller = asyncio.create_task(
            Controller(
                settings, app.state.sessionmaker, app.state.redis, app.state.cache,
                app.state.secrets,
            ).run(controller_stop)
        )  # fmt: skip
    try:
        yield
    finally:
        controller_stop.set()
        if controller is not None:
            await controller
        await listening
        await tunnels  # the agents connected here are let go: they reconnect elsewhere
        if worker_relay is not None:
            await worker_relay.stop()
        await app.state.tunnel_proxy.close()
        POOL_COLLECTOR.engines.remove(engine)
        await app.state.redis.close()
        await engine.dispose()


async def _audit_refusal(request: Request, status: int, detail: str) -> None:
    """Refused changes are audited too, in their own transaction (the request's rolled back)."""
    principal = getattr(request.state, "principal", None)
    if request.method in ("GET", "HEAD", "OPTIONS") or principal is None:
        return
    route = getattr(request.scope.get("route"), "path", request.url.path)
    async with request.app.state.sessionmaker.begin() as session:
        record(
            session, RequestInfo.of(request), principal.actor, action=request.method.lower(),
            outcome=status, kind=None, name=route, workspace=request.path_params.get("ws"),
            detail=detail[:1024],
        )  # fmt: skip


def create_app(settings: Settings | None = None, *, dev: bool = False) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(
        title="Edge Platform",
        version=app_package.__version__,
        description="Management plane for fleets of edge Kubernetes clusters.",
        lifespan=lifespan,
        docs_url=None,  # served by app.ops.docs, with no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.dev = dev
    # Set when the process is stopping: long-lived responses (event streams) end.
    app.state.draining = asyncio.Event()
    # Watchers woken together read PostgreSQL a few at a time, not all at once: a thousand
    # event streams must not take the connection pool from ordinary requests.
    app.state.event_readers = asyncio.Semaphore(4)
    install_error_handlers(app, observers=[_audit_refusal])
    install_docs(app)
    # A request is matched against the routes in this order, one by one (no two routes match
    # the same method and path, so the order decides only the cost): the probes, then what
    # fleets and consoles read most.
    for router in (
        ops_router,
        deployments_router,
        configsyncs_router,
        vclusters_router,
        events_router,
        users_router,
        auth_router,
        clusters_router,
        nodegroups_router,
        regions_router,
        workspaces_router,
        platform_accounts_router,
        workspace_accounts_router,
        audit_router,
        chartrepo_router,
        applications_router,
        versions_router,
        agent_router,
    ):
        app.include_router(router, responses=COMMON_ERRORS)
    # Each added middleware wraps the ones before: the body is read whole before a principal
    # slot is taken, and every response, errors included, gets a request id and is measured.
    app.state.principal_slots = PrincipalSlots(settings.rate_limit_inflight_per_principal)
    app.add_middleware(ReleasePrincipalSlots, slots=app.state.principal_slots)
    app.add_middleware(
        BodySizeLimitMiddleware,
        # Clusters may carry a kubeconfig, whose own limit (512 KiB) answers with a clear 422.
        limits={"/chartrepo/api/charts": MAX_CHART_BYTES, "/api/v1/clusters": 2 * MAX_BODY_BYTES},
        timeout=settings.request_body_timeout,
    )
    app.add_middleware(RequestContextMiddleware)
    # Outermost: the agents' tunnels and the controller's calls through them (app.tunnel).
    app.add_middleware(TunnelRoutes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            add_body_schemas(schema)
            declare_security(schema, app.routes)
            mark_public_operations(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
