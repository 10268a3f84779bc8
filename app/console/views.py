"""What the pages show, assembled from API answers; and forms turned back into API bodies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from app.console.api import ApiProblem, PlatformApi
from app.console.session import UserSession

API = "/api/v1"
NODE_GROUP_READS = 8  # node-group lists read at once while drawing the fleet


async def clusters_with_node_groups(api: PlatformApi, session: UserSession) -> list[dict[str, Any]]:
    clusters = await api.items(session, f"{API}/clusters")
    gate = asyncio.Semaphore(NODE_GROUP_READS)

    async def node_groups(cluster: dict[str, Any]) -> None:
        async with gate:
            groups = await api.items(
                session, f"{API}/clusters/{cluster['metadata']['name']}/nodegroups"
            )
        cluster["nodeGroups"] = groups

    await asyncio.gather(*(node_groups(c) for c in clusters))
    return clusters


async def fleet_view(
    api: PlatformApi, session: UserSession
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Regions with their clusters and per-phase counts, in name order."""
    regions = await api.items(session, f"{API}/regions")
    clusters = await clusters_with_node_groups(api, session)
    by_region: dict[str, dict[str, Any]] = {
        r["metadata"]["name"]: {"region": r, "clusters": [], "counts": {}} for r in regions
    }
    for cluster in sorted(clusters, key=lambda c: c["metadata"]["name"]):
        name = cluster["spec"]["region"]
        entry = by_region.setdefault(name, {"region": None, "clusters": [], "counts": {}})
        entry["clusters"].append(cluster)
        phase = cluster["status"]["phase"]
        entry["counts"][phase] = entry["counts"].get(phase, 0) + 1
    shown = [
        {"name": name, **entry}
        for name, entry in sorted(by_region.items())
        if entry["clusters"] or entry["region"] is not None
    ]
    return shown, clusters


def _region_of(clusters: list[dict[str, Any]]) -> dict[str, str]:
    return {c["metadata"]["name"]: c["spec"]["region"] for c in clusters}


async def deployment_form(
    api: PlatformApi, session: UserSession, *, existing: dict[str, Any] | None
) -> dict[str, Any]:
    """Choices for the deployment form (catalog versions, region → clusters → node groups) and
    its values, from `existing` when editing."""
    versions = await api.items(session, f"{API}/applicationversions")
    regions = await api.items(session, f"{API}/regions")
    clusters = await clusters_with_node_groups(api, session)
    choices: dict[str, dict[str, Any]] = {
        r["metadata"]["name"]: {"clusters": [], "nodeGroups": set()} for r in regions
    }
    for cluster in sorted(clusters, key=lambda c: c["metadata"]["name"]):
        choice = choices.setdefault(
            cluster["spec"]["region"], {"clusters": [], "nodeGroups": set()}
        )
        choice["clusters"].append(cluster)
        choice["nodeGroups"].update(g["metadata"]["name"] for g in cluster["nodeGroups"])
    values: dict[str, Any] = {"name": "", "version": "", "namespace": "", "regions": {}}
    if existing is not None:
        spec = existing["spec"]
        values.update(
            name=existing["metadata"]["name"], version=spec["applicationVersionRef"],
            namespace=spec.get("namespace") or "",
        )  # fmt: skip
        located = _region_of(clusters)
        for target in spec["targets"]:
            spanned = {target["region"]} if target.get("region") else set()
            spanned |= {located.get(c, "") for c in target.get("clusters", [])}
            region = next(iter(spanned), "")
            if len(spanned) != 1 or region not in choices or region in values["regions"]:
                # One target per visible region is what the form shows; anything else would
                # be changed by saving it, so the form is not offered.
                values["unrepresentable"] = (
                    "its targets are not one per region of clusters you can see; "
                    "edit it through the API"
                )
            values["regions"][region] = {
                "all": not target.get("clusters"),
                "clusters": list(target.get("clusters", [])),
                "nodeGroup": target.get("nodeGroupRef") or "",
                "replicas": "" if target.get("replicas") is None else str(target["replicas"]),
                "values": target.get("values") or {},
            }
    return {
        "versions": sorted(
            versions, key=lambda v: (v["spec"]["application"], v["metadata"]["name"])
        ),
        "choices": {
            name: {"clusters": c["clusters"], "nodeGroups": sorted(c["nodeGroups"])}
            for name, c in sorted(choices.items())
        },
        "values": values,
    }


