"""Who is calling: the principal a request is authenticated as (app.auth.principal resolves it)."""

from __future__ import annotations

from dataclasses import dataclass

from app.audit.service import Actor
from app.models.users import PLATFORM_ADMIN


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" | "serviceaccount" | "chartpull" (an edge reading charts)
    id: int
    name: str
    platform_role: str | None  # users and platform service accounts
    workspace_id: int | None = None  # workspace service accounts
    workspace_role: str | None = None
    session_id: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.platform_role == PLATFORM_ADMIN

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.kind)
