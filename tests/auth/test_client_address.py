"""The client address the token endpoint's limit and the audit log count a request by: a
browser address the console names is believed only with the console's proof; claiming one
without it neither evades the limit nor pushes someone else into it."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from app.client_address import ADDRESS_HEADER, PROOF_HEADER, forwarding_headers
from app.config import Settings
from tests.support.platform import authenticated, running_app

SECRET = "console-forwarding-test-secret-0123456789abcdef"
LIMIT = 3  # token requests per address and minute


@contextlib.asynccontextmanager
async def connected_from(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connection comes from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def wrong_password(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> int:
    """A sign-in with a new user name each time (the per-user lockout never comes into it)."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": f"nobody-{uuid.uuid4().hex[:8]}",
              "password": "wrong", "client_id": "edge-console"},
        headers=headers or {},
    )  # fmt: skip
    return response.status_code


def forged(address: str) -> dict[str, str]:
    """A claim made with another secret than the console's."""
    return forwarding_headers("not-the-consoles-secret-0123456789abcdef", address)


async def test_forged_client_addresses_count_against_the_real_one(
    standalone_settings: Settings,
) -> None:
    settings = standalone_settings.model_copy(
        update={"rate_limit_token_per_minute": LIMIT, "console_forwarding_secret": SECRET}
    )
    async with running_app(settings) as (app, _):
        # Evading: a new claimed address on every request does not reset the count.
        async with connected_from(app, "192.0.2.10") as evader:
            claims = [
                forged("198.51.100.10"),
                {ADDRESS_HEADER: "198.51.100.20"},  # no proof at all
                {ADDRESS_HEADER: "198.51.100.21", PROOF_HEADER: "garbage"},
                forged("198.51.100.22"),
            ]
            assert [await wrong_password(evader, claim) for claim in claims] == [
                400, 400, 400, 429,
            ]  # fmt: skip
        # Framing: claims of someone else's address use up the claimant's own budget.
        async with connected_from(app, "192.0.2.20") as framer:
            assert [await wrong_password(framer, forged("192.0.2.30")) for _ in range(4)] == [
                400, 400, 400, 429,
            ]  # fmt: skip
        async with connected_from(app, "192.0.2.30") as victim:
            assert await wrong_password(victim) == 400
        # A genuine proof from long ago (a captured one, replayed) is not believed either.
        async with connected_from(app, "192.0.2.40") as replayer:
            stale = forwarding_headers(SECRET, "198.51.100.40", now=time.time() - 3600)
            assert [await wrong_password(replayer, stale) for _ in range(4)] == [
                400, 400, 400, 429,
            ]  # fmt: skip


async def test_the_consoles_proof_makes_the_browser_address_count(
    standalone_settings: Settings,
) -> None:
    settings = standalone_settings.model_copy(
        update={"rate_limit_token_per_minute": LIMIT, "console_forwarding_secret": SECRET}
    )
    async with running_app(settings) as (app, _):
        async with connected_from(app, "10.0.0.5") as console:  # the console's pod
            for_browser = [forwarding_headers(SECRET, "203.0.113.7") for _ in range(LIMIT + 1)]
            assert [await wrong_password(console, h) for h in for_browser] == [
                400, 400, 400, 429,
            ]  # fmt: skip
            # Another browser, and the console's own address, are not held back by that one.
            assert await wrong_password(console, forwarding_headers(SECRET, "203.0.113.8")) == 400
            # The console's own address (where a claim that is no address at all counts too).
            own = [None, forwarding_headers(SECRET, "not-an-ip"), None, None]
            assert [await wrong_password(console, h) for h in own] == [400, 400, 400, 429]
        async with connected_from(app, "192.0.2.99") as admin:
            await authenticated(admin)
            logins = (
                await admin.get("/api/v1/auditlogs", params={"limit": 100})
            ).json()["items"]  # fmt: skip
        sources = [entry["sourceIP"] for entry in logins if entry["action"] == "login"]
        # The refused requests never reached the login: three per address were audited.
        assert sources.count("203.0.113.7") == LIMIT
        assert sources.count("203.0.113.8") == 1
        assert sources.count("10.0.0.5") == LIMIT


async def test_an_api_without_the_secret_believes_no_claim(standalone_settings: Settings) -> None:
    settings = standalone_settings.model_copy(update={"rate_limit_token_per_minute": LIMIT})
    assert settings.console_forwarding_secret is None
    async with running_app(settings) as (app, _), connected_from(app, "10.0.0.6") as console:
        claims = [forwarding_headers(SECRET, f"203.0.113.{n}") for n in range(LIMIT + 1)]
        assert [await wrong_password(console, claim) for claim in claims] == [
            400, 400, 400, 429,
        ]  # fmt: skip
