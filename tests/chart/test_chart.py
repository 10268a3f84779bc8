"""The Helm chart, rendered by Helm's own Go SDK (helm-python-sdk) in each mode and with the
deployment guide's command lines and values, linted, and every manifest validated against the
Kubernetes schemas of the oldest supported (1.25) and the newest available version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.platform_chart import (
    CHART,
    MINIMAL,
    PRODUCTION,
    command_values,
    container,
    env,
    find,
    render,
    validate,
)

GUIDE_VALUES = Path(__file__).parent / "guide-values.yaml"


def guide_values() -> dict[str, Any]:
    """The deployment guide's reference values.yaml (copied verbatim beside this file)."""
    values: dict[str, Any] = yaml.safe_load(GUIDE_VALUES.read_text())
    return values


def test_the_guides_minimal_command_line(chart: helm.Chart) -> None:
    docs = render(chart, command_values(MINIMAL))
    validate(docs)
    api = find(docs, "Deployment", "edge-platform-api-server")
    controller = find(docs, "Deployment", "edge-platform-controller")
    assert api["spec"]["replicas"] == 1
    assert controller["spec"]["replicas"] == 1
    args = container(api)["args"]
    assert args[0] == "serve"
    assert "--metrics-bind-address=0.0.0.0:8080" in args
    assert "--health-probe-bind-address=0.0.0.0:8081" in args
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    variables = env(api)
    assert variables["EDGE_MODE"] == "minimal"
    assert "@edge-platform-postgresql:5432/edge_platform" in variables["DATABASE_URL"]
    assert variables["REDIS_URL"] == "redis://edge-platform-redis:6379/0"
    for secret in ("JWT_SECRET", "ENCRYPTION_KEY", "OAUTH_CLIENT_SECRET", "ADMIN_PASSWORD"):
        assert variables[secret]["secretKeyRef"]["name"] == "edge-platform-secrets"
    find(docs, "StatefulSet", "edge-platform-postgresql")
    find(docs, "StatefulSet", "edge-platform-redis")
    assert not any(d["kind"] == "PodDisruptionBudget" for d in docs)  # one replica
    # monitoring.enabled and logging.enabled: the built-in stacks, one of each, no volumes
    # (tests/chart/test_chart_observability.py looks into them).
    for kind, name in (
        ("Deployment", "edge-platform-prometheus"), ("Deployment", "edge-platform-grafana"),
        ("StatefulSet", "edge-platform-loki"), ("DaemonSet", "edge-platform-fluent-bit"),
    ):  # fmt: skip
        find(docs, kind, name)
    assert not any(d["kind"] in ("ServiceMonitor", "PersistentVolumeClaim") for d in docs)
    metadata = api["spec"]["template"]["metadata"]
    assert metadata["labels"]["logging.theriseunion.io/format"] == "json"
    assert metadata["annotations"]["prometheus.io/scrape"] == "true"
    # The console: the platform's image in its console role, reaching only the API.
    console = find(docs, "Deployment", "edge-platform-console")
    assert container(console)["image"] == container(api)["image"]
    assert container(console)["args"][0] == "console"
    console_env = env(console)
    assert console_env["CONSOLE_API_URL"] == "http://edge-platform-api-server:80"
    assert console_env["CONSOLE_SESSION_SECRET"]["secretKeyRef"]["key"] == "console-session-secret"
    assert "DATABASE_URL" not in console_env
    assert "REDIS_URL" not in console_env
    assert find(docs, "Service", "edge-platform-console")["spec"]["ports"][0]["port"] == 80
    job = find(docs, "Job", "edge-platform-migrate-1")
    assert container(job)["args"] == ["migrate", "upgrade"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_the_guides_production_command_line(chart: helm.Chart) -> None:
    docs = render(chart, command_values(PRODUCTION))
    validate(docs)
    api = find(docs, "Deployment", "edge-platform-api-server")
    controller = find(docs, "Deployment", "edge-platform-controller")
    assert api["spec"]["replicas"] == 3
    assert controller["spec"]["replicas"] == 3
    assert container(api)["resources"]["requests"] == {"cpu": "2000m", "memory": "4Gi"}
    assert container(api)["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}  # kept
    assert container(controller)["resources"]["requests"] == {"cpu": "1000m", "memory": "2Gi"}
    for name in ("edge-platform-api-server", "edge-platform-controller"):
        assert find(docs, "PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1
    anti = api["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    args = container(controller)["args"]
    assert args[:1] == ["controller"]
    election = {
        "--leader-elect", "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s", "--leader-elect-retry-period=2s",
    }  # fmt: skip
    assert election <= set(args)

    # PostgreSQL HA through CloudNativePG, as in the guide.
    cnpg = find(docs, "Cluster", "postgres-ha")
    assert cnpg["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cnpg["spec"]["instances"] == 3
    assert cnpg["spec"]["primaryUpdateStrategy"] == "unsupervised"
    assert cnpg["spec"]["postgresql"]["parameters"] == {
        "max_connections": "200", "shared_buffers": "256MB",
    }  # fmt: skip
    assert cnpg["spec"]["bootstrap"]["initdb"] == {
        "database": "edge_platform", "owner": "edge_platform",
        "secret": {"name": "postgres-credentials"},
    }  # fmt: skip
    credentials = find(docs, "Secret", "postgres-credentials")
    generated = find(docs, "Secret", "edge-platform-secrets")
    assert credentials["type"] == "kubernetes.io/basic-auth"
    assert credentials["data"]["password"] == generated["data"]["database-password"]
    # A Redis Cluster of six through the OT-Container-Kit operator, as in the guide.
    redis = find(docs, "RedisCluster", "edge-platform-redis")
    assert redis["apiVersion"] == "redis.redis.opstreelabs.in/v1beta1"
    assert redis["spec"]["clusterSize"] == 6
    assert redis["spec"]["persistenceEnabled"] is True
    assert redis["spec"]["redisExporter"]["enabled"] is True
    variables = env(api)
    assert "@postgres-ha-rw:5432/edge_platform?sslmode=require" in variables["DATABASE_URL"]
    assert variables["REDIS_ADDRESSES"] == "edge-platform-redis-leader:6379"
    alerts = find(docs, "ConfigMap", "edge-platform-platform-alerts")["data"]["edge-platform.yaml"]
    rules = yaml.safe_load(alerts)["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "EdgeClusterUnreachable", "EdgeClusterProbesStalled", "EdgeRolloutFailed",
        "EdgeControllerNoLeader", "EdgeApiErrorRate",
    }  # fmt: skip


def test_the_guides_reference_values_and_multi_cluster_mode(chart: helm.Chart) -> None:
    values = guide_values()
    chart.validate_schema(values)  # every key of the guide is a key of the chart
    values["console"] |= {"image": "registry.example/edge-console:v1.0.0"}
    values["global"]["mode"] = "multi-cluster"
    docs = render(chart, values)
    validate(docs)
    api = find(docs, "Deployment", "edge-platform-api-server")
    assert api["spec"]["replicas"] == 3
    assert container(api)["image"] == "registry.edge.theriseunion.io/edge-platform:v1.0.0"
    console = find(docs, "Service", "edge-platform-console")
    assert console["spec"]["type"] == "LoadBalancer"
    assert console["spec"]["loadBalancerIP"] == "192.168.1.100"
    console_deployment = find(docs, "Deployment", "edge-platform-console")
    assert console_deployment["spec"]["replicas"] == 2
    assert container(console_deployment)["image"] == "registry.example/edge-console:v1.0.0"
    for claim in (
        find(docs, "RedisCluster", "edge-platform-redis")["spec"]["storage"]["volumeClaimTemplate"][
            "spec"
        ]["storageClassName"],
        find(docs, "Cluster", "postgres-ha")["spec"]["storage"]["storageClass"],
    ):
        assert claim == "fast-ssd"


def test_external_databases_and_the_dashed_spelling_winning(chart: helm.Chart) -> None:
    values = {
        "postgresql": {"enabled": False},
        "redis": {"enabled": False},
        "apiServer": {
            "replicas": 2,
            "resources": {"limits": {"cpu": "3"}},
            "database": {"host": "pg.example", "sslmode": "verify-full"},
            "redis": {"addresses": ["r1:6379", "r2:6379", "r3:6379"]},
        },
        "api-server": {"replicas": 5, "resources": {"requests": {"cpu": "1"}}},
    }
    docs = render(chart, values)
    validate(docs)
    api = find(docs, "Deployment", "edge-platform-api-server")
    assert api["spec"]["replicas"] == 5  # the dashed spelling wins …
    resources = container(api)["resources"]
    assert resources["requests"]["cpu"] == "1"
    assert resources["limits"]["cpu"] == "3"  # … key by key
    variables = env(api)
    assert "@pg.example:5432/edge_platform?sslmode=verify-full" in variables["DATABASE_URL"]
    assert variables["REDIS_ADDRESSES"] == "r1:6379,r2:6379,r3:6379"
    assert not any(d["kind"] in ("StatefulSet", "Cluster", "RedisCluster") for d in docs)
    job = find(docs, "Job", "edge-platform-migrate-1")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    with pytest.raises(helm.HelmRenderError, match=r"apiServer\.database\.host is required"):
        render(chart, {"postgresql": {"enabled": False}})


def test_the_shipped_values_meet_the_schema_and_bad_values_do_not(chart: helm.Chart) -> None:
    shipped = yaml.safe_load((CHART / "values.yaml").read_text())
    chart.validate_schema(shipped)  # a values.yaml edit that breaks the schema fails here
    for bad in (
        {"global": {"mode": "huge"}},
        {"apiServer": {"replicas": "three"}},
        {"api-server": {"resources": {"request": {"cpu": "1"}}}},
        {"redis": {"cluster": {"nodes": 3}}},
        {"controller": {"leaderElect": {"leaseDuration": "fifteen"}}},
        {"typo": True},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_helm_lint_is_clean() -> None:
    for kube in ("v1.25.0", "v1.34.0"):
        report = helm.lint(str(CHART), strict=True, kube_version=kube)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_every_pod_runs_unprivileged(chart: helm.Chart) -> None:
    """The platform's own pods (the built-in stacks' are checked in their charts' tests:
    node-exporter and the log shipper read the node's files)."""
    docs = render(chart, command_values(PRODUCTION))
    docs = [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/name"] == "edge-platform"]
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        security = pod["containers"][0]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
    account = find(docs, "ServiceAccount", "edge-platform")
    assert account["automountServiceAccountToken"] is False
    assert not any(d["kind"] in ("Role", "ClusterRole") for d in docs)  # it needs none


def test_the_network_policy_option(chart: helm.Chart) -> None:
    docs = render(chart, {"networkPolicy": {"enabled": True}})
    validate(docs)
    policy = find(docs, "NetworkPolicy", "edge-platform-datastores")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert allowed["values"] == ["api-server", "controller", "migrate"]
