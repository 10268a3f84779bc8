"""monitoring.enabled and logging.enabled in the platform's chart: Prometheus, Grafana, Loki and
the log shipper come from the built-in charts the platform serves to edges (the same
archives), scrape the platform, evaluate its alerts, show its dashboard and keep the guide's
retention and sizes in production; or, with monitoring.bundled=false, ServiceMonitors and a
PrometheusRule for the cluster's own Prometheus operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from app.config import Settings
from tests.support.builtin_charts import ARCHIVES, SOURCES, images, pod_specs
from tests.support.platform_chart import (
    CHART,
    MINIMAL,
    PRODUCTION,
    command_values,
    env,
    find,
    render,
    validate,
)

GUIDE_VALUES = Path(__file__).parent / "guide-values.yaml"
MIRROR = "registry.edge.theriseunion.io"


def guide_production() -> dict[str, Any]:
    """The guide's reference values.yaml (monitoring and logging enabled, production sizes)."""
    values: dict[str, Any] = yaml.safe_load(GUIDE_VALUES.read_text())
    return values


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod.get("volumes", [])}


def test_the_stacks_are_the_built_in_charts_the_platform_serves() -> None:
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for dependency in chart_yaml["dependencies"]:
        name, version = dependency["name"], dependency["version"]
        source = yaml.safe_load((SOURCES / name / "Chart.yaml").read_text())
        assert source["version"] == version
        assert dependency["repository"] == f"file://../builtin-src/{name}"
        packaged = CHART / "charts" / f"{name}-{version}.tgz"
        # A link to the archive /chartrepo serves, not a copy that could drift from it.
        assert packaged.resolve() == (ARCHIVES / f"{name}-{version}.tgz").resolve()
    assert {(d["name"], d["alias"]) for d in chart_yaml["dependencies"]} == {
        ("monitoring-stack", "monitoring"),
        ("logging-stack", "logging"),
    }


