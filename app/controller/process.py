"""`edge-platform controller`: the controller with its own metrics and health listeners."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from typing import Any

from fastapi import FastAPI

from app.cache import ObjectCache
from app.config import Settings
from app.controller.kube import small_tls_read_buffers
from app.controller.runner import Controller
from app.crypto import secret_box
from app.db.engine import create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.observability import POOL_COLLECTOR, RequestContextMiddleware
from app.ops.router import router as ops_router
from app.redis import RedisGateway
from app.serving import side_listeners

logger = logging.getLogger(__name__)


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one, as Go programs do at start-up: the
    controller keeps a connection open to every managed cluster, and the usual soft limit of
    1,024 is below a large fleet."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # Linux's nr_open default
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            logger.warning("open files limited to %d; could not raise it to %d", soft, wanted)


def probe_app(engine: Any, redis: RedisGateway) -> FastAPI:
    app = FastAPI(title="Edge Platform controller", openapi_url=None, docs_url=None)
    app.state.engine = engine
    app.state.redis = redis
    install_error_handlers(app)
    app.include_router(ops_router)
    app.add_middleware(RequestContextMiddleware)
    return app


async def run_controller(settings: Settings) -> None:
    raise_open_files_limit()
    small_tls_read_buffers()
    engine = create_engine(settings)
    redis = RedisGateway(
        url=settings.redis_url, addresses=settings.redis_addresses, timeout=settings.redis_timeout
    )
    sessionmaker = create_sessionmaker(engine)
    controller = Controller(settings, sessionmaker, redis, ObjectCache(redis), secret_box(settings))
    POOL_COLLECTOR.engines.append(engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    listeners = side_listeners(probe_app(engine, redis), settings)
    served = [asyncio.create_task(listener.serve()) for listener in listeners]
    try:
        await controller.run(stop)
    finally:
        for listener in listeners:
            listener.should_exit = True
        await asyncio.gather(*served, return_exceptions=True)
        POOL_COLLECTOR.engines.remove(engine)
        await redis.close()
        await engine.dispose()
