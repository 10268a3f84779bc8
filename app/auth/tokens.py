"""Access tokens (JWT) and refresh tokens.

Validation pins the algorithm from configuration, never from the token header, and requires
`exp`, `iat`, `iss`, `aud` and `sub`, with 30 s of leeway for clock skew.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.config import ConfigError, Settings

AUDIENCE = "edge-platform"
LEEWAY_SECONDS = 30
REFRESH_PREFIX = "ert_"


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (logged, not returned in detail)."""


@dataclass(frozen=True)
class SigningKey:
    algorithm: str
    signing_key: Any
    verifying_key: Any
    kid: str | None
    public_jwk: dict[str, Any] | None


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, used as the key id."""
    members = {k: jwk[k] for k in ("crv", "e", "kty", "n", "x", "y") if k in jwk}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def load_signing_key(settings: Settings) -> SigningKey:
    if settings.jwt_private_key_file is not None:
        try:
            pem = settings.jwt_private_key_file.read_bytes()
            private = serialization.load_pem_private_key(pem, password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"JWT_PRIVATE_KEY_FILE: cannot load a PEM private key: {exc}"
            ) from exc
        public = private.public_key()
        if isinstance(private, rsa.RSAPrivateKey):
            algorithm = "RS256"
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        elif isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
            algorithm = "ES256"
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        else:
            raise ConfigError("JWT_PRIVATE_KEY_FILE: use an RSA key or an EC P-256 key")
        kid = _thumbprint(jwk)
        jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
        return SigningKey(algorithm, private, public, kid, jwk)
    if not settings.jwt_secret:
        raise ConfigError("JWT_SECRET must be set (or JWT_PRIVATE_KEY_FILE)")
    return SigningKey("HS256", settings.jwt_secret, settings.jwt_secret, None, None)


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    session_id: str
    client_id: str
    token_id: str
    expires_at: int


# Access tokens verified lately, kept with their claims: a client sends the same token on every
# request, and checking its signature and claims again was a tenth of a request's CPU. A token
# is a pure function of its claims and the key, so only its expiry can change the answer.
VERIFIED_CAPACITY = 4096


class TokenIssuer:
    def __init__(self, settings: Settings) -> None:
        self.key = load_signing_key(settings)
        self.issuer = settings.public_url
        self.access_ttl = int(settings.access_token_ttl)
        self.refresh_ttl = int(settings.refresh_token_ttl)
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def issue_access(
        self, *, subject: str, session_id: uuid.UUID, client_id: str, claims: dict[str, Any]
    ) -> str:
        now = int(time.time())
        payload = {
            **claims,
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
            "sid": str(session_id),
            "client_id": client_id,
        }
        headers = {"kid": self.key.kid} if self.key.kid else None
        return jwt.encode(payload, self.key.signing_key, self.key.algorithm, headers=headers)

    def decode_access(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() <= claims.expires_at + LEEWAY_SECONDS:
                return claims
            del self._verified[token]  # expired: decoding it again says so
        claims = self._decode_access(token)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CAPACITY:
            self._verified.popitem(last=False)  # the oldest verified
        return claims

    def _decode_access(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self.key.kid:
                raise InvalidToken(f"unknown key id {header.get('kid')!r}")
            claims = jwt.decode(
                token,
                self.key.verifying_key,
                algorithms=[self.key.algorithm],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        try:
            return AccessClaims(
                subject=str(claims["sub"]),
                session_id=str(claims["sid"]),
                client_id=str(claims.get("client_id", "")),
                token_id=str(claims.get("jti", "")),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken("token lacks platform claims") from exc

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.public_jwk] if self.key.public_jwk else []}


def new_refresh_token() -> tuple[str, str]:
    """A refresh token and the hash that is stored (the token itself never is)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
