from __future__ import annotations

from typing import Any

from app.auth.passwords import hash_secret, verify_secret
from app.errors import Conflict, Forbidden, Unprocessable
from app.kit.resource import validate_as
from app.kit.service import ResourceService
from app.users.models import User
from app.users.schemas import OwnSpecPatch, UserIn, UserOut, user_out


class UserService(ResourceService[User, UserIn, UserOut]):
    in_model = UserIn

    def new_row(self, name: str) -> User:
        return User(name=name)

    async def apply_spec(self, row: User, body: UserIn) -> None:
        spec = body.spec
        row.display_name = spec.displayName
        row.email = spec.email
        row.platform_role = spec.platformRole
        row.disabled = spec.disabled
        if spec.password is not None:
            row.password_hash = hash_secret(spec.password)

    def render(self, row: User) -> UserOut:
        return user_out(row)

    async def check_delete(self, row: User) -> None:
        if self.audit is not None and self.audit.actor.name == row.name:
            raise Conflict("you cannot delete your own user")

    async def patch_own(self, name: str, patch: dict[str, Any], if_match: str | None) -> UserOut:
        """A user's change to their own profile: no role or state changes, and a new password
        only with the current one."""
        spec = patch.get("spec") or {}
        if not isinstance(spec, dict):
            raise Unprocessable(
                "spec: must be an object",
                errors=[{"field": "spec", "message": "must be an object"}],
            )
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
            row = await self._locked(name)
            if own.oldPassword is None or not verify_secret(row.password_hash, own.oldPassword):
                raise Forbidden("changing the password needs the current one in spec.oldPassword")
        spec = {k: v for k, v in spec.items() if k != "oldPassword"}
        metadata = patch.get("metadata")
        cleaned: dict[str, Any] = {"spec": spec}
        if isinstance(metadata, dict) and "resourceVersion" in metadata:
            cleaned["metadata"] = {"resourceVersion": metadata["resourceVersion"]}
        return await self.patch(name, cleaned, if_match)
