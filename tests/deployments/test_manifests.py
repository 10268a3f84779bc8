"""What lands at the edge for a node group with expressions and taints, and how drift and
readiness are judged."""

from __future__ import annotations

from typing import Any

from app.deployments.manifests import (
    Placement,
    contains,
    deployment_readiness,
    label_value,
    render,
)

VERSION = {
    "workload": {
        "deployments": [
            {
                "name": "agent",
                "spec": {
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "containers": [{"name": "agent", "image": "agent:1"}],
                            "tolerations": [{"key": "own", "operator": "Exists"}],
                        }
                    },
                },
            }
        ]
    }
}
GPU = Placement(
    match_labels={"theriseunion.io/nodegroup": "gpu"},
    match_expressions=[{"key": "arch", "operator": "In", "values": ["arm64"]}],
    taints=[
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "dedicated", "effect": "NoExecute"},
    ],
)


Objects = list[dict[str, Any]]


def rendered(revision: int = 1, replicas: int | None = 4, placement: Placement = GPU) -> Objects:
    return render(
        workspace="team-a", deployment="agent", namespace="ws-team-a", revision=revision,
        version=VERSION, replicas=replicas, values={}, placement=placement,
        chart_repository="https://edge.example/chartrepo",
    ).objects  # fmt: skip


def test_a_node_group_becomes_selector_affinity_and_tolerations() -> None:
    namespace, deployment = rendered()
    assert namespace["kind"] == "Namespace"
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 4
    assert pod["nodeSelector"] == {"theriseunion.io/nodegroup": "gpu"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["arm64"]}]}
    ]
    assert pod["tolerations"] == [
        {"key": "own", "operator": "Exists"},  # the version's own are kept
        {"key": "gpu", "effect": "NoSchedule", "operator": "Equal", "value": "true"},
        {"key": "dedicated", "effect": "NoExecute", "operator": "Exists"},
    ]


def test_the_hash_follows_content_not_the_revision_number() -> None:
    def digest(objects: Objects) -> str:
        return str(objects[1]["metadata"]["annotations"]["edge.theriseunion.io/applied-hash"])

    assert digest(rendered(revision=1)) == digest(rendered(revision=2))
    assert digest(rendered(replicas=4)) != digest(rendered(replicas=5))
    assert digest(rendered(placement=Placement())) != digest(rendered())


def test_long_label_values_stay_valid_and_distinct() -> None:
    long_a, long_b = "w" * 40 + "." + "a" * 40, "w" * 40 + "." + "b" * 40
    assert len(label_value(long_a)) <= 63
    assert label_value(long_a) != label_value(long_b)
    assert label_value("team-a.app") == "team-a.app"


def test_drift_ignores_what_the_edge_adds_but_not_what_it_changes() -> None:
    wanted = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}}}
    defaulted = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "a", "imagePullPolicy": "Always"}]}},
        },
        "status": {"readyReplicas": 2},
    }
    assert contains(defaulted, wanted)
    scaled = {"spec": {"replicas": 5, "template": wanted["spec"]["template"]}}
    assert not contains(scaled, wanted)
    two = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    extra_container = {"spec": {"replicas": 2, "template": two}}
    assert not contains(extra_container, wanted)


def test_readiness_waits_for_the_generation_and_every_replica() -> None:
    live = {"metadata": {"generation": 3}, "spec": {"replicas": 2}}
    assert not deployment_readiness(live | {"status": {"observedGeneration": 2}}).ready
    partial = {"observedGeneration": 3, "updatedReplicas": 2, "readyReplicas": 1}
    assert not deployment_readiness(live | {"status": partial}).ready
    old_pods_left = {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2,
                     "readyReplicas": 2, "availableReplicas": 2}  # fmt: skip
    assert not deployment_readiness(live | {"status": old_pods_left}).ready
    done = old_pods_left | {"replicas": 2}
    assert deployment_readiness(live | {"status": done}).ready
    stuck = {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}
    assert deployment_readiness(live | {"status": stuck}).failed
