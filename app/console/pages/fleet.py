"""The fleet, a cluster's page, and joining a cluster through its agent."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.console.api import ApiProblem
from app.console.kit import API, Viewer, api, checked_form, confirm, page, parts, segment, viewer
from app.console.session import ISSUED_COOKIE
from app.console.views import agent_view, fleet_view, is_number

# A join-token form is good for this long and once (its ticket is then remembered in a cookie
# of the browser for as long): a reload of the page that showed the token sends the form again,
# and is answered with the cluster's page, not with a second token.
JOIN_FORM_TTL = 3600
JOIN_FORMS_REMEMBERED = 8

router = APIRouter()


@router.get("/fleet", response_class=HTMLResponse)
async def fleet(request: Request) -> Response:
    seen = await viewer(request)
    regions, clusters = await fleet_view(api(request), seen.session)
    return page(request, seen, "fleet.html", regions=regions, clusters=clusters)


@router.get("/fleet/tiles", response_class=HTMLResponse)
async def fleet_tiles(request: Request) -> Response:
    """The fleet page's regions and tiles alone: the page redraws them while it is open."""
    seen = await viewer(request)
    regions, clusters = await fleet_view(api(request), seen.session)
    return page(request, seen, "_fleet_tiles.html", regions=regions, clusters=clusters)


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
    nodes = (await platform.get(seen.session, f"{cluster_url(name)}/nodes"))["items"]
    rollouts = await rollouts_here(request, seen, name)
    # Each drawing of the join form gets a ticket of its own: the form works once.
    ticket = f"{int(time.time())}x{secrets.token_hex(12)}"
    return page(
        request, seen, "cluster.html", status, c=cluster, agent=agent_view(cluster),
        node_groups=groups, nodes=nodes, ticket=ticket, rollouts=rollouts, **context,
    )  # fmt: skip


async def rollouts_here(request: Request, seen: Viewer, name: str) -> list[dict[str, Any]]:
    """The rollouts of the workspace on screen that target this cluster, each with its row
    for the cluster (the API lists rollouts per workspace, not per cluster)."""
    if seen.workspace is None:
        return []
    path = f"{API}/workspaces/{segment(seen.workspace)}/applicationdeployments"
    here = []
    for rollout in await api(request).items(seen.session, path):
        for target in rollout.get("status", {}).get("targets", []):
            if target["cluster"] == name:
                here.append({"d": rollout, "t": target})
    return here


@router.get("/clusters/{name}", response_class=HTMLResponse)
async def cluster(request: Request, name: str) -> Response:
    seen = await viewer(request)
    return await cluster_page(request, seen, name)


def used_tickets(request: Request) -> list[str]:
    return [t for t in request.cookies.get(ISSUED_COOKIE, "").split(".") if t]


def fresh_ticket(ticket: str) -> bool:
    issued, _, rest = ticket.partition("x")
    return is_number(issued) and bool(rest) and 0 <= time.time() - int(issued) < JOIN_FORM_TTL


@router.post("/clusters/{name}/join-token", response_class=HTMLResponse)
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
        httponly=True, secure=parts(request).secure, samesite="strict", path="/clusters/",
    )  # fmt: skip
    return response
