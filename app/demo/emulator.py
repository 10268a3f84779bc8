"""Emulated edge clusters for trying the platform on a laptop: one HTTP server on loopback
answers for every cluster of the demo fleet, cluster `NAME` at `/c/NAME`, with as much of the
Kubernetes API as the platform uses — `/version`, the node list, and server-side apply, get and
delete of the kinds it writes (`app.controller.kube.KINDS`).

What is applied becomes ready the way a real cluster's controllers make it so, after a while:
a Deployment reports its replicas ready a few seconds after each change of spec, a HelmChart's
install Job succeeds likewise. So the live matrix of a rollout moves from Progressing to Ready
as it would at real edges. Nothing runs: no image is pulled, no pod exists.

These clusters are for trying the product, not for testing it against Kubernetes: what the
real API server does beyond this (validation, admission, watches, quotas) is not here."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from app.certs import ServerIdentity, issue_server_identity

ZONE = "topology.kubernetes.io/zone"
NODEGROUP = "theriseunion.io/nodegroup"
OBJECT_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)/(?P<name>[^/]+)$"
)
# How long an applied Deployment or HelmChart takes to become ready, in seconds.
READY_AFTER = (2.0, 8.0)


@dataclass(frozen=True)
class DemoNode:
    name: str
    zone: str
    group: str | None = None


@dataclass
class DemoCluster:
    name: str
    region: str
    version: str
    nodes: list[DemoNode]
    # Applied objects by path, and when each becomes ready (monotonic seconds).
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)

    def node_list(self) -> dict[str, Any]:
        items = []
        for node in self.nodes:
            labels = {ZONE: node.zone, "kubernetes.io/hostname": node.name}
            if node.group:
                labels[NODEGROUP] = node.group
            items.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": labels},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {"kubeletVersion": self.version},
                },
            })  # fmt: skip
        return {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}

    def version_info(self) -> dict[str, str]:
        minor = self.version.split(".")[1]
        return {
            "major": "1", "minor": minor, "gitVersion": self.version, "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
            "compiler": "gc", "platform": "linux/amd64",
        }  # fmt: skip


class DemoFleet:
    """The emulated clusters, served on `host:port` (0: any free port) until `stop()`."""

    def __init__(self, clusters: list[DemoCluster], *, seed: int | None = None) -> None:
        self.clusters = {cluster.name: cluster for cluster in clusters}
        self._chance = random.Random(seed)
        self._versions = iter(range(1000, 10**9))
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"
        # HTTPS with a CA of its own, which the kubeconfigs carry as real clusters' do.
        self.identity: ServerIdentity | None = None

    def server(self, cluster: str) -> str:
        return f"https://{self.host}:{self.port}/c/{cluster}"

    def kubeconfig(self, cluster: str) -> str:
        """A kubeconfig for one emulated cluster (JSON, which is YAML)."""
        assert self.identity is not None, "start() the fleet first"
        where = {
            "server": self.server(cluster),
            "certificate-authority-data": base64.b64encode(self.identity.ca).decode(),
        }
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": cluster,
            "clusters": [{"name": cluster, "cluster": where}],
            "users": [{"name": "demo", "user": {"token": f"demo-{cluster}"}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "demo"}}],
        })  # fmt: skip

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> DemoFleet:
        app = web.Application()
        app.router.add_route("*", "/c/{cluster}/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.identity = issue_server_identity(host)
        site = web.TCPSite(self._runner, host, port, ssl_context=self.identity.server_context())
        await site.start()
        self.host = host
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        cluster = self.clusters.get(request.match_info["cluster"])
        if cluster is None:
            return _status(404, f"no demo cluster {request.match_info['cluster']!r}", "NotFound")
        # A little of a WAN link's delay, so that progress is something to watch.
        await asyncio.sleep(self._chance.uniform(0.005, 0.05))
        path = "/" + request.match_info["path"].rstrip("/")
        if path == "/version":
            return web.json_response(cluster.version_info())
        if path == "/api/v1/nodes":
            return web.json_response(cluster.node_list())
        if OBJECT_PATH.match(path) is None:
            return _status(404, f"{path} is not served by the demo fleet", "NotFound")
        if request.method == "GET":
            found = cluster.objects.get(path)
            if found is None:
                return _status(404, "not found", "NotFound")
            return web.json_response(self._observed(cluster, path, found))
        if request.method == "DELETE":
            if cluster.objects.pop(path, None) is None:
                return _status(404, "not found", "NotFound")
            cluster.ready_at.pop(path, None)
            return web.json_response({"kind": "Status", "status": "Success"})
        if request.method == "PATCH":
            body = await request.json()
            return self._apply(cluster, path, body)
        return _status(405, f"{request.method} is not served by the demo fleet", "MethodNotAllowed")

    def _apply(self, cluster: DemoCluster, path: str, body: dict[str, Any]) -> web.Response:
        meta = body.setdefault("metadata", {})
        live = cluster.objects.get(path)
        if live is None:
            meta |= {
                "uid": str(uuid.uuid4()),
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "generation": 1,
            }
        else:
            changed = body.get("spec") != live.get("spec")
            meta |= {
                "uid": live["metadata"]["uid"],
                "creationTimestamp": live["metadata"]["creationTimestamp"],
                "generation": live["metadata"]["generation"] + (1 if changed else 0),
            }
            if not changed:
                body["status"] = live.get("status", {})
        meta["resourceVersion"] = str(next(self._versions))
        if live is None or body.get("spec") != live.get("spec"):
            cluster.ready_at[path] = time.monotonic() + self._chance.uniform(*READY_AFTER)
        cluster.objects[path] = body
        return web.json_response(
            self._observed(cluster, path, body), status=200 if live is not None else 201
        )

    def _observed(self, cluster: DemoCluster, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The object with the status its controllers would have written by now."""
        ready = time.monotonic() >= cluster.ready_at.get(path, 0.0)
        kind = obj.get("kind")
        if kind == "Deployment":
            wanted = obj.get("spec", {}).get("replicas", 1)
            count = wanted if ready else 0
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"], "replicas": wanted,
                "updatedReplicas": wanted, "readyReplicas": count, "availableReplicas": count,
            }  # fmt: skip
        elif kind == "HelmChart":
            name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace", "default")
            job = f"helm-install-{name}"
            obj["status"] = {"jobName": job}
            job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"
            cluster.objects[job_path] = {
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job, "namespace": namespace},
                "status": {"succeeded": 1} if ready else {"active": 1},
            }  # fmt: skip
        return copy.deepcopy(obj)


def _status(code: int, message: str, reason: str) -> web.Response:
    body = {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason, "message": message,
    }  # fmt: skip
    return web.json_response(body, status=code)
