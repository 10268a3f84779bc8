"""The built-in chart monitoring-stack (charts/builtin-src/monitoring-stack): Prometheus, Grafana,
node-exporter and kube-state-metrics, rendered by Helm's own Go SDK, linted, every manifest
validated against the Kubernetes schemas; the Prometheus configuration and Grafana's provisioning
read back as Prometheus and Grafana would read them; and the packaged archive the platform
serves checked against the source."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.builtin_charts import (
    SOURCES,
    Manifest,
    assert_archive_is_the_source,
    find,
    images,
    lint,
    loaded,
    pod_specs,
    render,
    validate,
)

NAME = "monitoring-stack"
VERSION = "1.5.0"
RELEASE = "edge-platform"
NAMESPACE = "monitoring"
GUIDE_VALUES = Path(__file__).parent / "guide-values.yaml"
COMPONENTS = ("prometheus", "grafana", "node-exporter", "kube-state-metrics")
SWITCHES = {
    "prometheus": "prometheus",
    "grafana": "grafana",
    "node-exporter": "nodeExporter",
    "kube-state-metrics": "kubeStateMetrics",
}


def guide_production() -> dict[str, Any]:
    """What the platform's chart hands this chart with the deployment guide's values.yaml: its
    `global` and its `monitoring` section (monitoring.enabled is the parent's switch)."""
    guide = yaml.safe_load(GUIDE_VALUES.read_text())
    monitoring = {k: v for k, v in guide["monitoring"].items() if k != "enabled"}
    return {"global": guide["global"], **monitoring}


PRODUCTION = guide_production()


@pytest.fixture(scope="module")
def stack() -> Iterator[helm.Chart]:
    with loaded(NAME) as chart:
        yield chart


def rendered(
    chart: helm.Chart, values: dict[str, Any] | None = None, *, release: str = RELEASE
) -> list[Manifest]:
    return render(chart, values, release=release, namespace=NAMESPACE)


def names(docs: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def config_map_file(docs: list[Manifest], name: str, key: str) -> Any:
    return yaml.safe_load(find(docs, "ConfigMap", name)["data"][key])


def prometheus_config(docs: list[Manifest], prefix: str = RELEASE) -> dict[str, Any]:
    config: dict[str, Any] = config_map_file(docs, f"{prefix}-prometheus", "prometheus.yml")
    return config


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def pod(docs: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, kind, name)["spec"]["template"]["spec"]
    return spec


def volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in spec["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def datasources(docs: list[Manifest]) -> dict[str, dict[str, Any]]:
    provisioned = config_map_file(docs, f"{RELEASE}-grafana", "datasources.yaml")
    return {d["name"]: d for d in provisioned["datasources"]}


def pvc_sizes(docs: list[Manifest]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["resources"]["requests"]["storage"]
        for d in docs
        if d["kind"] == "PersistentVolumeClaim"
    }


DEFAULT_OBJECTS = [
    ("ClusterRole", "edge-platform-kube-state-metrics"),
    ("ClusterRole", "edge-platform-prometheus"),
    ("ClusterRoleBinding", "edge-platform-kube-state-metrics"),
    ("ClusterRoleBinding", "edge-platform-prometheus"),
    ("ConfigMap", "edge-platform-grafana"),
    ("ConfigMap", "edge-platform-grafana-dashboards"),
    ("ConfigMap", "edge-platform-prometheus"),
    ("DaemonSet", "edge-platform-node-exporter"),
    ("Deployment", "edge-platform-grafana"),
    ("Deployment", "edge-platform-kube-state-metrics"),
    ("Deployment", "edge-platform-prometheus"),
    ("Secret", "edge-platform-grafana"),
    ("Service", "edge-platform-grafana"),
    ("Service", "edge-platform-kube-state-metrics"),
    ("Service", "edge-platform-node-exporter"),
    ("Service", "edge-platform-prometheus"),
    ("ServiceAccount", "edge-platform-grafana"),
    ("ServiceAccount", "edge-platform-kube-state-metrics"),
    ("ServiceAccount", "edge-platform-node-exporter"),
    ("ServiceAccount", "edge-platform-prometheus"),
]


# --- lint, defaults, persistence ------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        PRODUCTION,
        {"global": {"mode": "multi-cluster"}, "grafana": {"service": {"type": "NodePort"}}},
        {
            "prometheus": {
                "extraRuleConfigMaps": ["{{ .Release.Name }}-platform-alerts"],
                "externalLabels": {"cluster": "shanghai"},
            },
            "grafana": {"extraDashboardConfigMaps": ["{{ .Release.Name }}-dashboards"]},
        },
    ],
    ids=["default", "guide-production", "multi-cluster", "extras"],
)
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    lint(NAME, values)


def test_the_default_render_installs_the_four_components(stack: helm.Chart) -> None:
    docs = rendered(stack)
    validate(docs)
    assert names(docs) == DEFAULT_OBJECTS
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == NAME
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"] in COMPONENTS
        assert labels["app.kubernetes.io/part-of"] == NAME
        assert labels["helm.sh/chart"] == f"{NAME}-{VERSION}"
    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    assert services["edge-platform-prometheus"]["type"] == "ClusterIP"
    assert services["edge-platform-prometheus"]["ports"][0]["port"] == 9090
    assert services["edge-platform-grafana"]["type"] == "ClusterIP"
    assert services["edge-platform-grafana"]["ports"][0]["port"] == 3000
    assert services["edge-platform-kube-state-metrics"]["ports"][0]["port"] == 8080
    assert services["edge-platform-node-exporter"]["clusterIP"] == "None"
    assert services["edge-platform-node-exporter"]["ports"][0]["port"] == 9100
    for workload, _ in pod_specs(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert sorted(selector) == [
            "app.kubernetes.io/component",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/name",
        ]
        template_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template_labels.items()
    assert images(docs) == [
        "docker.io/grafana/grafana:11.6.1",
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0",
        "quay.io/prometheus/node-exporter:v1.8.2",
        "quay.io/prometheus/prometheus:v2.53.4",
    ]


def test_minimal_mode_keeps_data_in_emptydirs(stack: helm.Chart) -> None:
    docs = rendered(stack, {"global": {"mode": "minimal"}})
    assert pvc_sizes(docs) == {}
    prometheus = volumes(pod(docs, "Deployment", "edge-platform-prometheus"))
    grafana = volumes(pod(docs, "Deployment", "edge-platform-grafana"))
    assert prometheus["data"] == {"name": "data", "emptyDir": {}}
    assert grafana["data"] == {"name": "data", "emptyDir": {}}


def test_the_guides_production_values_give_volumes_and_the_retention(stack: helm.Chart) -> None:
    docs = rendered(stack, PRODUCTION)
    validate(docs)
    assert pvc_sizes(docs) == {
        "edge-platform-prometheus": "50Gi",
        "edge-platform-grafana": "10Gi",
    }
    for doc in docs:
        if doc["kind"] == "PersistentVolumeClaim":
            assert doc["spec"]["accessModes"] == ["ReadWriteOnce"]
            assert doc["spec"]["storageClassName"] == "fast-ssd"  # global.storageClass
    spec = pod(docs, "Deployment", "edge-platform-prometheus")
    assert volumes(spec)["data"]["persistentVolumeClaim"] == {
        "claimName": "edge-platform-prometheus"
    }
    (prometheus,) = spec["containers"]
    assert "--storage.tsdb.retention.time=15d" in prometheus["args"]
    assert mounts(prometheus)["data"] == "/prometheus"
    grafana = pod(docs, "Deployment", "edge-platform-grafana")
    assert volumes(grafana)["data"]["persistentVolumeClaim"] == {
        "claimName": "edge-platform-grafana"
    }
    assert mounts(grafana["containers"][0])["data"] == "/var/lib/grafana"
    # One pod on one ReadWriteOnce volume: the old pod is gone before the new one starts.
    for name in ("edge-platform-prometheus", "edge-platform-grafana"):
        deployment = find(docs, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_explicit_persistence_settings_win_over_the_mode(stack: helm.Chart) -> None:
    docs = rendered(
        stack,
        {
            "global": {"mode": "production", "storageClass": "fast-ssd"},
            "prometheus": {"storage": {"enabled": False}},
            "grafana": {"persistence": {"storageClass": "local-path", "size": "2Gi"}},
        },
    )
    validate(docs)
    assert pvc_sizes(docs) == {"edge-platform-grafana": "2Gi"}
    claim = find(docs, "PersistentVolumeClaim", "edge-platform-grafana")
    assert claim["spec"]["storageClassName"] == "local-path"

    docs = rendered(
        stack,
        {
            "prometheus": {"storage": {"enabled": True, "size": "8Gi"}, "retention": "48h"},
            "grafana": {"persistence": {"enabled": False}},
        },
    )
    validate(docs)
    assert pvc_sizes(docs) == {"edge-platform-prometheus": "8Gi"}
    claim = find(docs, "PersistentVolumeClaim", "edge-platform-prometheus")
    assert "storageClassName" not in claim["spec"]  # the cluster's default
    (prometheus,) = pod(docs, "Deployment", "edge-platform-prometheus")["containers"]
    assert "--storage.tsdb.retention.time=48h" in prometheus["args"]


# --- images, names ----------------------------------------------------------------------------


def test_global_image_registry_moves_every_image(stack: helm.Chart) -> None:
    docs = rendered(
        stack,
        {
            "global": {
                "imageRegistry": "registry.edge.theriseunion.io",
                "imagePullSecrets": [{"name": "mirror"}, "mirror-2"],
            }
        },
    )
    validate(docs)
    found = images(docs)
    assert len(found) == 4
    assert sorted(found) == [
        "registry.edge.theriseunion.io/grafana/grafana:11.6.1",
        "registry.edge.theriseunion.io/kube-state-metrics/kube-state-metrics:v2.13.0",
        "registry.edge.theriseunion.io/prometheus/node-exporter:v1.8.2",
        "registry.edge.theriseunion.io/prometheus/prometheus:v2.53.4",
    ]
    for _, spec in pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "mirror"}, {"name": "mirror-2"}]
    # The guide's values (the platform's registry) move them all as well.
    assert all(
        image.startswith("registry.edge.theriseunion.io/")
        for image in images(rendered(stack, PRODUCTION))
    )


def test_names_take_fullname_override_truncated(stack: helm.Chart) -> None:
    docs = rendered(stack, {"fullnameOverride": "metrics"})
    assert {name for _, name in names(docs)} == {
        name.replace("edge-platform", "metrics") for _, name in DEFAULT_OBJECTS
    }
    assert (
        datasources(rendered(stack))["Prometheus"]["url"] == "http://edge-platform-prometheus:9090"
    )
    long = "a-very-long-release-name-for-an-edge-site-x"
    docs = rendered(stack, release=long)
    validate(docs)
    prefix = long[:40].rstrip("-")
    find(docs, "Deployment", f"{prefix}-prometheus")
    find(docs, "DaemonSet", f"{prefix}-node-exporter")


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_switches_off(stack: helm.Chart, component: str) -> None:
    docs = rendered(stack, {SWITCHES[component]: {"enabled": False}})
    validate(docs)
    assert not [
        d
        for d in docs
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        or component in d["metadata"]["name"].removeprefix(RELEASE)
    ]
    others = [c for c in COMPONENTS if c != component]
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs} == set(others)
    if component in ("node-exporter", "kube-state-metrics"):
        assert component not in jobs(prometheus_config(docs))


