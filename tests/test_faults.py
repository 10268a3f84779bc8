"""Dependencies failing under a running service: answers stay clear, nothing acknowledged is
lost, and the service heals without a restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from app.config import Settings
from tests.support.platform import authenticated, make_settings, running_app
from tests.support.problems import assert_problem
from tests.support.regions import API, region
from tests.support.services import PostgresProcess, RedisProcess, start_redis_cluster

pytestmark = pytest.mark.slow


async def wait_for(predicate, within: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("outage", ["stop", "kill -9"])
async def test_postgres_outage_gives_503_then_heals(
    own_postgres: PostgresProcess, redis_server: RedisProcess, outage: str
) -> None:
    settings = make_settings(own_postgres.url, redis_url=redis_server.url, database_pool_timeout=2)
    async with running_app(settings) as (_, client):
        await authenticated(client)
        acknowledged = []
        for i in range(5):
            response = await client.post(API, json=region(f"before-{i}"))
            assert response.status_code == 201
            acknowledged.append(f"before-{i}")

        if outage == "stop":
            await asyncio.to_thread(own_postgres.stop, "immediate")
        else:
            await asyncio.to_thread(own_postgres.kill)

        for call in (
            client.get(API),
            client.post(API, json=region("during")),
            client.put(f"{API}/before-0", json=region("before-0", displayName="x")),
        ):
            started = time.monotonic()
            response = await call
            assert time.monotonic() - started < 10  # the connect timeout, not a hang
            assert_problem(response, 503)
            assert int(response.headers["retry-after"]) > 0
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"]["status"] == "down"

        await asyncio.to_thread(own_postgres.start)

        async def healed() -> bool:
            return (await client.get(API)).status_code == 200

        await wait_for(healed)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post(API, json=region("after"))).status_code == 201
        stored = {i["metadata"]["name"] for i in (await client.get(API)).json()["items"]}
        assert set(acknowledged) | {"after"} <= stored
        assert "during" not in stored


async def test_redis_down_reads_and_writes_still_served(clean_database: str, workdir: Path) -> None:
    redis = RedisProcess(workdir).start()
    settings = make_settings(clean_database, redis_url=redis.url, redis_timeout=0.3)
    try:
        async with running_app(settings) as (app, client):
            await authenticated(client)
            await client.post(API, json=region("east-china", displayName="v1"))
            assert (await client.get(f"{API}/east-china")).status_code == 200  # now cached

            redis.kill()
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["redis"]["status"] == "degraded"

            updated = await client.put(
                f"{API}/east-china", json=region("east-china", displayName="v2")
            )
            assert updated.status_code == 200
            fetched = await client.get(f"{API}/east-china")
            assert fetched.status_code == 200
            assert fetched.json()["spec"]["displayName"] == "v2"
            assert (await client.get(API)).status_code == 200

            redis.start()  # same port: the service picks it up again by itself

            async def recovered() -> bool:
                body = (await client.get("/readyz")).json()
                return bool(body["status"] == "ok")

            await wait_for(recovered)
            await client.put(f"{API}/east-china", json=region("east-china", displayName="v3"))
            fetched = await client.get(f"{API}/east-china")
            assert fetched.json()["spec"]["displayName"] == "v3"
            assert app.state.redis.mode == "standalone"
    finally:
        redis.stop()


async def test_redis_cluster_node_lost_keeps_serving(clean_database: str, workdir: Path) -> None:
    nodes = start_redis_cluster(workdir / "lost-node")
    settings = make_settings(
        clean_database, redis_addresses=[n.address for n in nodes], redis_timeout=0.3
    )
    try:
        async with running_app(settings) as (app, client):
            await authenticated(client)
            for i in range(6):
                await client.post(API, json=region(f"r{i}"))
                assert (await client.get(f"{API}/r{i}")).status_code == 200
            assert app.state.redis.mode == "cluster"
            nodes[1].kill()
            for i in range(6):
                await client.put(f"{API}/r{i}", json=region(f"r{i}", displayName="after"))
                fetched = await client.get(f"{API}/r{i}")
                assert fetched.status_code == 200
                assert fetched.json()["spec"]["displayName"] == "after"
            ready = await client.get("/readyz")
            assert ready.status_code == 200
    finally:
        for node in nodes:
            node.stop()


async def test_redis_unreachable_at_start_is_degraded_not_fatal(
    clean_database: str,
) -> None:
    settings: Settings = make_settings(clean_database, redis_url="redis://127.0.0.1:1/0")
    async with running_app(settings) as (_, client):
        await authenticated(client)
        assert (await client.post(API, json=region("east-china"))).status_code == 201
        assert (await client.get(f"{API}/east-china")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"]["status"] == "degraded"


async def test_request_while_database_is_unreachable_from_start(
    redis_server: RedisProcess,
) -> None:
    settings = make_settings("postgresql://postgres@127.0.0.1:1/none", redis_url=redis_server.url)
    async with running_app(settings) as (app, client):
        # A token minted without the database: the request itself must then reach PostgreSQL.
        token = app.state.tokens.issue_access(
            subject=f"user:{uuid.uuid4()}",
            session_id=uuid.uuid4(),
            client_id="edge-console",
            claims={},
        )
        response = await client.get(API, headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 503, "database")


async def test_cache_writes_missed_during_an_outage_are_sent_on_recovery(
    workdir: Path,
) -> None:
    """A replica that could not reach Redis when it committed an update must not leave the
    older copy in Redis for other replicas once Redis is reachable again."""
    from app.cache import ObjectCache
    from app.redis import RedisGateway

    redis = RedisProcess(workdir).start()
    writer = RedisGateway(url=redis.url, timeout=0.3, retry_interval=0.1)
    reader = RedisGateway(url=redis.url, timeout=0.3, retry_interval=0.1)
    writer_cache, reader_cache = ObjectCache(writer), ObjectCache(reader)
    try:
        await writer_cache.put("edge:k", 1, {"v": 1})
        await reader_cache.put("edge:k", 1, {"v": 1})
        assert await reader_cache.get("edge:k") == {"v": 1}

        # The outage is simulated by pointing the writer at a dead port and back (a partition).
        good_url = redis.url
        writer._url = "redis://127.0.0.1:1/0"
        await writer.close()
        await writer_cache.put("edge:k", 2, {"v": 2})  # deferred
        await asyncio.sleep(0.2)
        writer._url = good_url
        assert await writer_cache.get("edge:k") == {"v": 2}  # flushed before reading
        assert await reader_cache.get("edge:k") == {"v": 2}
    finally:
        await writer.close()
        await reader.close()
        redis.stop()


async def test_postgres_killed_under_write_load_loses_no_acknowledged_write(
    own_postgres: PostgresProcess, redis_server: RedisProcess
) -> None:
    """Writers keep creating while PostgreSQL is killed (-9) and restarted: every answer is a
    201 or a 503 with Retry-After (never a 500, never a hang), and every 201 is there after."""
    settings = make_settings(own_postgres.url, redis_url=redis_server.url, database_pool_timeout=2)
    async with running_app(settings) as (_, client):
        await authenticated(client)
        acknowledged: list[str] = []
        answers: dict[int, int] = {}
        stop = asyncio.Event()

        async def writer(number: int) -> None:
            sequence = 0
            while not stop.is_set():
                name = f"load-{number}-{sequence}"
                sequence += 1
                started = time.monotonic()
                response = await client.post(API, json=region(name))
                assert time.monotonic() - started < 10, "a write hung"
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                if response.status_code == 201:
                    acknowledged.append(name)
                else:
                    assert_problem(response, 503)
                    assert int(response.headers["retry-after"]) > 0
                    await asyncio.sleep(0.2)  # as a client honouring Retry-After would, briefly

        writers = [asyncio.create_task(writer(n)) for n in range(8)]
        await asyncio.sleep(1.5)
        before_kill = len(acknowledged)
        await asyncio.to_thread(own_postgres.kill)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(own_postgres.start)
        restarted = len(acknowledged)

        async def writes_land_again() -> bool:
            return len(acknowledged) > restarted + 20

        await wait_for(writes_land_again)
        stop.set()
        await asyncio.gather(*writers)

        assert set(answers) <= {201, 503}, answers
        assert before_kill > 0
        assert answers.get(503, 0) > 0  # the outage was seen
        stored: set[str] = set()
        page: dict[str, object] = {"limit": 1000}
        while True:
            body = (await client.get(API, params=page)).json()
            stored |= {item["metadata"]["name"] for item in body["items"]}
            if not body["metadata"].get("continue"):
                break
            page["continue"] = body["metadata"]["continue"]
        lost = set(acknowledged) - stored
        assert not lost, f"{len(lost)} acknowledged writes lost of {len(acknowledged)}"
        print(f"\nacknowledged {len(acknowledged)}, lost 0, answers {answers}")


async def test_no_free_pooled_connection_is_a_503_saying_the_database_is_busy(
    standalone_settings: Settings,
) -> None:
    """Every pooled connection in use past DATABASE_POOL_TIMEOUT: a 503 to retry, and a
    code that does not claim the database is down."""
    settings = standalone_settings.model_copy(
        update={"database_pool_size": 1, "database_max_overflow": 0, "database_pool_timeout": 0.5}
    )
    async with running_app(settings) as (app, client):
        await authenticated(client)
        async with app.state.sessionmaker() as held:
            await held.execute(text("SELECT 1"))  # the pool's one connection, checked out
            response = await client.get(API)
        assert_problem(response, 503)
        assert response.json()["code"] == "DatabaseBusy"
        assert int(response.headers["retry-after"]) > 0
        assert (await client.get(API)).status_code == 200  # free again: served
