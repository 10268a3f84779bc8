"""Login through an external OpenID Connect issuer: authorization code + PKCE.

`state`, `nonce` and the PKCE verifier are kept in Redis for ten minutes and used once. The
issuer's discovery document and JWKS are cached and refetched when a token names an unknown
key. ID tokens are validated with a pinned list of asymmetric algorithms.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from app.auth.tokens import LEEWAY_SECONDS
from app.config import Settings
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

STATE_TTL_SECONDS = 600
METADATA_TTL_SECONDS = 3600
ID_TOKEN_ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# A discovery document, a JWKS or a token answer is a few KiB; more is not read.
MAX_ANSWER_BYTES = 1024 * 1024


class OIDCError(Exception):
    """The login cannot complete; `error` is an RFC 6749 code, the message says why."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class ExternalIdentity:
    issuer: str
    subject: str
    claims: dict[str, Any]


async def _bounded_request(method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    """(status, body) of one request to the issuer. A redirect is an answer, not followed (as
    httpx does by default; said here so that it stays so). A body past MAX_ANSWER_BYTES, as
    declared or as it comes in (decompressed), is not read: OIDCError."""
    too_large = OIDCError(
        "temporarily_unavailable", "the identity provider's answer is larger than 1 MiB", 503
    )
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client,
        client.stream(method, url, **kwargs) as response,
    ):
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise too_large
        answer = bytearray()
        async for chunk in response.aiter_bytes():
            answer += chunk
            if len(answer) > MAX_ANSWER_BYTES:
                raise too_large
        return response.status_code, bytes(answer)


class OIDCClient:
    def __init__(self, settings: Settings, redis: RedisGateway) -> None:
        assert settings.oauth_issuer is not None
        self.issuer = settings.oauth_issuer
        self.client_id = settings.oauth_client_id
        self.client_secret = settings.oauth_client_secret
        self.redirect_uri = f"{settings.public_url}/oauth/callback"
        self._redis = redis
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: dict[str, Any] | None = None

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            status, answer = await _bounded_request("GET", url)
            if not 200 <= status <= 299:
                raise OIDCError(
                    "temporarily_unavailable", f"the identity provider answered {status}", 503
                )
            data = json.loads(answer)
            if not isinstance(data, dict):
                raise ValueError("the answer is not a JSON object")
        except (httpx.HTTPError, ValueError) as exc:
            raise OIDCError(
                "temporarily_unavailable", f"the identity provider did not answer: {exc}", 503
            ) from exc
        return data

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL_SECONDS:
            document = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if document.get("issuer", "").rstrip("/") != self.issuer:
                raise OIDCError(
                    "server_error", "the issuer's discovery document names another issuer", 502
                )
            self._metadata, self._metadata_at = document, time.monotonic()
            self._jwks = None
        return self._metadata

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        for refresh in (False, True):
            if self._jwks is None or refresh:
                self._jwks = await self._get_json((await self.metadata())["jwks_uri"])
            for candidate in self._jwks.get("keys", []):
                if kid is None or candidate.get("kid") == kid:
                    return jwt.PyJWK(candidate)
        raise OIDCError("invalid_grant", f"the ID token names an unknown key {kid!r}")

    def _state_key(self, state: str) -> str:
        return redis_key("oidc-state", state, tag=f"oidc:{state}")

    async def authorization_url(self, redirect_uri: str | None = None) -> str:
        """The issuer's login page; it sends the browser back to `redirect_uri` (the API's
        callback unless the console asks for its own, which the caller has checked)."""
        redirect_uri = redirect_uri or self.redirect_uri
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        pending = json.dumps({"nonce": nonce, "verifier": verifier, "redirect": redirect_uri})
        try:
            await self._redis.run(
                lambda c: c.set(self._state_key(state), pending, ex=STATE_TTL_SECONDS)
            )
        except RedisUnavailable as exc:
            raise OIDCError(
                "temporarily_unavailable", "login state cannot be kept right now; retry", 503
            ) from exc
        endpoint = (await self.metadata())["authorization_endpoint"]
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}?{query}"

    async def _take_state(self, state: str) -> dict[str, str]:
        async def take(client: RedisClient) -> Any:
            return await client.getdel(self._state_key(state))

        try:
            raw = await self._redis.run(take)
        except RedisUnavailable as exc:
            raise OIDCError("temporarily_unavailable", "login state is unavailable", 503) from exc
        if raw is None:
            raise OIDCError("invalid_request", "unknown or expired state; start the login again")
        stored: dict[str, str] = json.loads(raw)
        return stored

    async def complete(self, code: str, state: str) -> ExternalIdentity:
        """Exchange the code and validate the ID token (signature, iss, aud, nonce, expiry)."""
        pending = await self._take_state(state)
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            # The one the login began with (RFC 6749 4.1.3: it must match).
            "redirect_uri": pending.get("redirect", self.redirect_uri),
            "code_verifier": pending["verifier"],
            "client_id": self.client_id,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            status, answer = await _bounded_request("POST", metadata["token_endpoint"], data=form)
        except httpx.HTTPError as exc:
            raise OIDCError(
                "temporarily_unavailable", "the identity provider did not answer", 503
            ) from exc
        if status != 200:
            raise OIDCError("invalid_grant", "the identity provider refused the code")
        try:
            tokens = json.loads(answer)
        except ValueError:
            tokens = None
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            raise OIDCError("invalid_grant", "the identity provider returned no ID token")
        try:
            header = jwt.get_unverified_header(id_token)
            key = await self._signing_key(header.get("kid"))
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=ID_TOKEN_ALGORITHMS,
                audience=self.client_id,
                issuer=metadata["issuer"],
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OIDCError("invalid_grant", f"the ID token is not valid: {exc}") from exc
        if claims.get("nonce") != pending["nonce"]:
            raise OIDCError("invalid_grant", "the ID token's nonce does not match this login")
        return ExternalIdentity(self.issuer, str(claims["sub"]), claims)
