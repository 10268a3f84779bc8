"""A workspace's vclusters and config syncs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.console.api import ApiProblem
from app.console.kit import (
    API,
    Viewer,
    api,
    back,
    checked_form,
    confirm,
    page,
    segment,
    user_session,
    viewer,
)
from app.console.views import parse_configsync_form

router = APIRouter()


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


@router.get("/w/{ws}/vclusters", response_class=HTMLResponse)
async def vclusters(request: Request, ws: str) -> Response:
    return await vclusters_page(request, await viewer(request, ws), ws)


@router.post("/w/{ws}/vclusters")
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


@router.get("/w/{ws}/vclusters/{name}/kubeconfig")
async def vcluster_kubeconfig(request: Request, ws: str, name: str) -> Response:
    session = user_session(request)
    answer = await api(request).request(session, "GET", f"{vclusters_url(ws, name)}/kubeconfig")
    return Response(
        answer.content, media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{segment(name)}.kubeconfig"'},
    )  # fmt: skip


@router.post("/w/{ws}/vclusters/{name}/delete")
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


@router.get("/w/{ws}/configsyncs", response_class=HTMLResponse)
async def configsyncs(request: Request, ws: str) -> Response:
    return await configsyncs_page(request, await viewer(request, ws), ws)


@router.post("/w/{ws}/configsyncs")
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
