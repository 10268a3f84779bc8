"""A workspace's deployments: the list, the form (new, edit, preview), a deployment's page with
its live per-cluster matrix and events, rollback and deletion."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.datastructures import FormData
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.console.api import ApiProblem
from app.console.kit import (
    API,
    Viewer,
    api,
    back,
    checked_form,
    confirm,
    operator_only,
    page,
    parts,
    segment,
    user_session,
    viewer,
)
from app.console.session import UserSession
from app.console.views import deployment_form, is_number, matrix_rows, parse_deployment_form

RECENT_EVENTS = 20  # shown on a deployment's page
# Live pages one console process relays at once. Each holds a browser's socket and a
# connection to the API, so all users' together stay within the common limit of 1024 open
# files; one user's (a browser opens at most six over HTTP/1.1 anyway) are capped far below
# that, so that one user's tabs or scripts cannot use up everyone's.
STREAMS_PER_USER = 10
MAX_STREAMS = 400
STREAM_RETRY_AFTER = 30  # seconds; a live page frees its stream when it is closed

router = APIRouter()


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


def deployments_url(ws: str, name: str | None = None) -> str:
    base = f"{API}/workspaces/{segment(ws)}/applicationdeployments"
    return base if name is None else f"{base}/{segment(name)}"


@router.get("/w/{ws}/deployments", response_class=HTMLResponse)
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


@router.get("/w/{ws}/deployments/new", response_class=HTMLResponse)
async def new_deployment(request: Request, ws: str, version: str = "") -> Response:
    """The form; `?version=` (the catalog's "deploy this version") chooses the version."""
    seen = await viewer(request, ws)
    operator_only(seen)
    values = {"name": "", "version": version, "namespace": "", "regions": {}} if version else None
    return await form_page(request, seen, ws, values=values)


@router.post("/w/{ws}/deployments/new")
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
        return await form_page(request, seen, ws, existing=existing, values=values, problem=problem)
    return back(f"/w/{segment(ws)}/deployments/{segment(name)}")


@router.get("/w/{ws}/deployments/{name}", response_class=HTMLResponse)
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
        listed = await api(request).get(session, path, since=since, limit=1000)
        newest = (newest + listed["items"])[-RECENT_EVENTS:]
        if len(listed["items"]) < 1000:
            return newest[::-1]
        since = listed["lastId"]


@router.get("/w/{ws}/deployments/{name}/matrix", response_class=HTMLResponse)
async def deployment_matrix(request: Request, ws: str, name: str) -> Response:
    session = user_session(request)
    item = await api(request).get(session, deployments_url(ws, name))
    return parts(request).templates.TemplateResponse(
        request, "_matrix.html", {"d": item, "rows": matrix_rows(item)}
    )


@router.get("/w/{ws}/deployments/{name}/recent", response_class=HTMLResponse)
async def deployment_recent_events(request: Request, ws: str, name: str) -> Response:
    """The recent events alone: redrawn with the matrix on each event."""
    session = user_session(request)
    events = await recent_events(request, session, f"{deployments_url(ws, name)}/events")
    return parts(request).templates.TemplateResponse(request, "_events.html", {"events": events})


@router.get("/w/{ws}/deployments/{name}/stream")
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


@router.get("/w/{ws}/deployments/{name}/edit", response_class=HTMLResponse)
async def edit_deployment(request: Request, ws: str, name: str) -> Response:
    seen = await viewer(request, ws)
    operator_only(seen)
    item = await api(request).get(seen.session, deployments_url(ws, name))
    return await form_page(request, seen, ws, existing=item)


@router.post("/w/{ws}/deployments/{name}/edit")
async def save_deployment(request: Request, ws: str, name: str) -> Response:
    seen = await viewer(request, ws)
    form = await checked_form(request, seen.session)
    operator_only(seen)
    item = await api(request).get(seen.session, deployments_url(ws, name))
    values, spec = parse_deployment_form(form)
    return await save_or_preview(request, seen, ws, form, values, spec, existing=item)


@router.post("/w/{ws}/deployments/{name}/rollback")
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


@router.post("/w/{ws}/deployments/{name}/delete")
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
