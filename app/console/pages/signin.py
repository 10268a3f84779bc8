"""Signing in and out, the start page, and choosing the workspace on screen."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from app.console.api import ApiProblem
from app.console.kit import (
    api,
    back,
    checked_form,
    parts,
    safe_next,
    same_secret,
    seal_into,
    segment,
    user_session,
    viewer,
)
from app.console.session import COOKIE, LOGIN_CSRF_COOKIE, OIDC_STATE_COOKIE, WORKSPACE_COOKIE

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


def login_page(request: Request, status: int = 200, **context: Any) -> Response:
    token = secrets.token_urlsafe(24)
    kept = parts(request)
    response = kept.templates.TemplateResponse(
        request, "login.html",
        {"me": None, "login_csrf": token, "next": safe_next(request),
         "external": request.app.state.oidc_redirect is not None, **context},
        status_code=status,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, secure=kept.secure,
        samesite="strict", path="/login",
    )  # fmt: skip
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return login_page(request)


@router.post("/login")
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
    seal_into(request, response, session)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login/oidc")
async def external_login(request: Request) -> Response:
    """To the external issuer; the login's `state` is kept in a cookie of this browser, so
    that only the browser that began a login can complete it (no login CSRF)."""
    redirect = request.app.state.oidc_redirect
    if redirect is None:
        return login_page(request, 404, error="Sign-in through an identity provider is not set up.")
    try:
        location = await api(request).external_sign_in_url(redirect)
    except ApiProblem as problem:
        return login_page(request, 502, error=f"The identity provider: {problem.detail}")
    state = parse_qs(urlsplit(location).query).get("state", [""])[0]
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        OIDC_STATE_COOKIE, state, max_age=600, httponly=True, secure=parts(request).secure,
        samesite="lax", path="/login/oidc",
    )  # fmt: skip
    return response


@router.get("/login/oidc/callback")
async def external_login_done(
    request: Request, code: str = "", state: str = "", error: str = ""
) -> Response:
    began = request.cookies.get(OIDC_STATE_COOKIE, "")
    if error:
        return login_page(request, 401, error=f"The identity provider refused: {error}.")
    if not began or not state or not same_secret(state, began):
        return login_page(request, 403, error="That sign-in was not begun here; please try again.")
    try:
        session = await api(request).complete_external_sign_in(code, state)
    except ApiProblem as problem:
        return login_page(request, 401, error=f"Signing in failed: {problem.detail}")
    response = RedirectResponse("/fleet", status_code=303)
    seal_into(request, response, session)
    response.delete_cookie(OIDC_STATE_COOKIE, path="/login/oidc")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = parts(request).sealer.open(request.cookies.get(COOKIE))
    if session is not None:
        await checked_form(request, session)
        with contextlib.suppress(httpx.HTTPError):
            # The API is away: the cookie goes all the same, and the tokens expire.
            await api(request).sign_out(session)
    request.state.signed_out = True
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    user_session(request)
    return RedirectResponse("/fleet", status_code=303)


@router.get("/switch")
async def switch(request: Request, ws: str) -> Response:
    await viewer(request, ws)
    kept = parts(request)
    response = back(f"/w/{segment(ws)}/deployments")
    response.set_cookie(
        WORKSPACE_COOKIE, ws, max_age=kept.cookie_age, secure=kept.secure, samesite="lax",
        path="/", httponly=True,
    )  # fmt: skip
    return response
