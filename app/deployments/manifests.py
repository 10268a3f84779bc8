"""What a deployment puts on one edge cluster, as plain Kubernetes objects, and how to read
their readiness back. Pure functions: no I/O here, so the rendering is easy to test and the
same everywhere."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from app.catalog.values import merge_values

MANAGED_BY = {"app.kubernetes.io/managed-by": "edge-platform"}
DEPLOYMENT_LABEL = "edge.theriseunion.io/deployment"
CONFIGSYNC_LABEL = "edge.theriseunion.io/configsync"
WORKSPACE_LABEL = "edge.theriseunion.io/workspace"
REVISION_ANNOTATION = "edge.theriseunion.io/revision"
HASH_ANNOTATION = "edge.theriseunion.io/applied-hash"


@dataclass(frozen=True)
class Placement:
    """Where on the cluster: the node group's labels, expressions and taints."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[dict[str, Any]] = field(default_factory=list)
    taints: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]  # in apply order: the Namespace first
    hash: str


def label_value(text: str) -> str:
    """A label value (≤ 63 characters); a longer one keeps its start and gains a digest."""
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[:52].rstrip('.-_')}-{digest}"


def _tolerations(taints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for taint in taints:
        toleration = {"key": taint["key"], "effect": taint["effect"]}
        if taint.get("value") is None:
            toleration["operator"] = "Exists"
        else:
            toleration |= {"operator": "Equal", "value": taint["value"]}
        found.append(toleration)
    return found


def _place(pod_spec: dict[str, Any], placement: Placement) -> None:
    if placement.match_labels:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **placement.match_labels}
    if placement.match_expressions:
        terms = [
            {k: v for k, v in e.items() if k in ("key", "operator", "values") and v}
            for e in placement.match_expressions
        ]
        pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})[
            "requiredDuringSchedulingIgnoredDuringExecution"
        ] = {"nodeSelectorTerms": [{"matchExpressions": terms}]}
    if placement.taints:
        pod_spec["tolerations"] = [
            *pod_spec.get("tolerations", []),
            *_tolerations(placement.taints),
        ]


def render(
    *,
    workspace: str,
    deployment: str,
    namespace: str,
    revision: int,
    version: dict[str, Any],
    replicas: int | None,
    values: dict[str, Any],
    placement: Placement,
    chart_repository: str,
    chart_credentials: tuple[str, str] | None = None,
) -> Rendered:
    """`version`: the ApplicationVersion's source, {"helm": …} or {"workload": …};
    `chart_credentials`: basic auth for this platform's chart repository."""
    owner = label_value(f"{workspace}.{deployment}")
    labels = {**MANAGED_BY, DEPLOYMENT_LABEL: owner}
    if version.get("workload"):
        objects = _workload_objects(
            version["workload"],
            owner=owner,
            labels=labels,
            namespace=namespace,
            replicas=replicas,
            placement=placement,
        )
    else:
        objects = _helm_objects(
            version["helm"],
            deployment=deployment,
            labels=labels,
            namespace=namespace,
            replicas=replicas,
            values=values,
            placement=placement,
            chart_repository=chart_repository,
            chart_credentials=chart_credentials,
        )
    return _finish(objects, workspace=workspace, namespace=namespace, revision=revision)


def _workload_objects(
    workload: dict[str, Any],
    *,
    owner: str,
    labels: dict[str, str],
    namespace: str,
    replicas: int | None,
    placement: Placement,
) -> list[dict[str, Any]]:
    """A workload version's Deployments, selected by their owner and name."""
    objects: list[dict[str, Any]] = []
    for item in workload["deployments"]:
        spec = copy.deepcopy(item["spec"])
        spec = {k: v for k, v in spec.items() if v is not None}
        if replicas is not None:
            spec["replicas"] = replicas
        selector = {DEPLOYMENT_LABEL: owner, "app.kubernetes.io/name": item["name"]}
        template = spec["template"]
        template.setdefault("metadata", {})
        template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **selector}
        _place(template["spec"], placement)
        spec["selector"] = {"matchLabels": selector}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": item["name"],
                    "namespace": namespace,
                    "labels": {**labels, "app.kubernetes.io/name": item["name"]},
                },
                "spec": spec,
            }
        )
    return objects


