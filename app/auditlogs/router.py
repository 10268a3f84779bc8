from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator
from sqlalchemy import func, select

from app.auth.principal import CurrentPrincipal, authenticate
from app.db.session import SessionDep
from app.errors import BadRequest, Forbidden, NotFound
from app.kit import responses
from app.kit.paging import encode_token, page_request
from app.kit.resource import API_VERSION, ListMeta, render
from app.models.audit import AuditLog
from app.models.workspaces import Workspace, WorkspaceMember

router = APIRouter(prefix="/api/v1", tags=["audit"], dependencies=[Depends(authenticate)])


def rfc3339_only(value: object) -> object:
    """pydantic also reads a number as Unix seconds (1e-178 too); the documented format is
    RFC 3339."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("an RFC 3339 date-time is expected, e.g. 2026-11-27T12:00:00Z")
    return value


def within_utc_range(value: datetime) -> datetime:
    """The database driver converts the time to UTC, which 0001-01-01T00:00:00+01:00 and
    9999-12-31T23:59:59-01:00 leave the range of dates Python holds."""
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("in UTC this time is outside years 1 to 9999") from None
    return value


class AuditEntry(BaseModel):
    id: int
    time: datetime
    actor: str
    actorKind: str
    action: str
    resourceKind: str | None
    resourceName: str | None
    workspace: str | None
    outcome: int
    sourceIP: str | None
    userAgent: str | None
    requestId: str | None
    detail: str | None


class AuditLogList(BaseModel):
    apiVersion: str = API_VERSION
    kind: Literal["AuditLogList"] = "AuditLogList"
    metadata: ListMeta
    items: list[AuditEntry]


def _entry(row: AuditLog) -> AuditEntry:
    return AuditEntry(
        id=row.id, time=row.time, actor=row.actor, actorKind=row.actor_kind, action=row.action,
        resourceKind=row.resource_kind, resourceName=row.resource_name, workspace=row.workspace,
        outcome=row.outcome, sourceIP=row.source_ip, userAgent=row.user_agent,
        requestId=row.request_id, detail=row.detail,
    )  # fmt: skip


async def _check_workspace_admin(
    session: SessionDep, principal: CurrentPrincipal, workspace: str | None
) -> None:
    if principal.is_platform_admin:
        return
    if workspace is None:
        raise Forbidden("only platform admins read the whole audit log; pass ?workspace=")
    ws = await session.scalar(select(Workspace).where(Workspace.name == workspace))
    role = None
    if ws is not None and principal.kind == "user":
        role = await session.scalar(
            select(WorkspaceMember.role).where(
                WorkspaceMember.workspace_id == ws.id, WorkspaceMember.user_id == principal.id
            )
        )
    elif ws is not None and principal.workspace_id == ws.id:
        role = principal.workspace_role
    if role is None:
        raise NotFound(f"Workspace {workspace!r} not found")
    if role != "admin":
        raise Forbidden(f"reading the audit log of {workspace!r} needs its admin role")


@router.get("/auditlogs", operation_id="listAuditLogs", response_model=AuditLogList)
async def list_audit_logs(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    workspace: str | None = None,
    actor: str | None = None,
    since: Annotated[
        datetime | None, BeforeValidator(rfc3339_only), AfterValidator(within_utc_range)
    ] = None,
    limit: Annotated[int, Query(ge=1, description=responses.LIMIT_HELP)] = 100,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
) -> Response:
    """Newest first. Platform admins see everything; workspace admins pass ?workspace=."""
    await _check_workspace_admin(session, principal, workspace)
    page = page_request(limit, continue_, None, workspace=workspace, actor=actor, since=since)
    query = select(AuditLog)
    if workspace is not None:
        query = query.where(AuditLog.workspace == workspace)
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    if since is not None:
        query = query.where(AuditLog.time >= since)
    if page.after is not None and not isinstance(page.after, int):
        raise BadRequest("invalid continue token for this list")
    keyset = query.where(AuditLog.id < page.after) if page.after is not None else query
    rows = list(
        (await session.scalars(keyset.order_by(AuditLog.id.desc()).limit(page.limit + 1))).all()
    )
    token = remaining = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        token = encode_token(rows[-1].id, page.fingerprint)
        remaining = await session.scalar(
            select(func.count()).select_from(query.where(AuditLog.id < rows[-1].id).subquery())
        )
    body = AuditLogList(
        metadata=ListMeta(continue_=token, remainingItemCount=remaining),
        items=[_entry(r) for r in rows],
    )
    return render(request, body)
