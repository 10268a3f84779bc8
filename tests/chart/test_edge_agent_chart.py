"""The edge agent's chart (charts/builtin-src/edge-agent), rendered by Helm's own Go SDK
(helm-python-sdk), linted, every manifest validated against the Kubernetes schemas of the
oldest supported (1.25) and the newest available version; and its packaged archive, which the
platform serves from its chart repository, checked to hold exactly the source's files."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from app.agent.settings import DEFAULT_CREDENTIAL_SECRET
from app.catalog.charts import inspect_chart

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "builtin-src" / "edge-agent"
ARCHIVE = ROOT / "charts" / "builtin" / "edge-agent-0.1.0.tgz"
# The image tag the platform's own chart runs: the agent is the same image.
PLATFORM_TAG = yaml.safe_load((ROOT / "charts" / "edge-platform" / "values.yaml").read_text())[
    "global"
]["imageTag"]
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
REQUIRED = {"platformUrl": "https://edge.example.com", "joinToken": "join-abc123"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(values, name="edge-agent", namespace="edge-agent", is_install=True)
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(
        f"no {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "Deployment", "edge-agent")["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_agent_with_a_join_token(chart: helm.Chart) -> None:
    docs = render(chart, REQUIRED)
    validate(docs)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ClusterRole", "edge-agent"),
        ("ClusterRoleBinding", "edge-agent"),
        ("Deployment", "edge-agent"),
        ("Role", "edge-agent-credential"),
        ("RoleBinding", "edge-agent-credential"),
        ("Secret", "edge-agent"),
        ("ServiceAccount", "edge-agent"),
    ]
    deployment = find(docs, "Deployment", "edge-agent")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod(docs)
    assert spec["serviceAccountName"] == "edge-agent"
    assert spec["automountServiceAccountToken"] is True
    (container,) = spec["containers"]
    assert container["image"] == f"registry.edge.theriseunion.io/edge-platform:{PLATFORM_TAG}"
    assert container["command"] == ["edge-platform"]
    assert container["args"] == [
        "agent",
        "--secret-dir=/etc/edge-agent",
        f"--credential-secret={DEFAULT_CREDENTIAL_SECRET}",
        "--log-level=info",
    ]
    variables = env(container)
    assert variables["EDGE_AGENT_PLATFORM_URL"] == "https://edge.example.com"
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "HTTPS_PROXY" not in variables
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["settings"] == "/etc/edge-agent"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["settings"]["secret"]["secretName"] == "edge-agent"
    secret = find(docs, "Secret", "edge-agent")
    assert base64.b64decode(secret["data"]["token"]).decode() == "join-abc123"
    # Unprivileged, as the platform's own pods.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_rbac_grants_the_platforms_needs_and_only_the_credential_secret(
    chart: helm.Chart,
) -> None:
    docs = render(chart, REQUIRED)
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in find(docs, "ClusterRole", "edge-agent")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    write = {"get", "create", "update", "patch", "delete"}
    assert rules == {
        ("", "nodes"): {"get", "list", "watch"},
        ("", "namespaces"): write,
        ("", "configmaps"): write,
        ("", "secrets"): write,
        ("apps", "deployments"): write,
        ("batch", "jobs"): {"get"},
        ("helm.cattle.io", "helmcharts"): write,
    }
    binding = find(docs, "ClusterRoleBinding", "edge-agent")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "edge-agent", "namespace": "edge-agent"}
    ]
    role = find(docs, "Role", "edge-agent-credential")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [DEFAULT_CREDENTIAL_SECRET],
            "verbs": ["get", "update", "patch"],
        },
    ]
    assert (
        find(docs, "RoleBinding", "edge-agent-credential")["roleRef"]["name"]
        == role["metadata"]["name"]
    )

    narrowed = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
    docs = render(chart, {**REQUIRED, "rbac": {"rules": narrowed}})
    assert find(docs, "ClusterRole", "edge-agent")["rules"] == narrowed
    docs = render(chart, {**REQUIRED, "rbac": {"create": False}})
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in docs)
    find(docs, "Role", "edge-agent-credential")  # the agent cannot work without it


def test_an_existing_secret_a_private_ca_a_proxy_and_placement(chart: helm.Chart) -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    values = {
        "platformUrl": "https://edge.example.com/platform",
        "existingSecret": "agent-join",
        "platformCA": ca,
        "credentialSecret": "agent-credential",
        "logLevel": "debug",
        "proxy": {"httpsProxy": "http://proxy.site:3128", "noProxy": ".site.internal"},
        "image": {"repository": "registry.site/edge-platform", "tag": "v9"},
        "imagePullSecrets": [{"name": "pull"}],
        "nodeSelector": {"node-role.kubernetes.io/control-plane": "true"},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "50m"}},
    }
    docs = render(chart, values)
    validate(docs)
    assert not any(d["kind"] == "Secret" for d in docs)  # the operator's is used
    spec = pod(docs)
    (container,) = spec["containers"]
    assert container["image"] == "registry.site/edge-platform:v9"
    assert "--platform-ca-file=/etc/edge-agent-ca/platformCA" in container["args"]
    assert "--credential-secret=agent-credential" in container["args"]
    assert "--log-level=debug" in container["args"]
    variables = env(container)
    assert variables["HTTPS_PROXY"] == "http://proxy.site:3128"
    assert variables["NO_PROXY"] == ".site.internal"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["settings"]["secret"]["secretName"] == "agent-join"
    assert volumes["platform-ca"]["configMap"]["name"] == "edge-agent-platform-ca"
    assert find(docs, "ConfigMap", "edge-agent-platform-ca")["data"]["platformCA"] == ca
    assert spec["imagePullSecrets"] == [{"name": "pull"}]
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": "true"}
    assert spec["tolerations"][0]["effect"] == "NoSchedule"
    assert container["resources"] == {  # merged with the defaults, key by key
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    role = find(docs, "Role", "edge-agent-credential")
    assert role["rules"][1]["resourceNames"] == ["agent-credential"]


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"joinToken": "t"}, "platformUrl is required"),
        ({"platformUrl": "edge.example.com"}, "is not an http(s) URL"),
        ({"platformUrl": "https://user:pw@edge.example.com"}, "is not an http(s) URL"),
        ({**REQUIRED, "existingSecret": "other"}, "set joinToken or existingSecret, not both"),
    ],
)
def test_values_the_agent_cannot_work_with_fail_clearly(
    chart: helm.Chart, values: dict[str, Any], said: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=said.replace("(", r"\(").replace(")", r"\)")):
        render(chart, values)


def test_without_a_token_the_notes_say_how_to_join(chart: helm.Chart) -> None:
    notes = chart.render(
        {"platformUrl": "https://edge.example.com"},
        name="edge-agent",
        namespace="edge-agent",
        is_install=True,
    )["edge-agent/templates/NOTES.txt"]
    assert "No join token is set" in notes
    assert "--set joinToken=" in notes
    with_token = chart.render(REQUIRED, name="edge-agent", namespace="edge-agent", is_install=True)
    assert "No join token is set" not in with_token["edge-agent/templates/NOTES.txt"]


def test_helm_lint_is_clean() -> None:
    for kube in ("v1.25.0", "v1.34.0"):
        report = helm.lint(str(CHART), REQUIRED, strict=True, kube_version=kube)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_the_chart_is_the_platforms_version() -> None:
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["version"] == "0.1.0"
    # The agent runs the image the platform's own chart runs.
    assert chart_yaml["appVersion"] == PLATFORM_TAG


def test_the_archive_holds_exactly_the_source(chart: helm.Chart) -> None:
    """charts/builtin/edge-agent-0.1.0.tgz is what the platform serves: rebuild it with
    `scripts/package-chart charts/builtin-src/edge-agent charts/builtin` after any change."""
    archive = ARCHIVE.read_bytes()
    packed: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        for member in tar.getmembers():
            assert member.isfile(), member.name
            extracted = tar.extractfile(member)
            assert extracted is not None
            packed[member.name] = extracted.read()
    source = {
        f"edge-agent/{path.relative_to(CHART)}": path.read_bytes()
        for path in sorted(CHART.rglob("*"))
        if path.is_file()
    }
    assert sorted(packed) == sorted(source), "the archive is stale: package the chart again"
    for name, content in source.items():
        assert packed[name] == content, f"{name} differs from the archive: package the chart again"
    info = inspect_chart(archive)  # as the platform checks it when it loads its built-ins
    assert (info.name, info.version, info.app_version) == ("edge-agent", "0.1.0", PLATFORM_TAG)
    from_archive = helm.Chart.load_archive(archive)
    try:
        assert from_archive.render(REQUIRED, name="edge-agent", namespace="edge-agent") == (
            chart.render(REQUIRED, name="edge-agent", namespace="edge-agent")
        )
    finally:
        from_archive.close()