def _helm_objects(
    helm: dict[str, Any],
    *,
    deployment: str,
    labels: dict[str, str],
    namespace: str,
    replicas: int | None,
    values: dict[str, Any],
    placement: Placement,
    chart_repository: str,
    chart_credentials: tuple[str, str] | None,
) -> list[dict[str, Any]]:
    """A Helm version's HelmChart, preceded by the Secret of its credentials when the chart
    comes from this platform's repository."""
    objects: list[dict[str, Any]] = []
    overrides: dict[str, Any] = {}
    if replicas is not None:
        overrides["replicaCount"] = replicas
    if placement.match_labels:
        overrides["nodeSelector"] = placement.match_labels
    if placement.taints:
        overrides["tolerations"] = _tolerations(placement.taints)
    merged = merge_values(helm.get("values") or {}, values, overrides)
    auth: dict[str, Any] = {}
    if not helm.get("repository") and chart_credentials is not None:
        # The helm-controller reads basic auth for the repository from this Secret.
        secret_name = f"{deployment}-chartrepo"
        username, password = chart_credentials
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/basic-auth",
                "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
                "data": {
                    "username": base64.b64encode(username.encode()).decode(),
                    "password": base64.b64encode(password.encode()).decode(),
                },
            }
        )
        auth = {"authSecret": {"name": secret_name}}
    objects.append(
        {
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChart",
            "metadata": {"name": deployment, "namespace": namespace, "labels": labels},
            "spec": {
                "repo": helm.get("repository") or chart_repository,
                "chart": helm["chart"],
                "version": helm["version"],
                "targetNamespace": namespace,
                "valuesContent": yaml.safe_dump(merged, sort_keys=True),
                **auth,
            },
        }
    )
    return objects


def render_config(
    *,
    workspace: str,
    name: str,
    namespace: str,
    revision: int,
    data: dict[str, str],
    binary_data: dict[str, str],
    secret: bool,
) -> Rendered:
    """A ConfigSync at the edge: a ConfigMap named after it, or a Secret (values base64)."""
    labels = {**MANAGED_BY, CONFIGSYNC_LABEL: label_value(f"{workspace}.{name}")}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if secret:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        obj = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
               "data": {**encoded, **binary_data}}  # fmt: skip
    else:
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
        if binary_data:
            obj["binaryData"] = binary_data
    return _finish([obj], workspace=workspace, namespace=namespace, revision=revision)


def _finish(
    objects: list[dict[str, Any]], *, workspace: str, namespace: str, revision: int
) -> Rendered:
    """Annotate with the revision and a hash of the content, and put the Namespace first."""
    digest = hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()
    for obj in objects:
        obj["metadata"]["annotations"] = {
            REVISION_ANNOTATION: str(revision),
            HASH_ANNOTATION: digest,
        }
    namespace_object = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {**MANAGED_BY, WORKSPACE_LABEL: label_value(workspace)},
        },
    }
    return Rendered([namespace_object, *objects], digest)


