"""The built-in ingress-nginx chart (charts/builtin-src/ingress-nginx): the NGINX Ingress
controller v1.9.0 with upstream chart 4.8.0's value names, rendered by Helm's Go SDK, linted
strictly, every manifest validated against the oldest supported and the newest Kubernetes, and
its packaged archive compared with the source. The chart keeps no data: the persistence /
production variant of the common rules only has to change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.builtin_charts import (
    SOURCES,
    Manifest,
    archive_path,
    assert_archive_is_the_source,
    find,
    images,
    lint,
    loaded,
    pod_specs,
    render,
    validate,
)

NAME = "ingress-nginx"
RELEASE = "ingress-nginx"
NAMESPACE = "ingress-nginx"
CONTROLLER = "ingress-nginx-controller"
IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.9.0"
MIRROR = "registry.edge.theriseunion.io"
PRODUCTION = {"global": {"mode": "production", "storageClass": "local-path"}}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with loaded(NAME) as chart:
        yield chart


def docs_of(
    chart: helm.Chart, values: dict[str, Any] | None = None, *, release: str = RELEASE
) -> list[Manifest]:
    return render(chart, values, release=release, namespace=NAMESPACE)


def controller_values(**controller: Any) -> dict[str, Any]:
    return {"controller": controller}


def workload(docs: list[Manifest]) -> Manifest:
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    return found


def container(docs: list[Manifest]) -> dict[str, Any]:
    (spec,) = [spec for _, spec in pod_specs(docs)]
    (only,) = spec["containers"]
    found: dict[str, Any] = only
    return found


def rules_of(role: Manifest) -> set[tuple[str, str, str | None, str]]:
    """(apiGroup, resource, resourceName or None, verb) for every grant of a (Cluster)Role."""
    return {
        (group, resource, name, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for name in rule.get("resourceNames", [None])
        for verb in rule["verbs"]
    }


def service_ports(docs: list[Manifest], name: str = CONTROLLER) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in find(docs, "Service", name)["spec"]["ports"]}


def test_helm_lint_is_clean() -> None:
    lint(NAME)
    lint(NAME, PRODUCTION)
    lint(
        NAME,
        controller_values(
            kind="DaemonSet",
            hostPort={"enabled": True},
            metrics={"enabled": True},
            service={"type": "NodePort", "nodePorts": {"http": 30080, "https": 30443}},
        ),
    )


def test_the_default_render(chart: helm.Chart) -> None:
    docs = docs_of(chart)
    validate(docs)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ClusterRole", CONTROLLER),
        ("ClusterRoleBinding", CONTROLLER),
        ("ConfigMap", CONTROLLER),
        ("Deployment", CONTROLLER),
        ("IngressClass", "nginx"),
        ("Role", CONTROLLER),
        ("RoleBinding", CONTROLLER),
        ("Service", CONTROLLER),
        ("ServiceAccount", CONTROLLER),
    ]
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ingress-nginx"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"] == "controller"
        assert labels["app.kubernetes.io/version"] == "1.9.0"
        assert labels["helm.sh/chart"] == "ingress-nginx-4.8.0"
        assert {"app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"} <= set(labels)

    ingress_class = find(docs, "IngressClass", "nginx")
    assert ingress_class["spec"] == {"controller": "k8s.io/ingress-nginx"}
    assert "annotations" not in ingress_class["metadata"]  # not the cluster's default class

    service = find(docs, "Service", CONTROLLER)
    assert service["spec"]["type"] == "LoadBalancer"
    selector = {
        "app.kubernetes.io/name": "ingress-nginx",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "controller",
    }
    assert service["spec"]["selector"] == selector
    ports = service_ports(docs)
    assert {n: (p["port"], p["targetPort"]) for n, p in ports.items()} == {
        "http": (80, "http"),
        "https": (443, "https"),
    }
    assert not any("nodePort" in p for p in ports.values())  # the cluster picks them

    deployment = find(docs, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == CONTROLLER
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "imagePullSecrets" not in spec
    controller = container(docs)
    assert controller["image"] == IMAGE
    assert images(docs) == [IMAGE]
    assert controller["args"] == [
        "/nginx-ingress-controller",
        f"--publish-service=$(POD_NAMESPACE)/{CONTROLLER}",
        "--election-id=ingress-nginx-leader",
        "--controller-class=k8s.io/ingress-nginx",
        "--ingress-class=nginx",
        f"--configmap=$(POD_NAMESPACE)/{CONTROLLER}",
    ]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in controller["env"]}
    assert env == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "LD_PRELOAD": "/usr/local/lib/libmimalloc.so",
    }
    assert {p["name"]: p["containerPort"] for p in controller["ports"]} == {
        "http": 80,
        "https": 443,
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert controller[probe]["httpGet"] == {"path": "/healthz", "port": 10254, "scheme": "HTTP"}
    assert controller["lifecycle"]["preStop"]["exec"]["command"] == ["/wait-shutdown"]
    assert controller["resources"] == {
        "requests": {"cpu": "100m", "memory": "90Mi"},
        "limits": {"memory": "512Mi"},
    }
    # Unprivileged (uid 101), but with what nginx needs to bind 80/443: NET_BIND_SERVICE, and
    # no no_new_privs, which would void the image's file capability.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 101
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = controller["securityContext"]
    assert security["runAsUser"] == 101
    assert security["allowPrivilegeEscalation"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in annotations
    assert "prometheus.io/scrape" not in annotations  # metrics.enabled is off

    assert find(docs, "ConfigMap", CONTROLLER)["data"] == {"allow-snippet-annotations": "false"}


def test_a_node_port_service_uses_the_ports_given(chart: helm.Chart) -> None:
    values = controller_values(
        service={
            "type": "NodePort",
            "nodePorts": {"http": 30080, "https": 30443},
            "externalTrafficPolicy": "Local",
        }
    )
    docs = docs_of(chart, values)
    validate(docs)
    service = find(docs, "Service", CONTROLLER)
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    ports = service_ports(docs)
    assert (ports["http"]["nodePort"], ports["https"]["nodePort"]) == (30080, 30443)
    assert (ports["http"]["port"], ports["https"]["port"]) == (80, 443)
    notes = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert "HTTP port 30080, HTTPS port 30443" in notes["ingress-nginx/templates/NOTES.txt"]


def test_a_cluster_ip_service(chart: helm.Chart) -> None:
    # The LoadBalancer/NodePort-only settings are left out, rather than refused by the API.
    values = controller_values(
        service={
            "type": "ClusterIP",
            "nodePorts": {"http": 30080, "https": 30443},
            "externalTrafficPolicy": "Local",
            "loadBalancerIP": "192.0.2.10",
        }
    )
    docs = docs_of(chart, values)
    validate(docs)
    service = find(docs, "Service", CONTROLLER)
    assert service["spec"]["type"] == "ClusterIP"
    for field in ("externalTrafficPolicy", "loadBalancerIP"):
        assert field not in service["spec"]
    assert not any("nodePort" in p for p in service_ports(docs).values())
    # The controller still publishes it.
    assert f"--publish-service=$(POD_NAMESPACE)/{CONTROLLER}" in container(docs)["args"]


def test_load_balancer_settings(chart: helm.Chart) -> None:
    docs = docs_of(
        chart,
        controller_values(
            service={
                "annotations": {"metallb.universe.tf/address-pool": "edge"},
                "loadBalancerIP": "192.0.2.10",
                "loadBalancerSourceRanges": ["10.0.0.0/8"],
                "externalTrafficPolicy": "Local",
                "nodePorts": {"http": 30080},
            }
        ),
    )
    validate(docs)
    service = find(docs, "Service", CONTROLLER)
    assert service["metadata"]["annotations"] == {"metallb.universe.tf/address-pool": "edge"}
    assert service["spec"]["loadBalancerIP"] == "192.0.2.10"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    ports = service_ports(docs)
    assert ports["http"]["nodePort"] == 30080
    assert "nodePort" not in ports["https"]


def test_a_daemonset_instead_of_a_deployment(chart: helm.Chart) -> None:
    docs = docs_of(
        chart,
        controller_values(
            kind="DaemonSet",
            replicaCount=3,  # not a DaemonSet's: no PodDisruptionBudget either
            hostPort={"enabled": True, "ports": {"https": 8443}},
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        ),
    )
    validate(docs)
    assert not any(d["kind"] in ("Deployment", "PodDisruptionBudget") for d in docs)
    daemonset = find(docs, "DaemonSet", CONTROLLER)
    assert "replicas" not in daemonset["spec"]
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}
    ports = {p["name"]: p for p in container(docs)["ports"]}
    assert (ports["http"]["hostPort"], ports["https"]["hostPort"]) == (80, 8443)
    assert container(docs)["image"] == IMAGE


def test_several_replicas_get_a_disruption_budget(chart: helm.Chart) -> None:
    docs = docs_of(chart, controller_values(replicaCount=3))
    validate(docs)
    assert find(docs, "Deployment", CONTROLLER)["spec"]["replicas"] == 3
    budget = find(docs, "PodDisruptionBudget", CONTROLLER)
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"]
        == find(docs, "Deployment", CONTROLLER)["spec"]["selector"]["matchLabels"]
    )


def test_a_platform_rollouts_values_size_and_place_the_controller(chart: helm.Chart) -> None:
    """What a rollout target puts in the HelmChart: its replicas as replicaCount, its node
    group as nodeSelector (and tolerations of the group's taints)."""
    toleration = {"key": "edge", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}
    rollout = {
        "replicaCount": 2,
        "nodeSelector": {"theriseunion.io/nodegroup": "gateways"},
        "tolerations": [toleration],
    }
    docs = docs_of(chart, rollout | controller_values(nodeSelector={"kubernetes.io/os": "linux"}))
    validate(docs)
    deployment = find(docs, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 2
    assert find(docs, "PodDisruptionBudget", CONTROLLER)["spec"]["minAvailable"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "theriseunion.io/nodegroup": "gateways",
    }
    assert pod["tolerations"] == [toleration]


def test_the_image_registry_setting_moves_every_image(chart: helm.Chart) -> None:
    values = {"global": {"imageRegistry": MIRROR, "imagePullSecrets": [{"name": "mirror-pull"}]}}
    docs = docs_of(chart, values)
    validate(docs)
    found = images(docs)
    assert found == [f"{MIRROR}/ingress-nginx/controller:v1.9.0"]
    assert all(image.startswith(f"{MIRROR}/") for image in found)
    for _, spec in pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "mirror-pull"}]
    # The same with a DaemonSet, and with a pinned digest.
    docs = docs_of(
        chart,
        {
            "global": {"imageRegistry": MIRROR},
            "controller": {"kind": "DaemonSet", "image": {"digest": "sha256:" + "a" * 64}},
        },
    )
    assert images(docs) == [f"{MIRROR}/ingress-nginx/controller:v1.9.0@sha256:{'a' * 64}"]
    # Without the global setting, the image's own registry.
    docs = docs_of(chart, controller_values(image={"registry": "registry.site:5000"}))
    assert images(docs) == ["registry.site:5000/ingress-nginx/controller:v1.9.0"]