def parse_deployment_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any]]:
    """The form's values (to show it again) and the spec it asks for.

    One target per region: the whole region (`all`) or the clusters ticked in it, with the
    region's node group and replica count. Values the form cannot show (per-target Helm
    values) are carried over from the deployment being edited."""
    picked: dict[str, dict[str, Any]] = {}

    def region(name: str) -> dict[str, Any]:
        return picked.setdefault(
            name, {"all": False, "clusters": [], "nodeGroup": "", "replicas": "", "values": {}}
        )

    for name in form.getlist("all"):
        region(str(name))["all"] = True
    for value in form.getlist("clusters"):
        name, _, cluster = str(value).partition("/")
        region(name)["clusters"].append(cluster)
    targets: list[dict[str, Any]] = []
    for name, choice in picked.items():
        choice["nodeGroup"] = str(form.get(f"nodegroup:{name}", "")).strip()
        choice["replicas"] = str(form.get(f"replicas:{name}", "")).strip()
        kept = str(form.get(f"values:{name}", ""))
        choice["values"] = _json_object(kept)
        target: dict[str, Any] = {"region": name}
        if not choice["all"]:
            target["clusters"] = choice["clusters"]
        if choice["nodeGroup"]:
            target["nodeGroupRef"] = choice["nodeGroup"]
        if choice["replicas"]:
            replicas = choice["replicas"]
            # Not a number: sent as is, and the API names the field in its 422.
            target["replicas"] = int(replicas) if is_number(replicas) else replicas
        if choice["values"]:
            target["values"] = choice["values"]
        targets.append(target)
    values = {
        "name": str(form.get("name", "")).strip(),
        "version": str(form.get("version", "")),
        "namespace": str(form.get("namespace", "")).strip(),
        "regions": picked,
    }
    spec: dict[str, Any] = {"applicationVersionRef": values["version"], "targets": targets}
    if values["namespace"]:
        spec["namespace"] = values["namespace"]
    return values, spec


def is_number(text: str) -> bool:
    """Digits only, ASCII ones: str.isdigit() also says yes to "²", which int() refuses."""
    return text.isascii() and text.isdecimal()


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def matrix_rows(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target, by region then cluster: the region-by-cluster phase matrix."""
    return sorted(deployment["status"]["targets"], key=lambda t: (t["region"], t["cluster"]))


def parse_configsync_form(form: FormData) -> dict[str, Any]:
    """A ConfigSync body from the form; `key=value` lines become its data."""
    data: dict[str, str] = {}
    for number, line in enumerate(str(form.get("data", "")).splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ApiProblem(
                422, "Unprocessable Content", f"data line {number} is not key=value", []
            )
        data[key.strip()] = value
    spec: dict[str, Any] = {
        "data": data,
        "secret": form.get("secret") == "on",
        "targets": [{"region": str(r)} for r in form.getlist("regions")],
    }
    if form.get("namespace"):
        spec["namespace"] = str(form["namespace"]).strip()
    return {"metadata": {"name": str(form.get("name", "")).strip()}, "spec": spec}


def agent_view(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """How a cluster's agent stands, in words: None for a cluster the platform dials itself.

    `state` is connected | disconnected (joined, no tunnel now) | cut-off (its credential was
    revoked by a new join token: it must join again) | never (no agent has joined yet)."""
    agent = cluster["status"].get("agent")
    if cluster["spec"]["connection"].get("type") != "agent" or agent is None:
        return None
    if agent.get("connected"):
        since = agent.get("connectedSince")
        state, words = "connected", f"connected {duration(since)}" if since else "connected"
    elif agent.get("joined"):
        state, words = "disconnected", "agent not connected"
    elif agent.get("lastHeartbeatTime") or agent.get("version"):
        state, words = "cut-off", "agent not connected: it must join again"
    else:
        state, words = "never", "agent never joined"
    return {**agent, "state": state, "words": words}


def duration(since: str | None) -> str:
    """How long since an RFC 3339 time, in one unit: 40 s, 5 min, 3 h, 2 d."""
    if not since:
        return "—"
    return _span((datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds())


def time_left(until: str | None) -> str:
    """How long from now until an RFC 3339 time (rounded up to the minute): 24 h, 5 min."""
    if not until:
        return "—"
    left = (datetime.fromisoformat(until) - datetime.now(UTC)).total_seconds()
    return "no time" if left <= 0 else _span(left + 59)


def _span(seconds: float) -> str:
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h"
    return f"{whole // 86400} d"


def timestamp(value: str | None) -> str:
    """An RFC 3339 time as people read it, in UTC: 2025-06-01 14:05:09 UTC."""
    if not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
