"""A lean emulator of many edge clusters in one process, for benchmarks: cluster i is served at
`http://127.0.0.1:PORT/c/i`, with what probing and dispatch use — `/version`, the node list,
server-side apply (create or replace), get, delete — and Deployments reporting ready at once.
kmock keeps a request log and answers through a rule engine, which is right for functional
tests and too heavy for a thousand clusters on two cores; this keeps only the objects.

It runs inside the caller's event loop (`Fleet(n)`: tests read `objects` and `applies`), or as
a process of its own (`Fleet(n, own_process=True)`, `python -m tests.perf.fleet --port P`): the
benchmarks use that, so that answering the controller's probes and applies does not delay the
load generator's own clock and requests in a shared event loop. With `tls=True` it serves
HTTPS with a certificate of its own CA, and the kubeconfigs carry that CA as real edge
clusters' do: what a client keeps per cluster depends on it (without a CA in the kubeconfig,
the Kubernetes client loads the whole system trust store into each cluster's SSL context).

`POST /control/flapping?on=1|0` makes every cluster's node flip Ready ↔ NotReady on each node
list (each probe sees a change of phase), or stay Ready."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from app.certs import issue_server_identity
from app.embedded import free_port
from tests.perf.harness import spawn, stop, wait_ready

VERSION = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.2", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
    "compiler": "gc", "platform": "linux/amd64",
}  # fmt: skip


def _nodes(cluster: int, ready: bool) -> dict[str, Any]:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{cluster}", "labels": {"topology.kubernetes.io/zone": "z"}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    return {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [node]}


def _certificates(directory: Path) -> bytes:
    """A CA and a certificate it signs for 127.0.0.1, written as ca.pem, cert.pem, key.pem:
    the CA's PEM."""
    identity = issue_server_identity("127.0.0.1", days=1)
    (directory / "ca.pem").write_bytes(identity.ca)
    (directory / "cert.pem").write_bytes(identity.certificate)
    (directory / "key.pem").write_bytes(identity.key)
    return identity.ca


class Fleet:
    def __init__(self, clusters: int, latency: float = 0.0, *, own_process: bool = False,
                 tls: bool = False) -> None:  # fmt: skip
        self.clusters = clusters
        self.latency = latency  # seconds added to every answer: a WAN link
        self.own_process = own_process
        # Only filled in-process: the objects applied, by (cluster, path), and how many applies.
        self.objects: dict[tuple[int, str], dict[str, Any]] = {}
        self.applies = 0
        self.flapping = False
        self._node_lists: dict[int, int] = {}
        self._runner: web.AppRunner | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        # Serving HTTPS: the folder of ca.pem, cert.pem and key.pem, and the CA clients trust.
        self.certificates: Path | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self._ca = b""
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        if tls:
            self._folder = tempfile.TemporaryDirectory(prefix="fleet-tls-")
            self.certificates = Path(self._folder.name)
            self._ca = _certificates(self.certificates)
            self.ssl_context = ssl.create_default_context(cadata=self._ca.decode())

    @property
    def root(self) -> str:
        return f"{'https' if self.certificates else 'http'}://127.0.0.1:{self.port}"

    def server(self, cluster: int) -> str:
        return f"{self.root}/c/{cluster}"

    def kubeconfig(self, cluster: int) -> str:
        where: dict[str, Any] = {"server": self.server(cluster)}
        if self._ca:
            where["certificate-authority-data"] = base64.b64encode(self._ca).decode()
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "edge",
            "clusters": [{"name": "edge", "cluster": where}],
            "users": [{"name": "ops", "user": {"token": f"token-{cluster}"}}],
            "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "ops"}}],
        })  # fmt: skip

    async def start(self, port: int = 0) -> Fleet:
        if self.own_process:
            self.port = port or free_port()
            tls = ["--tls", str(self.certificates)] if self.certificates else []
            self._process = spawn([sys.executable, "-m", "tests.perf.fleet", "--port",
                                   str(self.port), "--latency", str(self.latency), *tls],
                                  dict(os.environ), "fleet")  # fmt: skip
            try:
                await wait_ready(f"{self.server(0)}/version", ssl_context=self.ssl_context)
            except BaseException:
                await self.stop()
                raise
            return self
        app = web.Application()
        app.router.add_route("*", "/c/{cluster}/{path:.*}", self._serve)
        app.router.add_post("/control/flapping", self._control)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        served: ssl.SSLContext | None = None
        if self.certificates:
            served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            served.load_cert_chain(self.certificates / "cert.pem", self.certificates / "key.pem")
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=served)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._folder is not None:
            self._folder.cleanup()

    def session(self) -> aiohttp.ClientSession:
        """A client session that trusts the fleet."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl_context or True))

    async def set_flapping(self, on: bool) -> None:
        async with self.session() as session:
            url = f"{self.root}/control/flapping"
            async with session.post(url, params={"on": str(int(on))}) as response:
                response.raise_for_status()

    async def _control(self, request: web.Request) -> web.Response:
        self.flapping = request.query.get("on") == "1"
        return web.json_response({"flapping": self.flapping})

    def _ready(self, cluster: int) -> bool:
        if not self.flapping:
            return True
        count = self._node_lists[cluster] = self._node_lists.get(cluster, 0) + 1
        return count % 2 == 0

    async def _serve(self, request: web.Request) -> web.Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        cluster = int(request.match_info["cluster"])
        path = "/" + request.match_info["path"]
        if path.rstrip("/") == "/version":
            return web.json_response(VERSION)
        if path == "/api/v1/nodes":
            return web.json_response(_nodes(cluster, self._ready(cluster)))
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


async def _serve_forever(port: int, latency: float, certificates: Path | None) -> None:
    # A connection per managed cluster: lift the soft limit of open files to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fleet = Fleet(0, latency)
    fleet.certificates = certificates
    await fleet.start(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.perf.fleet")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--tls", type=Path, help="folder of cert.pem and key.pem")
    options = parser.parse_args()
    try:
        asyncio.run(_serve_forever(options.port, options.latency, options.tls))
    except KeyboardInterrupt:
        sys.exit(0)