def test_everything_off_renders_nothing(stack: helm.Chart) -> None:
    off = {key: {"enabled": False} for key in SWITCHES.values()}
    assert rendered(stack, off) == []


# --- Prometheus -------------------------------------------------------------------------------


def test_prometheus_discovers_annotated_pods_and_services(stack: helm.Chart) -> None:
    docs = rendered(stack, {"prometheus": {"externalLabels": {"cluster": "shanghai"}}})
    config = prometheus_config(docs)
    assert config["global"]["scrape_interval"] == "30s"
    assert config["global"]["external_labels"] == {"cluster": "shanghai"}
    found = jobs(config)
    assert set(found) == {
        "prometheus",
        "kubernetes-pods",
        "kubernetes-service-endpoints",
        "node-exporter",
        "kube-state-metrics",
        "kubernetes-cadvisor",
    }
    assert found["prometheus"]["static_configs"] == [{"targets": ["localhost:9090"]}]

    pods = found["kubernetes-pods"]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    relabel = pods["relabel_configs"]
    assert relabel[0] == {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "regex": "true",
        "action": "keep",
    }
    targets = {r.get("target_label"): r for r in relabel}
    assert targets["__scheme__"]["source_labels"] == [
        "__meta_kubernetes_pod_annotation_prometheus_io_scheme"
    ]
    assert targets["__metrics_path__"]["source_labels"] == [
        "__meta_kubernetes_pod_annotation_prometheus_io_path"
    ]
    address = [r for r in relabel if r.get("target_label") == "__address__"]
    assert address
    assert all(
        r["source_labels"][0] == "__meta_kubernetes_pod_annotation_prometheus_io_port"
        for r in address
    )
    for label in ("namespace", "pod", "container", "node"):
        assert label in targets

    services = found["kubernetes-service-endpoints"]
    assert services["kubernetes_sd_configs"] == [{"role": "endpointslice"}]
    relabel = services["relabel_configs"]
    assert relabel[0]["source_labels"] == [
        "__meta_kubernetes_service_annotation_prometheus_io_scrape"
    ]
    assert relabel[0]["action"] == "keep"
    targets = {r.get("target_label"): r for r in relabel}
    for label in ("__scheme__", "__metrics_path__", "__address__", "namespace", "service", "pod"):
        assert label in targets, label


