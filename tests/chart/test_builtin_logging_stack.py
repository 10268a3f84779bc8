"""The built-in logging-stack chart (charts/builtin-src/logging-stack): Loki (single binary) and a
Fluent Bit DaemonSet shipping every container's log to it or to another Loki. Rendered by
Helm's Go SDK, linted, validated against the Kubernetes schemas, and the configuration files it
renders for Loki 3.7 and Fluent Bit 5.1 read back and checked key by key against those
versions' documented settings (neither binary can run here)."""

from __future__ import annotations

from collections.abc import Iterator
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

NAME = "logging-stack"
VERSION = "1.2.0"
RELEASE = "edge-platform"
NAMESPACE = "logging"
LOKI = f"{RELEASE}-loki"
SHIPPER = f"{RELEASE}-fluent-bit"
PRODUCTION = {
    "global": {"mode": "production"},
    "loki": {"retention": "30d", "storage": {"size": "100Gi"}},
}
EDGE_SITE = {  # an edge site shipping to the platform's Loki, without a Loki of its own
    "loki": {"enabled": False},
    "shipper": {
        "lokiUrl": "https://loki.example.com:443",
        "externalLabels": {"cluster": "shanghai"},
    },
}

# Every key of Loki's configuration file this chart may write, as Loki 3.7's configuration
# reference (docs/sources/shared/configuration.md, v3.7.6) spells it. Loki reads its file
# strictly: an unknown key stops it at start.
LOKI_KEYS = {
    "auth_enabled",
    "analytics.reporting_enabled",
    "server.http_listen_port",
    "server.grpc_listen_port",
    "server.log_level",
    "common.path_prefix",
    "common.instance_addr",
    "common.replication_factor",
    "common.ring.kvstore.store",
    "common.storage.filesystem.chunks_directory",
    "common.storage.filesystem.rules_directory",
    "schema_config.configs[].from",
    "schema_config.configs[].store",
    "schema_config.configs[].object_store",
    "schema_config.configs[].schema",
    "schema_config.configs[].index.prefix",
    "schema_config.configs[].index.period",
    "ingester.wal.replay_memory_ceiling",
    "compactor.working_directory",
    "compactor.compaction_interval",
    "compactor.retention_enabled",
    "compactor.retention_delete_delay",
    "compactor.delete_request_store",
    "limits_config.retention_period",
    "limits_config.max_query_lookback",
    "limits_config.ingestion_rate_mb",
    "limits_config.ingestion_burst_size_mb",
    "limits_config.per_stream_rate_limit",
    "limits_config.per_stream_rate_limit_burst",
    "limits_config.max_global_streams_per_user",
    "limits_config.max_line_size",
    "limits_config.reject_old_samples",
    "limits_config.reject_old_samples_max_age",
    "limits_config.max_entries_limit_per_query",
    "limits_config.max_query_series",  # the extraConfig example in values.yaml
}