def test_args_name_the_rendered_service_and_configmap(chart: helm.Chart) -> None:
    docs = docs_of(chart, release="edge")
    args = container(docs)["args"]
    find(docs, "Service", "edge-controller")
    find(docs, "ConfigMap", "edge-controller")
    assert "--publish-service=$(POD_NAMESPACE)/edge-controller" in args
    assert "--configmap=$(POD_NAMESPACE)/edge-controller" in args
    assert "--election-id=edge-leader" in args

    long = "a-very-long-override-for-the-prefix-of-every-object-name"
    docs = docs_of(chart, {"fullnameOverride": long})
    validate(docs)
    prefix = long[:40].rstrip("-")
    name = f"{prefix}-controller"
    find(docs, "Service", name)
    find(docs, "ConfigMap", name)
    find(docs, "Deployment", name)
    args = container(docs)["args"]
    assert f"--publish-service=$(POD_NAMESPACE)/{name}" in args
    assert f"--configmap=$(POD_NAMESPACE)/{name}" in args


def test_controller_flags_from_values(chart: helm.Chart) -> None:
    docs = docs_of(
        chart,
        controller_values(
            watchIngressWithoutClass=True,
            ingressClass="",
            electionID="edge-ingress-leader",
            ingressClassResource={"controllerValue": "k8s.io/edge-nginx"},
            extraArgs={"default-ssl-certificate": "ingress-nginx/wildcard", "v": 2, "flag": ""},
            extraEnvs=[{"name": "TZ", "value": "UTC"}],
            enableMimalloc=False,
        ),
    )
    validate(docs)
    controller = container(docs)
    args = controller["args"]
    assert "--watch-ingress-without-class=true" in args
    assert not any(a.startswith("--ingress-class=") for a in args)
    assert "--election-id=edge-ingress-leader" in args
    assert "--controller-class=k8s.io/edge-nginx" in args
    assert find(docs, "IngressClass", "nginx")["spec"]["controller"] == "k8s.io/edge-nginx"
    assert args[-3:] == ["--default-ssl-certificate=ingress-nginx/wildcard", "--flag", "--v=2"]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["TZ"] == "UTC"
    assert "LD_PRELOAD" not in env

    # No publishing: without the flag the status holds the nodes' addresses.
    docs = docs_of(chart, controller_values(publishService={"enabled": False}))
    assert not any(a.startswith("--publish-service") for a in container(docs)["args"])
    docs = docs_of(chart, controller_values(service={"enabled": False}))
    validate(docs)
    assert not any(d["kind"] == "Service" for d in docs)
    assert not any(a.startswith("--publish-service") for a in container(docs)["args"])
    docs = docs_of(chart, controller_values(publishService={"pathOverride": "edge/lb"}))
    assert "--publish-service=edge/lb" in container(docs)["args"]


