"""The console's pages. Server-rendered HTML with a little progressive enhancement (live
matrix, confirm dialogs); every form works without JavaScript."""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

import app as app_package
from app.config import Settings
from app.console.api import ApiProblem, PlatformApi, SignInRequired
from app.console.session import (
    COOKIE,
    ISSUED_COOKIE,
    LOGIN_CSRF_COOKIE,
    WORKSPACE_COOKIE,
    SessionSealer,
    UserSession,
)
from app.console.views import (
    agent_view,
    deployment_form,
    duration,
    fleet_view,
    is_number,
    matrix_rows,
    parse_configsync_form,
    parse_deployment_form,
    time_left,
    timestamp,
)

HERE = Path(__file__).parent
API = "/api/v1"
RECENT_EVENTS = 20  # shown on a deployment's page
# Live pages one console process relays at once. Each holds a browser's socket and a
# connection to the API, so all users' together stay within the common limit of 1024 open
# files; one user's (a browser opens at most six over HTTP/1.1 anyway) are capped far below
# that, so that one user's tabs or scripts cannot use up everyone's.
STREAMS_PER_USER = 10
MAX_STREAMS = 400
STREAM_RETRY_AFTER = 30  # seconds; a live page frees its stream when it is closed
# A join-token form is good for this long and once (its ticket is then remembered in a cookie
# of the browser for as long): a reload of the page that showed the token sends the form again,
# and is answered with the cluster's page, not with a second token.
JOIN_FORM_TTL = 3600
JOIN_FORMS_REMEMBERED = 8

logger = logging.getLogger(__name__)

# Strict by default: no inline scripts or styles, nothing from elsewhere, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


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


