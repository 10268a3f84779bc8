"""OAuth 2.0 endpoints (RFC 6749 token, RFC 7009 revoke), userinfo and discovery documents."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select

from app.audit.service import RequestInfo
from app.auth.oidc import OIDCClient, OIDCError
from app.auth.principal import CurrentPrincipal
from app.auth.ratelimit import RateLimiter
from app.auth.service import OAuthError, TokenService
from app.client_address import client_address
from app.config import Settings
from app.db.session import SessionDep, TransactionDep
from app.errors import NotFound
from app.kit.body import media_type
from app.models.users import User

router = APIRouter(tags=["auth"])

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {
                            "type": "string",
                            "enum": ["password", "refresh_token", "client_credentials"],
                        },
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "refresh_token": {"type": "string"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string", "format": "password"},
                        "scope": {"type": "string"},
                    },
                    "required": ["grant_type"],
                }
            }
        },
    }
}


def _oauth_error(error: OAuthError) -> JSONResponse:
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers={**NO_STORE, **error.headers},
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return unquote(client_id), unquote(secret)


async def _form(request: Request) -> dict[str, str]:
    if media_type(request) != FORM:
        raise OAuthError("invalid_request", f"the body must be {FORM}")
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if any("\x00" in v for v in values.values()):
        raise OAuthError("invalid_request", "NUL characters are not accepted")
    return values


def _token_service(request: Request, session: SessionDep) -> TokenService:
    return TokenService(
        session,
        request.app.state.settings,
        request.app.state.tokens,
        request.app.state.cache,
        RequestInfo.of(request),
    )


# RFC 6749 §5.2: token endpoint errors are JSON `{error, error_description}`; the platform's
# own refusals before the handler (rate limits, body size) stay problem+json.
_OAUTH_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/json": {"schema": _OAUTH_ERROR_SCHEMA},
            "application/problem+json": {},
        },
    }
    for status, description in (
        (400, "OAuth error (invalid_request, invalid_grant, unsupported_grant_type, …)"),
        (401, "OAuth error: invalid_client"),
        (403, "OAuth error: access_denied"),
        (404, "External login is not configured"),
        (502, "The external issuer failed"),
    )
}


@router.post(
    "/oauth/token", operation_id="createToken", openapi_extra=_FORM_BODY, responses=OAUTH_ERRORS
)
async def token(request: Request, session: SessionDep) -> JSONResponse:
    """Issue tokens. Failures answer with RFC 6749 error bodies and are still audited."""
    limiter: RateLimiter = request.app.state.rate_limiter
    client_ip = client_address(request) or "unknown"
    await limiter.check(f"token-ip:{client_ip}", limiter.token_per_minute)
    service = _token_service(request, session)
    try:
        form = await _form(request)
        basic = _basic_credentials(request)
        client_id = basic[0] if basic else form.get("client_id", "")
        grant = form.get("grant_type")
        if grant == "password":
            result = await service.password_grant(
                form.get("username", ""), form.get("password", ""), client_id
            )
        elif grant == "refresh_token":
            result = await service.refresh_grant(form.get("refresh_token", ""), client_id)
        elif grant == "client_credentials":
            secret = basic[1] if basic else form.get("client_secret", "")
            result = await service.client_credentials_grant(client_id, secret)
        elif grant is None:
            raise OAuthError("invalid_request", "grant_type is required")
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    except OAuthError as error:
        return _oauth_error(error)  # a response, not an exception: the audit record commits
    return JSONResponse(result.body(), headers=NO_STORE)


def _oidc(request: Request) -> OIDCClient:
    client: OIDCClient | None = request.app.state.oidc
    if client is None:
        raise NotFound("external login is not configured (set OAUTH_ISSUER)")
    return client


@router.get(
    "/oauth/authorize",
    operation_id="startExternalLogin",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {"description": "Redirect to the external OpenID Connect issuer"},
        **OAUTH_ERRORS,
    },
)
async def authorize(request: Request, redirect_uri: str | None = None) -> Response:
    """`redirect_uri`, when given, must be the console's callback (CONSOLE_PUBLIC_URL): the
    console then completes the login itself and keeps the tokens from the browser."""
    settings: Settings = request.app.state.settings
    if redirect_uri is not None and redirect_uri != settings.console_oidc_redirect():
        return _oauth_error(
            OAuthError("invalid_request", "redirect_uri is not the console's callback")
        )
    try:
        url = await _oidc(request).authorization_url(redirect_uri)
    except OIDCError as error:
        return _oauth_error(OAuthError(error.error, error.description, error.status))
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/oauth/callback", operation_id="completeExternalLogin", responses=OAUTH_ERRORS)
async def callback(
    request: Request, session: TransactionDep, code: str = "", state: str = "", error: str = ""
) -> JSONResponse:
    """The issuer sends the browser back here; answers with platform tokens."""
    client = _oidc(request)
    service = _token_service(request, session)
    try:
        if error:
            raise OAuthError("access_denied", f"the identity provider answered {error!r}")
        if not code or not state:
            raise OAuthError("invalid_request", "code and state are required")
        try:
            identity = await client.complete(code, state)
        except OIDCError as failure:
            raise OAuthError(failure.error, failure.description, failure.status) from failure
        result = await service.external_login(identity)
    except OAuthError as failure:
        return _oauth_error(failure)
    return JSONResponse(result.body(), headers=NO_STORE)


@router.post("/oauth/revoke", operation_id="revokeToken", responses=OAUTH_ERRORS)
async def revoke(request: Request, session: SessionDep) -> JSONResponse:
    try:
        form = await _form(request)
    except OAuthError as error:
        return _oauth_error(error)
    await _token_service(request, session).revoke(form.get("token", ""))
    return JSONResponse({}, headers=NO_STORE)  # RFC 7009: 200 whether or not it was known


@router.get("/oauth/userinfo", operation_id="getUserInfo")
async def userinfo(principal: CurrentPrincipal, session: SessionDep) -> dict[str, Any]:
    if principal.kind != "user":
        return {"sub": principal.name, "kind": principal.kind}
    user = await session.scalar(select(User).where(User.id == principal.id))
    assert user is not None  # authenticate() just loaded it
    return {
        "sub": str(user.uid),
        "preferred_username": user.name,
        "name": user.display_name,
        "email": user.email,
        "platform_role": user.platform_role,
    }


@router.get("/.well-known/openid-configuration", operation_id="getOpenIDConfiguration")
async def openid_configuration(request: Request) -> dict[str, Any]:
    base = request.app.state.settings.public_url
    return {
        "issuer": base,
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "id_token_signing_alg_values_supported": [request.app.state.tokens.key.algorithm],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }


@router.get("/oauth/jwks", operation_id="getJWKS")
async def jwks(request: Request) -> dict[str, Any]:
    """Public keys for RS256/ES256 tokens; empty when tokens are HS256 (a shared secret)."""
    result: dict[str, Any] = request.app.state.tokens.jwks()
    return result