def test_the_guides_minimal_install_brings_prometheus_grafana_and_loki(chart: helm.Chart) -> None:
    docs = render(chart, command_values(MINIMAL))
    validate(docs)
    prometheus = find(docs, "Deployment", "edge-platform-prometheus")
    grafana = find(docs, "Deployment", "edge-platform-grafana")
    loki = find(docs, "StatefulSet", "edge-platform-loki")
    find(docs, "DaemonSet", "edge-platform-fluent-bit")
    find(docs, "DaemonSet", "edge-platform-node-exporter")
    find(docs, "Deployment", "edge-platform-kube-state-metrics")
    assert prometheus["spec"]["replicas"] == grafana["spec"]["replicas"] == 1
    assert loki["spec"]["replicas"] == 1
    # minimal: nothing kept on volumes
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)
    assert "volumeClaimTemplates" not in loki["spec"]
    # Every image of the stacks from the platform's registry (an air-gapped site's mirror).
    stacks = [doc for doc in docs if doc["metadata"]["labels"].get("app.kubernetes.io/part-of")]
    assert len(images(stacks)) == 6
    assert all(image.startswith(f"{MIRROR}/") for image in images(stacks)), images(stacks)

    # The platform is scraped: its pods carry the annotations the Prometheus config keeps.
    for name in ("edge-platform-api-server", "edge-platform-controller"):
        annotations = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8080",
            "prometheus.io/path": "/metrics",
        }
    config = yaml.safe_load(
        find(docs, "ConfigMap", "edge-platform-prometheus")["data"]["prometheus.yml"]
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    pods = jobs["kubernetes-pods"]
    keep = [r for r in pods["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    # Its alerts are evaluated: the ConfigMap of files/alerts.yaml is mounted as a rule file.
    alerts = find(docs, "ConfigMap", "edge-platform-platform-alerts")
    assert yaml.safe_load(alerts["data"]["edge-platform.yaml"]) == yaml.safe_load(
        (CHART / "files" / "alerts.yaml").read_text()
    )
    prometheus_pod = prometheus["spec"]["template"]["spec"]
    mounted = [
        v for v in volumes(prometheus_pod).values()
        if v.get("configMap", {}).get("name") == "edge-platform-platform-alerts"
    ]  # fmt: skip
    assert mounted
    assert any("edge-platform-platform-alerts" in pattern for pattern in config["rule_files"])

    # Grafana: the platform's dashboard, and Prometheus and Loki as data sources.
    dashboards = find(docs, "ConfigMap", "edge-platform-platform-dashboards")
    assert json.loads(dashboards["data"]["edge-platform.json"]) == json.loads(
        (CHART / "dashboards" / "edge-platform.json").read_text()
    )
    grafana_pod = grafana["spec"]["template"]["spec"]
    assert any(
        v.get("configMap", {}).get("name") == "edge-platform-platform-dashboards"
        for v in volumes(grafana_pod).values()
    )
    grafana_config = find(docs, "ConfigMap", "edge-platform-grafana")["data"]
    sources = yaml.safe_load(grafana_config["datasources.yaml"])
    urls = {s["uid"]: s["url"] for s in sources["datasources"]}
    assert urls == {
        "prometheus": "http://edge-platform-prometheus:9090",
        "loki": "http://edge-platform-loki:3100",
    }
    loki_port = find(docs, "Service", "edge-platform-loki")["spec"]["ports"][0]["port"]
    assert loki_port == 3100
    # The log shipper sends to that Loki.
    shipper = find(docs, "ConfigMap", "edge-platform-fluent-bit")
    assert "edge-platform-loki" in yaml.safe_dump(shipper["data"])


def test_the_guides_production_values_keep_data_for_the_guides_retention(
    chart: helm.Chart,
) -> None:
    values = guide_production()
    assert values["monitoring"]["enabled"]
    assert values["logging"]["enabled"]
    docs = render(chart, values)
    validate(docs)
    claims = {
        d["metadata"]["name"]: d["spec"]["resources"]["requests"]["storage"]
        for d in docs
        if d["kind"] == "PersistentVolumeClaim"
    }
    assert claims == {"edge-platform-prometheus": "50Gi", "edge-platform-grafana": "10Gi"}
    loki = find(docs, "StatefulSet", "edge-platform-loki")
    (template,) = loki["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "100Gi"
    prometheus = find(docs, "Deployment", "edge-platform-prometheus")
    args = prometheus["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--storage.tsdb.retention.time=15d" in args
    loki_config = yaml.safe_load(
        find(docs, "ConfigMap", "edge-platform-loki")["data"]["config.yaml"]
    )
    assert loki_config["limits_config"]["retention_period"] == "30d"
    assert loki_config["compactor"]["retention_enabled"] is True


def test_the_production_command_line_as_well(chart: helm.Chart) -> None:
    docs = render(chart, command_values(PRODUCTION))
    validate(docs)
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"edge-platform-prometheus", "edge-platform-grafana"}


def test_with_the_prometheus_operator_instead(chart: helm.Chart) -> None:
    values = command_values(MINIMAL)
    values["monitoring"]["bundled"] = False
    docs = render(chart, values)
    validate(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ServiceMonitor", "edge-platform-api-server") in kinds
    assert ("ServiceMonitor", "edge-platform-controller") in kinds
    rules = find(docs, "PrometheusRule", "edge-platform")["spec"]
    assert rules == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert not any("prometheus" in name or "grafana" in name for _, name in kinds)
    api = find(docs, "Deployment", "edge-platform-api-server")
    assert "annotations" not in api["spec"]["template"]["metadata"]
    find(docs, "StatefulSet", "edge-platform-loki")  # logging is its own switch


def test_nothing_of_either_stack_by_default(chart: helm.Chart) -> None:
    docs = render(chart, {})
    names = {d["metadata"]["name"] for d in docs}
    assert not {
        n for n in names if any(s in n for s in ("prometheus", "grafana", "loki", "fluent"))
    }
    assert not any(d["kind"] in ("ServiceMonitor", "PrometheusRule") for d in docs)
    for _, pod in pod_specs(docs):
        assert "nodeName" not in pod


def test_the_catalog_setting_follows_chart_museums_list(chart: helm.Chart) -> None:
    docs = render(chart, guide_production())
    variables = env(find(docs, "Deployment", "edge-platform-api-server"))
    assert (
        variables["BUILTIN_CHARTS"]
        == "monitoring-stack:1.5.0,logging-stack:1.2.0,ingress-nginx:4.8.0"
    )
    parsed = Settings(builtin_charts=variables["BUILTIN_CHARTS"]).builtin_charts
    assert [(c.name, c.version) for c in parsed] == [
        ("monitoring-stack", "1.5.0"),
        ("logging-stack", "1.2.0"),
        ("ingress-nginx", "4.8.0"),
    ]
    values = guide_production()
    values["chartMuseum"]["builtinCharts"] = []
    docs = render(chart, values)
    assert env(find(docs, "Deployment", "edge-platform-api-server"))["BUILTIN_CHARTS"] == ""


def test_helm_lint_is_clean_with_both_stacks() -> None:
    for kube in ("v1.25.0", "v1.34.0"):
        report = helm.lint(
            str(CHART),
            {"monitoring": {"enabled": True}, "logging": {"enabled": True}},
            strict=True,
            kube_version=kube,
            with_subcharts=True,
        )
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
