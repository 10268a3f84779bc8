"""Regressions found in review: each of these once gave a wrong answer or a 500."""

from __future__ import annotations

import httpx

from tests.support.clusters import register_fleet
from tests.support.problems import assert_problem
from tests.support.regions import API, region
from tests.support.tenancy import PASSWORD, as_user, create_user, create_workspace


async def test_a_new_password_ends_the_old_logins(api: httpx.AsyncClient) -> None:
    await create_user(api, "erin")
    old = await as_user(api, "erin")
    changed = await api.patch(
        "/api/v1/users/me",
        json={"spec": {"password": "erins-new-password", "oldPassword": PASSWORD}},
        headers={**old, "content-type": "application/merge-patch+json"},
    )
    assert changed.status_code == 200
    assert (await api.get("/api/v1/users/me", headers=old)).status_code == 401
    fresh = await as_user(api, "erin", "erins-new-password")
    assert (await api.get("/api/v1/users/me", headers=fresh)).status_code == 200


async def test_workspace_service_accounts_see_their_workspace_clusters(
    api: httpx.AsyncClient,
) -> None:
    await register_fleet(api)
    await create_user(api, "owner")
    await api.post(
        "/api/v1/workspaces",
        json={"metadata": {"name": "acme"}, "spec": {"clusters": ["shanghai-cluster"]}},
    )
    await create_workspace(api, "globex")  # whose ids collide with acme's account, maybe
    account = (
        await api.post(
            "/api/v1/workspaces/acme/serviceaccounts",
            json={"metadata": {"name": "bot"}, "spec": {"role": "viewer"}},
        )
    ).json()["status"]
    token = await api.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(account["clientId"], account["clientSecret"]),
    )
    bot = {"Authorization": f"Bearer {token.json()['access_token']}"}
    items = (await api.get("/api/v1/clusters", headers=bot)).json()["items"]
    assert [i["metadata"]["name"] for i in items] == ["shanghai-cluster"]
    platform = (
        await api.post(
            "/api/v1/serviceaccounts",
            json={"metadata": {"name": "reader"}, "spec": {"role": "platform-regular"}},
        )
    ).json()["status"]
    token = await api.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(platform["clientId"], platform["clientSecret"]),
    )
    reader = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert (await api.get("/api/v1/clusters", headers=reader)).json()["items"] == []


async def test_nul_characters_are_400(api: httpx.AsyncClient) -> None:
    for response in (
        await api.get(f"{API}/a%00b"),
        await api.get(API, params={"labelSelector": "a=b\x00"}),
        await api.post(API, json=region("ok", displayName="bad\x00name")),
    ):
        assert_problem(response, 400, "NUL")
    login = await api.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "ad\x00min", "password": "x",
              "client_id": "edge-console"},
    )  # fmt: skip
    assert login.status_code == 400
    assert login.json()["error"] == "invalid_request"


async def test_patch_with_non_object_metadata_is_422(api: httpx.AsyncClient) -> None:
    await api.post(API, json=region("east-china"))
    response = await api.patch(
        f"{API}/east-china",
        json={"metadata": "x"},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(response, 422, "metadata")


async def test_changing_the_manager_makes_them_an_admin(api: httpx.AsyncClient) -> None:
    for name in ("first", "second"):
        await create_user(api, name)
    await create_workspace(api, "team", manager="first")
    response = await api.patch(
        "/api/v1/workspaces/team",
        json={"spec": {"manager": "second"}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 200
    members = (await api.get("/api/v1/workspaces/team/members")).json()["items"]
    assert {(m["user"], m["role"]) for m in members} == {("first", "admin"), ("second", "admin")}


async def test_the_last_platform_admin_cannot_be_removed(api: httpx.AsyncClient) -> None:
    """Found by fuzzing: a PUT without platformRole demoted the only admin."""
    demote = await api.put("/api/v1/users/admin", json={"metadata": {"name": "admin"}, "spec": {}})
    assert_problem(demote, 409, "last enabled platform admin")
    disable = await api.patch(
        "/api/v1/users/admin",
        json={"spec": {"disabled": True}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(disable, 409)
    await create_user(api, "second-admin", role="platform-admin")
    demoted = await api.patch(
        "/api/v1/users/second-admin",
        json={"spec": {"platformRole": "platform-regular"}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert demoted.status_code == 200
    assert (await api.get("/api/v1/users/me")).json()["spec"]["platformRole"] == "platform-admin"
