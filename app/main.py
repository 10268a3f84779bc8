"""create_app(): the API process — engine, sessions, Redis, middleware, routers, handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import app as app_package
from app.cache import ObjectCache
from app.config import Settings, load_settings
from app.db.engine import create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.kit.body import MAX_CHART_BYTES, BodySizeLimitMiddleware
from app.kit.idempotency import purge_expired_keys
from app.kit.openapi import add_body_schemas
from app.observability import POOL_COLLECTOR, RequestContextMiddleware
from app.ops.router import router as ops_router
from app.redis import RedisGateway
from app.regions.router import router as regions_router

logger = logging.getLogger(__name__)

IDEMPOTENCY_PURGE_INTERVAL = 3600.0


async def _purge_idempotency_keys(app: FastAPI) -> None:
    while True:
        await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL)
        try:
            async with app.state.sessionmaker.begin() as session:
                purged = await purge_expired_keys(session)
            logger.info("purged %d expired idempotency keys", purged)
        except Exception:
            logger.warning("idempotency key purge failed; will retry", exc_info=True)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.redis = RedisGateway(
        url=settings.redis_url,
        addresses=settings.redis_addresses,
        timeout=settings.redis_timeout,
    )
    app.state.cache = ObjectCache(app.state.redis)
    POOL_COLLECTOR.engines.append(engine)
    purger = asyncio.create_task(_purge_idempotency_keys(app))
    try:
        yield
    finally:
        purger.cancel()
        POOL_COLLECTOR.engines.remove(engine)
        await app.state.redis.close()
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(
        title="Edge Platform",
        version=app_package.__version__,
        description="Management plane for fleets of edge Kubernetes clusters.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(ops_router)
    app.include_router(regions_router)
    # Outermost first: every response, errors included, gets a request id and is measured.
    app.add_middleware(BodySizeLimitMiddleware, limits={"/chartrepo/api/charts": MAX_CHART_BYTES})
    app.add_middleware(RequestContextMiddleware)

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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class OnlyPaths:
    """Serve a subset of an app's paths on a side listener (metrics or health probes)."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.paths:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"not found\n"})
            return
        await self.app(scope, receive, send)
