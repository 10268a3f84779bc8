"""Edge clusters for tests: `kmock` Kubernetes emulators on loopback, reached by the real
`kubernetes_asyncio` client over HTTP.

Adapter (what kmock 0.8 lacks and this fills): clients ask for `/version/` (kmock answers only
`/version`, with a fixed k3s version), and kmock logs every request and scans that log on each
new one, so the log is cleared between probes to keep latency flat. The emulator is served with
aiohttp's RawTestServer rather than `kmock.Server`, which patches aiohttp's resolver for the
whole process and must then be stopped in reverse order; clusters here go down in any order.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp.test_utils
import kmock

ZONE = "topology.kubernetes.io/zone"
NODEGROUP = "theriseunion.io/nodegroup"


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


class EdgeCluster:
    def __init__(self, git_version: str = "v1.30.2", nodes: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
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

    def set_node(self, item: dict[str, Any]) -> None:
        self.k.objects["v1/nodes", None, item["metadata"]["name"]] = item

    async def start(self) -> EdgeCluster:
        await self.k.__aenter__()
        self._server = aiohttp.test_utils.RawTestServer(self.k, host="127.0.0.1", port=self.port)
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
