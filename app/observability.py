"""JSON logs with the request id, X-Request-ID, access log and Prometheus metrics.

The access log records method, route template, status and duration: never query strings,
headers or bodies, which may carry tokens and passwords.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
access_logger = logging.getLogger("edge_platform.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

REQUESTS = Counter(
    "edge_http_requests_total", "HTTP requests handled.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "edge_http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("edge_http_requests_in_flight", "HTTP requests being handled.")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["requestId"] = request_id
        for field in ("method", "route", "status", "durationMs", "client"):
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str) -> dict[str, Any]:
    """JSON lines on stderr at `level`, as a `logging.config.dictConfig` dictionary: uvicorn
    applies it in each worker process it spawns, which does not inherit the parent's setup."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's own access log would print query strings; ours does not.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # httpx logs each request it sends at info: the console's every API call (which
            # the API logs itself), the OIDC client's. Shown when debugging.
            "httpx": {"level": "DEBUG" if level.upper() == "DEBUG" else "WARNING"},
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))


class DatabasePoolCollector(Collector):
    """Pool usage read at scrape time, so no background task is needed."""

    def __init__(self) -> None:
        self.engines: list[AsyncEngine] = []

    def collect(self) -> Any:
        in_use = GaugeMetricFamily(
            "edge_db_pool_connections_in_use", "Pooled DB connections checked out."
        )
        size = GaugeMetricFamily("edge_db_pool_size", "Configured DB pool size.")
        for engine in self.engines:
            pool = engine.sync_engine.pool
            in_use.add_metric([], float(getattr(pool, "checkedout", lambda: 0)()))
            size.add_metric([], float(getattr(pool, "size", lambda: 0)()))
        yield in_use
        yield size


POOL_COLLECTOR = DatabasePoolCollector()
REGISTRY.register(POOL_COLLECTOR)


class RequestContextMiddleware:
    """Request id (echoed or generated), access log and HTTP metrics, as plain ASGI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            client = scope.get("client")
            access_logger.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "durationMs": round(elapsed * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
            request_id_var.reset(token)