def test_prometheus_scrapes_the_exporters_and_the_kubelets(stack: helm.Chart) -> None:
    found = jobs(prometheus_config(rendered(stack)))
    for job, component in (
        ("node-exporter", "node-exporter"),
        ("kube-state-metrics", "kube-state-metrics"),
    ):
        sd = found[job]["kubernetes_sd_configs"]
        assert sd == [{"role": "endpointslice", "namespaces": {"names": [NAMESPACE]}}]
        keep = found[job]["relabel_configs"][0]
        assert keep["action"] == "keep"
        assert keep["regex"] == f"{NAME};{RELEASE};{component};http-metrics"
    assert found["kube-state-metrics"]["honor_labels"] is True
    docs = rendered(stack)
    # The Services carry the labels the jobs keep.
    for component in ("node-exporter", "kube-state-metrics"):
        service = find(docs, "Service", f"{RELEASE}-{component}")
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert service["spec"]["ports"][0]["name"] == "http-metrics"

    cadvisor = found["kubernetes-cadvisor"]
    assert cadvisor["scheme"] == "https"
    assert cadvisor["kubernetes_sd_configs"] == [{"role": "node"}]
    assert cadvisor["authorization"] == {
        "credentials_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"
    }
    relabel = {r["target_label"]: r for r in cadvisor["relabel_configs"]}
    assert relabel["__address__"]["replacement"] == "kubernetes.default.svc:443"
    assert relabel["__metrics_path__"]["replacement"] == "/api/v1/nodes/$1/proxy/metrics/cadvisor"
    assert relabel["node"]["source_labels"] == ["__meta_kubernetes_node_name"]


