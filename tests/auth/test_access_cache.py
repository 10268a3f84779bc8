"""Who a caller is and what they may do in a workspace are kept in each API process, and
every change that alters them reaches every process within a second: revoked logins; demoted,
disabled and deleted users; changed and deleted service accounts; members added, changed and
removed; a workspace's grants changed. Two replicas of the API on one database and one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.auth.access_cache import AccessCache, session_changed
from app.auth.identity import Principal
from app.broadcast import Broadcasts
from app.config import Settings
from app.db.engine import create_engine, create_sessionmaker
from app.redis import RedisGateway
from app.users.service import reset_password
from tests.support.clusters import cluster_body
from tests.support.deployments import workload_version
from tests.support.platform import authenticated, login, running_app
from tests.support.tenancy import PASSWORD, create_user, create_workspace

MERGE_PATCH = {"content-type": "application/merge-patch+json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def subscribed(broadcasts: Broadcasts) -> None:
    """Until the process hears announcements (it keeps no principal before)."""
    deadline = time.monotonic() + 10
    while not broadcasts.connected:
        assert time.monotonic() < deadline, "the broadcast subscription never started"
        await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient]]:
    """Replica A (signed in as admin) and replica B, its app and a client without a token."""
    async with running_app(settings) as (_, a), running_app(settings) as (b_app, b):
        await subscribed(b_app.state.broadcasts)
        yield await authenticated(a), b_app, b


def kept_on(app: FastAPI, token: str) -> bool:
    claims = jwt.decode(token, options={"verify_signature": False})
    access: AccessCache = app.state.access
    return access.principal(claims["sid"], claims["sub"]) is not None


async def answers_within(
    request: Callable[[], Awaitable[httpx.Response]], status: int, seconds: float = 1.0
) -> float:
    """How long until `request` answers `status`; fails past `seconds`."""
    start = time.monotonic()
    while True:
        response = await request()
        elapsed = time.monotonic() - start
        if response.status_code == status:
            return elapsed
        assert elapsed < seconds, f"still {response.status_code} after {elapsed:.2f}s"
        await asyncio.sleep(0.01)


async def test_a_revoked_login_ends_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient],
) -> None:
    a, b_app, b = replicas
    token = await login(b)
    assert (await b.get("/api/v1/regions", headers=bearer(token))).status_code == 200
    assert kept_on(b_app, token)  # B answers from what it keeps, not from the database

    assert (await a.post("/oauth/revoke", data={"token": token})).status_code == 200

    await answers_within(lambda: b.get("/api/v1/regions", headers=bearer(token)), 401)


async def test_a_demoted_admin_loses_admin_rights_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient],
) -> None:
    a, b_app, b = replicas
    await create_user(a, "ops", role="platform-admin")
    token = await login(b, "ops", PASSWORD)
    admin_only = "/api/v1/users"
    assert (await b.get(admin_only, headers=bearer(token))).status_code == 200
    assert kept_on(b_app, token)

    demoted = await a.patch(
        "/api/v1/users/ops", json={"spec": {"platformRole": "platform-regular"}},
        headers=MERGE_PATCH,
    )  # fmt: skip
    assert demoted.status_code == 200, demoted.text

    await answers_within(lambda: b.get(admin_only, headers=bearer(token)), 403)
    # Still signed in: a role change is not a logout.
    assert (await b.get("/api/v1/users/me", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("change", ["disable", "delete"])
async def test_a_disabled_or_deleted_user_is_refused_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient], change: str
) -> None:
    a, b_app, b = replicas
    await create_user(a, "leaver")
    token = await login(b, "leaver", PASSWORD)
    assert (await b.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
    assert kept_on(b_app, token)

    if change == "disable":
        changed = await a.patch(
            "/api/v1/users/leaver", json={"spec": {"disabled": True}}, headers=MERGE_PATCH
        )
    else:
        changed = await a.delete("/api/v1/users/leaver")
    assert changed.status_code == 200, changed.text

    await answers_within(lambda: b.get("/api/v1/users/me", headers=bearer(token)), 401)


@pytest.mark.parametrize("change", ["demote", "disable", "delete", "delete the workspace"])
async def test_a_changed_service_account_is_seen_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient], change: str
) -> None:
    a, b_app, b = replicas
    await create_workspace(a, "team")
    accounts = "/api/v1/workspaces/team/serviceaccounts"
    created = await a.post(accounts, json={"metadata": {"name": "bot"}, "spec": {"role": "admin"}})
    assert created.status_code == 201, created.text
    status = created.json()["status"]
    issued = await b.post(
        "/oauth/token", data={"grant_type": "client_credentials"},
        auth=(status["clientId"], status["clientSecret"]),
    )  # fmt: skip
    token = issued.json()["access_token"]
    members = "/api/v1/workspaces/team/serviceaccounts"  # needs the admin role in the workspace
    assert (await b.get(members, headers=bearer(token))).status_code == 200
    assert kept_on(b_app, token)

    if change == "demote":
        changed = await a.patch(
            f"{accounts}/bot", json={"spec": {"role": "viewer"}}, headers=MERGE_PATCH
        )
        expected = 403
    elif change == "disable":
        changed = await a.patch(
            f"{accounts}/bot", json={"spec": {"disabled": True}}, headers=MERGE_PATCH
        )
        expected = 401
    elif change == "delete":
        changed = await a.delete(f"{accounts}/bot")
        expected = 401
    else:
        changed = await a.delete("/api/v1/workspaces/team")
        expected = 401
    assert changed.status_code == 200, changed.text

    await answers_within(lambda: b.get(members, headers=bearer(token)), expected)


async def test_a_principal_loaded_before_an_announcement_is_not_kept(
    settings: Settings,
) -> None:
    """The race a cache of this kind invites: a request loads a principal, a change commits and
    is announced, then the request stores what it loaded before the change."""
    gateway = RedisGateway(url=settings.redis_url, addresses=settings.redis_addresses)
    broadcasts = Broadcasts(gateway)
    access = AccessCache(broadcasts)
    stop = asyncio.Event()
    listening = asyncio.create_task(broadcasts.run(stop))
    try:
        await subscribed(broadcasts)
        alice = Principal("user", 7, "alice", "platform-admin", session_id="s-1")

        loaded_at = access.generation  # a request starts loading...
        access._on_message(session_changed("s-2"))  # ...any change is announced...
        access.put_principal("s-1", alice, "user:alice", loaded_at)  # ...and it stores its load
        assert access.principal("s-1", "user:alice") is None

        access.put_principal("s-1", alice, "user:alice", access.generation)
        assert access.principal("s-1", "user:alice") == alice
        assert access.principal("s-1", "user:somebody-else") is None  # not this token's subject
    finally:
        stop.set()
        await listening
        await gateway.close()
    # Not subscribed: nothing is kept, since no announcement could be heard.
    access.put_principal("s-1", alice, "user:alice", access.generation)
    assert access.principal("s-1", "user:alice") is None


@pytest.mark.parametrize("change", ["add", "demote", "remove"])
async def test_a_members_role_changes_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient], change: str
) -> None:
    a, _, b = replicas
    await create_workspace(a, "team")
    await create_user(a, "dev")
    token = bearer(await login(b, "dev", PASSWORD))
    members = "/api/v1/workspaces/team/members"
    accounts = "/api/v1/workspaces/team/serviceaccounts"  # for the workspace's admins
    if change == "add":
        # Not a member: B answers 404 and keeps that answer...
        assert (await b.get(members, headers=token)).status_code == 404
        added = await a.post(members, json={"user": "dev", "role": "viewer"})
        assert added.status_code == 201, added.text
        # ...until the member's addition reaches it.
        await answers_within(lambda: b.get(members, headers=token), 200)
        return
    added = await a.post(members, json={"user": "dev", "role": "admin"})
    assert added.status_code == 201, added.text
    assert (await b.get(accounts, headers=token)).status_code == 200
    if change == "demote":
        changed = await a.put(f"{members}/dev", json={"role": "viewer"})
        expected = 403
    else:
        changed = await a.delete(f"{members}/dev")
        expected = 404
    assert changed.status_code == 200, changed.text
    await answers_within(lambda: b.get(accounts, headers=token), expected)


async def test_a_workspaces_grants_change_on_every_replica_within_a_second(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient],
) -> None:
    """A workspace's row is kept too, and the SQL of its grants: a rollout resolved on another
    replica right after the grants changed — by name list or by selector — uses the new ones."""
    a, _, b = replicas
    assert (await a.post("/api/v1/regions", json={"metadata": {"name": "r1"}})).is_success
    for name, tier in (("edge-1", "a"), ("edge-2", "b")):
        body = cluster_body(name, "r1")
        body["metadata"] = {"name": name, "labels": {"tier": tier}}
        registered = await a.post("/api/v1/clusters", json=body)
        assert registered.status_code == 201, registered.text
    workspace = {"metadata": {"name": "team"}, "spec": {"clusters": ["edge-1"]}}
    assert (await a.post("/api/v1/workspaces", json=workspace)).is_success
    application = {"metadata": {"name": "monitoring-stack"}, "spec": {"provisioner": "workload"}}
    assert (await a.post("/api/v1/applications", json=application)).is_success
    version = await a.post("/api/v1/applicationversions", json=workload_version("2.0.0"))
    assert version.status_code == 201, version.text
    b.headers["Authorization"] = a.headers["Authorization"]
    resolve = "/api/v1/workspaces/team/applicationdeployments:resolve"

    async def resolved_clusters() -> list[str]:
        spec = {"applicationVersionRef": "monitoring-stack-v2.0.0", "targets": [{"region": "r1"}]}
        response = await b.post(resolve, json={"spec": spec})
        assert response.status_code == 200, response.text
        return sorted(t["cluster"] for t in response.json()["targets"])

    assert await resolved_clusters() == ["edge-1"]
    for grants, expected in (
        ({"clusters": ["edge-1", "edge-2"]}, ["edge-1", "edge-2"]),
        ({"clusters": [], "clusterSelector": {"matchLabels": {"tier": "b"}}}, ["edge-2"]),
        ({"clusterSelector": {"matchLabels": {"tier": "a"}}}, ["edge-1"]),
        ({"clusterSelector": {"matchLabels": None, "matchExpressions": [  # merge: None drops
            {"key": "tier", "operator": "In", "values": ["a", "b"]}]}}, ["edge-1", "edge-2"]),
    ):  # fmt: skip
        changed = await a.patch("/api/v1/workspaces/team", json={"spec": grants},
                                headers=MERGE_PATCH)  # fmt: skip
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + 1.0
        while (found := await resolved_clusters()) != expected:
            assert time.monotonic() < deadline, f"B still resolves {found} after {grants}"
            await asyncio.sleep(0.01)


async def test_a_password_reset_at_the_machine_ends_the_users_logins_at_once(
    replicas: tuple[httpx.AsyncClient, FastAPI, httpx.AsyncClient], settings: Settings
) -> None:
    """`edge-platform users reset-password` writes to the database from another process; with
    the platform's Redis at hand it tells every replica too."""
    a, b_app, b = replicas
    await create_user(a, "forgetful")
    token = await login(b, "forgetful", PASSWORD)
    assert (await b.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
    assert kept_on(b_app, token)

    engine = create_engine(settings)
    redis = RedisGateway(url=settings.redis_url, addresses=settings.redis_addresses)
    try:
        new = await reset_password(create_sessionmaker(engine), redis, "forgetful", by="cli:test")
    finally:
        await redis.close()
        await engine.dispose()
    assert new is not None

    await answers_within(lambda: b.get("/api/v1/users/me", headers=bearer(token)), 401)
    assert (await b.get("/api/v1/users/me", headers=bearer(await login(b, "forgetful", new)))
            ).status_code == 200  # fmt: skip
