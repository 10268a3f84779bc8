"""The token endpoint and the JWT attack set: every forged or stale token is a 401."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.auth.tokens import AUDIENCE, LEEWAY_SECONDS, InvalidToken, TokenIssuer
from app.config import Settings
from tests.support.platform import ADMIN_PASSWORD, JWT_SECRET, authenticated, running_app

TOKEN = "/oauth/token"
PROTECTED = "/api/v1/regions"


def password_form(username: str = "admin", password: str = ADMIN_PASSWORD) -> dict[str, str]:
    return {
        "grant_type": "password",
        "username": username,
        "password": password,
        "client_id": "edge-console",
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_rejected(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get(PROTECTED, headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_password_grant(api: httpx.AsyncClient) -> None:
    response = await api.post(TOKEN, data=password_form())
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"].startswith("ert_")
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"exp", "iat", "iss", "aud", "sub", "sid", "jti"} <= claims.keys()
    assert claims["aud"] == "edge-platform"
    ok = await api.get(PROTECTED, headers=bearer(body["access_token"]))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (password_form(password="wrong"), 400, "invalid_grant"),
        (password_form(username="nobody"), 400, "invalid_grant"),
        ({**password_form(), "client_id": "stranger"}, 401, "invalid_client"),
        ({"grant_type": "implicit"}, 400, "unsupported_grant_type"),
        ({"username": "admin"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "ert_nope"}, 400, "invalid_grant"),
        ({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}, 401,
         "invalid_client"),
    ],
)  # fmt: skip
async def test_token_errors_follow_rfc6749(
    api: httpx.AsyncClient, form: dict[str, str], status: int, error: str
) -> None:
    response = await api.post(TOKEN, data=form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "error_description" in response.json()


async def test_token_endpoint_needs_a_form(api: httpx.AsyncClient) -> None:
    response = await api.post(TOKEN, json=password_form())
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _forge(claims: dict[str, object], key: str | bytes = JWT_SECRET, **kw: object) -> str:
    return jwt.encode(claims, key, algorithm=kw.pop("algorithm", "HS256"), **kw)  # type: ignore[arg-type]


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_jwt_attack_set(api: httpx.AsyncClient) -> None:
    real = (await api.post(TOKEN, data=password_form())).json()["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    now = int(time.time())

    # alg: none
    header = _b64({"alg": "none", "typ": "JWT"})
    await assert_rejected(api, f"{header}.{_b64(claims)}.")
    # expired (beyond the 30 s leeway)
    await assert_rejected(api, _forge({**claims, "exp": now - 120, "iat": now - 4000}))
    # no exp
    await assert_rejected(api, _forge({k: v for k, v in claims.items() if k != "exp"}))
    # wrong audience, wrong issuer
    await assert_rejected(api, _forge({**claims, "aud": "someone-else"}))
    await assert_rejected(api, _forge({**claims, "iss": "https://evil.example"}))
    # unknown kid
    await assert_rejected(api, _forge(claims, headers={"kid": "other-key"}))
    # signed with another secret
    await assert_rejected(api, _forge(claims, key="another-secret-that-is-long-enough-1234"))
    # tampered payload, original signature
    head, _, signature = real.split(".")
    tampered = {**claims, "sub": "user:00000000-0000-0000-0000-000000000000"}
    await assert_rejected(api, f"{head}.{_b64(tampered)}.{signature}")
    # garbage
    await assert_rejected(api, "not-a-jwt")
    # the real one still works
    assert (await api.get(PROTECTED, headers=bearer(real))).status_code == 200


async def test_a_token_verified_once_is_refused_once_it_expires(
    standalone_settings: Settings,
) -> None:
    """Verified tokens are remembered (a client sends the same one on every request); the
    memory must not outlive the token."""
    issuer = TokenIssuer(standalone_settings)
    now = int(time.time())
    claims = {"iss": standalone_settings.public_url, "aud": AUDIENCE, "sub": "user:x", "sid": "s",
              "iat": now - 100, "exp": now - LEEWAY_SECONDS + 2}  # fmt: skip
    token = jwt.encode(claims, JWT_SECRET, "HS256")
    assert issuer.decode_access(token).subject == "user:x"  # within the leeway: accepted
    assert issuer.decode_access(token).subject == "user:x"  # remembered
    await asyncio.sleep(3)
    with pytest.raises(InvalidToken, match="expired"):
        issuer.decode_access(token)


async def test_revoked_token_stays_revoked(api: httpx.AsyncClient) -> None:
    tokens = (await api.post(TOKEN, data=password_form())).json()
    assert (await api.get(PROTECTED, headers=bearer(tokens["access_token"]))).status_code == 200
    revoked = await api.post("/oauth/revoke", data={"token": tokens["access_token"]})
    assert revoked.status_code == 200
    await assert_rejected(api, tokens["access_token"])
    refreshed = await api.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_revocation_survives_a_redis_flush(
    app_client: tuple[object, httpx.AsyncClient], settings: Settings
) -> None:
    _, client = app_client
    tokens = (await client.post(TOKEN, data=password_form())).json()
    await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]})
    from tests.support.platform import flush_redis

    await flush_redis(settings)  # as a Redis restart without persistence would
    await assert_rejected(client, tokens["access_token"])


async def test_refresh_rotation_and_reuse_detection(api: httpx.AsyncClient) -> None:
    first = (await api.post(TOKEN, data=password_form())).json()
    second = (
        await api.post(
            TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
    ).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await api.get(PROTECTED, headers=bearer(second["access_token"]))).status_code == 200

    replay = await api.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # The whole family is dead: the newest refresh token and every access token of the login.
    after = await api.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    )
    assert after.json()["error"] == "invalid_grant"
    await assert_rejected(api, second["access_token"])
    await assert_rejected(api, first["access_token"])
    # Other logins are unaffected.
    assert (await api.get(PROTECTED)).status_code == 200


async def test_rs256_keys_jwks_and_key_confusion(
    standalone_settings: Settings, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = standalone_settings.model_copy(update={"jwt_private_key_file": key_file})
    async with running_app(settings) as (_, client):
        keys = (await client.get("/oauth/jwks")).json()["keys"]
        assert len(keys) == 1
        assert keys[0]["alg"] == "RS256"
        assert "d" not in keys[0]  # public part only
        discovery = (await client.get("/.well-known/openid-configuration")).json()
        assert discovery["jwks_uri"].endswith("/oauth/jwks")

        token = (await client.post(TOKEN, data=password_form())).json()["access_token"]
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "RS256", "kid": keys[0]["kid"], "typ": "JWT"}
        assert (await client.get(PROTECTED, headers=bearer(token))).status_code == 200

        # HS256 "signed" with the public key: the classic algorithm-confusion forgery.
        claims = jwt.decode(token, options={"verify_signature": False})
        forged_header = _b64({"alg": "HS256", "typ": "JWT", "kid": keys[0]["kid"]})
        import hashlib
        import hmac

        signing_input = f"{forged_header}.{_b64(claims)}".encode()
        signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
        forged = (
            signing_input.decode()
            + "."
            + (base64.urlsafe_b64encode(signature).decode().rstrip("="))
        )
        await assert_rejected(client, forged)
        await authenticated(client)
        assert (await client.get("/oauth/userinfo")).json()["preferred_username"] == "admin"
