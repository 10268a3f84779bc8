"""The OAuth 2.0 token endpoint's grants, revocation, and the login lockout."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, RequestInfo, record
from app.auth.oidc import ExternalIdentity
from app.auth.passwords import MAX_PASSWORD_LENGTH, hashing_slot, verify_secret_async
from app.auth.principal import mark_session_revoked, service_account_subject, user_subject
from app.auth.tokens import (
    REFRESH_PREFIX,
    InvalidToken,
    TokenIssuer,
    hash_refresh_token,
    new_refresh_token,
)
from app.cache import ObjectCache
from app.config import Settings
from app.db.base import resource_version_seq
from app.db.session import after_commit
from app.models.audit import AuditLog
from app.models.auth import RefreshToken, TokenFamily
from app.models.serviceaccounts import ServiceAccount
from app.models.users import User

CLI_CLIENT_ID = "edge-cli"
LOGIN_ACTION = "login"


@dataclass
class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    error: str
    description: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    expires_in: int
    refresh_token: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.refresh_token:
            body["refresh_token"] = self.refresh_token
        return body


def _now() -> datetime:
    return datetime.now(UTC)


class TokenService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        issuer: TokenIssuer,
        cache: ObjectCache,
        info: RequestInfo,
    ) -> None:
        self.session = session
        self.settings = settings
        self.issuer = issuer
        self.cache = cache
        self.info = info

    @property
    def public_clients(self) -> set[str]:
        return {self.settings.oauth_client_id, CLI_CLIENT_ID}

    async def _start_session(self, subject: str, client_id: str) -> TokenFamily:
        family = TokenFamily(
            id=uuid.uuid4(),
            subject=subject,
            client_id=client_id,
            expires_at=_now() + timedelta(seconds=self.issuer.refresh_ttl),
        )
        self.session.add(family)
        await self.session.flush()
        return family

    async def _issue(
        self, family: TokenFamily, claims: dict[str, Any], *, with_refresh: bool
    ) -> TokenResponse:
        access = self.issuer.issue_access(
            subject=family.subject, session_id=family.id, client_id=family.client_id, claims=claims
        )
        refresh = None
        if with_refresh:
            refresh, digest = new_refresh_token()
            self.session.add(
                RefreshToken(
                    family_id=family.id,
                    token_hash=digest,
                    expires_at=min(
                        family.expires_at, _now() + timedelta(seconds=self.issuer.refresh_ttl)
                    ),
                )
            )
        return TokenResponse(access, self.issuer.access_ttl, refresh)

    # password -------------------------------------------------------------------------------

    async def _recent_failures(self, username: str) -> tuple[int, datetime | None]:
        since = _now() - timedelta(seconds=self.settings.login_lockout_window)
        count, oldest = (
            await self.session.execute(
                select(func.count(), func.min(AuditLog.time)).where(
                    AuditLog.actor == username,
                    AuditLog.action == LOGIN_ACTION,
                    AuditLog.outcome == 401,
                    AuditLog.time > since,
                )
            )
        ).one()
        return int(count), oldest

    def _login_record(self, username: str, outcome: int, detail: str) -> None:
        record(
            self.session,
            self.info,
            Actor(username[:255], "user"),
            action=LOGIN_ACTION,
            outcome=outcome,
            kind="User",
            name=username[:253],
            detail=detail,
        )

    async def _refuse_locked_out(self, username: str) -> None:
        failures, oldest = await self._recent_failures(username)
        if failures >= self.settings.login_lockout_failures and oldest is not None:
            unlock = oldest + timedelta(seconds=self.settings.login_lockout_window)
            retry_after = max(1, int((unlock - _now()).total_seconds()) + 1)
            self._login_record(username, 429, "locked after repeated failed logins")
            raise OAuthError(
                "invalid_grant",
                f"too many failed logins; try again in {retry_after} seconds",
                429,
                {"Retry-After": str(retry_after)},
            )

    async def password_grant(self, username: str, password: str, client_id: str) -> TokenResponse:
        if client_id not in self.public_clients:
            raise OAuthError("invalid_client", f"unknown client {client_id!r}", 401)
        if not username or not password or len(password) > MAX_PASSWORD_LENGTH:
            raise OAuthError("invalid_request", "username and password are required")
        # The hashing slot before the first query: a login waiting for one holds no database
        # connection, and every login takes slot, then lock, in that order.
        async with hashing_slot():
            # One login attempt per user name at a time, so parallel guesses cannot all slip
            # under the lockout threshold (the lock ends with the transaction).
            await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtext(username))))
            await self._refuse_locked_out(username)
            user = await self.session.scalar(select(User).where(User.name == username))
            stored_hash = user.password_hash if user else None
            password_ok = await verify_secret_async(stored_hash, password)
        if user is None or not password_ok or user.disabled:
            self._login_record(username, 401, "bad credentials or disabled user")
            raise OAuthError("invalid_grant", "invalid username or password")
        user.last_login_time = _now()
        self._login_record(username, 200, f"password grant, client {client_id}")
        family = await self._start_session(user_subject(user), client_id)
        return await self._issue(family, {"preferred_username": user.name}, with_refresh=True)

    # external OpenID Connect login ---------------------------------------------------------

    async def external_login(self, identity: ExternalIdentity) -> TokenResponse:
        """Link the issuer's user to a platform user by (issuer, subject), creating it on its
        first login, and issue platform tokens."""
        user = await self.session.scalar(
            select(User).where(
                User.identity_provider == identity.issuer,
                User.external_subject == identity.subject,
            )
        )
        if user is None:
            user = await self._provision(identity)
        if user.disabled:
            self._login_record(user.name, 401, f"disabled user, issuer {identity.issuer}")
            raise OAuthError("access_denied", "this user is disabled", 403)
        user.last_login_time = _now()
        self._login_record(user.name, 200, f"OIDC login, issuer {identity.issuer}")
        family = await self._start_session(user_subject(user), self.settings.oauth_client_id)
        return await self._issue(family, {"preferred_username": user.name}, with_refresh=True)

    async def _provision(self, identity: ExternalIdentity) -> User:
        claims = identity.claims
        wanted = str(
            claims.get("preferred_username") or str(claims.get("email", "")).split("@")[0] or "user"
        )
        base = re.sub(r"[^a-z0-9-]+", "-", wanted.lower()).strip("-")[:50] or "user"
        name = base
        if await self.session.scalar(select(User.id).where(User.name == name)) is not None:
            # Never take over an existing local user: a suffix from the subject keeps them apart.
            suffix = hashlib.sha256(f"{identity.issuer} {identity.subject}".encode()).hexdigest()
            name = f"{base}-{suffix[:8]}"
        version = int(await self.session.scalar(resource_version_seq.next_value()))
        email = claims.get("email")
        user = User(
            name=name,
            resource_version=version,
            display_name=str(claims.get("name") or name)[:253],
            email=str(email)[:320] if email else None,
            identity_provider=identity.issuer,
            external_subject=identity.subject,
            labels={},
            annotations={},
        )
        self.session.add(user)
        await self.session.flush()
        return user

    # refresh_token ----------------------------------------------------------------------------

    async def refresh_grant(self, token: str, client_id: str) -> TokenResponse:
        if not token.startswith(REFRESH_PREFIX):
            raise OAuthError("invalid_grant", "refresh token is invalid")
        stored = await self.session.scalar(
            select(RefreshToken)
            .where(RefreshToken.token_hash == hash_refresh_token(token))
            .with_for_update()
        )
        if stored is None or stored.expires_at <= _now():
            raise OAuthError("invalid_grant", "refresh token is invalid or expired")
        family = await self.session.get(TokenFamily, stored.family_id, with_for_update=True)
        if family is None or family.revoked_at is not None:
            raise OAuthError("invalid_grant", "refresh token has been revoked")
        if client_id and client_id != family.client_id:
            raise OAuthError("invalid_grant", "refresh token was issued to another client")
        if stored.used_at is not None:
            # A rotated token came back: it was stolen, or a client kept a copy. Either way,
            # end the whole login so neither holder can go on.
            await self.revoke_family(family, "refresh token reuse")
            raise OAuthError("invalid_grant", "refresh token was already used; session revoked")
        stored.used_at = _now()
        claims = await self._claims_for(family.subject)
        if claims is None:
            raise OAuthError("invalid_grant", "the user is disabled or no longer exists")
        return await self._issue(family, claims, with_refresh=True)

    async def _claims_for(self, subject: str) -> dict[str, Any] | None:
        kind, _, uid = subject.partition(":")
        if kind != "user":
            return {}
        user = await self.session.scalar(select(User).where(User.uid == uuid.UUID(uid)))
        if user is None or user.disabled:
            return None
        return {"preferred_username": user.name}

    # client_credentials ----------------------------------------------------------------------

    async def client_credentials_grant(self, client_id: str, secret: str) -> TokenResponse:
        async with hashing_slot():  # before the lookup, as for a password
            account = await self.session.scalar(
                select(ServiceAccount).where(ServiceAccount.client_id == client_id)
            )
            ok = await verify_secret_async(account.secret_hash if account else None, secret)
        if account is None or not ok or account.disabled:
            record(
                self.session, self.info, Actor(client_id[:255], "serviceaccount"),
                action=LOGIN_ACTION, outcome=401, kind="ServiceAccount", name=client_id[:253],
                detail="bad client credentials or disabled account",
            )  # fmt: skip
            raise OAuthError(
                "invalid_client",
                "client authentication failed",
                401,
                {"WWW-Authenticate": 'Basic realm="edge-platform"'},
            )
        record(
            self.session, self.info, Actor(account.name, "serviceaccount"), action=LOGIN_ACTION,
            outcome=200, kind="ServiceAccount", name=account.name, detail="client_credentials",
        )  # fmt: skip
        family = await self._start_session(service_account_subject(account), client_id)
        return await self._issue(family, {}, with_refresh=False)

    # revocation ------------------------------------------------------------------------------

    async def revoke_family(self, family: TokenFamily, reason: str) -> None:
        await self.session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family.id, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=_now(), revoked_reason=reason)
        )
        session_id = str(family.id)
        cache = self.cache

        async def publish() -> None:
            await mark_session_revoked(cache, session_id)

        after_commit(self.session, publish)

    async def revoke(self, token: str) -> None:
        """RFC 7009: revoke the login session a token belongs to; unknown tokens are ignored."""
        family: TokenFamily | None = None
        if token.startswith(REFRESH_PREFIX):
            stored = await self.session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(token))
            )
            if stored is not None:
                family = await self.session.get(TokenFamily, stored.family_id)
        else:
            try:
                claims = self.issuer.decode_access(token)
                family = await self.session.get(TokenFamily, uuid.UUID(claims.session_id))
            except (InvalidToken, ValueError):
                family = None
        if family is not None:
            await self.revoke_family(family, "revoked by client")
