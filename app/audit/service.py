"""Audit records. A change and its record are written in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.client_address import client_address
from app.models.audit import AuditLog
from app.observability import request_id_var


@dataclass(frozen=True)
class Actor:
    name: str
    kind: str  # user | serviceaccount | anonymous


@dataclass(frozen=True)
class RequestInfo:
    source_ip: str | None
    user_agent: str | None
    request_id: str | None

    @classmethod
    def of(cls, request: Request) -> RequestInfo:
        return cls(
            source_ip=client_address(request),
            user_agent=(request.headers.get("user-agent") or "")[:512] or None,
            request_id=request_id_var.get(),
        )


def record(
    session: AsyncSession,
    info: RequestInfo,
    actor: Actor,
    *,
    action: str,
    outcome: int,
    kind: str | None = None,
    name: str | None = None,
    workspace: str | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        AuditLog(
            actor=actor.name,
            actor_kind=actor.kind,
            action=action,
            resource_kind=kind,
            resource_name=name,
            workspace=workspace,
            outcome=outcome,
            source_ip=info.source_ip,
            user_agent=info.user_agent,
            request_id=info.request_id,
            detail=detail,
        )
    )


@dataclass(frozen=True)
class AuditTrail:
    """Who is making the changes of one request, for services to record them."""

    info: RequestInfo
    actor: Actor
    workspace: str | None = None

    def record(
        self, session: AsyncSession, *, action: str, outcome: int, kind: str, name: str
    ) -> None:
        record(
            session, self.info, self.actor, action=action, outcome=outcome, kind=kind, name=name,
            workspace=self.workspace,
        )  # fmt: skip
