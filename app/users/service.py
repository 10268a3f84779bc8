from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import Actor, AuditTrail, RequestInfo, record
from app.auth.access_cache import announce_after_commit, subject_changed
from app.auth.passwords import hash_secret_async, new_password, verify_secret_async
from app.auth.principal import revoke_sessions, user_subject
from app.cache import ObjectCache
from app.db.session import run_after_commit
from app.errors import Conflict, Forbidden, Unprocessable, invalid_field
from app.kit.resource import validate_as
from app.kit.service import ResourceService
from app.models.users import PLATFORM_ADMIN, User
from app.redis import RedisGateway
from app.users.repository import UserRepository
from app.users.schemas import OwnSpecPatch, UserIn, UserOut, user_out


class UserService(ResourceService[User, UserIn, UserOut]):
    in_model = UserIn

    def __init__(self, session: AsyncSession, sessions: ObjectCache, audit: AuditTrail) -> None:
        super().__init__(session, UserRepository(session), audit=audit)
        self.sessions = sessions  # login-session revocations are published here
        self.actor = audit.actor  # who asks: nobody deletes their own user

    def new_row(self, name: str) -> User:
        return User(name=name)

    async def _keep_an_admin(self, row: User) -> None:
        """Refuse to remove the last enabled platform admin (demote, disable or delete)."""
        others = await self.session.scalar(
            select(func.count()).where(
                User.platform_role == PLATFORM_ADMIN,
                User.disabled.is_(False),
                User.id != row.id,
            )
        )
        if not others:
            raise Conflict(
                f"{row.name!r} is the last enabled platform admin; make another one first",
                code="LastPlatformAdmin",
            )

    async def apply_spec(self, row: User, body: UserIn) -> None:
        spec = body.spec
        losing_admin = (
            row.platform_role == PLATFORM_ADMIN
            and not row.disabled
            and (spec.platformRole != PLATFORM_ADMIN or spec.disabled)
        )
        if row.id is not None and losing_admin:
            await self._keep_an_admin(row)
        row.display_name = spec.displayName
        row.email = spec.email
        row.platform_role = spec.platformRole
        row.disabled = spec.disabled
        if row.id is not None:  # the principal its tokens resolve to may change
            self._announce_changed(row)
        if spec.password is not None:
            row.password_hash = await hash_secret_async(spec.password)
            if row.id is not None:
                # A new password ends every login made with the old one.
                await revoke_sessions(
                    self.session, self.sessions, user_subject(row), "password changed"
                )

    def render(self, row: User) -> UserOut:
        return user_out(row)

    def _announce_changed(self, row: User) -> None:
        announce_after_commit(
            self.session, self.sessions.gateway, subject_changed(user_subject(row))
        )

    async def check_delete(self, row: User) -> None:
        if self.actor.name == row.name:
            raise Conflict("you cannot delete your own user")
        if row.platform_role == PLATFORM_ADMIN and not row.disabled:
            await self._keep_an_admin(row)
        self._announce_changed(row)

    async def patch_own(self, name: str, patch: dict[str, Any], if_match: str | None) -> UserOut:
        """A user's change to their own profile: no role or state changes, and a new password
        only with the current one."""
        spec = patch.get("spec") or {}
        if not isinstance(spec, dict):
            raise invalid_field("spec", "must be an object")
        for field in ("platformRole", "disabled"):
            if field in spec:
                raise Forbidden(f"spec.{field} can only be changed by a platform admin")
        own = validate_as(OwnSpecPatch, spec)
        extra = set(patch) - {"spec", "metadata", "apiVersion", "kind", "status"}
        if extra:
            raise Unprocessable(
                f"unknown fields {sorted(extra)}",
                errors=[{"field": f, "message": "unknown field"} for f in sorted(extra)],
            )
        if own.password is not None:
            row = await self.locked(name)
            if own.oldPassword is None or not await verify_secret_async(
                row.password_hash, own.oldPassword
            ):
                raise Forbidden("changing the password needs the current one in spec.oldPassword")
        spec = {k: v for k, v in spec.items() if k != "oldPassword"}
        metadata = patch.get("metadata")
        cleaned: dict[str, Any] = {"spec": spec}
        if isinstance(metadata, dict) and "resourceVersion" in metadata:
            cleaned["metadata"] = {"resourceVersion": metadata["resourceVersion"]}
        return await self.patch(name, cleaned, if_match)


async def reset_password(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: RedisGateway | None,
    name: str,
    *,
    by: str,
) -> str | None:
    """A new random password for user `name` (None: no such user), for an operator at the
    machine who has lost it: every login made with the old one is revoked in the database and,
    through `redis` when given, in the API's cache and processes at once (without it, the API's
    cache of a login's state lasts a minute); the audit log records who did it."""
    cache = ObjectCache(redis) if redis is not None else None
    async with sessionmaker.begin() as session:
        row = await session.scalar(select(User).where(User.name == name).with_for_update())
        if row is None:
            return None
        password = new_password()
        row.password_hash = await hash_secret_async(password)
        await revoke_sessions(session, cache, user_subject(row), "password reset")
        record(
            session, RequestInfo(source_ip=None, user_agent=None, request_id=None),
            Actor(name=by, kind="operator"), action="reset-password", outcome=200, kind="User",
            name=name,
        )  # fmt: skip
    await run_after_commit(session)  # the revocations reach the API's cache and processes
    return password
