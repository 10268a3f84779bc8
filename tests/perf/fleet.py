"""A lean emulator of many edge clusters in one process, for benchmarks: cluster i is served at
`http://127.0.0.1:PORT/c/i`, with what probing and dispatch use — `/version`, the node list,
server-side apply (create or replace), get, delete — and Deployments reporting ready at once.
kmock keeps a request log and answers through a rule engine, which is right for functional
tests and too heavy for a thousand clusters on two cores; this keeps only the objects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

VERSION = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.2", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
    "compiler": "gc", "platform": "linux/amd64",
}  # fmt: skip


def _nodes(cluster: int) -> dict[str, Any]:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{cluster}", "labels": {"topology.kubernetes.io/zone": "z"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    return {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [node]}


class Fleet:
    def __init__(self, clusters: int, latency: float = 0.0) -> None:
        self.clusters = clusters
        self.latency = latency  # seconds added to every answer: a WAN link
        self.objects: dict[tuple[int, str], dict[str, Any]] = {}
        self.applies = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def server(self, cluster: int) -> str:
        return f"http://127.0.0.1:{self.port}/c/{cluster}"

    def kubeconfig(self, cluster: int) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "edge",
            "clusters": [{"name": "edge", "cluster": {"server": self.server(cluster)}}],
            "users": [{"name": "ops", "user": {"token": f"token-{cluster}"}}],
            "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "ops"}}],
        })  # fmt: skip

    async def start(self) -> Fleet:
        app = web.Application()
        app.router.add_route("*", "/c/{cluster}/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        cluster = int(request.match_info["cluster"])
        path = "/" + request.match_info["path"]
        if path.rstrip("/") == "/version":
            return web.json_response(VERSION)
        if path == "/api/v1/nodes":
            return web.json_response(_nodes(cluster))
        key = (cluster, path)
        if request.method == "GET":
            found = self.objects.get(key)
            return web.json_response(found) if found else _missing()
        if request.method == "DELETE":
            return (
                web.json_response({"kind": "Status"}) if self.objects.pop(key, None) else _missing()
            )
        if request.method == "PATCH":
            body = await request.json()
            created = key not in self.objects
            meta = body.setdefault("metadata", {})
            meta["generation"] = 1
            if body.get("kind") == "Deployment":
                replicas = body.get("spec", {}).get("replicas", 1)
                body["status"] = {
                    "observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                }  # fmt: skip
            self.objects[key] = body
            self.applies += 1
            return web.json_response(body, status=201 if created else 200)
        return web.json_response({"kind": "Status", "code": 405}, status=405)


def _missing() -> web.Response:
    return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
