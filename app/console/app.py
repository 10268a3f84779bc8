"""The console: server-rendered HTML with a little progressive enhancement (live matrix,
confirm dialogs); every form works without JavaScript. This module assembles it — templates,
the API clients, the session middleware, error pages — from one router per page group in
app/console/pages/; what every page uses is in app/console/kit.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

import app as app_package
from app.config import Settings
from app.console.api import ApiProblem, PlatformApi, SignInRequired
from app.console.kit import ConsoleParts, CsrfRefused, age, is_demo, phase_class, seal_into
from app.console.pages import (
    admin,
    catalog,
    deployments,
    fleet,
    records,
    signin,
    tenancy,
    workloads,
)
from app.console.pages.deployments import MAX_STREAMS, STREAMS_PER_USER, LiveStreams
from app.console.session import COOKIE, SessionSealer, UserSession
from app.console.views import agent_view, duration, time_left, timestamp

__all__ = ["STREAMS_PER_USER", "create_console_app"]

HERE = Path(__file__).parent

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


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=HERE / "templates")
    found.env.filters["age"] = age
    found.env.filters["phase_class"] = phase_class
    found.env.tests["demo"] = is_demo
    found.env.filters["agent"] = agent_view
    found.env.filters["duration"] = duration
    found.env.filters["time_left"] = time_left
    found.env.filters["timestamp"] = timestamp
    found.env.globals["version"] = app_package.__version__
    return found


def create_console_app(settings: Settings, *, secret: str) -> FastAPI:
    """The console; `secret` seals session cookies (CONSOLE_SESSION_SECRET)."""
    parts = ConsoleParts(
        templates=templates(),
        sealer=SessionSealer(secret),
        secure=settings.console_cookie_secure,
        cookie_age=int(settings.refresh_token_ttl),
    )
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
    console.state.parts = parts
    console.state.public_url = settings.public_url  # the API as users reach it (Helm's lines)
    console.state.oidc_redirect = settings.console_oidc_redirect()
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    console.middleware("http")(security_headers_and_session)
    for group in (signin, fleet, admin, tenancy, catalog, deployments, workloads, records):
        console.include_router(group.router)

    @console.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it whatever the page's <link> says.
        return RedirectResponse("/static/favicon.svg", status_code=301)

    console.add_exception_handler(SignInRequired, sign_in_again)
    console.add_exception_handler(CsrfRefused, csrf_refused)
    console.add_exception_handler(ApiProblem, api_problem)
    console.add_exception_handler(StarletteHTTPException, no_such_page)
    console.add_exception_handler(httpx.TransportError, api_unreachable)
    return console


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
        seal_into(request, response, session)
    response.headers.update(SECURITY_HEADERS)
    if request.url.path != "/healthz" and not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- error pages ------------------------------------------------------------------------------


async def sign_in_again(request: Request, _: Exception) -> Response:
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


async def csrf_refused(request: Request, _: Exception) -> Response:
    return PlainTextResponse(
        "The form was not sent from this console (or the page is stale): reload and retry.",
        status_code=403,
    )


def problem_page(
    request: Request, problem: ApiProblem, status: int, headers: dict[str, str] | None = None
) -> Response:
    parts: ConsoleParts = request.app.state.parts
    return parts.templates.TemplateResponse(
        request, "problem.html", {"problem": problem, "me": None}, status_code=status,
        headers=headers,
    )  # fmt: skip


async def api_problem(request: Request, problem: Exception) -> Response:
    # Pages that cannot render at all (a missing object, no permission, API down).
    assert isinstance(problem, ApiProblem)
    return problem_page(request, problem, problem.status if 400 <= problem.status < 600 else 502)


async def no_such_page(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    title = "Not Found" if error.status_code == 404 else "Not possible"
    return problem_page(
        request, ApiProblem(error.status_code, title, str(error.detail), []), error.status_code
    )


async def api_unreachable(request: Request, error: Exception) -> Response:
    problem = ApiProblem(503, "The platform API is unreachable", str(error) or "", [])
    return problem_page(request, problem, 503, headers={"Retry-After": "5"})
