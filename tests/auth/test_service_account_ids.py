"""Service-account client ids are unique by construction: `sa.<workspace>.<name>` and
`sa.<name>` for platform accounts. Names are DNS labels (no dots), so no two accounts in
different scopes can be given one id (the former `sa-<scope>-<name>` could, and the second
account got a 409 about an object its creator could not see)."""

from __future__ import annotations

import httpx

from tests.support.tenancy import create_workspace


async def create_account(
    api: httpx.AsyncClient, workspace: str | None, name: str, role: str
) -> dict[str, str]:
    path = (
        f"/api/v1/workspaces/{workspace}/serviceaccounts"
        if workspace
        else "/api/v1/serviceaccounts"
    )
    response = await api.post(path, json={"metadata": {"name": name}, "spec": {"role": role}})
    assert response.status_code == 201, response.text
    status: dict[str, str] = response.json()["status"]
    return status


async def bearer(api: httpx.AsyncClient, account: dict[str, str]) -> dict[str, str]:
    response = await api.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(account["clientId"], account["clientSecret"]),
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_accounts_whose_old_ids_collided_are_distinct(api: httpx.AsyncClient) -> None:
    await create_workspace(api, "team")
    await create_workspace(api, "team-b")
    # Both were `sa-team-b-deployer`.
    first = await create_account(api, "team", "b-deployer", "admin")
    second = await create_account(api, "team-b", "deployer", "admin")
    assert first["clientId"] == "sa.team.b-deployer"
    assert second["clientId"] == "sa.team-b.deployer"

    first_token, second_token = await bearer(api, first), await bearer(api, second)
    # Each signs in as itself and administers only its own workspace.
    own = await api.get("/api/v1/workspaces/team/serviceaccounts", headers=first_token)
    assert [a["metadata"]["name"] for a in own.json()["items"]] == ["b-deployer"]
    own = await api.get("/api/v1/workspaces/team-b/serviceaccounts", headers=second_token)
    assert [a["metadata"]["name"] for a in own.json()["items"]] == ["deployer"]
    for headers, other in ((first_token, "team-b"), (second_token, "team")):
        response = await api.get(f"/api/v1/workspaces/{other}/serviceaccounts", headers=headers)
        assert response.status_code in (403, 404), response.text


async def test_platform_accounts_cannot_meet_a_workspace_named_platform(
    api: httpx.AsyncClient,
) -> None:
    await create_workspace(api, "platform")
    # Both were `sa-platform-robot`.
    in_workspace = await create_account(api, "platform", "robot", "viewer")
    platform_wide = await create_account(api, None, "robot", "platform-admin")
    assert in_workspace["clientId"] == "sa.platform.robot"
    assert platform_wide["clientId"] == "sa.robot"

    viewer, admin = await bearer(api, in_workspace), await bearer(api, platform_wide)
    assert (await api.get("/api/v1/users", headers=admin)).status_code == 200
    assert (await api.get("/api/v1/users", headers=viewer)).status_code == 403


async def test_the_new_ids_work_as_helm_basic_auth(api: httpx.AsyncClient) -> None:
    account = await create_account(api, None, "helm-reader", "platform-regular")
    bare = httpx.AsyncClient(transport=api._transport, base_url=api.base_url)
    async with bare:
        index = await bare.get(
            "/chartrepo/index.yaml", auth=(account["clientId"], account["clientSecret"])
        )
    assert index.status_code == 200, index.text