# The properties Fluent Bit 5.1 knows for each section and plugin this chart configures (its
# config maps: src/flb_config.c, src/flb_input.c, src/flb_output.c, plugins/in_tail,
# filter_kubernetes, filter_lua, out_loki). An unknown property stops Fluent Bit at start.
FLUENT_BIT_KEYS = {
    "service": {
        "flush", "grace", "log_level", "parsers_file", "http_server", "http_listen",
        "http_port", "health_check", "hc_errors_count", "hc_retry_failure_count", "hc_period",
        "storage.path", "storage.sync", "storage.checksum", "storage.max_chunks_up",
        "storage.backlog.mem_limit", "storage.metrics",
    },
    "tail": {
        "name", "tag", "path", "multiline.parser", "db", "db.locking", "refresh_interval",
        "skip_long_lines", "storage.type", "mem_buf_limit",
    },
    "kubernetes": {
        "name", "match", "merge_log", "keep_log", "k8s-logging.parser", "k8s-logging.exclude",
        "labels", "annotations", "buffer_size",
    },
    "lua": {"name", "match", "script", "call"},
    "loki": {
        "name", "match", "host", "port", "uri", "tls", "tls.verify", "tls.verify_hostname",
        "tls.ca_file", "tenant_id", "http_user", "http_passwd", "labels", "remove_keys",
        "line_format", "compress", "retry_limit", "storage.total_limit_size",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with loaded(NAME) as loaded_chart:
        yield loaded_chart


def docs_of(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Manifest]:
    return render(chart, values, release=RELEASE, namespace=NAMESPACE)


def objects(docs: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def loki_config(docs: list[Manifest]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(find(docs, "ConfigMap", LOKI)["data"]["config.yaml"])
    return config


def shipper_config(docs: list[Manifest], name: str = SHIPPER) -> dict[str, Any]:
    text = find(docs, "ConfigMap", name)["data"]["fluent-bit.yaml"]
    # Fluent Bit reads every scalar as text; so does this (no YAML 1.1 on/off booleans).
    config: dict[str, Any] = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506
    return config


def loki_output(docs: list[Manifest], name: str = SHIPPER) -> dict[str, str]:
    (output,) = shipper_config(docs, name)["pipeline"]["outputs"]
    assert output["name"] == "loki"
    return dict(output)


def stream_labels(output: dict[str, str]) -> dict[str, str]:
    pairs = (item.strip().split("=", 1) for item in output["labels"].split(","))
    return {key: value for key, value in pairs}


def container(workload: Manifest) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaf_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        for item in node:
            yield from leaf_paths(item, f"{prefix}[]")
    else:
        yield prefix


def render_fails(chart: helm.Chart, values: dict[str, Any], said: str) -> None:
    with pytest.raises(helm.HelmRenderError) as raised:
        docs_of(chart, values)
    assert said in str(raised.value)


@pytest.mark.parametrize(
    "values",
    [{}, PRODUCTION, {"global": {"mode": "multi-cluster", "storageClass": "-"}}, EDGE_SITE],
    ids=["default", "production", "multi-cluster", "edge-site"],
)
def test_helm_lint_is_clean_and_every_manifest_validates(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    lint(NAME, values)
    validate(docs_of(chart, values))


def test_the_default_install_is_loki_and_a_shipper_on_every_node(chart: helm.Chart) -> None:
    docs = docs_of(chart)
    assert objects(docs) == [
        ("ClusterRole", SHIPPER),
        ("ClusterRoleBinding", SHIPPER),
        ("ConfigMap", SHIPPER),
        ("ConfigMap", LOKI),
        ("DaemonSet", SHIPPER),
        ("Service", LOKI),
        ("Service", f"{LOKI}-headless"),
        ("ServiceAccount", SHIPPER),
        ("ServiceAccount", LOKI),
        ("StatefulSet", LOKI),
    ]
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == NAME
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == NAME
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"{NAME}-{VERSION}"
        assert labels["app.kubernetes.io/component"] in ("loki", "fluent-bit")
    # Selectors: name, instance and component only (a new version never orphans pods).
    for workload, component in ((find(docs, "StatefulSet", LOKI), "loki"),
                                (find(docs, "DaemonSet", SHIPPER), "fluent-bit")):  # fmt: skip
        assert workload["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": NAME,
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": component,
        }
    service = find(docs, "Service", LOKI)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 3100, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "loki"
    assert find(docs, "StatefulSet", LOKI)["spec"]["serviceName"] == f"{LOKI}-headless"


def test_minimal_mode_keeps_lokis_data_in_an_emptydir(chart: helm.Chart) -> None:
    statefulset = find(docs_of(chart), "StatefulSet", LOKI)
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_production_keeps_lokis_data_on_a_100gi_claim_for_30_days(chart: helm.Chart) -> None:
    docs = docs_of(chart, PRODUCTION)
    statefulset = find(docs, "StatefulSet", LOKI)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in volumes  # the claim is the data volume
    mounts = {m["name"]: m["mountPath"] for m in container(statefulset)["volumeMounts"]}
    assert mounts["data"] == "/loki"
    limits = loki_config(docs)["limits_config"]
    assert limits["retention_period"] == "30d"
    assert limits["max_query_lookback"] == "30d"  # nothing half-deleted is queried

    # multi-cluster persists too; the size and class come from values, then global.
    docs = docs_of(
        chart,
        {
            "global": {"mode": "multi-cluster", "storageClass": "standard"},
            "loki": {"storage": {"size": "20Gi"}},
        },
    )
    (claim,) = find(docs, "StatefulSet", LOKI)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    docs = docs_of(
        chart,
        {
            "global": {"mode": "production", "storageClass": "standard"},
            "loki": {"storage": {"storageClass": "local-path"}},
        },
    )
    (claim,) = find(docs, "StatefulSet", LOKI)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "local-path"
    docs = docs_of(chart, {"global": {"mode": "production", "storageClass": "-"}})
    (claim,) = find(docs, "StatefulSet", LOKI)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""  # statically provisioned volumes


def test_an_explicit_storage_setting_wins_over_the_mode(chart: helm.Chart) -> None:
    docs = docs_of(chart, {"loki": {"storage": {"enabled": True, "size": "5Gi"}}})
    (claim,) = find(docs, "StatefulSet", LOKI)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    docs = docs_of(
        chart, {"global": {"mode": "production"}, "loki": {"storage": {"enabled": False}}}
    )
    assert "volumeClaimTemplates" not in find(docs, "StatefulSet", LOKI)["spec"]


def test_lokis_configuration_is_a_single_binary_with_retention(chart: helm.Chart) -> None:
    docs = docs_of(chart, PRODUCTION)
    config = loki_config(docs)
    assert config["auth_enabled"] is False
    assert config["analytics"] == {"reporting_enabled": False}
    assert config["server"]["http_listen_port"] == 3100
    common = config["common"]
    assert common["path_prefix"] == "/loki"
    assert common["replication_factor"] == 1
    assert common["ring"] == {"kvstore": {"store": "inmemory"}}
    assert common["storage"]["filesystem"]["chunks_directory"].startswith("/loki/")
    (period,) = config["schema_config"]["configs"]
    assert period["schema"] == "v13"
    assert period["store"] == "tsdb"
    assert period["object_store"] == "filesystem"
    assert period["index"]["period"] == "24h"  # TSDB and retention require daily tables
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True
    # Loki 3 refuses to start with retention and no delete request store.
    assert compactor["delete_request_store"] == "filesystem"
    assert compactor["working_directory"].startswith("/loki/")
    limits = config["limits_config"]
    assert limits["ingestion_rate_mb"] == 8
    assert limits["ingestion_burst_size_mb"] == 16
    assert limits["max_line_size"] == "256KB"
    assert config["ingester"]["wal"]["replay_memory_ceiling"] == "512MB"

    statefulset = find(docs, "StatefulSet", LOKI)
    loki = container(statefulset)
    assert loki["args"] == ["-config.file=/etc/loki/config.yaml", "-target=all"]
    assert {p["name"]: p["containerPort"] for p in loki["ports"]} == {"http": 3100, "grpc": 9095}
    assert loki["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert loki["livenessProbe"]["httpGet"]["path"] == "/loki/api/v1/status/buildinfo"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == LOKI


def test_every_loki_setting_is_one_loki_3_7_documents(chart: helm.Chart) -> None:
    extra = {"limits_config": {"max_query_series": 1000}}
    for values in ({}, PRODUCTION, {"loki": {"retention": 0, "extraConfig": extra}}):
        config = loki_config(docs_of(chart, values))
        assert set(leaf_paths(config)) <= LOKI_KEYS, set(leaf_paths(config)) - LOKI_KEYS
    # extraConfig is merged over the chart's own settings, key by key.
    config = loki_config(docs_of(chart, {"loki": {"extraConfig": extra}}))
    assert config["limits_config"]["max_query_series"] == 1000
    assert config["limits_config"]["retention_period"] == "30d"


@pytest.mark.parametrize(
    ("retention", "period"),
    [("720h", "720h"), ("4w", "4w"), ("1y", "1y"), ("24h", "24h"), (0, "0s"), ("0", "0s")],
)
def test_retention_is_passed_as_loki_reads_it(
    chart: helm.Chart, retention: str | int, period: str
) -> None:
    limits = loki_config(docs_of(chart, {"loki": {"retention": retention}}))["limits_config"]
    assert limits["retention_period"] == period
    if period == "0s":  # kept forever: no lookback limit either
        assert "max_query_lookback" not in limits
    else:
        assert limits["max_query_lookback"] == period


@pytest.mark.parametrize(
    ("retention", "said"),
    [
        ("30 days", "is not a number and one unit"),
        ("1d12h", "is not a number and one unit"),
        ("12h", "shorter than Loki's minimum retention, 24h"),
    ],
)
def test_a_retention_loki_would_refuse_fails_at_install(
    chart: helm.Chart, retention: str, said: str
) -> None:
    render_fails(chart, {"loki": {"retention": retention}}, said)


def test_loki_runs_unprivileged_on_a_read_only_root(chart: helm.Chart) -> None:
    spec = find(docs_of(chart, PRODUCTION), "StatefulSet", LOKI)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["fsGroup"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == LOKI
    (loki,) = spec["containers"]
    security = loki["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m for m in loki["volumeMounts"]}
    assert set(mounts) == {"/etc/loki", "/loki", "/tmp"}  # noqa: S108 - an emptyDir
    assert mounts["/etc/loki"]["readOnly"] is True
    assert loki["resources"]["limits"]["memory"] == "1Gi"


def test_pods_are_annotated_for_scraping_and_roll_on_a_new_config(chart: helm.Chart) -> None:
    docs = docs_of(chart)
    loki = find(docs, "StatefulSet", LOKI)["spec"]["template"]["metadata"]["annotations"]
    assert loki["prometheus.io/scrape"] == "true"
    assert loki["prometheus.io/port"] == "3100"
    assert loki["prometheus.io/path"] == "/metrics"
    shipper = find(docs, "DaemonSet", SHIPPER)["spec"]["template"]["metadata"]["annotations"]
    assert shipper["prometheus.io/scrape"] == "true"
    assert shipper["prometheus.io/port"] == "2020"
    assert shipper["prometheus.io/path"] == "/api/v2/metrics/prometheus"

    changed = docs_of(chart, {"loki": {"retention": "7d"}, "shipper": {"logLevel": "debug"}})
    loki_after = find(changed, "StatefulSet", LOKI)["spec"]["template"]["metadata"]["annotations"]
    shipper_after = find(changed, "DaemonSet", SHIPPER)["spec"]["template"]["metadata"]
    assert loki_after["checksum/config"] != loki["checksum/config"]
    assert shipper_after["annotations"]["checksum/config"] != shipper["checksum/config"]


def test_the_shipper_tails_container_logs_merges_json_and_ships_to_the_charts_loki(
    chart: helm.Chart,
) -> None:
    docs = docs_of(chart)
    config = shipper_config(docs)
    service = config["service"]
    assert service["http_server"] == "on"
    assert service["http_port"] == "2020"
    assert service["health_check"] == "on"
    (tail,) = config["pipeline"]["inputs"]
    assert tail["name"] == "tail"
    assert tail["path"] == "/var/log/containers/*.log"
    assert [p.strip() for p in tail["multiline.parser"].split(",")] == ["cri", "docker"]
    assert tail["db"].startswith("/var/lib/fluent-bit/")  # on the node: see the DaemonSet
    kubernetes, lua = config["pipeline"]["filters"]
    assert kubernetes["name"] == "kubernetes"
    assert kubernetes["merge_log"] == "on"  # JSON lines become fields
    assert kubernetes["keep_log"] == "off"
    assert kubernetes["k8s-logging.parser"] == "on"
    assert kubernetes["k8s-logging.exclude"] == "on"
    assert lua["name"] == "lua"
    assert lua["script"] == "/fluent-bit/etc/conf/app-label.lua"
    script = find(docs, "ConfigMap", SHIPPER)["data"]["app-label.lua"]
    assert f"function {lua['call']}(tag, timestamp, record)" in script
    assert 'labels["app.kubernetes.io/name"] or labels["app"]' in script

    output = loki_output(docs)
    assert (output["host"], output["port"], output["tls"]) == (LOKI, "3100", "off")
    assert output["uri"] == "/loki/api/v1/push"
    assert output["line_format"] == "json"
    assert "tenant_id" not in output
    assert "http_user" not in output
    assert stream_labels(output) == {
        "job": "fluent-bit",
        "namespace": "$kubernetes['namespace_name']",
        "pod": "$kubernetes['pod_name']",
        "container": "$kubernetes['container_name']",
        "node": "$kubernetes['host']",
        "app": "$kubernetes['app']",
    }
    # Lines wait on the node's disk while Loki is away, within a bound.
    assert service["storage.path"].startswith("/var/lib/fluent-bit/")
    assert tail["storage.type"] == "filesystem"
    assert output["storage.total_limit_size"] == "512M"
    assert output["retry_limit"] == "no_limits"


def test_every_fluent_bit_setting_is_one_fluent_bit_5_1_knows(chart: helm.Chart) -> None:
    full = {
        "loki": {"enabled": False},
        "shipper": {
            "lokiUrl": "https://loki.example.com",
            "tenant": "edge",
            "basicAuth": {"username": "edge", "password": "secret"},
            "tls": {"ca": "-----BEGIN CERTIFICATE-----\n"},
        },
    }
    memory = {"shipper": {"buffer": {"type": "memory"}}}
    for values in ({}, full, memory):
        config = shipper_config(docs_of(chart, values))
        assert set(config) == {"service", "pipeline"}
        assert set(config["service"]) <= FLUENT_BIT_KEYS["service"]
        pipeline = config["pipeline"]
        for section in pipeline.values():
            for plugin in section:
                assert set(plugin) <= FLUENT_BIT_KEYS[plugin["name"]], plugin


def test_a_memory_buffer_keeps_nothing_on_the_node_but_read_positions(chart: helm.Chart) -> None:
    config = shipper_config(docs_of(chart, {"shipper": {"buffer": {"type": "memory"}}}))
    assert "storage.path" not in config["service"]
    (tail,) = config["pipeline"]["inputs"]
    assert tail["storage.type"] == "memory"
    assert tail["mem_buf_limit"] == "16MB"
    (output,) = config["pipeline"]["outputs"]
    assert "storage.total_limit_size" not in output
    render_fails(chart, {"shipper": {"buffer": {"type": "disk"}}}, "is not filesystem or memory")


def test_an_edge_site_ships_to_the_platforms_loki_without_one_of_its_own(
    chart: helm.Chart,
) -> None:
    docs = docs_of(chart, EDGE_SITE)
    assert objects(docs) == [
        ("ClusterRole", SHIPPER),
        ("ClusterRoleBinding", SHIPPER),
        ("ConfigMap", SHIPPER),
        ("DaemonSet", SHIPPER),
        ("ServiceAccount", SHIPPER),
    ]
    assert not any("loki" in d["metadata"]["name"] for d in docs)
    output = loki_output(docs)
    assert (output["host"], output["port"], output["tls"]) == ("loki.example.com", "443", "on")
    assert output["tls.verify"] == "on"
    assert output["tls.verify_hostname"] == "on"
    assert output["uri"] == "/loki/api/v1/push"
    labels = stream_labels(output)
    assert labels["cluster"] == "shanghai"
    assert labels["namespace"] == "$kubernetes['namespace_name']"
    assert output["compress"] == "gzip"  # less traffic on the site's link


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "uri"),
    [
        ("https://loki.example.com", "loki.example.com", "443", "on", "/loki/api/v1/push"),
        ("http://10.0.0.5:3100", "10.0.0.5", "3100", "off", "/loki/api/v1/push"),
        ("http://loki.internal", "loki.internal", "80", "off", "/loki/api/v1/push"),
        ("https://gw.example.com:8443/logs/", "gw.example.com", "8443", "on",
         "/logs/loki/api/v1/push"),
    ],
)  # fmt: skip
def test_lokiurl_gives_the_outputs_host_port_tls_and_path(
    chart: helm.Chart, url: str, host: str, port: str, tls: str, uri: str
) -> None:
    output = loki_output(docs_of(chart, {"shipper": {"lokiUrl": url}}))
    assert (output["host"], output["port"], output["tls"], output["uri"]) == (host, port, tls, uri)


def test_a_tenant_basic_auth_and_a_private_ca(chart: helm.Chart) -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    values = {
        "loki": {"enabled": False},
        "shipper": {
            "lokiUrl": "https://loki.example.com",
            "tenant": "shanghai",
            "basicAuth": {"username": "edge", "password": "s3cret"},
            "tls": {"ca": ca},
        },
    }
    docs = docs_of(chart, values)
    validate(docs)
    output = loki_output(docs)
    assert output["tenant_id"] == "shanghai"
    assert output["http_user"] == "edge"
    assert output["http_passwd"] == "${LOKI_PASSWORD}"
    assert output["tls.ca_file"] == "/fluent-bit/etc/conf/ca.crt"
    assert find(docs, "ConfigMap", SHIPPER)["data"]["ca.crt"] == ca
    secret = find(docs, "Secret", SHIPPER)
    assert secret["data"]["password"] == "czNjcmV0"  # base64 of s3cret
    shipper = container(find(docs, "DaemonSet", SHIPPER))
    assert shipper["env"] == [
        {
            "name": "LOKI_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": SHIPPER, "key": "password"}},
        }
    ]
    # Or the operator's Secret; and no certificate check at all when asked.
    values["shipper"]["basicAuth"] = {"username": "edge", "existingSecret": "loki-auth"}
    values["shipper"]["tls"] = {"verify": False}
    docs = docs_of(chart, values)
    assert not any(d["kind"] == "Secret" for d in docs)
    env = container(find(docs, "DaemonSet", SHIPPER))["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "loki-auth"
    output = loki_output(docs)
    assert output["tls.verify"] == "off"
    assert "tls.ca_file" not in output


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"loki": {"enabled": False}}, "shipper.lokiUrl is required when loki.enabled is false"),
        ({"shipper": {"lokiUrl": "loki.example.com"}}, "is not an http(s) URL"),
        ({"shipper": {"lokiUrl": "https://u:p@loki.example.com"}}, "is not an http(s) URL"),
        ({"shipper": {"externalLabels": {"site-name": "x"}}}, "is not a Loki label name"),
        ({"shipper": {"externalLabels": {"namespace": "x"}}}, "is set by the shipper itself"),
        ({"shipper": {"externalLabels": {"cluster": "a,b"}}}, "without commas"),
        ({"shipper": {"basicAuth": {"username": "edge"}}}, "needs a password or existingSecret"),
        ({"global": {"mode": "prod"}}, 'global.mode "prod" is not one of'),
    ],
)
def test_values_the_stack_cannot_work_with_fail_clearly(
    chart: helm.Chart, values: dict[str, Any], said: str
) -> None:
    render_fails(chart, values, said)


def test_the_shipper_reads_the_nodes_logs_as_root_with_no_capability(chart: helm.Chart) -> None:
    docs = docs_of(chart)
    daemonset = find(docs, "DaemonSet", SHIPPER)
    spec = daemonset["spec"]["template"]["spec"]
    # Every node, tainted ones included.
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == SHIPPER
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    shipper = container(daemonset)
    security = shipper["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert shipper["args"] == ["--config=/fluent-bit/etc/conf/fluent-bit.yaml"]
    assert shipper["readinessProbe"]["httpGet"] == {"path": "/api/v1/health", "port": "http"}
    assert shipper["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert shipper["ports"] == [{"name": "http", "containerPort": 2020, "protocol": "TCP"}]
    mounts = {m["name"]: m for m in shipper["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["varlog"] == {"name": "varlog", "mountPath": "/var/log", "readOnly": True}
    assert volumes["varlog"]["hostPath"] == {"path": "/var/log", "type": "Directory"}
    # Read positions and the buffer outlive the pod, per release.
    assert mounts["state"]["mountPath"] == "/var/lib/fluent-bit"
    assert not mounts["state"].get("readOnly", False)
    assert volumes["state"]["hostPath"] == {
        "path": f"/var/lib/{RELEASE}-fluent-bit",
        "type": "DirectoryOrCreate",
    }
    assert "docker-containers" not in volumes
    assert all(m.get("readOnly") for name, m in mounts.items() if name != "state")

    docs = docs_of(chart, {"shipper": {"dockerRuntime": True, "hostStateDir": "/data/fb"}})
    daemonset = find(docs, "DaemonSet", SHIPPER)
    mounts = {m["name"]: m for m in container(daemonset)["volumeMounts"]}
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert mounts["docker-containers"]["mountPath"] == "/var/lib/docker/containers"
    assert mounts["docker-containers"]["readOnly"] is True
    assert volumes["docker-containers"]["hostPath"]["path"] == "/var/lib/docker/containers"
    assert volumes["state"]["hostPath"]["path"] == "/data/fb"


def test_the_shippers_rbac_only_reads_pods_and_namespaces(chart: helm.Chart) -> None:
    docs = docs_of(chart)
    assert find(docs, "ClusterRole", SHIPPER)["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}
    ]
    binding = find(docs, "ClusterRoleBinding", SHIPPER)
    assert binding["roleRef"]["name"] == SHIPPER
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SHIPPER, "namespace": NAMESPACE}
    ]
    docs = docs_of(
        chart,
        {"shipper": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "fb"}}},
    )
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in docs)
    assert ("ServiceAccount", SHIPPER) not in objects(docs)
    assert (
        find(docs, "DaemonSet", SHIPPER)["spec"]["template"]["spec"]["serviceAccountName"] == "fb"
    )


