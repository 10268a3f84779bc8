"""The platform as the tests run it: settings, the app over ASGI, signing in, Redis, databases."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from fastapi import FastAPI

from app.config import Settings
from app.db import migrate
from app.main import create_app

ADMIN_PASSWORD = "admin-test-password"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ENCRYPTION_KEY = "test-encryption-key-that-is-long-enough-0123456789"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "database_connect_timeout": 2.0,
        "jwt_secret": JWT_SECRET,
        "encryption_key": ENCRYPTION_KEY,
        "allow_private_cluster_endpoints": True,  # edge clusters are emulated on loopback
        "admin_password": ADMIN_PASSWORD,
        # Tests log in far more often than people do; the limit itself has its own test.
        "rate_limit_token_per_minute": 100_000,
        # The built-in charts stay in /chartrepo; the catalog starts empty, as most tests
        # create applications of their own (tests/catalog/test_builtin_catalog.py: the default).
        "builtin_charts": [],
    }
    values.update(overrides)
    return Settings(**values)


async def login(
    client: httpx.AsyncClient, username: str = "admin", password: str = ADMIN_PASSWORD
) -> str:
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": username,
            "password": password,
            "client_id": "edge-console",
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def authenticated(client: httpx.AsyncClient, *args: str) -> httpx.AsyncClient:
    client.headers["Authorization"] = f"Bearer {await login(client, *args)}"
    return client


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, and an httpx client speaking ASGI to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


async def flush_redis(settings: Settings) -> None:
    from app.redis import RedisGateway

    gateway = RedisGateway(url=settings.redis_url, addresses=settings.redis_addresses)
    with contextlib.suppress(Exception):
        client = await gateway.client()
        if gateway.mode == "cluster":
            await client.flushall(target_nodes="all")  # type: ignore[call-arg]
        else:
            await client.flushall()
    await gateway.close()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, *, migrated: bool = True) -> AsyncIterator[str]:
    name = f"edge_test_{uuid.uuid4().hex[:12]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    url = _with_database(admin_url, name)
    try:
        if migrated:
            await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_for_body(
    client: httpx.AsyncClient,
    path: str,
    check: Callable[[dict[str, Any]], bool],
    within: float = 30.0,
    *,
    every: float = 0.1,
    context: Callable[[], str] = str,
) -> dict[str, Any]:
    """GET `path` until it answers 200 with a body `check` accepts (a request that fails, as
    against a replica just killed, is tried again); fails with the last body seen and
    `context()` (logs worth reading)."""
    deadline = time.monotonic() + within
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.get(path)
            body = response.json()
            if response.status_code == 200 and check(body):
                return body
        await asyncio.sleep(every)
    raise AssertionError(f"{path} never got there; last seen: {body}\n{context()}")
