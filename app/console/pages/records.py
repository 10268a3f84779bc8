"""The audit log."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.console.api import ApiProblem
from app.console.kit import API, api, page, viewer

router = APIRouter()


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request, workspace: str = "", actor: str = "", cursor: str = ""
) -> Response:
    seen = await viewer(request)
    scope = workspace or (None if seen.platform_admin else seen.workspace)
    filters = {"workspace": scope or "", "actor": actor}
    try:
        entries = await api(request).get(
            seen.session, f"{API}/auditlogs", workspace=scope, actor=actor, limit=50,
            **{"continue": cursor},
        )  # fmt: skip
    except ApiProblem as problem:
        if problem.status not in (403, 404):
            raise
        return page(
            request, seen, "audit.html", problem.status, problem=problem, entries=None,
            filters=filters,
        )  # fmt: skip
    following = entries["metadata"].get("continue")
    more = None
    if following:
        more = "/audit?" + urlencode({**filters, "cursor": following})
    return page(request, seen, "audit.html", entries=entries["items"], more=more, filters=filters)
