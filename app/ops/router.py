from __future__ import annotations

import asyncio
import platform
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text

import app
from app.errors import RETRY_AFTER_SECONDS, is_database_unavailable

router = APIRouter(tags=["operations"])

DATABASE_CHECK_TIMEOUT = 2.0


@router.get("/healthz", operation_id="getHealth")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/livez", operation_id="getLiveness")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(request: Request) -> dict[str, Any]:
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "ok"}


@router.get("/readyz", operation_id="getReadiness")
async def readyz(request: Request) -> JSONResponse:
    """200 while PostgreSQL answers (Redis down only degrades); 503 when PostgreSQL does not."""
    database, redis = await asyncio.gather(
        _check_database(request), request.app.state.redis.check()
    )
    ready = database["status"] == "ok"
    overall = "ok" if ready and redis["status"] == "ok" else ("degraded" if ready else "down")
    body = {"status": overall, "checks": {"postgres": database, "redis": redis}}
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@router.get("/version", operation_id="getVersion")
async def version() -> dict[str, str]:
    return {
        "version": app.__version__,
        "apiVersion": "edge.theriseunion.io/v1alpha1",
        "python": platform.python_version(),
    }


@router.get("/metrics", operation_id="getMetrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
