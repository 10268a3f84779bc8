"""Who may do what, for platform admins: workspaces (their members and roles, the clusters
they are granted), users (role, disabled, a new password) and the platform's service accounts
(whose secret, like a new password, is shown once, in the answer to the form that made it)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.console.api import ApiProblem
from app.console.kit import API, Viewer, api, back, page, segment, viewer
from app.console.pages.admin import (
    MERGE_PATCH,
    admin_form,
    admin_only,
    confirmed_delete,
    refused,
)

router = APIRouter()

WORKSPACE_ROLES = ("admin", "operator", "viewer")
PLATFORM_ROLES = ("platform-regular", "platform-admin")


def workspace_url(name: str) -> str:
    return f"{API}/workspaces/{segment(name)}"


def once(response: Response) -> Response:
    """A page that shows a secret: never stored by the browser or a proxy."""
    response.headers["Cache-Control"] = "no-store"
    return response


# Workspaces -----------------------------------------------------------------------------------


async def workspaces_page(
    request: Request, seen: Viewer, status: int = 200, **context: Any
) -> Response:
    platform = api(request)
    workspaces = await platform.items(seen.session, f"{API}/workspaces")
    clusters = await platform.items(seen.session, f"{API}/clusters")
    return page(
        request, seen, "admin_workspaces.html", status, workspaces=workspaces,
        clusters=clusters, section="admin", **context,
    )  # fmt: skip


@router.get("/admin/workspaces", response_class=HTMLResponse)
async def workspaces(request: Request) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await workspaces_page(request, seen)


@router.post("/admin/workspaces", response_class=HTMLResponse)
async def create_workspace(request: Request) -> Response:
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "displayName")}
    granted = [str(c) for c in form.getlist("clusters")]
    body = {
        "metadata": {"name": values["name"]},
        "spec": {"displayName": values["displayName"] or None, "clusters": granted},
    }
    try:
        await api(request).request(seen.session, "POST", f"{API}/workspaces", json=body)
    except ApiProblem as problem:
        return await workspaces_page(
            request, seen, problem.status, problem=refused(problem), values=values,
            granted=granted,
        )  # fmt: skip
    return back(f"/admin/workspaces/{segment(values['name'])}")


async def workspace_page(
    request: Request, seen: Viewer, name: str, status: int = 200, **context: Any
) -> Response:
    platform = api(request)
    workspace = await platform.get(seen.session, workspace_url(name))
    members = await platform.items(seen.session, f"{workspace_url(name)}/members")
    users = await platform.items(seen.session, f"{API}/users")
    clusters = await platform.items(seen.session, f"{API}/clusters")
    return page(
        request, seen, "admin_workspace.html", status, w=workspace, members=members,
        users=users, clusters=clusters, roles=WORKSPACE_ROLES, section="admin", **context,
    )  # fmt: skip


@router.get("/admin/workspaces/{name}", response_class=HTMLResponse)
async def workspace(request: Request, name: str) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await workspace_page(request, seen, name)


@router.post("/admin/workspaces/{name}/clusters", response_class=HTMLResponse)
async def grant_clusters(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    granted = [str(c) for c in form.getlist("clusters")]
    try:
        await api(request).request(
            seen.session, "PATCH", workspace_url(name), json={"spec": {"clusters": granted}},
            headers={**MERGE_PATCH, "If-Match": f'"{form.get("resourceVersion", "")}"'},
        )  # fmt: skip
    except ApiProblem as problem:
        return await workspace_page(request, seen, name, problem.status, problem=refused(problem))
    return back(f"/admin/workspaces/{segment(name)}")


@router.post("/admin/workspaces/{name}/members", response_class=HTMLResponse)
async def add_member(request: Request, name: str) -> Response:
    """Adds a member, or changes the role of one (`change` set)."""
    seen, form = await admin_form(request)
    user, role = str(form.get("user", "")), str(form.get("role", ""))
    members = f"{workspace_url(name)}/members"
    try:
        if form.get("change"):
            await api(request).request(
                seen.session, "PUT", f"{members}/{segment(user)}", json={"role": role}
            )
        else:
            await api(request).request(
                seen.session, "POST", members, json={"user": user, "role": role}
            )
    except ApiProblem as problem:
        return await workspace_page(request, seen, name, problem.status, problem=refused(problem))
    return back(f"/admin/workspaces/{segment(name)}")


@router.post("/admin/workspaces/{name}/members/{user}/delete", response_class=HTMLResponse)
async def remove_member(request: Request, name: str, user: str) -> Response:
    seen, form = await admin_form(request)
    here = f"/admin/workspaces/{segment(name)}"
    return await confirmed_delete(
        request, seen, form, title="Remove member",
        question=f"Remove {user} from workspace {name}?",
        action=f"{here}/members/{segment(user)}/delete", cancel=here, section="admin",
        path=f"{workspace_url(name)}/members/{segment(user)}", done=here,
        redraw=lambda problem: workspace_page(request, seen, name, problem.status, problem=problem),
    )  # fmt: skip


@router.post("/admin/workspaces/{name}/delete", response_class=HTMLResponse)
async def delete_workspace(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    here = f"/admin/workspaces/{segment(name)}"
    return await confirmed_delete(
        request, seen, form, title="Delete workspace", question=f"Delete workspace {name}?",
        action=f"{here}/delete", cancel=here, section="admin", path=workspace_url(name),
        done="/admin/workspaces",
        redraw=lambda problem: workspace_page(request, seen, name, problem.status, problem=problem),
    )  # fmt: skip


# Users ----------------------------------------------------------------------------------------


async def users_page(request: Request, seen: Viewer, status: int = 200, **context: Any) -> Response:
    users = await api(request).items(seen.session, f"{API}/users")
    return page(
        request, seen, "admin_users.html", status, users=users, roles=PLATFORM_ROLES,
        section="admin", **context,
    )  # fmt: skip


@router.get("/admin/users", response_class=HTMLResponse)
async def users(request: Request) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await users_page(request, seen)


@router.post("/admin/users", response_class=HTMLResponse)
async def create_user(request: Request) -> Response:
    """A new user with a generated password, shown once on the answer."""
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "displayName", "role")}
    password = secrets.token_urlsafe(12)
    body = {
        "metadata": {"name": values["name"]},
        "spec": {
            "displayName": values["displayName"] or None,
            "platformRole": values["role"] or "platform-regular",
            "password": password,
        },
    }
    try:
        await api(request).request(seen.session, "POST", f"{API}/users", json=body)
    except ApiProblem as problem:
        return await users_page(
            request, seen, problem.status, problem=refused(problem), values=values
        )
    return once(
        await users_page(request, seen, issued={"user": values["name"], "password": password})
    )


@router.post("/admin/users/{name}", response_class=HTMLResponse)
async def edit_user(request: Request, name: str) -> Response:
    """The platform role and disabled; with `reset` set, a new password shown once."""
    seen, form = await admin_form(request)
    spec: dict[str, Any] = {}
    password = None
    if form.get("reset"):
        password = secrets.token_urlsafe(12)
        spec["password"] = password
    else:
        spec = {"platformRole": str(form.get("role", "")), "disabled": form.get("disabled") == "on"}
    try:
        await api(request).request(
            seen.session, "PATCH", f"{API}/users/{segment(name)}", json={"spec": spec},
            headers=MERGE_PATCH,
        )  # fmt: skip
    except ApiProblem as problem:  # the last platform admin, for one
        return await users_page(request, seen, problem.status, problem=refused(problem))
    if password is None:
        return back("/admin/users")
    return once(await users_page(request, seen, issued={"user": name, "password": password}))


# Service accounts -----------------------------------------------------------------------------


async def accounts_page(
    request: Request, seen: Viewer, status: int = 200, **context: Any
) -> Response:
    accounts = await api(request).items(seen.session, f"{API}/serviceaccounts")
    return page(
        request, seen, "admin_serviceaccounts.html", status, accounts=accounts,
        roles=PLATFORM_ROLES, section="admin",
        chartrepo=f"{request.app.state.public_url}/chartrepo", **context,
    )  # fmt: skip


@router.get("/admin/serviceaccounts", response_class=HTMLResponse)
async def accounts(request: Request) -> Response:
    seen = await viewer(request)
    admin_only(seen)
    return await accounts_page(request, seen)


@router.post("/admin/serviceaccounts", response_class=HTMLResponse)
async def create_account(request: Request) -> Response:
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "role")}
    body = {"metadata": {"name": values["name"]}, "spec": {"role": values["role"]}}
    try:
        created = await api(request).request(
            seen.session, "POST", f"{API}/serviceaccounts", json=body
        )
    except ApiProblem as problem:
        return await accounts_page(
            request, seen, problem.status, problem=refused(problem), values=values
        )
    return once(await accounts_page(request, seen, issued=created.json()))


@router.post("/admin/serviceaccounts/{name}/delete", response_class=HTMLResponse)
async def delete_account(request: Request, name: str) -> Response:
    seen, form = await admin_form(request)
    here = "/admin/serviceaccounts"
    return await confirmed_delete(
        request, seen, form, title="Delete service account",
        question=f"Delete service account {name}? What uses its secret stops working.",
        action=f"{here}/{segment(name)}/delete", cancel=here, section="admin",
        path=f"{API}/serviceaccounts/{segment(name)}", done=here,
        redraw=lambda problem: accounts_page(request, seen, problem.status, problem=problem),
    )  # fmt: skip
