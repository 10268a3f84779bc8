"""The catalog: the charts of the platform's repository and the applications and versions
made from them (or from a plain workload). Platform admins upload charts and add applications
and versions here; anyone who may roll out goes from a version to a new deployment of it."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from app.console.api import ApiProblem
from app.console.kit import API, Viewer, api, back, page, segment, viewer
from app.console.pages.admin import admin_form, refused

router = APIRouter()

CHARTS = "/chartrepo/api/charts"
MAX_CHART_BYTES = 10 * 1024 * 1024  # the API's own limit


async def catalog_page(
    request: Request, seen: Viewer, status: int = 200, **context: Any
) -> Response:
    platform = api(request)
    applications = await platform.items(seen.session, f"{API}/applications")
    versions = await platform.items(seen.session, f"{API}/applicationversions")
    by_app: dict[str, list[dict[str, Any]]] = {}
    for version in versions:
        by_app.setdefault(version["spec"]["application"], []).append(version)
    charts: dict[str, list[dict[str, Any]]] = (await platform.get(seen.session, CHARTS)) or {}
    return page(
        request, seen, "catalog.html", status, applications=applications, versions=by_app,
        charts=charts, section="catalog", **context,
    )  # fmt: skip


@router.get("/catalog", response_class=HTMLResponse)
async def catalog(request: Request) -> Response:
    seen = await viewer(request)
    return await catalog_page(request, seen)


@router.post("/catalog/charts", response_class=HTMLResponse)
async def upload_chart(request: Request) -> Response:
    """A chart archive as Helm packages it; the API checks it as it would any upload."""
    seen, form = await admin_form(request)
    upload = form.get("chart")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ApiProblem(422, "Unprocessable Entity", "choose a chart archive (.tgz)", [])
        content = await upload.read(MAX_CHART_BYTES + 1)
        if len(content) > MAX_CHART_BYTES:
            raise ApiProblem(413, "Content Too Large", "a chart archive is at most 10 MiB", [])
        await api(request).request(
            seen.session, "POST", CHARTS, content=content,
            headers={"Content-Type": "application/gzip"},
        )  # fmt: skip
    except ApiProblem as problem:
        return await catalog_page(request, seen, problem.status, problem=refused(problem))
    return back("/catalog#charts")


@router.post("/catalog/applications", response_class=HTMLResponse)
async def create_application(request: Request) -> Response:
    seen, form = await admin_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "provisioner", "description")}
    body = {
        "metadata": {"name": values["name"]},
        "spec": {
            "provisioner": values["provisioner"] or "helm",
            "description": values["description"] or None,
        },
    }
    try:
        await api(request).request(seen.session, "POST", f"{API}/applications", json=body)
    except ApiProblem as problem:
        return await catalog_page(
            request, seen, problem.status, problem=refused(problem), app_values=values
        )
    return back(f"/catalog#app-{values['name']}")


def version_source(form: Any, provisioner: str) -> dict[str, Any]:
    """The version's `helm` or `workload` part, from the form."""
    if provisioner == "workload":
        image = str(form.get("image", "")).strip()
        name = str(form.get("deployment", "")).strip() or "app"
        replicas = str(form.get("replicas", "1")).strip() or "1"
        if not replicas.isdigit():
            raise ApiProblem(422, "Unprocessable Entity", "replicas: a whole number", [])
        container = {"name": name, "image": image}
        template = {"spec": {"containers": [container]}}
        spec = {"replicas": int(replicas), "template": template}
        return {"workload": {"deployments": [{"name": name, "spec": spec}]}}
    chart, _, version = str(form.get("chart", "")).partition(" ")
    try:
        values = yaml.safe_load(str(form.get("values", "")) or "{}") or {}
    except yaml.YAMLError as exc:
        raise ApiProblem(422, "Unprocessable Entity", f"values: not YAML ({exc})", []) from None
    if not isinstance(values, dict):
        raise ApiProblem(422, "Unprocessable Entity", "values: a YAML mapping", [])
    return {"helm": {"chart": chart, "version": version, "values": values}}


@router.post("/catalog/applications/{application}/versions", response_class=HTMLResponse)
async def create_version(request: Request, application: str) -> Response:
    seen, form = await admin_form(request)
    version = str(form.get("version", "")).strip()
    try:
        app = await api(request).get(seen.session, f"{API}/applications/{segment(application)}")
        body = {
            "metadata": {"name": f"{application}-v{version}"},
            "spec": {
                "application": application,
                "version": version,
                **version_source(form, app["spec"]["provisioner"]),
            },
        }
        await api(request).request(seen.session, "POST", f"{API}/applicationversions", json=body)
    except ApiProblem as problem:
        kept = {k: str(v) for k, v in form.items() if k != "csrf"}
        return await catalog_page(
            request, seen, problem.status, problem=refused(problem),
            version_values={application: kept},
        )  # fmt: skip
    return back(f"/catalog#app-{application}")