def test_global_image_registry_moves_every_image(chart: helm.Chart) -> None:
    assert sorted(images(docs_of(chart))) == [
        "docker.io/fluent/fluent-bit:5.1.1",
        "docker.io/grafana/loki:3.7.6",
    ]
    mirror = "registry.edge.theriseunion.io"
    values = {
        "global": {"mode": "production", "imageRegistry": mirror, "imagePullSecrets": ["pull"]}
    }
    docs = docs_of(chart, values)
    assert sorted(images(docs)) == [
        f"{mirror}/fluent/fluent-bit:5.1.1",
        f"{mirror}/grafana/loki:3.7.6",
    ]
    for _, spec in pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "pull"}]
    docs = docs_of(chart, {**EDGE_SITE, "global": {"imageRegistry": mirror}})
    assert images(docs) == [f"{mirror}/fluent/fluent-bit:5.1.1"]


def test_names_use_fullnameoverride_or_the_release_truncated(chart: helm.Chart) -> None:
    docs = docs_of(chart, {"fullnameOverride": "logs"})
    names = {name for _, name in objects(docs)}
    assert names == {"logs-loki", "logs-loki-headless", "logs-fluent-bit"}
    assert loki_output(docs, "logs-fluent-bit")["host"] == "logs-loki"
    release = "a-very-long-release-name-for-the-logging-stack"
    docs = render(chart, {}, release=release, namespace=NAMESPACE)
    prefix = release[:40].rstrip("-")
    assert {name for _, name in objects(docs)} == {
        f"{prefix}-loki",
        f"{prefix}-loki-headless",
        f"{prefix}-fluent-bit",
    }


