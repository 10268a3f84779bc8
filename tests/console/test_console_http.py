"""The console's guards, over plain HTTP (no browser needed): cookies, CSRF, redirects, what a
user sees when the API is away, and how far one user's sign-ins and live pages can get in
another's way."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.console.app import STREAMS_PER_USER
from app.console.session import SessionSealer
from tests.support.console import (
    SESSION_SECRET,
    Console,
    console_server,
    hidden,
    plain_client,
    signed_in,
)
from tests.support.deployments import BASE, EXAMPLE_YAML, WORKSPACE
from tests.support.platform import ADMIN_PASSWORD
from tests.support.servers import api_server
from tests.support.tenancy import PASSWORD, add_member, create_user

# httpx, like browsers elsewhere than localhost, sends no Secure cookie over plain HTTP: these
# tests talk to a console whose cookies are not marked Secure, except the one about the flags.


@contextlib.asynccontextmanager
async def browser_at(url: str, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser connecting from `address` (all of 127.0.0.0/8 is this machine's loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        yield client


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


@pytest.mark.slow
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


FORWARDING_SECRET = "console-forwarding-test-secret-0123456789abcdef"


async def audit_log(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = (await admin.get("/api/v1/auditlogs", params=params)).json()
        entries.extend(page["items"])
        if not page["metadata"].get("continue"):
            return entries
        params["continue"] = page["metadata"]["continue"]


@pytest.mark.slow
async def test_wrong_passwords_from_one_browser_leave_other_browsers_signing_in(
    console: Console,
) -> None:
    """The API allows 60 token requests per client address and minute. Through the console,
    that is per browser: one browser's failed sign-ins (here past the limit) hold back that
    browser, and the audit log names it, while a user elsewhere signs in at once."""
    limit = 60
    strict = console.platform.settings.model_copy(
        update={
            "rate_limit_token_per_minute": limit,
            "console_forwarding_secret": FORWARDING_SECRET,
        }
    )
    async with (
        api_server(strict) as api_url,
        console_server(
            console, console_api_url=api_url, console_forwarding_secret=FORWARDING_SECRET
        ) as url,
        browser_at(url, "127.0.0.2") as guesser,
        browser_at(url, "127.0.0.3") as colleague,
    ):
        page = await guesser.get("/login")
        statuses: list[int] = []
        # Until the first refusal. The window slides: when the guesses straddle a minute's
        # boundary, the last minute's share of the earlier ones shrinks as they go on, and a
        # few more than `limit` may get through before the first 429.
        while 429 not in statuses and len(statuses) < 2 * limit:
            page = await guesser.post(
                "/login",
                data={"csrf": hidden(page.text, "csrf"), "username": f"x-{uuid.uuid4().hex[:8]}",
                      "password": "guess"},
            )  # fmt: skip
            statuses.append(page.status_code)
        failures = len(statuses) - 1
        assert statuses == [401] * failures + [429]
        assert limit <= failures < 2 * limit
        assert "rate limit" in page.text

        assert await signed_in(colleague)  # as admin, from another address: not held back

        entries = await audit_log(console.platform.client)
        failed = [e for e in entries if e["action"] == "login" and e["outcome"] == 401]
        assert len(failed) == failures
        assert {e["sourceIP"] for e in failed} == {"127.0.0.2"}


async def test_one_user_holding_the_most_live_pages_leaves_others_theirs(
    console: Console,
) -> None:
    created = await console.platform.client.post(
        BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    await create_user(console.platform.client, "bob")
    await add_member(console.platform.client, WORKSPACE, "bob", "viewer")
    live = f"/w/{WORKSPACE}/deployments/cross-region-app/stream"
    async with (
        console_server(console) as url,
        browser_at(url, "127.0.0.2") as admin,
        browser_at(url, "127.0.0.3") as bob,
        contextlib.AsyncExitStack() as held,
    ):
        await signed_in(admin)
        await signed_in(bob, "bob", PASSWORD)
        streams = [
            await held.enter_async_context(admin.stream("GET", live))
            for _ in range(STREAMS_PER_USER)
        ]
        assert [s.status_code for s in streams] == [200] * STREAMS_PER_USER
        refused = await admin.get(live)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert f"You have {STREAMS_PER_USER} live pages open" in refused.text
        async with bob.stream("GET", live) as bobs:
            assert bobs.status_code == 200
            assert bobs.headers["content-type"].startswith("text/event-stream")
        # Closing a page gives its stream back.
        await streams.pop().aclose()
        for _ in range(50):
            async with admin.stream("GET", live) as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert again.status_code == 200