def test_extra_rule_config_maps_are_templated_mounted_and_loaded(stack: helm.Chart) -> None:
    values = {
        "prometheus": {
            "extraRuleConfigMaps": ["{{ .Release.Name }}-platform-alerts", "site-rules"],
            "alertmanagers": ["alertmanager.monitoring:9093"],
            "extraScrapeConfigs": [
                {"job_name": "edge-gateway", "static_configs": [{"targets": ["gw:9000"]}]}
            ],
        }
    }
    docs = rendered(stack, values)
    validate(docs)
    spec = pod(docs, "Deployment", "edge-platform-prometheus")
    (container,) = spec["containers"]
    by_config_map = {v["configMap"]["name"]: v for v in spec["volumes"] if "configMap" in v}
    alerts = by_config_map["edge-platform-platform-alerts"]
    assert alerts["configMap"]["optional"] is True
    assert by_config_map["site-rules"]["configMap"]["optional"] is True
    mounted = {m["name"]: m for m in container["volumeMounts"]}
    alerts_dir = mounted[alerts["name"]]["mountPath"]
    assert alerts_dir == "/etc/prometheus/rules/edge-platform-platform-alerts"
    assert mounted[alerts["name"]]["readOnly"] is True

    config = prometheus_config(docs)
    rule_files = config["rule_files"]
    assert f"{alerts_dir}/*.yaml" in rule_files
    assert f"{alerts_dir}/*.yml" in rule_files
    assert "/etc/prometheus/rules/site-rules/*.yaml" in rule_files
    # The chart's own rules, from its ConfigMap, mounted beside prometheus.yml.
    assert "/etc/prometheus/config/default-rules.yaml" in rule_files
    assert mounted["config"]["mountPath"] == "/etc/prometheus/config"
    default_rules = config_map_file(docs, "edge-platform-prometheus", "default-rules.yaml")
    alerts_defined = {r["alert"] for g in default_rules["groups"] for r in g["rules"]}
    assert "TargetDown" in alerts_defined
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager.monitoring:9093"]}]}
    ]
    assert jobs(config)["edge-gateway"]["static_configs"] == [{"targets": ["gw:9000"]}]

    # With none of them: only the chart's own rules.
    plain = prometheus_config(rendered(stack, {"prometheus": {"defaultRules": {"enabled": False}}}))
    assert "rule_files" not in plain