def test_config_entries_land_in_the_configmap_and_roll_the_pods(chart: helm.Chart) -> None:
    before = docs_of(chart)
    config = {
        "use-forwarded-headers": "true",
        "proxy-body-size": "64m",
        "worker-processes": 4,
        "enable-real-ip": True,
        "large-number": 1000000,
    }
    docs = docs_of(chart, controller_values(config=config, allowSnippetAnnotations=True))
    validate(docs)
    assert find(docs, "ConfigMap", CONTROLLER)["data"] == {
        "allow-snippet-annotations": "true",
        "use-forwarded-headers": "true",
        "proxy-body-size": "64m",
        "worker-processes": "4",
        "enable-real-ip": "true",
        "large-number": "1000000",
    }

    def checksum(docs: list[Manifest]) -> str:
        annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum(docs) != checksum(before)
    assert checksum(docs_of(chart)) == checksum(before)


def test_the_default_ingress_class(chart: helm.Chart) -> None:
    docs = docs_of(chart, controller_values(ingressClassResource={"default": True}))
    validate(docs)
    ingress_class = find(docs, "IngressClass", "nginx")
    assert ingress_class["metadata"]["annotations"] == {
        "ingressclass.kubernetes.io/is-default-class": "true"
    }
    assert ingress_class["spec"]["controller"] == "k8s.io/ingress-nginx"

    docs = docs_of(chart, controller_values(ingressClassResource={"name": "edge"}))
    find(docs, "IngressClass", "edge")
    docs = docs_of(chart, controller_values(ingressClassResource={"enabled": False}))
    assert not any(d["kind"] == "IngressClass" for d in docs)
    # The controller still serves the class it is told, made by someone else.
    assert "--controller-class=k8s.io/ingress-nginx" in container(docs)["args"]


