from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.resource import ResourceIn, ResourceList, ResourceOut, object_meta
from app.models.users import User

MIN_PASSWORD_LENGTH = 8

PlatformRole = Literal["platform-admin", "platform-regular"]


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253)
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    platformRole: PlatformRole = "platform-regular"
    disabled: bool = False


class UserSpecIn(UserSpec):
    password: str | None = Field(
        None,
        min_length=MIN_PASSWORD_LENGTH,
        max_length=1024,
        description="Write-only. Never returned.",
        json_schema_extra={"writeOnly": True, "format": "password"},
    )


class UserStatus(BaseModel):
    lastLoginTime: datetime | None = None
    identityProvider: str | None = None


class UserIn(ResourceIn[UserSpecIn]):
    apiVersion: Literal["edge.theriseunion.io/v1alpha1"] = "edge.theriseunion.io/v1alpha1"
    kind: Literal["User"] = "User"
    spec: UserSpecIn = Field(default_factory=UserSpecIn)


class UserOut(ResourceOut[UserSpec, UserStatus]):
    kind: Literal["User"] = "User"


class UserList(ResourceList[UserOut]):
    kind: Literal["UserList"] = "UserList"


class OwnSpecPatch(BaseModel):
    """What a user may change on /users/me."""

    model_config = ConfigDict(extra="forbid")

    displayName: str | None = Field(None, max_length=253)
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str | None = Field(None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    oldPassword: str | None = Field(None, max_length=1024)


def user_out(row: User) -> UserOut:
    return UserOut(
        metadata=object_meta(row),
        spec=UserSpec(
            displayName=row.display_name,
            email=row.email,
            platformRole=row.platform_role,
            disabled=row.disabled,
        ),
        status=UserStatus(
            lastLoginTime=row.last_login_time, identityProvider=row.identity_provider
        ),
    )
