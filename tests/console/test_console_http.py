"""The console's guards, over plain HTTP (no browser needed): cookies, CSRF, redirects, and
what a user sees when the API is away."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.console.app import create_console_app
from tests.conftest import ADMIN_PASSWORD
from tests.console.conftest import SESSION_SECRET, Console
from tests.deployments.conftest import BASE, WORKSPACE
from tests.support.servers import http_server

# httpx, like browsers elsewhere than localhost, sends no Secure cookie over plain HTTP: these
# tests talk to a console whose cookies are not marked Secure, except the one about the flags.


@contextlib.asynccontextmanager
async def plain_client(console: Console, **updates: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = console.platform.settings.model_copy(
        update={"console_api_url": console.api_url, "console_cookie_secure": False} | updates
    )
    async with (
        http_server(create_console_app(settings, secret=SESSION_SECRET)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name!r} field"
    return found.group(1)


async def signed_in(client: httpx.AsyncClient) -> str:
    """Sign in as admin; returns the session's CSRF token (as its forms carry it)."""
    form = await client.get("/login")
    response = await client.post(
        "/login",
        data={"csrf": hidden(form.text, "csrf"), "next": "/fleet", "username": "admin",
              "password": ADMIN_PASSWORD},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/fleet"
    page = await client.get(f"/w/{WORKSPACE}/deployments")
    assert page.status_code == 200
    return hidden(page.text, "csrf")


async def test_session_cookie_is_httponly_secure_samesite_and_opaque(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url) as client:
        form = await client.get("/login")
        login_cookie = form.headers["set-cookie"]
        assert "HttpOnly" in login_cookie
        assert "SameSite=strict" in login_cookie
        response = await client.post(
            "/login",
            data={"csrf": hidden(form.text, "csrf"), "username": "admin",
                  "password": ADMIN_PASSWORD},
            headers={"Cookie": login_cookie.split(";")[0]},
        )  # fmt: skip
        assert response.status_code == 303
        cookie = next(
            v for k, v in response.headers.multi_items()
            if k == "set-cookie" and v.startswith("edge_console=")
        )  # fmt: skip
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= flags
        token = (await console.platform.client.post(
            "/oauth/token",
            data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD,
                  "client_id": "edge-console"},
        )).json()["access_token"]  # fmt: skip
        assert token.split(".")[0] not in cookie  # tokens are sealed, not merely encoded
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-frame-options"] == "DENY"


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(console: Console) -> None:
    async with plain_client(console) as client:
        csrf = await signed_in(client)
        body = {"name": "forged", "version": "monitoring-stack-v2.0.0",
                "clusters": "east-china/shanghai-cluster", "action": "save"}  # fmt: skip
        for token in ("", "not-the-token"):
            response = await client.post(
                f"/w/{WORKSPACE}/deployments/new", data=body | {"csrf": token}
            )
            assert response.status_code == 403
            assert "not sent from this console" in response.text
        assert (await console.platform.client.get(f"{BASE}/forged")).status_code == 404
        # The same form with the token goes through.
        response = await client.post(f"/w/{WORKSPACE}/deployments/new", data=body | {"csrf": csrf})
        assert response.status_code == 303, response.text
        assert (await console.platform.client.get(f"{BASE}/forged")).status_code == 200
        # Signing out needs it too (a page elsewhere cannot sign the user out).
        assert (await client.post("/logout", data={"csrf": "x"})).status_code == 403


async def test_sign_in_form_is_protected_and_never_redirects_elsewhere(console: Console) -> None:
    async with plain_client(console) as client:
        response = await client.post(
            "/login", data={"csrf": "guess", "username": "admin", "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 403
        assert "edge_console=" not in response.headers.get("set-cookie", "")
        form = await client.get("/login")
        response = await client.post(
            "/login",
            data={"csrf": hidden(form.text, "csrf"), "username": "admin", "password": "wrong"},
        )
        assert response.status_code == 401
        assert "Wrong username or password." in response.text
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
            form = await client.get("/login", params={"next": target})
            response = await client.post(
                "/login",
                data={"csrf": hidden(form.text, "csrf"), "next": target, "username": "admin",
                      "password": ADMIN_PASSWORD},
            )  # fmt: skip
            assert response.headers["location"] == "/fleet", target


async def test_a_tampered_cookie_means_signing_in_again(console: Console) -> None:
    async with plain_client(console) as client:
        await signed_in(client)
        sealed = client.cookies["edge_console"]
        client.cookies.set("edge_console", sealed[:-6] + "AAAAAA", domain="127.0.0.1")
        response = await client.get("/fleet")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Ffleet"


async def test_api_unreachable_is_a_page_that_says_so(console: Console) -> None:
    # Nothing listens on port 9 of loopback.
    async with plain_client(console, console_api_url="http://127.0.0.1:9") as client:
        form = await client.get("/login")
        response = await client.post(
            "/login",
            data={"csrf": hidden(form.text, "csrf"), "username": "admin",
                  "password": ADMIN_PASSWORD},
        )  # fmt: skip
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "The platform API is unreachable" in response.text