def test_prometheus_pod(stack: helm.Chart) -> None:
    docs = rendered(stack)
    deployment = find(docs, "Deployment", "edge-platform-prometheus")
    template = deployment["spec"]["template"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == "edge-platform-prometheus"
    assert spec["automountServiceAccountToken"] is True
    (container,) = spec["containers"]
    assert container["args"][0] == "--config.file=/etc/prometheus/config/prometheus.yml"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert not any("enable-lifecycle" in arg for arg in container["args"])
    assert volumes(spec)["config"]["configMap"]["name"] == "edge-platform-prometheus"
    # A configuration change rolls the pod.
    checksum = template["metadata"]["annotations"]["checksum/config"]
    changed = rendered(stack, {"prometheus": {"scrapeInterval": "1m"}})
    other = find(changed, "Deployment", "edge-platform-prometheus")["spec"]["template"]
    assert other["metadata"]["annotations"]["checksum/config"] != checksum
    assert prometheus_config(changed)["global"]["scrape_interval"] == "1m"
    sized = rendered(stack, {"prometheus": {"retentionSize": "40GB"}})
    (container,) = pod(sized, "Deployment", "edge-platform-prometheus")["containers"]
    assert "--storage.tsdb.retention.size=40GB" in container["args"]


def test_rbac_reads_only_what_each_component_needs(stack: helm.Chart) -> None:
    docs = rendered(stack)

    def rules(name: str) -> dict[tuple[str, str], set[str]]:
        found: dict[tuple[str, str], set[str]] = {}
        for rule in find(docs, "ClusterRole", name)["rules"]:
            for group in rule.get("apiGroups", ["<url>"]):
                for resource in rule.get("resources", rule.get("nonResourceURLs", [])):
                    found[(group, resource)] = set(rule["verbs"])
        return found

    read = {"get", "list", "watch"}
    assert rules("edge-platform-prometheus") == {
        ("", "nodes"): read,
        ("", "nodes/proxy"): read,
        ("", "nodes/metrics"): read,
        ("", "services"): read,
        ("", "endpoints"): read,
        ("", "pods"): read,
        ("discovery.k8s.io", "endpointslices"): read,
        ("<url>", "/metrics"): {"get"},
    }
    ksm = rules("edge-platform-kube-state-metrics")
    assert all(verbs == {"list", "watch"} for verbs in ksm.values())
    for resource in (
        ("", "pods"),
        ("", "nodes"),
        ("apps", "deployments"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("", "persistentvolumeclaims"),
    ):
        assert resource in ksm
    for name in ("edge-platform-prometheus", "edge-platform-kube-state-metrics"):
        binding = find(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        ]
    docs = rendered(stack, {"rbac": {"create": False}, "serviceAccount": {"create": False}})
    validate(docs)
    assert not {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"} & {d["kind"] for d in docs}


# --- Grafana ----------------------------------------------------------------------------------


def test_grafana_data_sources_are_prometheus_and_loki(stack: helm.Chart) -> None:
    found = datasources(rendered(stack))
    assert set(found) == {"Prometheus", "Loki"}
    prometheus, loki = found["Prometheus"], found["Loki"]
    assert (prometheus["type"], prometheus["uid"]) == ("prometheus", "prometheus")
    assert prometheus["url"] == "http://edge-platform-prometheus:9090"
    assert prometheus["isDefault"] is True
    assert (loki["type"], loki["uid"]) == ("loki", "loki")
    assert loki["url"] == "http://edge-platform-loki:3100"  # logging-stack, same release
    assert not loki.get("isDefault")

    off = datasources(rendered(stack, {"grafana": {"datasources": {"loki": {"enabled": False}}}}))
    assert set(off) == {"Prometheus"}
    elsewhere = datasources(
        rendered(
            stack,
            {
                "grafana": {
                    "datasources": {
                        "loki": {"url": "http://{{ .Release.Name }}-logs.logging:3100"},
                        "prometheus": {"url": "http://prometheus.elsewhere:9090"},
                    }
                }
            },
        )
    )
    assert elsewhere["Loki"]["url"] == "http://edge-platform-logs.logging:3100"
    assert elsewhere["Prometheus"]["url"] == "http://prometheus.elsewhere:9090"


def test_grafana_loads_its_dashboards_and_extra_config_maps(stack: helm.Chart) -> None:
    values = {"grafana": {"extraDashboardConfigMaps": ["{{ .Release.Name }}-platform-dashboards"]}}
    docs = rendered(stack, values)
    validate(docs)
    providers = config_map_file(docs, "edge-platform-grafana", "dashboards.yaml")["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    root = provider["options"]["path"]
    spec = pod(docs, "Deployment", "edge-platform-grafana")
    (container,) = spec["containers"]
    mounted = mounts(container)
    assert mounted["datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounted["providers"] == "/etc/grafana/provisioning/dashboards"
    by_config_map = {v["configMap"]["name"]: v for v in spec["volumes"] if "configMap" in v}
    own = by_config_map["edge-platform-grafana-dashboards"]
    extra = by_config_map["edge-platform-platform-dashboards"]
    assert extra["configMap"]["optional"] is True
    # Each in its own directory under the provider's path.
    own_dir, extra_dir = mounted[own["name"]], mounted[extra["name"]]
    assert own_dir != extra_dir
    for directory in (own_dir, extra_dir):
        assert Path(directory).parent == Path(root)
    bundled = find(docs, "ConfigMap", "edge-platform-grafana-dashboards")["data"]
    on_disk = sorted(p.name for p in (SOURCES / NAME / "dashboards").glob("*.json"))
    assert sorted(bundled) == on_disk
    assert on_disk


def datasource_uids(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value.get("uid") if isinstance(value, dict) else value
            else:
                yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


def test_the_bundled_dashboards_parse_and_use_only_the_prometheus_uid() -> None:
    files = sorted((SOURCES / NAME / "dashboards").glob("*.json"))
    assert files
    titles = set()
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"]
        assert dashboard["title"]
        titles.add(dashboard["title"])
        uids = list(datasource_uids(dashboard))
        assert uids, path.name
        assert set(uids) == {"prometheus"}, path.name
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        # node-exporter, kube-state-metrics and cAdvisor series all feed it.
        assert any("node_cpu_seconds_total" in e for e in exprs)
        assert any("node_memory_MemAvailable_bytes" in e for e in exprs)
        assert any("node_filesystem_avail_bytes" in e for e in exprs)
        assert any("kube_pod_status_phase" in e for e in exprs)
        assert any("kube_pod_container_status_restarts_total" in e for e in exprs)
    assert "Kubernetes cluster overview" in titles


def test_grafana_admin_secret_and_no_phoning_home(stack: helm.Chart) -> None:
    docs = rendered(stack)
    secret = find(docs, "Secret", "edge-platform-grafana")["data"]
    assert base64.b64decode(secret["admin-user"]) == b"admin"
    generated = base64.b64decode(secret["admin-password"]).decode()
    assert len(generated) >= 20
    assert generated.isalnum()
    spec = pod(docs, "Deployment", "edge-platform-grafana")
    (container,) = spec["containers"]
    variables = env(container)
    assert variables["GF_SECURITY_ADMIN_USER"] == {
        "secretKeyRef": {"name": "edge-platform-grafana", "key": "admin-user"}
    }
    assert variables["GF_SECURITY_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "edge-platform-grafana", "key": "admin-password"}
    }
    assert variables["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert variables["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"
    assert variables["GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES"] == "false"
    assert "GF_INSTALL_PLUGINS" not in variables
    assert "GF_SERVER_ROOT_URL" not in variables
    assert spec["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health"
    annotations = find(docs, "Deployment", "edge-platform-grafana")["spec"]["template"]["metadata"]
    assert "checksum/config" in annotations["annotations"]

    docs = rendered(
        stack,
        {"grafana": {"adminUser": "ops", "adminPassword": "s3cret", "rootUrl": "https://g.site"}},
    )
    secret = find(docs, "Secret", "edge-platform-grafana")["data"]
    assert base64.b64decode(secret["admin-user"]) == b"ops"
    assert base64.b64decode(secret["admin-password"]) == b"s3cret"
    (container,) = pod(docs, "Deployment", "edge-platform-grafana")["containers"]
    assert env(container)["GF_SERVER_ROOT_URL"] == "https://g.site"

    docs = rendered(stack, {"grafana": {"existingSecret": "grafana-admin"}})
    validate(docs)
    assert not [d for d in docs if d["kind"] == "Secret"]
    (container,) = pod(docs, "Deployment", "edge-platform-grafana")["containers"]
    assert env(container)["GF_SECURITY_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "grafana-admin", "key": "admin-password"}
    }


def test_grafana_service_type(stack: helm.Chart) -> None:
    docs = rendered(stack, {"grafana": {"service": {"type": "NodePort"}}})
    validate(docs)
    assert find(docs, "Service", "edge-platform-grafana")["spec"]["type"] == "NodePort"


# --- the exporters, pods' security ------------------------------------------------------------


def test_node_exporter_reads_the_host_read_only_on_every_node(stack: helm.Chart) -> None:
    docs = rendered(stack)
    spec = pod(docs, "DaemonSet", "edge-platform-node-exporter")
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    assert host_paths == {"proc": "/proc", "sys": "/sys", "root": "/"}
    for mount in container["volumeMounts"]:
        assert mount["readOnly"] is True
    assert {
        "--path.procfs=/host/proc",
        "--path.sysfs=/host/sys",
        "--path.rootfs=/host/root",
    } <= set(container["args"])
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 9100, "protocol": "TCP"}
    ]
    assert container["securityContext"].get("privileged") is not True


def test_kube_state_metrics_pod(stack: helm.Chart) -> None:
    spec = pod(rendered(stack), "Deployment", "edge-platform-kube-state-metrics")
    assert spec["serviceAccountName"] == "edge-platform-kube-state-metrics"
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "telemetry"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http-metrics": 8080,
        "telemetry": 8081,
    }


def test_every_pod_runs_unprivileged_with_limits_and_placement(stack: helm.Chart) -> None:
    placement = {
        "nodeSelector": {"node-role.kubernetes.io/monitoring": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "monitoring"}],
    }
    docs = rendered(stack, {key: placement for key in SWITCHES.values()})
    validate(docs)
    specs = list(pod_specs(docs))
    assert len(specs) == 4
    for _, spec in specs:
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["nodeSelector"] == placement["nodeSelector"]
        assert spec["tolerations"] == placement["tolerations"]
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]
            assert container["readinessProbe"]
            assert container["livenessProbe"]


# --- the chart and its archive ----------------------------------------------------------------


def test_the_chart_metadata() -> None:
    chart_yaml = yaml.safe_load((SOURCES / NAME / "Chart.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["name"] == NAME
    assert chart_yaml["version"] == VERSION
    assert chart_yaml["appVersion"] == "v2.53.4"  # Prometheus, the main image
    assert chart_yaml["kubeVersion"] == ">=1.25.0-0"
    assert chart_yaml["type"] == "application"
    assert "dependencies" not in chart_yaml


def test_the_archive_holds_exactly_the_source() -> None:
    assert_archive_is_the_source(NAME, {"grafana": {"adminPassword": "fixed"}})
