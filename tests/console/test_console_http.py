"""The console's guards, over plain HTTP (no browser needed): cookies, CSRF, redirects, and
what a user sees when the API is away."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.console.app import create_console_app
from app.console.session import SessionSealer
from tests.conftest import ADMIN_PASSWORD
from tests.console.conftest import SESSION_SECRET, Console
from tests.deployments.conftest import BASE, WORKSPACE
from tests.support.servers import api_server, http_server

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
        sealed = cookie.split(";")[0].removeprefix("edge_console=")
        opened = SessionSealer(SESSION_SECRET).open(sealed)
        assert opened is not None
        assert opened.username == "admin"
        # Sealed, not merely encoded: no part of a token shows, and another key opens nothing.
        encoded = sealed.partition(".")[2]
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        assert opened.access_token.split(".")[1].encode() not in body
        assert SessionSealer("another-console-secret-0123456789abcdef").open(sealed) is None
        assert token != opened.access_token  # a login of its own
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


async def test_refreshed_tokens_are_kept_even_on_an_error_page(console: Console) -> None:
    """The refresh token is spent when used: whatever page was answered (here a 404), the
    cookie must carry the new one, or the next request presents a spent token and the API
    revokes the login. Requests racing the same refresh (a page's calls, the live stream, a
    second tab) share it."""
    short = console.platform.settings.model_copy(update={"access_token_ttl": 2.0})
    async with (
        api_server(short) as api_url,
        plain_client(console, console_api_url=api_url) as client,
    ):
        await signed_in(client)
        await asyncio.sleep(2.5)  # the access token expired; the refresh token lives
        missing = await client.get(f"/w/{WORKSPACE}/deployments/gone")
        assert missing.status_code == 404
        assert "edge_console=" in missing.headers.get("set-cookie", "")
        assert (await client.get("/fleet")).status_code == 200
        await asyncio.sleep(2.5)
        pages = await asyncio.gather(
            *(client.get(path) for path in ("/fleet", "/catalog", f"/w/{WORKSPACE}/deployments"))
        )
        assert [page.status_code for page in pages] == [200, 200, 200]
        assert (await client.get("/fleet")).status_code == 200  # the login was not revoked


async def test_live_stream_refusals_are_statuses_not_broken_streams(console: Console) -> None:
    async with plain_client(console) as client:
        response = await client.get(f"/w/{WORKSPACE}/deployments/missing/stream")
        assert response.status_code == 401  # no session: EventSource stops, the page redirects
        await signed_in(client)
        response = await client.get(f"/w/{WORKSPACE}/deployments/missing/stream")
        assert response.status_code == 404
        for path in (
            f"/w/{WORKSPACE}/deployments/%2E%2E/matrix",
            f"/w/{WORKSPACE}/deployments/%2E%2E/stream",
            f"/w/{WORKSPACE}/deployments/a%20b",
        ):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert "not a valid name" in response.text
        response = await client.get("/w/team-a%2Fx/deployments")  # no such page at all
        assert response.status_code == 404
        assert "Not Found" in response.text


async def test_odd_form_input_is_refused_not_a_crash(console: Console) -> None:
    async with plain_client(console) as client:
        # The sign-in form's token sits in a cookie; a non-ASCII one sent back is refused.
        assert (await client.get("/login")).status_code == 200
        response = await client.post("/login", data={"csrf": "é", "username": "admin"})
        assert response.status_code == 403
        csrf = await signed_in(client)
        response = await client.post(f"/w/{WORKSPACE}/deployments/new", data={"csrf": "é"})
        assert response.status_code == 403
        response = await client.post(
            f"/w/{WORKSPACE}/deployments/x/rollback",
            data={"csrf": csrf, "revision": "²", "confirmed": "yes"},
        )
        assert response.status_code == 422  # the API's answer: revision must be an integer
        assert "revision" in response.text