class LiveStreams:
    """The live pages a console process relays, counted per user and in all."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._held: Counter[str] = Counter()
        self._all = 0

    def take(self, user: str) -> Response | None:
        """Count one more stream of `user`; or, when it may not have one, the refusal to send."""
        if self._held[user] >= self.per_user:
            return PlainTextResponse(
                f"You have {self.per_user} live pages open: close one, or reload later.",
                status_code=429, headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )  # fmt: skip
        if self._all >= self.total:
            return PlainTextResponse(
                "Too many live pages are open on this console: reload later.",
                status_code=503, headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )  # fmt: skip
        self._held[user] += 1
        self._all += 1
        return None

    def give_back(self, user: str) -> None:
        self._held[user] -= 1
        self._all -= 1
        if self._held[user] <= 0:
            del self._held[user]


class RelayedStream(StreamingResponse):
    """An event stream of the API relayed to the browser, that gives back what it holds (the
    connection to the API, the user's live page) however it ends: Starlette never starts the
    body of a response whose browser left before its first byte, so a `finally` in the body
    alone would keep them for good."""

    def __init__(
        self, lines: AsyncGenerator[str, None], release: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(lines, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})
        self._lines = lines
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._lines.aclose()
            finally:
                await self._release()


def create_console_app(settings: Settings, *, secret: str) -> FastAPI:
    """The console; `secret` seals session cookies (CONSOLE_SESSION_SECRET)."""
    sealer = SessionSealer(secret)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["age"] = age
    templates.env.filters["phase_class"] = phase_class
    templates.env.filters["agent"] = agent_view
    templates.env.filters["duration"] = duration
    templates.env.filters["time_left"] = time_left
    templates.env.filters["timestamp"] = timestamp
    templates.env.globals["version"] = app_package.__version__
    secure = settings.console_cookie_secure
    cookie_age = int(settings.refresh_token_ttl)
    forwarding_secret = settings.console_forwarding_key()
    if not forwarding_secret:
        logger.warning(
            "CONSOLE_FORWARDING_SECRET is not set: the API counts every sign-in through this "
            "console against the console's own address, so a few dozen wrong passwords from "
            "anyone make everyone's sign-ins wait"
        )

    @asynccontextmanager
    async def lifespan(console: FastAPI) -> AsyncIterator[None]:
        base = settings.console_api_url
        async with (
            httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(15.0)) as http,
            httpx.AsyncClient(
                base_url=base, limits=httpx.Limits(max_connections=MAX_STREAMS)
            ) as streams,
        ):
            console.state.api = PlatformApi(
                http, streams, settings.oauth_client_id, forwarding_secret
            )
            console.state.live_streams = LiveStreams(STREAMS_PER_USER, MAX_STREAMS)
            yield

    console = FastAPI(
        title="Edge Platform console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def api(request: Request) -> PlatformApi:
        """The API, called for this request's browser. Its address is the connection's, or the
        one a proxy trusted through FORWARDED_ALLOW_IPS names (uvicorn's proxy headers)."""
        platform: PlatformApi = request.app.state.api
        return platform.on_behalf_of(request.client.host if request.client else None)

    @console.middleware("http")
    async def security_headers_and_session(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        # Tokens refreshed while answering (an error page included) go back into the cookie
        # now: the old refresh token is spent, and the API revokes a login that reuses one.
        session: UserSession | None = getattr(request.state, "session", None)
        if (
            session is not None
            and not getattr(request.state, "signed_out", False)
            and session.tokens() != request.state.tokens_at_start
        ):
            seal_into(response, session)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path != "/healthz" and not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- session plumbing ---------------------------------------------------------------------

    def user_session(request: Request) -> UserSession:
        session = sealer.open(request.cookies.get(COOKIE))
        if session is None:
            raise SignInRequired
        request.state.session = session
        request.state.tokens_at_start = session.tokens()
        return session

    def seal_into(response: Response, session: UserSession) -> None:
        response.set_cookie(
            COOKIE, sealer.seal(session), max_age=cookie_age, httponly=True, secure=secure,
            samesite="lax", path="/",
        )  # fmt: skip

    async def checked_form(request: Request, session: UserSession) -> FormData:
        form = await request.form()
        if not same_secret(str(form.get("csrf", "")), session.csrf):
            raise CsrfRefused
        return form

    async def viewer(request: Request, workspace: str | None = None) -> Viewer:
        session = user_session(request)
        me = await api(request).get(session, f"{API}/users/me")
        spaces = [
            w["metadata"]["name"] for w in await api(request).items(session, f"{API}/workspaces")
        ]
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
                f"{API}/workspaces/{segment(seen.workspace)}/members/"
                f"{segment(me['metadata']['name'])}",
            )
            seen.role = member["role"]
        return seen

    def page(
        request: Request, seen: Viewer, template: str, status: int = 200, **context: Any
    ) -> Response:
        return templates.TemplateResponse(
            request,
            template,
            {"me": seen, "csrf": seen.session.csrf, **context},
            status_code=status,
        )

    def back(url: str) -> Response:
        return RedirectResponse(url, status_code=303)

    def operator_only(seen: Viewer) -> None:
        """Write pages are for operators; the API would refuse the write anyway."""
        if not seen.can_operate:
            raise ApiProblem(
                403, "Forbidden",
                f"this needs the operator role in workspace {seen.workspace!r}; "
                f"you are {seen.role}", [],
            )  # fmt: skip

    # -- errors -------------------------------------------------------------------------------

    class CsrfRefused(Exception):
        pass

    @console.exception_handler(SignInRequired)
    async def sign_in_again(request: Request, _: SignInRequired) -> Response:
        request.state.signed_out = True
        if request.headers.get("x-console-fragment") or request.url.path.endswith("/stream"):
            response: Response = PlainTextResponse("sign in again", status_code=401)
        else:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            else:  # a form's target only takes POSTs: come back to the page that had the form
                target = request.url.path.rsplit("/", 1)[0] or "/fleet"
            response = RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @console.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> Response:
        return PlainTextResponse(
            "The form was not sent from this console (or the page is stale): reload and retry.",
            status_code=403,
        )

    @console.exception_handler(ApiProblem)
    async def api_problem(request: Request, problem: ApiProblem) -> Response:
        # Pages that cannot render at all (a missing object, no permission, API down).
        status = problem.status if 400 <= problem.status < 600 else 502
        return templates.TemplateResponse(
            request, "problem.html", {"problem": problem, "me": None}, status_code=status
        )

    @console.exception_handler(StarletteHTTPException)
    async def no_such_page(request: Request, error: StarletteHTTPException) -> Response:
        problem = ApiProblem(error.status_code, "Not Found" if error.status_code == 404 else
                             "Not possible", str(error.detail), [])  # fmt: skip
        return templates.TemplateResponse(
            request, "problem.html", {"problem": problem, "me": None},
            status_code=error.status_code,
        )  # fmt: skip

    @console.exception_handler(httpx.TransportError)
    async def api_unreachable(request: Request, error: httpx.TransportError) -> Response:
        problem = ApiProblem(503, "The platform API is unreachable", str(error) or "", [])
        return templates.TemplateResponse(
            request, "problem.html", {"problem": problem, "me": None}, status_code=503,
            headers={"Retry-After": "5"},
        )  # fmt: skip

    # -- sign in and out ----------------------------------------------------------------------

    @console.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    def login_page(request: Request, status: int = 200, **context: Any) -> Response:
        token = secrets.token_urlsafe(24)
        response = templates.TemplateResponse(
            request, "login.html",
            {"me": None, "login_csrf": token, "next": safe_next(request), **context},
            status_code=status,
        )  # fmt: skip
        response.set_cookie(
            LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, secure=secure,
            samesite="strict", path="/login",
        )  # fmt: skip
        return response

    @console.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        return login_page(request)

    @console.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        sent, kept = str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not kept or not same_secret(sent, kept):
            return login_page(request, 403, error="The sign-in form expired; please try again.")
        username = str(form.get("username", "")).strip()
        try:
            session = await api(request).sign_in(username, str(form.get("password", "")))
        except ApiProblem as problem:
            status, message = problem.status, problem.detail or problem.title
            if status in (400, 401):  # invalid_grant: which of the two is wrong is not said
                status, message = 401, "Wrong username or password."
            return login_page(request, status, error=message, username=username)
        response = RedirectResponse(safe_next(request, form), status_code=303)
        seal_into(response, session)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @console.post("/logout")
    async def logout(request: Request) -> Response:
        session = sealer.open(request.cookies.get(COOKIE))
        if session is not None:
            await checked_form(request, session)
            with contextlib.suppress(httpx.HTTPError):
                # The API is away: the cookie goes all the same, and the tokens expire.
                await api(request).sign_out(session)
        request.state.signed_out = True
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- fleet --------------------------------------------------------------------------------

    @console.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        user_session(request)
        return RedirectResponse("/fleet", status_code=303)

    @console.get("/switch")
    async def switch(request: Request, ws: str) -> Response:
        await viewer(request, ws)
        response = back(f"/w/{segment(ws)}/deployments")
        response.set_cookie(WORKSPACE_COOKIE, ws, max_age=cookie_age, secure=secure,
                            samesite="lax", path="/", httponly=True)  # fmt: skip
        return response

    @console.get("/fleet", response_class=HTMLResponse)
    async def fleet(request: Request) -> Response:
        seen = await viewer(request)
        regions, clusters = await fleet_view(api(request), seen.session)
        return page(request, seen, "fleet.html", regions=regions, clusters=clusters)

    # -- a cluster, and joining it through an agent ---------------------------------------

    def cluster_url(name: str) -> str:
        return f"{API}/clusters/{segment(name)}"

    async def cluster_page(
        request: Request, seen: Viewer, name: str, status: int = 200,
        cluster: dict[str, Any] | None = None, **context: Any,
    ) -> Response:  # fmt: skip
        platform = api(request)
        if cluster is None:
            cluster = await platform.get(seen.session, cluster_url(name))
        groups = await platform.items(seen.session, f"{cluster_url(name)}/nodegroups")
        # Each drawing of the join form gets a ticket of its own: the form works once.
        ticket = f"{int(time.time())}x{secrets.token_hex(12)}"
        return page(
            request, seen, "cluster.html", status, c=cluster, agent=agent_view(cluster),
            node_groups=groups, ticket=ticket, **context,
        )  # fmt: skip

    @console.get("/clusters/{name}", response_class=HTMLResponse)
    async def cluster(request: Request, name: str) -> Response:
        seen = await viewer(request)
        return await cluster_page(request, seen, name)

    def used_tickets(request: Request) -> list[str]:
        return [t for t in request.cookies.get(ISSUED_COOKIE, "").split(".") if t]

    def fresh_ticket(ticket: str) -> bool:
        issued, _, rest = ticket.partition("x")
        return is_number(issued) and bool(rest) and 0 <= time.time() - int(issued) < JOIN_FORM_TTL

    @console.post("/clusters/{name}/join-token", response_class=HTMLResponse)
    async def issue_join_token(request: Request, name: str) -> Response:
        """The join token and its command, in the answer to this POST and nowhere else: not
        behind a redirect (a GET would have to find it again), not in a URL or a cookie, and
        the page is no-store. A reload makes the browser send the form again; its ticket is
        spent by then, so the answer is the cluster's page saying why nothing is shown, with a
        fresh form: a second token (which would cut off the first) is always asked for."""
        seen = await viewer(request)
        form = await checked_form(request, seen.session)
        ticket = str(form.get("ticket", ""))
        spent = used_tickets(request)
        if ticket in spent or not fresh_ticket(ticket):
            return await cluster_page(
                request, seen, name, 409, repeated="spent" if ticket in spent else "stale"
            )
        platform = api(request)
        found = await platform.get(seen.session, cluster_url(name))
        agent = found["status"].get("agent") or {}
        if agent.get("joined") or agent.get("connected"):
            asked = confirm(
                request, seen, form, title="Issue a join token", section="fleet",
                action=f"/clusters/{segment(name)}/join-token", cancel=f"/clusters/{segment(name)}",
                question=f"Issue a new join token for {name}? This cuts off its current agent "
                "at once: it stops working until it joins again with the new token.",
            )  # fmt: skip
            if asked is not None:
                return asked
        try:
            answer = await platform.request(seen.session, "POST", f"{cluster_url(name)}/join-token")
        except ApiProblem as problem:
            if problem.status >= 500:
                raise
            return await cluster_page(
                request, seen, name, problem.status, cluster=found, problem=problem
            )
        response = page(request, seen, "join_token.html", c=found, issued=answer.json())
        response.headers["Cache-Control"] = "no-store"
        remembered = [t for t in spent if fresh_ticket(t)][-(JOIN_FORMS_REMEMBERED - 1) :]
        response.set_cookie(
            ISSUED_COOKIE, ".".join([*remembered, ticket]), max_age=JOIN_FORM_TTL,
            httponly=True, secure=secure, samesite="strict", path="/clusters/",
        )  # fmt: skip
        return response

    # -- deployments --------------------------------------------------------------------------

    def deployments_url(ws: str, name: str | None = None) -> str:
        base = f"{API}/workspaces/{segment(ws)}/applicationdeployments"
        return base if name is None else f"{base}/{segment(name)}"

    @console.get("/w/{ws}/deployments", response_class=HTMLResponse)
    async def deployments(request: Request, ws: str) -> Response:
        seen = await viewer(request, ws)
        items = await api(request).items(seen.session, deployments_url(ws))
        return page(request, seen, "deployments.html", deployments=items)

    async def form_page(
        request: Request, seen: Viewer, ws: str, *, existing: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None, preview: Any = None,
        problem: ApiProblem | None = None,
    ) -> Response:  # fmt: skip
        context = await deployment_form(api(request), seen.session, existing=existing)
        if values is not None:
            context["values"] = values
        status = 200 if problem is None else (problem.status if problem.status < 500 else 502)
        return page(
            request, seen, "deployment_form.html", status, preview=preview, problem=problem,
            existing=existing, **context,
        )  # fmt: skip

    @console.get("/w/{ws}/deployments/new", response_class=HTMLResponse)
    async def new_deployment(request: Request, ws: str) -> Response:
        seen = await viewer(request, ws)
        operator_only(seen)
        return await form_page(request, seen, ws)

    @console.post("/w/{ws}/deployments/new")
    async def create_deployment(request: Request, ws: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        operator_only(seen)
        values, spec = parse_deployment_form(form)
        return await save_or_preview(request, seen, ws, form, values, spec, existing=None)

    async def save_or_preview(
        request: Request, seen: Viewer, ws: str, form: FormData, values: dict[str, Any],
        spec: dict[str, Any], existing: dict[str, Any] | None,
    ) -> Response:  # fmt: skip
        platform = api(request)
        try:
            if form.get("action") == "preview":
                resolved = await platform.request(
                    seen.session, "POST", f"{deployments_url(ws)}:resolve", json={"spec": spec}
                )
                return await form_page(
                    request, seen, ws, existing=existing, values=values, preview=resolved.json()
                )
            if existing is None:
                body = {"metadata": {"name": values["name"]}, "spec": spec}
                await platform.request(seen.session, "POST", deployments_url(ws), json=body)
                name = values["name"]
            else:
                name = existing["metadata"]["name"]
                # The version the form was drawn from: a change saved meanwhile by someone
                # else is not overwritten (412, and the form says so).
                await platform.request(
                    seen.session, "PATCH", deployments_url(ws, name), json={"spec": spec},
                    headers={
                        "Content-Type": "application/merge-patch+json",
                        "If-Match": f'"{form.get("resourceVersion", "")}"',
                    },
                )  # fmt: skip
        except ApiProblem as problem:
            if problem.status >= 500:
                raise
            return await form_page(
                request, seen, ws, existing=existing, values=values, problem=problem
            )
        return back(f"/w/{segment(ws)}/deployments/{segment(name)}")

    @console.get("/w/{ws}/deployments/{name}", response_class=HTMLResponse)
    async def deployment(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        platform = api(request)
        item = await platform.get(seen.session, deployments_url(ws, name))
        revisions = await platform.get(seen.session, f"{deployments_url(ws, name)}/revisions")
        events = await recent_events(request, seen.session, f"{deployments_url(ws, name)}/events")
        return page(
            request, seen, "deployment.html", d=item, rows=matrix_rows(item),
            revisions=sorted(revisions["items"], key=lambda r: -r["revision"]),
            events=events,
        )  # fmt: skip

    async def recent_events(request: Request, session: UserSession, path: str) -> list[Any]:
        """The newest events, newest first. The API lists them oldest first after an id (what
        a resuming watcher needs), so read to the end; retention bounds how far that is."""
        newest: list[Any] = []
        since = 0
        while True:
            page = await api(request).get(session, path, since=since, limit=1000)
            newest = (newest + page["items"])[-RECENT_EVENTS:]
            if len(page["items"]) < 1000:
                return newest[::-1]
            since = page["lastId"]

    @console.get("/w/{ws}/deployments/{name}/matrix", response_class=HTMLResponse)
    async def deployment_matrix(request: Request, ws: str, name: str) -> Response:
        session = user_session(request)
        item = await api(request).get(session, deployments_url(ws, name))
        return templates.TemplateResponse(
            request, "_matrix.html", {"d": item, "rows": matrix_rows(item)}
        )

    @console.get("/w/{ws}/deployments/{name}/stream")
    async def deployment_stream(request: Request, ws: str, name: str) -> Response:
        """The API's event stream of the deployment, relayed with the session's token: the
        browser never holds a token. Named events become plain messages for EventSource.
        The upstream is opened first, so a refusal reaches the browser as its status (and
        EventSource stops retrying) instead of as a stream that breaks."""
        session = user_session(request)
        path = f"{deployments_url(ws, name)}/events"
        live: LiveStreams = request.app.state.live_streams
        refusal = live.take(session.username)
        if refusal is not None:
            return refusal
        opened = contextlib.AsyncExitStack()

        async def release() -> None:
            try:
                await opened.aclose()
            finally:
                live.give_back(session.username)

        try:
            upstream = await opened.enter_async_context(
                api(request).stream(session, path, request.headers.get("last-event-id"))
            )
        except BaseException:
            await release()
            raise

        async def relay() -> AsyncGenerator[str, None]:
            async for line in upstream.aiter_lines():
                if not line.startswith("event:"):
                    yield line + "\n"

        return RelayedStream(relay(), release)

    @console.get("/w/{ws}/deployments/{name}/edit", response_class=HTMLResponse)
    async def edit_deployment(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        operator_only(seen)
        item = await api(request).get(seen.session, deployments_url(ws, name))
        return await form_page(request, seen, ws, existing=item)

    @console.post("/w/{ws}/deployments/{name}/edit")
    async def save_deployment(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        operator_only(seen)
        item = await api(request).get(seen.session, deployments_url(ws, name))
        values, spec = parse_deployment_form(form)
        return await save_or_preview(request, seen, ws, form, values, spec, existing=item)

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

    @console.post("/w/{ws}/deployments/{name}/rollback")
    async def rollback(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        revision = str(form.get("revision", ""))
        here = f"/w/{segment(ws)}/deployments/{segment(name)}"
        asked = confirm(
            request, seen, form, title="Roll back", cancel=here, action=f"{here}/rollback",
            question=f"Roll {name} back to revision {revision}? Every target is updated.",
        )  # fmt: skip
        if asked is not None:
            return asked
        await api(request).request(
            seen.session, "POST", f"{deployments_url(ws, name)}/rollback",
            json={"revision": int(revision) if is_number(revision) else revision},
        )  # fmt: skip
        return back(here)

    @console.post("/w/{ws}/deployments/{name}/delete")
    async def delete_deployment(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        here = f"/w/{segment(ws)}/deployments/{segment(name)}"
        asked = confirm(
            request, seen, form, title="Delete deployment", cancel=here, action=f"{here}/delete",
            question=f"Delete {name}? Its workloads are removed from every cluster.",
        )  # fmt: skip
        if asked is not None:
            return asked
        await api(request).request(seen.session, "DELETE", deployments_url(ws, name))
        return back(f"/w/{segment(ws)}/deployments")

    # -- vclusters and config syncs -----------------------------------------------------------

    def vclusters_url(ws: str, name: str | None = None) -> str:
        base = f"{API}/workspaces/{segment(ws)}/vclusters"
        return base if name is None else f"{base}/{segment(name)}"

    async def vclusters_page(
        request: Request, seen: Viewer, ws: str, status: int = 200, **context: Any
    ) -> Response:
        platform = api(request)
        items = await platform.items(seen.session, vclusters_url(ws))
        clusters = await platform.items(seen.session, f"{API}/clusters")
        return page(
            request, seen, "vclusters.html", status, vclusters=items,
            clusters=[c["metadata"]["name"] for c in clusters], **context,
        )  # fmt: skip

    @console.get("/w/{ws}/vclusters", response_class=HTMLResponse)
    async def vclusters(request: Request, ws: str) -> Response:
        return await vclusters_page(request, await viewer(request, ws), ws)

    @console.post("/w/{ws}/vclusters")
    async def create_vcluster(request: Request, ws: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        spec: dict[str, Any] = {"cluster": str(form.get("cluster", ""))}
        if form.get("kubernetesVersion"):
            spec["kubernetesVersion"] = str(form["kubernetesVersion"])
        body = {"metadata": {"name": str(form.get("name", "")).strip()}, "spec": spec}
        try:
            await api(request).request(seen.session, "POST", vclusters_url(ws), json=body)
        except ApiProblem as problem:
            if problem.status >= 500:
                raise
            return await vclusters_page(request, seen, ws, problem.status, problem=problem)
        return back(f"/w/{segment(ws)}/vclusters")

    @console.get("/w/{ws}/vclusters/{name}/kubeconfig")
    async def vcluster_kubeconfig(request: Request, ws: str, name: str) -> Response:
        session = user_session(request)
        answer = await api(request).request(session, "GET", f"{vclusters_url(ws, name)}/kubeconfig")
        return Response(
            answer.content, media_type="application/yaml",
            headers={"Content-Disposition": f'attachment; filename="{segment(name)}.kubeconfig"'},
        )  # fmt: skip

    @console.post("/w/{ws}/vclusters/{name}/delete")
    async def delete_vcluster(request: Request, ws: str, name: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        here = f"/w/{segment(ws)}/vclusters"
        asked = confirm(
            request, seen, form, title="Delete vcluster", cancel=here,
            action=f"{here}/{segment(name)}/delete",
            question=f"Delete vcluster {name}? Its workloads go with it.",
        )  # fmt: skip
        if asked is not None:
            return asked
        await api(request).request(seen.session, "DELETE", vclusters_url(ws, name))
        return back(here)

    def configsyncs_url(ws: str) -> str:
        return f"{API}/workspaces/{segment(ws)}/configsyncs"

    async def configsyncs_page(
        request: Request, seen: Viewer, ws: str, status: int = 200, **context: Any
    ) -> Response:
        platform = api(request)
        items = await platform.items(seen.session, configsyncs_url(ws))
        regions = await platform.items(seen.session, f"{API}/regions")
        return page(
            request, seen, "configsyncs.html", status, configsyncs=items,
            regions=[r["metadata"]["name"] for r in regions], **context,
        )  # fmt: skip

    @console.get("/w/{ws}/configsyncs", response_class=HTMLResponse)
    async def configsyncs(request: Request, ws: str) -> Response:
        return await configsyncs_page(request, await viewer(request, ws), ws)

    @console.post("/w/{ws}/configsyncs")
    async def create_configsync(request: Request, ws: str) -> Response:
        seen = await viewer(request, ws)
        form = await checked_form(request, seen.session)
        try:
            body = parse_configsync_form(form)
            await api(request).request(seen.session, "POST", configsyncs_url(ws), json=body)
        except ApiProblem as problem:
            if problem.status >= 500:
                raise
            return await configsyncs_page(request, seen, ws, problem.status, problem=problem)
        return back(f"/w/{segment(ws)}/configsyncs")

    # -- catalog and audit --------------------------------------------------------------------

    @console.get("/catalog", response_class=HTMLResponse)
    async def catalog(request: Request) -> Response:
        seen = await viewer(request)
        platform = api(request)
        applications = await platform.items(seen.session, f"{API}/applications")
        versions = await platform.items(seen.session, f"{API}/applicationversions")
        by_app: dict[str, list[dict[str, Any]]] = {}
        for version in versions:
            by_app.setdefault(version["spec"]["application"], []).append(version)
        return page(request, seen, "catalog.html", applications=applications, versions=by_app)

    @console.get("/audit", response_class=HTMLResponse)
    async def audit(
        request: Request, workspace: str = "", actor: str = "", cursor: str = ""
    ) -> Response:
        seen = await viewer(request)
        scope = workspace or (None if seen.platform_admin else seen.workspace)
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
                filters={"workspace": scope or "", "actor": actor},
            )  # fmt: skip
        following = entries["metadata"].get("continue")
        more = None
        if following:
            more = "/audit?" + urlencode(
                {"workspace": scope or "", "actor": actor, "cursor": following}
            )
        return page(
            request, seen, "audit.html", entries=entries["items"], more=more,
            filters={"workspace": scope or "", "actor": actor},
        )  # fmt: skip

    return console


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
