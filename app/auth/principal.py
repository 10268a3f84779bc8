"""Who is calling: the bearer token turned into a Principal, and the permission dependencies.

This is the one authorization layer: every route declares what it needs with a dependency from
here; services never check roles themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import AuditTrail, RequestInfo
from app.auth.access_cache import ACCESS_CHANNEL, AccessCache, session_changed
from app.auth.chart_pull import pull_workspace
from app.auth.identity import Principal
from app.auth.passwords import VerifiedSecrets, verify_secret_async
from app.auth.ratelimit import PrincipalSlots, RateLimiter, batch_size
from app.auth.schemes import BEARER, BEARER_OR_BASIC, accepts
from app.auth.tokens import InvalidToken, TokenIssuer
from app.broadcast import publish
from app.cache import ObjectCache
from app.db.session import SessionDep, after_commit
from app.errors import Forbidden, NotFound, Unauthorized
from app.models.auth import TokenFamily
from app.models.serviceaccounts import ServiceAccount
from app.models.users import User
from app.models.workspaces import WORKSPACE_ROLES, Workspace, WorkspaceMember
from app.redis import key as redis_key

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edge-platform"'}
BASIC_CHALLENGE = 'Basic realm="edge-platform"'


def user_subject(user: User) -> str:
    return f"user:{user.uid}"


def service_account_subject(account: ServiceAccount) -> str:
    return f"serviceaccount:{account.uid}"


def _unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers=dict(BEARER_CHALLENGE))


async def session_revoked(session: AsyncSession, cache: ObjectCache, session_id: str) -> bool:
    """Is this login session revoked? PostgreSQL decides; Redis caches the answer."""

    async def load() -> tuple[int, dict[str, Any]] | None:
        try:
            family_id = uuid.UUID(session_id)
        except ValueError:
            return 1, {"revoked": True}
        family = await session.get(TokenFamily, family_id)
        revoked = family is None or family.revoked_at is not None
        return (1 if revoked else 0), {"revoked": revoked}

    state = await cache.get_or_load(redis_key("sessions", session_id, tag=session_id), load)
    return bool(state is None or state["revoked"])


async def revoke_sessions(
    session: AsyncSession, cache: ObjectCache | None, subject: str, reason: str
) -> None:
    """Revoke every live login of `subject`; the cache learns of it after the commit (None:
    there is no cache to tell)."""
    revoked = (
        await session.scalars(
            update(TokenFamily)
            .where(TokenFamily.subject == subject, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=func.now(), revoked_reason=reason)
            .returning(TokenFamily.id)
        )
    ).all()
    if cache is None:
        return
    for family_id in revoked:
        session_id = str(family_id)

        async def publish(session_id: str = session_id) -> None:
            await mark_session_revoked(cache, session_id)

        after_commit(session, publish)


async def mark_session_revoked(cache: ObjectCache, session_id: str) -> None:
    # Version 1 outranks the "valid" entry (version 0), so no replica can put it back.
    await cache.put(redis_key("sessions", session_id, tag=session_id), 1, {"revoked": True})
    # Then every process drops the principal it keeps for the session.
    await publish(cache.gateway, ACCESS_CHANNEL, session_changed(session_id))


def service_account_principal(account: ServiceAccount, session_id: str | None = None) -> Principal:
    """Platform accounts carry a platform role; workspace accounts a role in their workspace."""
    in_workspace = account.workspace_id is not None
    return Principal(
        "serviceaccount",
        account.id,
        account.name,
        None if in_workspace else account.role,
        workspace_id=account.workspace_id,
        workspace_role=account.role if in_workspace else None,
        session_id=session_id,
    )


# Every request runs these: built once, since building a statement costs more than running it
# from SQLAlchemy's statement cache.
_USER_BY_UID = select(User).where(User.uid == bindparam("uid"))
_ACCOUNT_BY_UID = select(ServiceAccount).where(ServiceAccount.uid == bindparam("uid"))
_WORKSPACE_BY_NAME = select(Workspace).where(Workspace.name == bindparam("name"))
_MEMBER_ROLE = select(WorkspaceMember.role).where(
    WorkspaceMember.workspace_id == bindparam("workspace_id"),
    WorkspaceMember.user_id == bindparam("user_id"),
)


async def _load_principal(session: AsyncSession, subject: str, session_id: str) -> Principal:
    kind, _, raw_uid = subject.partition(":")
    try:
        uid = uuid.UUID(raw_uid)
    except ValueError:
        raise _unauthorized("token subject is not recognised") from None
    if kind == "user":
        user = await session.scalar(_USER_BY_UID, {"uid": uid})
        if user is None or user.disabled:
            raise _unauthorized("the user of this token no longer exists or is disabled")
        return Principal("user", user.id, user.name, user.platform_role, session_id=session_id)
    if kind == "serviceaccount":
        account = await session.scalar(_ACCOUNT_BY_UID, {"uid": uid})
        if account is None or account.disabled:
            raise _unauthorized("the service account of this token no longer exists or is disabled")
        return service_account_principal(account, session_id)
    raise _unauthorized("token subject is not recognised")


@accepts(BEARER)
async def authenticate(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    issuer: TokenIssuer = request.app.state.tokens
    try:
        claims = issuer.decode_access(token.strip())
    except InvalidToken:
        raise _unauthorized("the bearer token is invalid or expired") from None
    slots: PrincipalSlots = request.app.state.principal_slots
    await slots.claim(request, claims.subject)  # before the first query takes a connection
    access: AccessCache = request.app.state.access
    principal = access.principal(claims.session_id, claims.subject)
    if principal is None:
        generation = access.generation
        if await session_revoked(session, request.app.state.cache, claims.session_id):
            raise _unauthorized("the bearer token has been revoked")
        principal = await _load_principal(session, claims.subject, claims.session_id)
        access.put_principal(claims.session_id, principal, claims.subject, generation)
    request.state.principal = principal
    limiter: RateLimiter = request.app.state.rate_limiter
    limit = limiter.api_per_minute
    await limiter.check(f"api:{principal.kind}:{principal.id}", limit, batch=batch_size(limit))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def require_platform_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_platform_admin:
        raise Forbidden("this needs the platform-admin role")
    return principal


PlatformAdmin = Annotated[Principal, Depends(require_platform_admin)]


@dataclass(frozen=True)
class WorkspaceAccess:
    workspace: Workspace
    principal: Principal
    role: str  # the caller's effective role: viewer | operator | admin


async def _workspace_access(
    request: Request, ws: str, principal: CurrentPrincipal, session: SessionDep
) -> WorkspaceAccess:
    access: AccessCache = request.app.state.access
    generation = access.generation
    workspace = access.workspace(ws)
    if workspace is None:
        workspace = await session.scalar(_WORKSPACE_BY_NAME, {"name": ws})
        if workspace is None:
            raise _no_workspace(ws)
        session.expunge(workspace)  # shared from now on: read only
        access.put_workspace(workspace, generation)
    if principal.is_platform_admin:
        return WorkspaceAccess(workspace, principal, "admin")
    if principal.kind == "serviceaccount":
        if principal.workspace_id != workspace.id or principal.workspace_role is None:
            raise _no_workspace(ws)
        return WorkspaceAccess(workspace, principal, principal.workspace_role)
    known, role = access.member_role(workspace, principal.id)
    if not known:
        role = await session.scalar(
            _MEMBER_ROLE, {"workspace_id": workspace.id, "user_id": principal.id}
        )
        access.put_member_role(workspace, principal.id, role, generation)
    if role is None:
        raise _no_workspace(ws)  # exactly as a missing workspace: no existence leak
    return WorkspaceAccess(workspace, principal, role)


def _no_workspace(name: str) -> NotFound:
    return NotFound(f"Workspace {name!r} not found")


def workspace_role(minimum: str) -> Any:
    """Dependency: the caller is a member of `{ws}` with at least `minimum`
    (viewer < operator < admin); non-members get 404, members below it 403."""
    needed = WORKSPACE_ROLES.index(minimum)

    async def check(
        access: Annotated[WorkspaceAccess, Depends(_workspace_access)],
    ) -> WorkspaceAccess:
        if WORKSPACE_ROLES.index(access.role) < needed:
            raise Forbidden(
                f"this needs the {minimum} role in workspace {access.workspace.name!r}; "
                f"you are {access.role}"
            )
        return access

    return Depends(check)


WorkspaceViewer = Annotated[WorkspaceAccess, workspace_role("viewer")]
WorkspaceOperator = Annotated[WorkspaceAccess, workspace_role("operator")]
WorkspaceAdmin = Annotated[WorkspaceAccess, workspace_role("admin")]


def audit_trail(request: Request, principal: Principal, workspace: str | None = None) -> AuditTrail:
    return AuditTrail(RequestInfo.of(request), principal.actor, workspace)


# A secret Helm sends again and again is checked with argon2 once per this many seconds.
BASIC_VERIFIED_SECONDS = 300.0
_verified_basic = VerifiedSecrets(ttl=BASIC_VERIFIED_SECONDS, capacity=10_000)
_ACCOUNT_BY_CLIENT_ID = select(ServiceAccount).where(
    ServiceAccount.client_id == bindparam("client_id")
)


async def _limit_secret_checks(request: Request, client_id: str) -> None:
    """Count a secret check against the caller's address and the client id it names, before
    anything is looked up or hashed: 429 past either limit."""
    limiter: RateLimiter = request.app.state.rate_limiter
    limit = request.app.state.settings.rate_limit_secret_checks_per_minute
    address = request.client.host if request.client else "unknown"
    await limiter.check(f"secret-checks-ip:{address}", limit)
    named = hashlib.sha256(client_id.encode()).hexdigest()[:32]  # the caller's text: keep it short
    await limiter.check(f"secret-checks-client:{named}", limit)


async def _basic_principal(request: Request, client_id: str, secret: str) -> Principal:
    matched_hash = _verified_basic.matched_hash(client_id, secret)
    if matched_hash is None:
        await _limit_secret_checks(request, client_id)
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    # A session of its own, closed before the hash: its connection is back in the pool while
    # argon2 runs (or waits for a slot).
    async with sessionmaker() as lookup:
        account = await lookup.scalar(_ACCOUNT_BY_CLIENT_ID, {"client_id": client_id})
    stored_hash = account.secret_hash if account else None
    ok = matched_hash is not None and matched_hash == stored_hash
    if not ok:
        # A remembered secret whose account has another hash now is checked once more, and
        # from then on counted like any other.
        _verified_basic.forget(client_id, secret)
        ok = await verify_secret_async(stored_hash, secret)
        if ok and stored_hash is not None:
            _verified_basic.remember(client_id, secret, stored_hash)
    if account is None or not ok or account.disabled:
        raise Unauthorized(
            "invalid service account credentials",
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )
    # The account's own slots, shared with its bearer tokens; guesses take none of them.
    slots: PrincipalSlots = request.app.state.principal_slots
    await slots.claim(request, service_account_subject(account))
    return service_account_principal(account)


@accepts(BEARER_OR_BASIC)
async def authenticate_bearer_or_basic(request: Request, session: SessionDep) -> Principal:
    """For clients that only speak basic auth (Helm's repository client): a service account's
    client id and secret, or else a bearer token as everywhere else."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        try:
            return await authenticate(request, session)
        except Unauthorized as refused:
            # Both challenges, so that Helm (Basic only) knows to send its credentials.
            refused.headers = {
                "WWW-Authenticate": f"{BEARER_CHALLENGE['WWW-Authenticate']}, {BASIC_CHALLENGE}"
            }
            raise
    try:
        client_id, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("malformed basic credentials") from None
    if not sep:
        raise _unauthorized("malformed basic credentials")
    workspace = pull_workspace(request.app.state.secrets, client_id, secret)
    if workspace is not None:  # an edge cluster's helm-controller fetching a chart: read only
        principal = Principal(kind="chartpull", id=0, name=client_id, platform_role=None)
    else:
        principal = await _basic_principal(request, client_id, secret)
    request.state.principal = principal
    return principal


HelmClient = Annotated[Principal, Depends(authenticate_bearer_or_basic)]


async def require_helm_admin(principal: HelmClient) -> Principal:
    if not principal.is_platform_admin:
        raise Forbidden("this needs the platform-admin role")
    return principal
