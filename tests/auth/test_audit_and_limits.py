"""The audit log, login lockout, rate limits, and secrets kept out of responses and logs."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from app.auth.ratelimit import WINDOW_SECONDS, RateLimited, RateLimiter, batch_size
from app.config import Settings
from app.redis import RedisGateway
from tests.support.platform import ADMIN_PASSWORD, authenticated, running_app
from tests.support.regions import API, region
from tests.support.services import RedisProcess
from tests.support.tenancy import add_member, as_user, create_user, create_workspace


def login_form(username: str, password: str) -> dict[str, str]:
    return {
        "grant_type": "password",
        "username": username,
        "password": password,
        "client_id": "edge-console",
    }


async def test_changes_and_logins_are_audited(api: httpx.AsyncClient) -> None:
    await api.post(API, json=region("east-china"), headers={"User-Agent": "audit-test/1"})
    await api.delete(f"{API}/nowhere")  # a refused change is recorded too
    await api.post("/oauth/token", data=login_form("admin", "wrong-password"))
    entries = (await api.get("/api/v1/auditlogs")).json()["items"]
    created = next(e for e in entries if e["action"] == "create" and e["resourceKind"] == "Region")
    assert created["actor"] == "admin"
    assert created["actorKind"] == "user"
    assert created["resourceName"] == "east-china"
    assert created["outcome"] == 201
    assert created["userAgent"] == "audit-test/1"
    assert created["requestId"]
    assert created["sourceIP"]
    refused = next(e for e in entries if e["action"] == "delete")
    assert refused["outcome"] == 404
    logins = [e for e in entries if e["action"] == "login"]
    assert {e["outcome"] for e in logins} >= {200, 401}
    # Newest first, paged like every list.
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    page = (await api.get("/api/v1/auditlogs", params={"limit": 2})).json()
    assert len(page["items"]) == 2
    rest = (
        await api.get(
            "/api/v1/auditlogs", params={"limit": 100, "continue": page["metadata"]["continue"]}
        )
    ).json()
    assert [e["id"] for e in page["items"] + rest["items"]] == ids
    by_actor = (await api.get("/api/v1/auditlogs", params={"actor": "nobody"})).json()
    assert by_actor["items"] == []


async def test_no_change_without_its_record(api: httpx.AsyncClient) -> None:
    """A change that fails is rolled back with its record; one that succeeds has one."""
    await api.post(API, json=region("dup"))
    failed = await api.post(API, json=region("dup"))
    assert failed.status_code == 409
    entries = (await api.get("/api/v1/auditlogs")).json()["items"]
    creates = [e for e in entries if e["resourceName"] == "dup" and e["outcome"] == 201]
    assert len(creates) == 1


async def test_workspace_admins_read_their_workspace_log(api: httpx.AsyncClient) -> None:
    for name in ("wa", "wv"):
        await create_user(api, name)
    await create_workspace(api, "team-a", manager="wa")
    await add_member(api, "team-a", "wv", "viewer")
    admin_of_a = await as_user(api, "wa")
    viewer_of_a = await as_user(api, "wv")
    log = await api.get("/api/v1/auditlogs", params={"workspace": "team-a"}, headers=admin_of_a)
    assert log.status_code == 200
    assert {e["workspace"] for e in log.json()["items"]} <= {"team-a"}
    assert any(e["resourceKind"] == "WorkspaceMember" for e in log.json()["items"])
    assert (await api.get("/api/v1/auditlogs", headers=admin_of_a)).status_code == 403
    denied = await api.get("/api/v1/auditlogs", params={"workspace": "team-a"}, headers=viewer_of_a)
    assert denied.status_code == 403


async def test_repeated_failed_logins_lock_the_account(api: httpx.AsyncClient) -> None:
    await create_user(api, "target", password="right-password-1")
    for _ in range(5):
        response = await api.post("/oauth/token", data=login_form("target", "guess"))
        assert response.status_code == 400
    locked = await api.post("/oauth/token", data=login_form("target", "right-password-1"))
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "try again" in locked.json()["error_description"]
    entries = (await api.get("/api/v1/auditlogs", params={"actor": "target"})).json()["items"]
    assert [e["outcome"] for e in entries].count(401) == 5
    assert entries[0]["outcome"] == 429
    # Other users are unaffected.
    ok = await api.post("/oauth/token", data=login_form("admin", ADMIN_PASSWORD))
    assert ok.status_code == 200


async def test_token_endpoint_rate_limit(standalone_settings: Settings) -> None:
    settings = standalone_settings.model_copy(update={"rate_limit_token_per_minute": 3})
    async with running_app(settings) as (_, client):
        statuses = [
            (await client.post("/oauth/token", data=login_form("admin", "x"))).status_code
            for _ in range(5)
        ]
        assert statuses[:3] == [400, 400, 400]
        assert statuses[3:] == [429, 429]
        limited = await client.post("/oauth/token", data=login_form("admin", ADMIN_PASSWORD))
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= 2 * WINDOW_SECONDS


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_rate_limit_slides_across_window_boundaries(
    mode: str, request: pytest.FixtureRequest
) -> None:
    if mode == "cluster":
        gateway = RedisGateway(
            addresses=[n.address for n in request.getfixturevalue("redis_cluster")]
        )
    else:
        gateway = RedisGateway(url=request.getfixturevalue("redis_server").url)
    window_start = 1_000_000 * WINDOW_SECONDS
    clock = Clock(window_start + 59)
    bucket = f"burst-{time.time()}"  # no counts of an earlier run
    limiter = RateLimiter(gateway, api_per_minute=3, token_per_minute=3, clock=clock)

    async def refused_for() -> int | None:
        try:
            await limiter.check(bucket, 3)
        except RateLimited as refusal:
            return int(refusal.headers["Retry-After"])
        return None

    try:
        assert [await refused_for() for _ in range(3)] == [None, None, None]
        # A fixed window would admit three more a second later, in the next window.
        clock.now = window_start + WINDOW_SECONDS + 1
        retry_after = await refused_for()
        assert retry_after is not None
        # Retry-After is honest: refused a second before it, admitted at it. Refusals are not
        # counted, so asking meanwhile does not push it further.
        clock.now += retry_after - 1
        assert await refused_for() is not None
        clock.now += 1
        assert await refused_for() is None
        assert await refused_for() is not None  # the minute before still holds 3 requests
    finally:
        await gateway.close()


async def test_batched_admissions_never_exceed_the_limit_across_processes(
    redis_server: RedisProcess,
) -> None:
    """Processes take admissions from Redis in batches (a fiftieth of the limit) and hand them
    out themselves: across processes a caller is never admitted beyond the limit, loses at most
    a batch per process to what was taken and not used, and a burst within the limit is never
    refused."""
    limit = 500  # batches of 10
    gateway = RedisGateway(url=redis_server.url)
    clock = Clock(1_000_000 * WINDOW_SECONDS + 1)  # early in a window: no previous one counts
    processes = [RateLimiter(gateway, limit, 3, clock=clock) for _ in range(3)]
    bucket = f"batched-{time.time()}"

    async def admitted(limiter: RateLimiter) -> bool:
        try:
            await limiter.check(bucket, limit, batch=batch_size(limit))
        except RateLimited:
            return False
        return True

    try:
        burst = await asyncio.gather(*(admitted(processes[0]) for _ in range(64)))
        assert all(burst)  # 64 at once, within the limit: none refused
        rest = await asyncio.gather(*(admitted(processes[i % 3]) for i in range(600)))
        total = 64 + sum(rest)
        assert total <= limit
        assert total >= limit - 3 * batch_size(limit)
    finally:
        await gateway.close()


async def test_api_rate_limit_per_principal(standalone_settings: Settings) -> None:
    settings = standalone_settings.model_copy(update={"rate_limit_api_per_minute": 5})
    async with running_app(settings) as (_, client):
        await authenticated(client)
        statuses = [(await client.get(API)).status_code for _ in range(7)]
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429, 429]
        assert (await client.get(API)).headers["retry-after"]


async def test_secrets_never_appear_in_responses_or_logs(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "sup3r-secret-passw0rd"
    responses = [
        await api.post(
            "/api/v1/users",
            json={"metadata": {"name": "carol"}, "spec": {"password": password}},
        ),
        await api.get("/api/v1/users/carol"),
        await api.get("/api/v1/users"),
        await api.post("/oauth/token", data=login_form("carol", password)),
        await api.post("/oauth/token", data=login_form("carol", password + "x")),
        await api.get("/api/v1/auditlogs"),
    ]
    account = await api.post(
        "/api/v1/serviceaccounts",
        json={"metadata": {"name": "robot"}, "spec": {"role": "platform-regular"}},
    )
    secret = account.json()["status"]["clientSecret"]
    responses += [
        await api.get("/api/v1/serviceaccounts/robot"),
        await api.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(account.json()["status"]["clientId"], secret),
        ),
        await api.get("/api/v1/auditlogs"),
    ]
    for response in responses:
        assert password not in response.text
        assert secret not in response.text
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert password not in text
        assert secret not in text