def test_placement_and_resources_come_from_values(chart: helm.Chart) -> None:
    values = {
        "loki": {
            "nodeSelector": {"node-role.kubernetes.io/control-plane": "true"},
            "resources": {"limits": {"memory": "2Gi"}},
        },
        "shipper": {
            "tolerations": [],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "priorityClassName": "system-node-critical",
        },
    }
    docs = docs_of(chart, values)
    validate(docs)
    loki = find(docs, "StatefulSet", LOKI)["spec"]["template"]["spec"]
    assert loki["nodeSelector"] == {"node-role.kubernetes.io/control-plane": "true"}
    assert loki["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "2Gi"},
    }
    shipper = find(docs, "DaemonSet", SHIPPER)["spec"]["template"]["spec"]
    assert "tolerations" not in shipper
    assert shipper["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert shipper["priorityClassName"] == "system-node-critical"


def test_the_notes_say_where_logs_are_and_go(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)[
        f"{NAME}/templates/NOTES.txt"
    ]
    assert f"http://{LOKI}.{NAMESPACE}.svc:3100" in notes
    assert "emptyDir" in notes
    assert f"http://{LOKI}:3100" in notes
    notes = chart.render(EDGE_SITE, name=RELEASE, namespace=NAMESPACE, is_install=True)[
        f"{NAME}/templates/NOTES.txt"
    ]
    assert "https://loki.example.com:443" in notes
    assert "cluster=shanghai" in notes
    assert "Grafana data source" not in notes


def test_the_chart_metadata() -> None:
    chart_yaml = yaml.safe_load((SOURCES / NAME / "Chart.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["name"] == NAME
    assert chart_yaml["version"] == VERSION
    assert chart_yaml["appVersion"] == "3.7.6"  # Loki's version
    assert chart_yaml["kubeVersion"] == ">=1.25.0-0"
    assert chart_yaml["type"] == "application"
    assert "dependencies" not in chart_yaml


def test_the_archive_holds_exactly_the_source() -> None:
    assert_archive_is_the_source(NAME, PRODUCTION)
