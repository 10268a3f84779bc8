"""Login through an external OpenID Connect issuer (`oidc-provider-mock`, a real OpenID
provider server on loopback): authorization code + PKCE, state, nonce and ID token checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from oidc_provider_mock import run_server_in_thread

from app.config import Settings
from app.redis import key as redis_key
from tests.support.platform import running_app
from tests.support.tenancy import create_user


@pytest.fixture(scope="session")
def issuer() -> Iterator[str]:
    with run_server_in_thread(require_nonce=True) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
async def oidc_app(
    standalone_settings: Settings, issuer: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = standalone_settings.model_copy(
        update={
            "oauth_issuer": issuer,
            "oauth_client_secret": "console-secret-for-tests-0123456789",
        }
    )
    async with running_app(settings) as pair:
        yield pair


async def sign_in_at_issuer(client: httpx.AsyncClient, subject: str) -> dict[str, str]:
    """Follow /oauth/authorize to the issuer, sign in there, return the callback's query."""
    start = await client.get("/oauth/authorize")
    assert start.status_code == 302, start.text
    location = start.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["nonce"][0]
    async with httpx.AsyncClient() as browser:
        consent = await browser.post(location, data={"sub": subject})
    assert consent.status_code in (302, 303), consent.text
    callback = urlsplit(consent.headers["location"])
    assert callback.path == "/oauth/callback"
    return {k: v[0] for k, v in parse_qs(callback.query).items()}


async def test_login_round_trip_provisions_and_links_the_user(
    oidc_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = oidc_app
    params = await sign_in_at_issuer(client, "alice@example.com")
    tokens = await client.get("/oauth/callback", params=params)
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200
    user = me.json()
    assert user["metadata"]["name"] == "alice"
    assert user["spec"]["email"] == "alice@example.com"
    assert user["spec"]["platformRole"] == "platform-regular"
    assert user["status"]["identityProvider"].startswith("http://localhost:")

    # The callback cannot be replayed: its state was used up.
    replay = await client.get("/oauth/callback", params=params)
    assert replay.status_code == 400
    assert "state" in replay.json()["error_description"]

    # A second login links to the same user.
    again = await client.get(
        "/oauth/callback", params=await sign_in_at_issuer(client, "alice@example.com")
    )
    token = again.json()["access_token"]
    me_again = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me_again.json()["metadata"]["uid"] == user["metadata"]["uid"]


async def test_bad_state_and_replayed_code(oidc_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = oidc_app
    first = await sign_in_at_issuer(client, "bob@example.com")
    assert (await client.get("/oauth/callback", params=first)).status_code == 200

    forged = await client.get("/oauth/callback", params={**first, "state": "made-up"})
    assert forged.status_code == 400
    assert forged.json()["error"] == "invalid_request"

    # A fresh, valid state with the code that was already redeemed.
    second = await sign_in_at_issuer(client, "bob@example.com")
    replayed = await client.get("/oauth/callback", params={**second, "code": first["code"]})
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"


async def test_wrong_nonce_is_refused(oidc_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = oidc_app
    params = await sign_in_at_issuer(client, "carol@example.com")
    state_key = redis_key("oidc-state", params["state"], tag=f"oidc:{params['state']}")
    stored = json.loads(await app.state.redis.run(lambda c: c.get(state_key)))
    stored["nonce"] = "some-other-login"
    await app.state.redis.run(lambda c: c.set(state_key, json.dumps(stored)))
    refused = await client.get("/oauth/callback", params=params)
    assert refused.status_code == 400
    assert "nonce" in refused.json()["error_description"]


async def test_an_external_user_never_takes_over_a_local_one(
    oidc_app: tuple[FastAPI, httpx.AsyncClient], api: httpx.AsyncClient
) -> None:
    _, client = oidc_app
    await create_user(api, "dave", role="platform-admin")
    params = await sign_in_at_issuer(client, "dave@example.com")
    token = (await client.get("/oauth/callback", params=params)).json()["access_token"]
    me = (await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["metadata"]["name"].startswith("dave-")
    assert me["spec"]["platformRole"] == "platform-regular"


async def test_external_login_not_configured(api: httpx.AsyncClient) -> None:
    response = await api.get("/oauth/authorize")
    assert response.status_code == 404
