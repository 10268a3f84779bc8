"""Who may do what: every route needs a token, tenants never see each other (404), roles
limit writes (403), and bodies cannot assign what the caller may not set."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from tests.support.tenancy import PASSWORD, add_member, as_user, create_user, create_workspace

PUBLIC = {
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/metrics",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/jwks",
    "/oauth/authorize",  # starts a login
    "/oauth/callback",  # completes a login
    "/.well-known/openid-configuration",
    "/api/v1/agent/join",  # an edge agent's first call: the join token in its body is the proof
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


async def test_every_api_route_requires_a_token(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, signed_in = app_client
    anonymous = httpx.AsyncClient(transport=signed_in._transport, base_url=signed_in.base_url)
    checked = 0
    async with anonymous:
        for template, operations in app.openapi()["paths"].items():
            if template in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", "x", template)
            for method in operations:
                response = await anonymous.request(method.upper(), path, json={})
                assert response.status_code == 401, (method, template, response.text)
                checked += 1
    assert checked >= 30


@pytest.fixture
async def tenants(api: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """Workspace a (a user of each role) and workspace b (its own admin); a regular user."""
    for name in ("a-admin", "a-operator", "a-viewer", "b-admin", "loner"):
        await create_user(api, name)
    await create_workspace(api, "team-a", manager="a-admin")
    await create_workspace(api, "team-b", manager="b-admin")
    await add_member(api, "team-a", "a-operator", "operator")
    await add_member(api, "team-a", "a-viewer", "viewer")
    return {
        name: await as_user(api, name) for name in ("a-admin", "a-operator", "a-viewer", "loner")
    }


WORKSPACE_B_CALLS = [
    ("GET", "/api/v1/workspaces/team-b", None),
    ("GET", "/api/v1/workspaces/team-b/members", None),
    ("GET", "/api/v1/workspaces/team-b/members/b-admin", None),
    ("POST", "/api/v1/workspaces/team-b/members", {"user": "loner", "role": "viewer"}),
    ("PUT", "/api/v1/workspaces/team-b/members/b-admin", {"role": "viewer"}),
    ("DELETE", "/api/v1/workspaces/team-b/members/b-admin", None),
    ("GET", "/api/v1/workspaces/team-b/serviceaccounts", None),
    ("POST", "/api/v1/workspaces/team-b/serviceaccounts",
     {"metadata": {"name": "bot"}, "spec": {"role": "viewer"}}),
    ("GET", "/api/v1/auditlogs?workspace=team-b", None),
]  # fmt: skip


@pytest.mark.parametrize("caller", ["a-admin", "a-operator", "a-viewer", "loner"])
async def test_other_workspaces_look_missing(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]], caller: str
) -> None:
    for method, path, body in WORKSPACE_B_CALLS:
        response = await api.request(method, path, json=body, headers=tenants[caller])
        assert response.status_code == 404, (caller, method, path, response.text)
        missing = await api.request(
            method, path.replace("team-b", "team-zzz"), json=body, headers=tenants[caller]
        )
        # Exactly as a workspace that does not exist: same status, same shape.
        assert missing.status_code == 404
        assert response.json()["code"] == missing.json()["code"]
    listed = await api.get("/api/v1/workspaces", headers=tenants[caller])
    names = {item["metadata"]["name"] for item in listed.json()["items"]}
    assert "team-b" not in names
    assert names == (set() if caller == "loner" else {"team-a"})
    # Nothing changed in team-b.
    members = (await api.get("/api/v1/workspaces/team-b/members")).json()["items"]
    assert [(m["user"], m["role"]) for m in members] == [("b-admin", "admin")]


@pytest.mark.parametrize("caller", ["a-operator", "a-viewer"])
async def test_workspace_writes_need_the_admin_role(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]], caller: str
) -> None:
    headers = tenants[caller]
    for method, path, body in (
        ("POST", "/api/v1/workspaces/team-a/members", {"user": "loner", "role": "admin"}),
        ("PUT", "/api/v1/workspaces/team-a/members/a-viewer", {"role": "admin"}),
        ("DELETE", "/api/v1/workspaces/team-a/members/a-admin", None),
        ("POST", "/api/v1/workspaces/team-a/serviceaccounts",
         {"metadata": {"name": "bot"}, "spec": {"role": "admin"}}),
        ("PATCH", "/api/v1/workspaces/team-a", {"spec": {"clusters": ["x"]}}),
        ("DELETE", "/api/v1/workspaces/team-a", None),
    ):  # fmt: skip
        response = await api.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (caller, method, path, response.text)
    # Reads are fine for every member.
    assert (await api.get("/api/v1/workspaces/team-a", headers=headers)).status_code == 200
    members = await api.get("/api/v1/workspaces/team-a/members", headers=headers)
    assert len(members.json()["items"]) == 3


async def test_workspace_admin_manages_members(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    headers = tenants["a-admin"]
    added = await api.post(
        "/api/v1/workspaces/team-a/members", json={"user": "loner", "role": "viewer"},
        headers=headers,
    )  # fmt: skip
    assert added.status_code == 201
    promoted = await api.put(
        "/api/v1/workspaces/team-a/members/loner", json={"role": "operator"}, headers=headers
    )
    assert promoted.json()["role"] == "operator"
    loner = await as_user(api, "loner")
    assert (await api.get("/api/v1/workspaces/team-a", headers=loner)).status_code == 200
    removed = await api.delete("/api/v1/workspaces/team-a/members/loner", headers=headers)
    assert removed.status_code == 200
    assert (await api.get("/api/v1/workspaces/team-a", headers=loner)).status_code == 404


PLATFORM_ADMIN_CALLS = [
    ("POST", "/api/v1/regions", {"metadata": {"name": "r"}}),
    ("PUT", "/api/v1/regions/r", {"metadata": {"name": "r"}}),
    ("DELETE", "/api/v1/regions/r", None),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"metadata": {"name": "u"}, "spec": {}}),
    ("GET", "/api/v1/users/admin", None),
    ("DELETE", "/api/v1/users/admin", None),
    ("POST", "/api/v1/workspaces", {"metadata": {"name": "w"}, "spec": {}}),
    ("GET", "/api/v1/serviceaccounts", None),
    ("POST", "/api/v1/serviceaccounts",
     {"metadata": {"name": "s"}, "spec": {"role": "platform-admin"}}),
    ("GET", "/api/v1/auditlogs", None),
]  # fmt: skip


async def test_regular_users_cannot_use_platform_admin_routes(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    for caller in ("loner", "a-admin"):
        for method, path, body in PLATFORM_ADMIN_CALLS:
            response = await api.request(method, path, json=body, headers=tenants[caller])
            assert response.status_code == 403, (caller, method, path, response.text)
    assert (await api.get("/api/v1/regions", headers=tenants["loner"])).status_code == 200


async def test_users_cannot_raise_their_own_role(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    headers = {**tenants["loner"], "content-type": "application/merge-patch+json"}
    for spec in ({"platformRole": "platform-admin"}, {"disabled": True}):
        response = await api.patch("/api/v1/users/me", json={"spec": spec}, headers=headers)
        assert response.status_code == 403, response.text
    me = await api.patch(
        "/api/v1/users/me",
        json={
            "spec": {"displayName": "Lone Ranger"},
            "status": {"lastLoginTime": None, "identityProvider": "forged"},
            "metadata": {"uid": "forged", "generation": 100, "workspace": "team-a"},
        },
        headers=headers,
    )
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["spec"]["platformRole"] == "platform-regular"
    assert body["spec"]["displayName"] == "Lone Ranger"
    assert body["status"]["identityProvider"] is None
    assert body["metadata"]["uid"] != "forged"
    assert body["metadata"]["workspace"] is None
    assert "password" not in body["spec"]


async def test_password_change_needs_the_old_password(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    headers = {**tenants["loner"], "content-type": "application/merge-patch+json"}
    new = "a-brand-new-password"
    for spec in ({"password": new}, {"password": new, "oldPassword": "wrong"}):
        response = await api.patch("/api/v1/users/me", json={"spec": spec}, headers=headers)
        assert response.status_code == 403
    changed = await api.patch(
        "/api/v1/users/me", json={"spec": {"password": new, "oldPassword": PASSWORD}},
        headers=headers,
    )  # fmt: skip
    assert changed.status_code == 200
    assert await as_user(api, "loner", new)
    old = await api.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "loner", "password": PASSWORD,
              "client_id": "edge-console"},
    )  # fmt: skip
    assert old.status_code == 400


async def test_disabled_user_is_locked_out_at_once(
    api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    headers = tenants["loner"]
    assert (await api.get("/api/v1/users/me", headers=headers)).status_code == 200
    disabled = await api.patch(
        "/api/v1/users/loner", json={"spec": {"disabled": True}},
        headers={"content-type": "application/merge-patch+json"},
    )  # fmt: skip
    assert disabled.status_code == 200
    assert (await api.get("/api/v1/users/me", headers=headers)).status_code == 401


async def test_service_accounts(api: httpx.AsyncClient, tenants: dict[str, dict[str, str]]) -> None:
    created = await api.post(
        "/api/v1/workspaces/team-a/serviceaccounts",
        json={"metadata": {"name": "ci-bot"}, "spec": {"role": "viewer"}},
        headers=tenants["a-admin"],
    )
    assert created.status_code == 201, created.text
    status = created.json()["status"]
    client_id, secret = status["clientId"], status["clientSecret"]
    assert secret
    read = await api.get(
        "/api/v1/workspaces/team-a/serviceaccounts/ci-bot", headers=tenants["a-admin"]
    )
    assert read.json()["status"]["clientSecret"] is None  # shown once only

    token = await api.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert token.status_code == 200, token.text
    assert "refresh_token" not in token.json()
    bot = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (await api.get("/api/v1/workspaces/team-a/members", headers=bot)).status_code == 200
    assert (await api.get("/api/v1/workspaces/team-b", headers=bot)).status_code == 404
    denied = await api.post(
        "/api/v1/workspaces/team-a/members", json={"user": "loner", "role": "admin"}, headers=bot
    )
    assert denied.status_code == 403
    wrong = await api.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                              "client_secret": "nope"},
    )  # fmt: skip
    assert wrong.status_code == 401
    bad_role = await api.post(
        "/api/v1/workspaces/team-a/serviceaccounts",
        json={"metadata": {"name": "x"}, "spec": {"role": "platform-admin"}},
        headers=tenants["a-admin"],
    )
    assert bad_role.status_code == 422