@dataclass(frozen=True)
class Owner:
    """Who an object at the edge belongs to, by its labels: a Namespace to a workspace, any
    other object to one deployment, config sync or vcluster of it. The platform writes and
    deletes only what carries its owner's label, so a workspace can never overwrite or
    delete another's objects, nor objects the platform did not create. Adopting an object
    made otherwise is an explicit act at the edge: label it as `label(ref)` says (the edge's
    own audit log records who did)."""

    kind: str  # the rollout's: ApplicationDeployment | ConfigSync | VCluster
    workspace: str
    name: str

    def label(self, kind: str) -> tuple[str, str]:
        """The label an object of `kind` carries when it is this owner's (as rendered)."""
        if kind == "Namespace":
            return WORKSPACE_LABEL, label_value(self.workspace)
        key = CONFIGSYNC_LABEL if self.kind == "ConfigSync" else DEPLOYMENT_LABEL
        return key, label_value(f"{self.workspace}.{self.name}")

    def refusal(self, live: dict[str, Any] | None, kind: str, what: str) -> str | None:
        """Why the object `live` must not be written or deleted by this owner; None when it
        is this owner's, or absent."""
        if live is None:
            return None
        labels = (live.get("metadata") or {}).get("labels") or {}
        key, value = self.label(kind)
        if labels.get(key) == value:
            return None
        if labels.get(key):  # whose it is stays unsaid: another tenant's names are theirs
            whose = "another " + ("workspace" if kind == "Namespace" else "owner") + " holds it"
        else:
            scope = "workspace" if kind == "Namespace" else self.kind
            whose = f"the platform did not create it for this {scope}"
        return (
            f"{what} exists at the edge and {whose}: left untouched (to let the platform "
            f"manage it, label it {key}={value} at the edge)"
        )


def contains(live: Any, wanted: Any) -> bool:
    """Whether the edge still has everything that was applied (fields the edge adds, such as
    defaults and status, are ignored); False means drift."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    ready_replicas: int
    message: str | None = None
    failed: bool = False  # the edge itself says it gave up


def deployment_readiness(live: dict[str, Any]) -> Readiness:
    """A Deployment is ready when the edge has seen this generation and every replica is
    updated and ready (the rule `kubectl rollout status` uses)."""
    spec, status = live.get("spec") or {}, live.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    generation = int((live.get("metadata") or {}).get("generation") or 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return Readiness(False, ready, condition.get("message") or "progress deadline", True)
    if int(status.get("observedGeneration") or 0) < generation:
        return Readiness(False, ready, "waiting for the edge to observe the new generation")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted or ready < wanted:
        return Readiness(False, ready, f"{ready} of {wanted} replicas ready, {updated} updated")
    # As `kubectl rollout status`: old pods still terminating, or new ones not yet available.
    if int(status.get("replicas") or 0) > updated or available < updated:
        return Readiness(False, ready, f"{available} of {updated} updated replicas available")
    return Readiness(True, ready)


def helm_chart_failure(live: dict[str, Any]) -> str | None:
    """The helm-controller's verdict that the install failed, if it gave one."""
    for condition in (live.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason") or "install failed")
    return None


def helm_job_name(live: dict[str, Any]) -> str | None:
    name = (live.get("status") or {}).get("jobName")
    return str(name) if name else None


def job_readiness(job: dict[str, Any] | None) -> tuple[bool, str | None]:
    """The helm-controller's install Job: succeeded means the release is installed."""
    if job is None:
        return False, "waiting for the helm-controller's install job"
    status = job.get("status") or {}
    if int(status.get("succeeded") or 0) > 0:
        return True, None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return False, f"install job failed: {condition.get('message') or ''}".strip()
    return False, "install job running"


def vcluster_values(
    *,
    values: dict[str, Any],
    kubernetes_version: str | None,
    resources: dict[str, Any] | None,
    placement: Placement,
) -> dict[str, Any]:
    """The `vcluster` chart's values (0.20+ layout): the tenant's values, then what the platform
    decides — the control plane's Kubernetes version, resources and node group."""
    statefulset: dict[str, Any] = {}
    if placement.match_labels:
        statefulset.setdefault("scheduling", {})["nodeSelector"] = placement.match_labels
    if placement.taints:
        statefulset.setdefault("scheduling", {})["tolerations"] = _tolerations(placement.taints)
    if resources:
        statefulset["resources"] = resources
    control_plane: dict[str, Any] = {}
    if statefulset:
        control_plane["statefulSet"] = statefulset
    if kubernetes_version:
        control_plane["distro"] = {"k8s": {"version": kubernetes_version}}
    return merge_values(values, {"controlPlane": control_plane} if control_plane else {})


def vcluster_secret_name(release: str) -> str:
    """The Secret the vcluster chart writes its kubeconfig to (key `config`)."""
    return f"vc-{release}"
