"""What platform admins set up by hand: regions, registering clusters (direct, or behind NAT
through an agent), enabling, disabling and deleting them, and their node groups.

Every form is sent again as typed when the API refuses it, with the API's reason in words; the
API checks permissions itself, and these pages are offered to platform admins only."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from app.console.api import ApiProblem
from app.console.kit import API, Viewer, api, back, checked_form, confirm, page, segment, viewer
from app.console.pages.fleet import cluster_page, cluster_url

router = APIRouter()

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
MAX_KUBECONFIG_BYTES = 512 * 1024  # the API's own limit
NODEGROUP_LABEL = "theriseunion.io/nodegroup"  # what a node group selects by default


def admin_only(seen: Viewer) -> None:
    if not seen.platform_admin:
        raise ApiProblem(403, "Forbidden", "this page is for platform admins", [])


def refused(problem: ApiProblem) -> ApiProblem:
    """A refusal the page shows; a fault (5xx) goes to the error page instead."""
    if problem.status >= 500:
        raise problem
    return problem


async def admin_form(request: Request) -> tuple[Viewer, FormData]:
    """Who sends an administration form, and the form, checked (CSRF) and for admins only."""
    seen = await viewer(request)
    form = await checked_form(request, seen.session)
    admin_only(seen)
    return seen, form


async def confirmed_delete(
    request: Request, seen: Viewer, form: FormData, *, title: str, question: str,
    action: str, cancel: str, section: str, path: str, done: str,
    redraw: Callable[[ApiProblem], Awaitable[Response]],
) -> Response:  # fmt: skip
    """DELETE `path` once the user has confirmed (asked on a page of its own without
    JavaScript), then to `done`; a refusal (still in use: the API names by what) is shown on
    the page `redraw` draws."""
    asked = confirm(
        request, seen, form, title=title, question=question, action=action, cancel=cancel,
        section=section,
    )  # fmt: skip
    if asked is not None:
        return asked
    try:
        await api(request).request(seen.session, "DELETE", path)
    except ApiProblem as problem:
        return await redraw(refused(problem))
    return back(done)


LABEL = re.compile(r"^\s*([^=,\s]+)\s*=\s*([^=,\s]*)\s*$")


def parse_labels(text: str) -> dict[str, str]:
    """`key=value, key=value` (commas or new lines) as typed; the API checks the keys and
    values themselves."""
    labels: dict[str, str] = {}
    for part in re.split(r"[,\n]", text):
        if not part.strip():
            continue
        match = LABEL.match(part)
        if match is None:
            raise ApiProblem(
                422, "Unprocessable Entity", f"labels: {part.strip()!r} is not key=value", []
            )
        labels[match[1]] = match[2]
    return labels


def show_labels(labels: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


# Regions --------------------------------------------------------------------------------------


async def regions_page(
    request: Request, seen: Viewer, status: int = 200, **context: Any
) -> Response:
    regions = await api(request).items(seen.session, f"{API}/regions")
    return page(
        request, seen, "admin_regions.html", status, regions=regions, show_labels=show_labels,
        section="admin", **context,
    )  # fmt: skip


@router.get("/admin/regions", response_class=HTMLResponse)
async def regions(request: Request) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await regions_page(request, seen)


@router.post("/admin/regions", response_class=HTMLResponse)
async def create_region(request: Request) -> Response:
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "displayName", "labels")}
    try:
        body = {
            "metadata": {"name": values["name"], "labels": parse_labels(values["labels"])},
            "spec": {"displayName": values["displayName"] or None},
        }
        await api(request).request(seen.session, "POST", f"{API}/regions", json=body)
    except ApiProblem as problem:
        return await regions_page(
            request, seen, problem.status, problem=refused(problem), values=values
        )
    return back("/admin/regions")


@router.post("/admin/regions/{name}", response_class=HTMLResponse)
async def edit_region(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    try:
        body = {
            "metadata": {"labels": parse_labels(str(form.get("labels", "")))},
            "spec": {"displayName": str(form.get("displayName", "")).strip() or None},
        }
        await api(request).request(
            seen.session, "PATCH", f"{API}/regions/{segment(name)}", json=body,
            headers={**MERGE_PATCH, "If-Match": f'"{form.get("resourceVersion", "")}"'},
        )  # fmt: skip
    except ApiProblem as problem:
        return await regions_page(
            request, seen, problem.status, problem=refused(problem), editing=name
        )
    return back("/admin/regions")


@router.post("/admin/regions/{name}/delete", response_class=HTMLResponse)
async def delete_region(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    return await confirmed_delete(
        request, seen, form, title="Delete region", question=f"Delete region {name}?",
        action=f"/admin/regions/{segment(name)}/delete", cancel="/admin/regions",
        section="admin", path=f"{API}/regions/{segment(name)}", done="/admin/regions",
        redraw=lambda problem: regions_page(request, seen, problem.status, problem=problem),
    )  # fmt: skip


# Clusters -------------------------------------------------------------------------------------


async def new_cluster_page(
    request: Request, seen: Viewer, status: int = 200, **context: Any
) -> Response:
    regions = await api(request).items(seen.session, f"{API}/regions")
    return page(
        request, seen, "cluster_new.html", status, regions=regions, section="fleet", **context
    )


@router.get("/admin/clusters/new", response_class=HTMLResponse)
async def new_cluster(request: Request) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await new_cluster_page(request, seen, values={"type": "direct"})


async def kubeconfig_of(form: FormData) -> str:
    """The kubeconfig uploaded as a file, else the one pasted."""
    upload = form.get("kubeconfigFile")
    if isinstance(upload, UploadFile) and upload.filename:
        content = await upload.read(MAX_KUBECONFIG_BYTES + 1)
        if len(content) > MAX_KUBECONFIG_BYTES:
            raise ApiProblem(422, "Unprocessable Entity", "the kubeconfig file is over 512 KiB", [])
        try:
            return content.decode()
        except UnicodeDecodeError:
            raise ApiProblem(
                422, "Unprocessable Entity", "the kubeconfig file is not text (UTF-8)", []
            ) from None
    return str(form.get("kubeconfig", ""))


@router.post("/admin/clusters/new", response_class=HTMLResponse)
async def register_cluster(request: Request) -> Response:
    seen, form = await admin_form(request)
    values = {
        k: str(form.get(k, "")).strip()
        for k in ("name", "region", "type", "provider", "labels", "kubeconfig")
    }
    try:
        connection: dict[str, Any] = {"type": "agent"}
        if values["type"] != "agent":
            connection = {"type": "direct", "kubeconfig": await kubeconfig_of(form)}
        body = {
            "metadata": {"name": values["name"], "labels": parse_labels(values["labels"])},
            "spec": {
                "region": values["region"],
                "provider": values["provider"] or None,
                "connection": connection,
            },
        }
        await api(request).request(seen.session, "POST", f"{API}/clusters", json=body)
    except ApiProblem as problem:
        # The kubeconfig is not drawn again (it holds credentials); the rest is.
        values.pop("kubeconfig")
        return await new_cluster_page(
            request, seen, problem.status, problem=refused(problem), values=values
        )
    # Behind NAT, the cluster's page offers the join token next.
    return back(f"/clusters/{segment(values['name'])}")


@router.post("/clusters/{name}/enabled", response_class=HTMLResponse)
async def set_enabled(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    enabled = form.get("enabled") == "true"
    try:
        await api(request).request(
            seen.session, "PATCH", cluster_url(name), json={"spec": {"enabled": enabled}},
            headers=MERGE_PATCH,
        )  # fmt: skip
    except ApiProblem as problem:
        return await cluster_page(request, seen, name, problem.status, problem=refused(problem))
    return back(f"/clusters/{segment(name)}")


@router.post("/clusters/{name}/delete", response_class=HTMLResponse)
async def delete_cluster(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    here = f"/clusters/{segment(name)}"
    return await confirmed_delete(
        request, seen, form, title="Delete cluster",
        question=f"Delete cluster {name}? The platform forgets it and its node groups; what "
        "runs in it stays.",
        action=f"{here}/delete", cancel=here, section="fleet", path=cluster_url(name),
        done="/fleet",
        redraw=lambda problem: cluster_page(request, seen, name, problem.status, problem=problem),
    )  # fmt: skip


# Node groups ----------------------------------------------------------------------------------


@router.post("/clusters/{name}/nodegroups", response_class=HTMLResponse)
async def create_node_group(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "displayName", "selector")}
    try:
        spec: dict[str, Any] = {"displayName": values["displayName"] or None}
        wanted = {NODEGROUP_LABEL: values["name"]}
        if values["selector"]:
            wanted = parse_labels(values["selector"])
            spec["selector"] = {"matchLabels": wanted}
        if form.get("action") == "preview":
            nodes = await api(request).get(seen.session, f"{cluster_url(name)}/nodes")
            matching = [
                n["name"]
                for n in nodes["items"]
                if all(n["labels"].get(k) == v for k, v in wanted.items())
            ]
            return await cluster_page(request, seen, name, group_values=values, preview=matching)
        body = {"metadata": {"name": values["name"]}, "spec": spec}
        await api(request).request(
            seen.session, "POST", f"{cluster_url(name)}/nodegroups", json=body
        )
    except ApiProblem as problem:
        return await cluster_page(
            request, seen, name, problem.status, problem=refused(problem), group_values=values
        )
    return back(f"/clusters/{segment(name)}#groups")


@router.post("/clusters/{name}/nodegroups/{group}", response_class=HTMLResponse)
async def edit_node_group(request: Request, name: str, group: str) -> Response:
    """The group's nodes (labels; empty: the default label) and display name."""
    seen, form = await admin_form(request)
    selector = str(form.get("selector", "")).strip()
    try:
        spec = {
            "displayName": str(form.get("displayName", "")).strip() or None,
            # null in a merge patch removes the selector: the default label again.
            "selector": {"matchLabels": parse_labels(selector)} if selector else None,
        }
        await api(request).request(
            seen.session, "PATCH", f"{cluster_url(name)}/nodegroups/{segment(group)}",
            json={"spec": spec}, headers=MERGE_PATCH,
        )  # fmt: skip
    except ApiProblem as problem:
        return await cluster_page(request, seen, name, problem.status, problem=refused(problem))
    return back(f"/clusters/{segment(name)}#groups")


@router.post("/clusters/{name}/nodegroups/{group}/delete", response_class=HTMLResponse)
async def delete_node_group(request: Request, name: str, group: str) -> Response:
    seen, form = await admin_form(request)
    here = f"/clusters/{segment(name)}"
    return await confirmed_delete(
        request, seen, form, title="Delete node group",
        question=f"Delete node group {group} of {name}?",
        action=f"{here}/nodegroups/{segment(group)}/delete", cancel=here, section="fleet",
        path=f"{cluster_url(name)}/nodegroups/{segment(group)}", done=f"{here}#groups",
        redraw=lambda problem: cluster_page(request, seen, name, problem.status, problem=problem),
    )  # fmt: skip
