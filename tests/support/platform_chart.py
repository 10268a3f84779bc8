"""The edge-platform Helm chart rendered by Helm's Go SDK, looked into and validated."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).parents[2] / "charts" / "edge-platform"
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Custom resources of operators the production mode relies on: kubernetes-validate ships only
# the built-in kinds' schemas, so these are checked field by field in tests/chart/.
CUSTOM_KINDS = {"Cluster", "RedisCluster", "ServiceMonitor", "PrometheusRule"}

MINIMAL = """helm install edge-platform edge-platform/edge-platform \\
  --namespace edge-platform \\
  --create-namespace \\
  --set global.mode=minimal \\
  --set api-server.replicas=1 \\
  --set controller.replicas=1 \\
  --set console.replicas=1 \\
  --set monitoring.enabled=true \\
  --set logging.enabled=true"""
PRODUCTION = """helm install edge-platform edge-platform/edge-platform \\
  --namespace edge-platform \\
  --create-namespace \\
  --set global.mode=production \\
  --set api-server.replicas=3 \\
  --set controller.replicas=3 \\
  --set console.replicas=2 \\
  --set api-server.resources.requests.cpu=2000m \\
  --set api-server.resources.requests.memory=4Gi \\
  --set controller.resources.requests.cpu=1000m \\
  --set controller.resources.requests.memory=2Gi \\
  --set postgresql.enabled=true \\
  --set redis.enabled=true \\
  --set monitoring.enabled=true \\
  --set logging.enabled=true"""


def command_values(command: str) -> dict[str, Any]:
    """The values of a `helm install … --set a=b …` command line, parsed as Helm parses them."""
    words = shlex.split(command.replace("\\\n", " "))
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    return helm.parse_set_string(",".join(sets))


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(
        values, name="edge-platform", namespace="edge-platform", is_install=True
    )
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(
        f"no {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
