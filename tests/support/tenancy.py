"""Helpers that set up users, workspaces and memberships through the API."""

from __future__ import annotations

import httpx

from tests.support.platform import login

PASSWORD = "member-password-1"


async def create_user(
    admin: httpx.AsyncClient, name: str, role: str = "platform-regular", password: str = PASSWORD
) -> None:
    response = await admin.post(
        "/api/v1/users",
        json={"metadata": {"name": name}, "spec": {"password": password, "platformRole": role}},
    )
    assert response.status_code == 201, response.text


async def create_workspace(admin: httpx.AsyncClient, name: str, manager: str | None = None) -> None:
    spec = {"displayName": name.title()} | ({"manager": manager} if manager else {})
    response = await admin.post(
        "/api/v1/workspaces", json={"metadata": {"name": name}, "spec": spec}
    )
    assert response.status_code == 201, response.text


async def add_member(admin: httpx.AsyncClient, workspace: str, user: str, role: str) -> None:
    response = await admin.post(
        f"/api/v1/workspaces/{workspace}/members", json={"user": user, "role": role}
    )
    assert response.status_code == 201, response.text


async def as_user(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> dict[str, str]:
    """Authorization headers for `name` (the client itself stays signed in as before)."""
    bare = httpx.AsyncClient(transport=client._transport, base_url=client.base_url)
    async with bare:
        token = await login(bare, name, password)
    return {"Authorization": f"Bearer {token}"}
