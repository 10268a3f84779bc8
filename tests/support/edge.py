"""Edge clusters for tests: `kmock` Kubernetes emulators on loopback, reached by the real
`kubernetes_asyncio` client over HTTP.

kmock serves discovery, `/version` and nodes. The adapter below fills what kmock 0.8 lacks and
the dispatcher depends on, and says so here:
- server-side apply (`PATCH` with `application/apply-patch+yaml`) creates a missing object
  (201) or replaces the applier's fields (one field manager owns everything it sends);
- `metadata.uid`, `resourceVersion`, `creationTimestamp`, and `generation` bumped on spec
  changes;
- Namespace objects (kmock's path parser cannot address `/api/v1/namespaces/{name}`);
- fault injection (an edge answering 422, 500 or 429) and a count of applies per object;
- watches (`?watch=true`) of the collections it stores, streamed as JSON lines.
Objects of the kinds the platform writes live in `EdgeCluster.store`; tests edit or delete
them there to play the edge's controllers (readiness) or an operator (drift).

Clients ask for `/version/` (kmock answers only `/version`, with a fixed k3s version), and
kmock logs every request and scans that log on each new one, so the log is cleared between
probes to keep latency flat. The emulator is served with aiohttp's RawTestServer rather than
`kmock.Server`, which patches aiohttp's resolver for the whole process and must then be
stopped in reverse order; clusters here go down in any order.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp.test_utils
import kmock
from aiohttp import web

ZONE = "topology.kubernetes.io/zone"
NODEGROUP = "theriseunion.io/nodegroup"
# The kinds the platform writes, by plural: the adapter serves these itself.
STORED = {"namespaces", "deployments", "helmcharts", "jobs", "configmaps", "secrets"}
OBJECT_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)/(?P<name>[^/]+)$"
)

COLLECTION_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)$"
)

Key = tuple[str, str | None, str]  # (plural, namespace, name)


def node(name: str, *, zone: str, group: str | None = None, ready: bool = True) -> dict[str, Any]:
    labels = {ZONE: zone, "kubernetes.io/hostname": name}
    if group:
        labels[NODEGROUP] = group
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@dataclass
class Fault:
    status: int
    method: str | None
    plural: str | None
    name: str | None
    times: int
    message: str


def _status(code: int, message: str, reason: str = "") -> web.Response:
    body = {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason or "Error", "message": message,
    }  # fmt: skip
    return web.json_response(body, status=code)


_SEEDS = itertools.count(20261127)  # each emulator its own, reproducible, random sequence


class EdgeCluster:
    def __init__(
        self,
        git_version: str = "v1.30.2",
        nodes: list[dict[str, Any]] = (),  # type: ignore[assignment]
        *,
        auto_ready: bool = False,
    ) -> None:
        self.k = kmock.KubernetesEmulator()
        minor = git_version.split(".")[1]
        self.k["get", re.compile(r"/version/?")] << {
            "major": "1", "minor": minor, "gitVersion": git_version, "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
            "compiler": "gc", "platform": "linux/amd64",
        }  # fmt: skip
        for item in nodes:
            self.set_node(item)
        self.port: int | None = None
        self._server: aiohttp.test_utils.RawTestServer | None = None
        self.store: dict[Key, dict[str, Any]] = {}
        self.applies: Counter[Key] = Counter()
        self.faults: list[Fault] = []
        # Play the edge's own controllers: what is applied becomes ready at once.
        self.auto_ready = auto_ready
        self._versions = itertools.count(1000)
        self.apply_delay = 0.0  # seconds each apply takes: a slow edge
        # Cleared: the edge is blackholed — connections are accepted and never answered (a
        # link that silently drops), unlike a stopped server that refuses at once.
        self.reachable = asyncio.Event()
        self.reachable.set()
        # A flaky edge: this share of its answers is a random 409, 429 or 500, and each
        # answer takes up to `jitter` seconds (seeded, so a failure can be replayed).
        self.error_rate = 0.0
        self.jitter = 0.0
        self.injected: Counter[int] = Counter()
        self._chance = random.Random(next(_SEEDS))

    def set_node(self, item: dict[str, Any]) -> None:
        self.k.objects["v1/nodes", None, item["metadata"]["name"]] = item

    async def start(self) -> EdgeCluster:
        await self.k.__aenter__()
        self._server = aiohttp.test_utils.RawTestServer(
            self._serve, host="127.0.0.1", port=self.port
        )
        await self._server.start_server()
        self.port = self._server.port  # the same port again after a restart
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
            await self.k.__aexit__(None, None, None)

    def clear_log(self) -> None:
        self.k._requests.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, token: str = "edge-test-token") -> str:
        import yaml

        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "edge",
                "clusters": [{"name": "edge", "cluster": {"server": self.url}}],
                "users": [{"name": "ops", "user": {"token": token}}],
                "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "ops"}}],
            }
        )

    # faults ----------------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        method: str | None = "PATCH",
        plural: str | None = None,
        name: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """The next `times` matching requests get `status` with a Kubernetes Status body."""
        self.faults.append(Fault(status, method, plural, name, times, message))

    def _fault_for(self, method: str, plural: str | None, name: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.method not in (None, method) or fault.plural not in (None, plural):
                continue
            if fault.name not in (None, name):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault
        return None

    # objects ---------------------------------------------------------------------------------

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.store.get((plural, namespace, name))

    def of_kind(self, plural: str) -> dict[Key, dict[str, Any]]:
        return {k: v for k, v in self.store.items() if k[0] == plural}

    def set_ready(self, namespace: str, name: str, ready: int | None = None) -> None:
        """What the edge's deployment controller would report once the pods run."""
        obj = self.store[("deployments", namespace, name)]
        wanted = obj["spec"].get("replicas", 1)
        count = wanted if ready is None else ready
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": wanted,
            "updatedReplicas": wanted,
            "readyReplicas": count,
            "availableReplicas": count,
        }

    def complete_helm_install(self, namespace: str, name: str) -> None:
        """What the helm-controller does: an install Job that succeeds."""
        chart = self.store[("helmcharts", namespace, name)]
        job = f"helm-install-{name}"
        chart["status"] = {"jobName": job}
        self.store[("jobs", namespace, job)] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "namespace": namespace},
            "status": {"succeeded": 1},
        }

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        await self.reachable.wait()
        if self.jitter:
            await asyncio.sleep(self._chance.uniform(0, self.jitter))
        if self.error_rate and self._chance.random() < self.error_rate:
            code = self._chance.choice((409, 429, 500))
            self.injected[code] += 1
            return _status(code, "injected flakiness")
        listed = COLLECTION_PATH.match(request.path)
        if listed and listed["plural"] in STORED and request.query.get("watch") in ("1", "true"):
            return await self._watch(request, listed["plural"], listed["ns"])
        match = OBJECT_PATH.match(request.path)
        plural = match["plural"] if match else None
        fault = self._fault_for(request.method, plural, match["name"] if match else None)
        if fault is not None:
            return _status(fault.status, fault.message)
        if match is None or plural not in STORED:
            return await self.k(request)  # type: ignore[no-any-return]
        key: Key = (match["plural"], match["ns"], match["name"])
        if request.method == "GET":
            found = self.store.get(key)
            return web.json_response(found) if found else _status(404, "not found", "NotFound")
        if request.method == "DELETE":
            if self.store.pop(key, None) is None:
                return _status(404, "not found", "NotFound")
            return web.json_response({"kind": "Status", "status": "Success"})
        if request.method == "PATCH":
            if request.content_type != "application/apply-patch+yaml":
                return _status(
                    415, f"the adapter serves only apply patches, not {request.content_type}"
                )
            body = json.loads(await request.read())
            if self.apply_delay:
                await asyncio.sleep(self.apply_delay)
            return self._apply(key, body)
        return _status(405, f"{request.method} is not served by the adapter")

    async def _watch(
        self, request: web.BaseRequest, plural: str, namespace: str | None
    ) -> web.StreamResponse:
        """A watch of a collection the adapter stores: an ADDED or MODIFIED event (one JSON
        line, as the API server streams them) for each object as it is first seen or changed,
        for as long as the client stays."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        seen: dict[Key, str] = {}
        while True:
            for key, obj in list(self.store.items()):
                if key[0] != plural or (namespace is not None and key[1] != namespace):
                    continue
                version = obj["metadata"].get("resourceVersion", "")
                if seen.get(key) != version:
                    kind = "MODIFIED" if key in seen else "ADDED"
                    seen[key] = version
                    event = {"type": kind, "object": obj}
                    await response.write(json.dumps(event).encode() + b"\n")
            await asyncio.sleep(0.05)

    def _apply(self, key: Key, body: dict[str, Any]) -> web.Response:
        self.applies[key] += 1
        meta = body.setdefault("metadata", {})
        if key[1] is not None:
            meta["namespace"] = key[1]
        live = self.store.get(key)
        if live is None:
            meta |= {
                "uid": str(uuid.uuid4()),
                "creationTimestamp": datetime.now(UTC).isoformat(),
                "generation": 1,
                "resourceVersion": str(next(self._versions)),
            }
            self.store[key] = body
            created = True
        else:
            old_meta = live["metadata"]
            meta |= {
                "uid": old_meta["uid"],
                "creationTimestamp": old_meta["creationTimestamp"],
                "labels": {**old_meta.get("labels", {}), **meta.get("labels", {})},
                "annotations": {**old_meta.get("annotations", {}), **meta.get("annotations", {})},
                "resourceVersion": str(next(self._versions)),
                "generation": old_meta["generation"]
                + (1 if body.get("spec") != live.get("spec") else 0),
            }
            if "status" in live:
                body["status"] = live["status"]
            self.store[key] = body
            created = False
        if self.auto_ready and key[0] == "deployments":
            self.set_ready(key[1] or "", key[2])
        if self.auto_ready and key[0] == "helmcharts":
            self.complete_helm_install(key[1] or "", key[2])
        return web.json_response(copy.deepcopy(body), status=201 if created else 200)