def test_rbac_grants_the_election_lease_and_what_the_controller_reads(
    chart: helm.Chart,
) -> None:
    docs = docs_of(chart)
    role = find(docs, "Role", CONTROLLER)
    assert role["metadata"]["namespace"] == NAMESPACE
    grants = rules_of(role)
    lease = ("coordination.k8s.io", "leases")
    assert {(*lease, "ingress-nginx-leader", verb) for verb in ("get", "update")} <= grants
    assert (*lease, None, "create") in grants
    # Other leases: only created (create cannot be limited to a name), never read or written.
    assert {g for g in grants if g[:2] == lease} == {
        (*lease, "ingress-nginx-leader", "get"),
        (*lease, "ingress-nginx-leader", "update"),
        (*lease, None, "create"),
    }
    assert ("", "configmaps", None, "get") in grants

    cluster = rules_of(find(docs, "ClusterRole", CONTROLLER))
    read = {"list", "watch"}
    for resource in ("configmaps", "endpoints", "nodes", "pods", "secrets", "namespaces"):
        assert {("", resource, None, v) for v in read} <= cluster
    for group, resource in (
        ("", "services"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("discovery.k8s.io", "endpointslices"),
    ):
        assert {(group, resource, None, v) for v in ("get", "list", "watch")} <= cluster
    assert ("networking.k8s.io", "ingresses/status", None, "update") in cluster
    assert {("", "events", None, v) for v in ("create", "patch")} <= cluster
    # Read-only elsewhere: it writes only Ingress status and events.
    writes = {g for g in cluster if g[3] not in ("get", "list", "watch")}
    assert {(g[0], g[1]) for g in writes} == {
        ("networking.k8s.io", "ingresses/status"),
        ("", "events"),
    }
    subject = {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": NAMESPACE}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = find(docs, kind, CONTROLLER)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"]["name"] == CONTROLLER

    docs = docs_of(chart, controller_values(electionID="edge-ingress-leader"))
    grants = rules_of(find(docs, "Role", CONTROLLER))
    assert (*lease, "edge-ingress-leader", "update") in grants
    assert "--election-id=edge-ingress-leader" in container(docs)["args"]

    docs = docs_of(chart, {"rbac": {"create": False}, "serviceAccount": {"create": False}})
    validate(docs)
    assert not any(
        d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount")
        for d in docs
    )
    assert workload(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_metrics_are_exposed_for_the_monitoring_stack(chart: helm.Chart) -> None:
    docs = docs_of(chart, controller_values(metrics={"enabled": True}, podAnnotations={"a": "b"}))
    validate(docs)
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "10254"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["a"] == "b"
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports["metrics"] == 10254


def test_placement_and_resources_from_values(chart: helm.Chart) -> None:
    docs = docs_of(
        chart,
        controller_values(
            nodeSelector={"node-role.kubernetes.io/edge": "true"},
            tolerations=[{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
                        ]
                    }
                }
            },
            resources={"limits": {"memory": "1Gi"}},
            priorityClassName="system-cluster-critical",
        ),
    )
    validate(docs)
    spec = workload(docs)["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/edge": "true",
    }
    assert spec["tolerations"][0]["key"] == "edge"
    assert "nodeAffinity" in spec["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert container(docs)["resources"] == {
        "requests": {"cpu": "100m", "memory": "90Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_the_production_mode_changes_nothing(chart: helm.Chart) -> None:
    """No persistence in this chart: global.mode/storageClass (set by the platform's chart for
    every built-in) give the same objects and no volume claims."""
    docs = docs_of(chart, PRODUCTION)
    validate(docs)
    assert docs == docs_of(chart)
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)
    assert not any(d["kind"] == "StatefulSet" for d in docs)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (controller_values(kind="Both"), 'controller.kind "Both" is not supported'),
        (
            controller_values(admissionWebhooks={"enabled": True}),
            "this chart has no admission webhooks",
        ),
        (
            controller_values(service={"type": "ExternalName"}),
            'controller.service.type "ExternalName" is not supported',
        ),
    ],
)
def test_values_the_chart_does_not_support_fail_clearly(
    chart: helm.Chart, values: dict[str, Any], said: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=said):
        docs_of(chart, values)


def test_the_notes_say_how_to_reach_it(chart: helm.Chart) -> None:
    def notes(values: dict[str, Any]) -> str:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        text: str = rendered["ingress-nginx/templates/NOTES.txt"]
        return text

    assert f"get service {CONTROLLER} -w" in notes({})
    assert "ingressClassName: nginx" in notes({})
    assert f"port-forward service/{CONTROLLER}" in notes(
        controller_values(service={"type": "ClusterIP"})
    )


def test_the_chart_yaml() -> None:
    chart_yaml = yaml.safe_load((SOURCES / NAME / "Chart.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["name"] == NAME
    assert chart_yaml["version"] == "4.8.0"
    assert chart_yaml["appVersion"] == "1.9.0"  # controller v1.9.0, as upstream chart 4.8.0
    assert chart_yaml["kubeVersion"] == ">=1.25.0-0"
    assert chart_yaml["type"] == "application"
    assert "dependencies" not in chart_yaml


def test_the_archive_holds_exactly_the_source() -> None:
    assert archive_path(NAME).name == "ingress-nginx-4.8.0.tgz"
    assert_archive_is_the_source(NAME)
