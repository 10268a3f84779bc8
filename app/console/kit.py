"""What every console page uses: who is looking (`viewer`), the session cookie, CSRF-checked
forms, rendering a template, confirmations, and names made safe for the API's URLs.

The console's parts (templates, the cookie sealer, cookie settings) live in `ConsoleParts`
on the app's state, put there by `create_console_app`; the page modules read them from the
request, so each page group is a router of its own (app/console/pages/)."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from app.console.api import ApiProblem, PlatformApi, SignInRequired
from app.console.session import COOKIE, WORKSPACE_COOKIE, SessionSealer, UserSession
from app.demo.fleet import DEMO_LABEL

API = "/api/v1"


@dataclass(frozen=True)
class ConsoleParts:
    templates: Jinja2Templates
    sealer: SessionSealer
    secure: bool  # cookies only over HTTPS
    cookie_age: int  # seconds: as long as the API's refresh token


class CsrfRefused(Exception):
    """A form not sent from this console (or from a page drawn for another session)."""


@dataclass
class Viewer:
    """Who is looking, and what they may do in the workspace on screen."""

    session: UserSession
    platform_admin: bool
    workspaces: list[str]
    workspace: str | None = None
    role: str | None = None  # viewer | operator | admin in `workspace`

    @property
    def can_operate(self) -> bool:
        return self.platform_admin or self.role in ("operator", "admin")

    @property
    def can_administer(self) -> bool:
        return self.platform_admin or self.role == "admin"


def parts(request: Request) -> ConsoleParts:
    found: ConsoleParts = request.app.state.parts
    return found


def api(request: Request) -> PlatformApi:
    """The API, called for this request's browser. Its address is the connection's, or the
    one a proxy trusted through FORWARDED_ALLOW_IPS names (uvicorn's proxy headers)."""
    platform: PlatformApi = request.app.state.api
    return platform.on_behalf_of(request.client.host if request.client else None)


def user_session(request: Request) -> UserSession:
    session = parts(request).sealer.open(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired
    request.state.session = session
    request.state.tokens_at_start = session.tokens()
    return session


def seal_into(request: Request, response: Response, session: UserSession) -> None:
    kept = parts(request)
    response.set_cookie(
        COOKIE, kept.sealer.seal(session), max_age=kept.cookie_age, httponly=True,
        secure=kept.secure, samesite="lax", path="/",
    )  # fmt: skip


async def checked_form(request: Request, session: UserSession) -> FormData:
    form = await request.form()
    if not same_secret(str(form.get("csrf", "")), session.csrf):
        raise CsrfRefused
    return form


async def viewer(request: Request, workspace: str | None = None) -> Viewer:
    session = user_session(request)
    me = await api(request).get(session, f"{API}/users/me")
    spaces = [w["metadata"]["name"] for w in await api(request).items(session, f"{API}/workspaces")]
    admin = me["spec"].get("platformRole") == "platform-admin"
    seen = Viewer(session, admin, spaces)
    chosen = workspace or request.cookies.get(WORKSPACE_COOKIE)
    if chosen in spaces:
        seen.workspace = chosen
    elif spaces:
        seen.workspace = spaces[0]
    if workspace is not None and workspace not in spaces:
        raise ApiProblem(404, "Not Found", f"Workspace {workspace!r} not found", [])
    if seen.workspace:
        segment(seen.workspace)
    if seen.workspace and not admin:
        member = await api(request).get(
            session,
            # The name the platform knows (what was typed at sign-in may differ in case).
            f"{API}/workspaces/{segment(seen.workspace)}/members/{segment(me['metadata']['name'])}",
        )
        seen.role = member["role"]
    return seen


def page(
    request: Request, seen: Viewer, template: str, status: int = 200, **context: Any
) -> Response:
    return parts(request).templates.TemplateResponse(
        request, template, {"me": seen, "csrf": seen.session.csrf, **context}, status_code=status
    )


def back(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def operator_only(seen: Viewer) -> None:
    """Write pages are for operators; the API would refuse the write anyway."""
    if not seen.can_operate:
        raise ApiProblem(
            403, "Forbidden",
            f"this needs the operator role in workspace {seen.workspace!r}; you are {seen.role}",
            [],
        )  # fmt: skip


def confirm(
    request: Request, seen: Viewer, form: FormData, *, title: str, question: str,
    action: str, cancel: str, section: str = "deployments",
) -> Response | None:  # fmt: skip
    """Without JavaScript a destructive button lands here first and asks; with it, the
    page's dialog asks and sends confirmed=yes."""
    if form.get("confirmed") == "yes":
        return None
    hidden = {k: str(v) for k, v in form.items() if k not in ("csrf", "confirmed")}
    return page(
        request, seen, "confirm.html", title=title, question=question, action=action,
        hidden=hidden, cancel=cancel, section=section,
    )  # fmt: skip


def age(value: str | None) -> str:
    """'12s ago' from an RFC 3339 time; the fleet view shows how old each status is."""
    if not value:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(value)).total_seconds()
    if seconds < 60:
        return f"{max(int(seconds), 0)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def phase_class(phase: str | None) -> str:
    return (phase or "unknown").lower()


def is_demo(obj: dict[str, Any]) -> bool:
    """An object of the demo fleet (`edge-platform dev --demo`): emulated, nothing runs."""
    return bool(obj.get("metadata", {}).get("labels", {}).get(DEMO_LABEL) == "true")


def safe_next(request: Request, form: FormData | None = None) -> str:
    """Where to go after signing in: only a path of this console, never another site."""
    target = str(form.get("next", "")) if form is not None else request.query_params.get("next", "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def segment(name: str) -> str:
    """`name` as one path segment of an API URL. Platform names are DNS names; anything else
    (`..`, slashes, escapes) is refused here rather than sent on."""
    if not NAME.match(name) or ".." in name:
        raise ApiProblem(404, "Not Found", f"{name[:80]!r} is not a valid name", [])
    return quote(name, safe="")


def same_secret(sent: str, kept: str) -> bool:
    return hmac.compare_digest(sent.encode(), kept.encode())
