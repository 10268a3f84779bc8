"""Rollouts to the five emulated edge clusters of the deployment guide, through the controller."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from app.controller.kube import REQUEST_TIMEOUT
from app.controller.runner import Controller
from app.models.deployments import RolloutTarget
from tests.support.charts import chart_archive
from tests.support.deployments import BASE, EXAMPLE_YAML, EXPECTED, NAMESPACE, Platform, targets_of

YAML = {"Content-Type": "application/yaml"}


async def test_the_guides_example_lands_on_every_cluster(platform: Platform) -> None:
    shenzhen = platform.fleet["shenzhen-cluster"]
    shenzhen.auto_ready = False  # its pods take a while: readiness is reported later
    platform.start_controller()

    created = await platform.client.post(BASE, content=EXAMPLE_YAML, headers=YAML)
    assert created.status_code == 201, created.text
    assert created.json()["status"]["revision"] == 1

    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            d["status"]["summary"]["ready"] == 3
            and targets_of(d)["shenzhen-cluster"]["phase"] == "Applied"
        ),
    )
    assert body["status"]["phase"] == "Progressing"
    message = targets_of(body)["shenzhen-cluster"]["message"]
    assert "waiting for the edge to observe the new generation" in message
    for name in ("prometheus", "grafana"):  # the edge sees it; pods are starting
        shenzhen.set_ready(NAMESPACE, name, ready=0)
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: "0 of 1 replicas ready" in (targets_of(d)["shenzhen-cluster"]["message"] or ""),
    )
    assert body["status"]["phase"] == "Progressing"

    for name, edge in platform.fleet.items():
        namespace = edge.get("namespaces", None, NAMESPACE)
        deployments = edge.of_kind("deployments")
        if name not in EXPECTED:
            assert namespace is None, f"{name} was not a target"
            assert not deployments, f"{name} was not a target"
            continue
        replicas, group = EXPECTED[name]
        assert namespace is not None
        assert namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "edge-platform"
        assert sorted(k[2] for k in deployments) == ["grafana", "prometheus"]
        for obj in deployments.values():
            meta, spec = obj["metadata"], obj["spec"]
            assert meta["namespace"] == NAMESPACE
            assert meta["labels"]["edge.theriseunion.io/deployment"] == "team-a.cross-region-app"
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "edge-platform"
            assert meta["annotations"]["edge.theriseunion.io/revision"] == "1"
            assert len(meta["annotations"]["edge.theriseunion.io/applied-hash"]) == 64
            assert spec["replicas"] == replicas, name
            pod = spec["template"]["spec"]
            assert pod["nodeSelector"] == {"theriseunion.io/nodegroup": group}
            assert spec["selector"]["matchLabels"].items() <= (
                spec["template"]["metadata"]["labels"].items()
            )

    shenzhen.set_ready(NAMESPACE, "prometheus")
    shenzhen.set_ready(NAMESPACE, "grafana")
    body = await platform.ready("cross-region-app")
    status = body["status"]
    assert status["summary"] == {"clusters": 4, "ready": 4, "failed": 0, "unreachable": 0}
    assert status["observedGeneration"] == body["metadata"]["generation"]
    rows = targets_of(body)
    assert {c: (t["desiredReplicas"], t["nodeGroup"]) for c, t in rows.items()} == EXPECTED
    assert all(t["readyReplicas"] == t["desiredReplicas"] for t in rows.values())
    assert all(t["revision"] == 1 and t["lastSyncTime"] for t in rows.values())
    assert rows["beijing-cluster"]["region"] == "north-china"
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"
    assert [h["reason"] for h in status["history"]] == ["Initial"]

    as_yaml = await platform.client.get(
        f"{BASE}/cross-region-app", headers={"Accept": "application/yaml"}
    )
    assert yaml.safe_load(as_yaml.text)["status"]["phase"] == "Ready"
    metrics = (await platform.client.get("/metrics")).text
    assert "edge_dispatch_applies_total" in metrics
    assert "edge_dispatch_time_to_ready_seconds_count" in metrics
    events = (await platform.client.get(f"{BASE}/cross-region-app/events")).json()["items"]
    assert {e["cluster"] for e in events if e["reason"] == "Ready"} == set(EXPECTED)


async def test_work_starts_on_the_write_not_on_the_sweep(platform: Platform) -> None:
    platform.start_controller()
    await asyncio.sleep(0.5)  # the controller is idle, waiting
    created = await platform.client.post(BASE, content=EXAMPLE_YAML, headers=YAML)
    assert created.status_code == 201
    loop = asyncio.get_running_loop()
    started = loop.time()
    await platform.ready("cross-region-app", within=10)
    # The sweep runs every 5 s; Ready well before it means the write woke the controller.
    assert loop.time() - started < 4.5


async def create_example(platform: Platform) -> None:
    created = await platform.client.post(BASE, content=EXAMPLE_YAML, headers=YAML)
    assert created.status_code == 201, created.text


def image_of(platform: Platform, cluster: str, name: str = "prometheus") -> str:
    obj = platform.fleet[cluster].get("deployments", NAMESPACE, name)
    assert obj is not None, f"{name} missing on {cluster}"
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_upgrade_then_rollback_follow_revisions_to_the_edge(platform: Platform) -> None:
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")

    patched = await platform.client.patch(
        f"{BASE}/cross-region-app",
        json={"spec": {"applicationVersionRef": "monitoring-stack-v2.1.0"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"]["revision"] == 2
    status = (await platform.client.get(f"{BASE}/cross-region-app")).json()["status"]
    assert status["phase"] in ("Progressing", "Ready")  # never Degraded on the way
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            d["status"]["phase"] == "Ready"
            and all(t["revision"] == 2 for t in d["status"]["targets"])
        ),
    )
    for cluster in EXPECTED:
        assert image_of(platform, cluster) == "prom/prometheus:v2.1.0"
        obj = platform.fleet[cluster].get("deployments", NAMESPACE, "grafana")
        assert obj is not None
        assert obj["metadata"]["annotations"]["edge.theriseunion.io/revision"] == "2"

    rolled = await platform.client.post(f"{BASE}/cross-region-app/rollback", json={"revision": 1})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["status"]["revision"] == 3
    assert rolled.json()["spec"]["applicationVersionRef"] == "monitoring-stack-v2.0.0"
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            d["status"]["phase"] == "Ready"
            and all(t["revision"] == 3 for t in d["status"]["targets"])
        ),
    )
    for cluster in EXPECTED:
        assert image_of(platform, cluster) == "prom/prometheus:v2.0.0"
    history = body["status"]["history"]
    assert [(h["revision"], h["reason"], h["fromVersion"], h["toVersion"]) for h in history] == [
        (1, "Initial", None, "monitoring-stack-v2.0.0"),
        (2, "Upgrade", "monitoring-stack-v2.0.0", "monitoring-stack-v2.1.0"),
        (3, "Rollback", "monitoring-stack-v2.1.0", "monitoring-stack-v2.0.0"),
    ]
    assert all(h["operator"] == "admin" for h in history)
    revisions = (await platform.client.get(f"{BASE}/cross-region-app/revisions")).json()["items"]
    assert [(r["revision"], r["reason"], r["applicationVersionRef"]) for r in revisions] == [
        (1, "Initial", "monitoring-stack-v2.0.0"),
        (2, "Upgrade", "monitoring-stack-v2.1.0"),
        (3, "Rollback", "monitoring-stack-v2.0.0"),
    ]


@pytest.mark.slow
async def test_a_dead_cluster_shows_unreachable_and_converges_when_back(
    platform: Platform,
) -> None:
    beijing = platform.fleet["beijing-cluster"]
    await beijing.stop()
    platform.start_controller()
    await create_example(platform)

    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: d["status"]["summary"] == {
            "clusters": 4, "ready": 3, "failed": 0, "unreachable": 1,
        },
    )  # fmt: skip
    row = targets_of(body)["beijing-cluster"]
    assert row["phase"] == "Unreachable"
    assert "unreachable" in row["message"]
    assert body["status"]["phase"] == "Degraded"
    assert beijing.get("deployments", NAMESPACE, "prometheus") is None

    await beijing.start()  # back on the same address; nobody calls the API
    body = await platform.ready("cross-region-app")
    assert targets_of(body)["beijing-cluster"]["readyReplicas"] == 3
    assert beijing.get("deployments", NAMESPACE, "prometheus") is not None


@pytest.mark.slow
async def test_blackholed_edges_do_not_hold_back_the_rest_and_converge_when_healed(
    platform: Platform,
) -> None:
    """Two of the four targets' edges stop answering mid-rollout (connections accepted, never
    answered): the other two are Ready as fast as ever, the cut ones turn Unreachable after the
    call timeout and the grace, nothing is deleted anywhere, and all converge once healed."""
    cut = ["beijing-cluster", "shenzhen-cluster"]
    platform.start_controller()
    await platform.wait_for(
        "/api/v1/clusters", lambda d: {c["status"]["phase"] for c in d["items"]} == {"Ready"}
    )
    for name in cut:
        platform.fleet[name].reachable.clear()
    started = time.monotonic()
    await create_example(platform)
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: all(
            targets_of(d)[name]["phase"] == "Ready"
            for name in ("shanghai-cluster", "hangzhou-cluster")
        ),
        within=10,
    )
    assert time.monotonic() - started < 10
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: all(targets_of(d)[name]["phase"] == "Unreachable" for name in cut),
        within=REQUEST_TIMEOUT[1] + platform.settings.cluster_unreachable_after + 15,
    )
    assert body["status"]["summary"]["unreachable"] == 2
    for name in ("shanghai-cluster", "hangzhou-cluster"):
        assert platform.fleet[name].get("deployments", NAMESPACE, "prometheus") is not None

    for name in cut:
        platform.fleet[name].reachable.set()
    body = await platform.ready("cross-region-app", within=60)
    for name in EXPECTED:
        assert platform.fleet[name].get("deployments", NAMESPACE, "prometheus") is not None, name
        assert platform.fleet[name].applies[("deployments", NAMESPACE, "prometheus")] >= 1


async def test_flaky_slow_edges_converge_with_bounded_retries(platform: Platform) -> None:
    """Every edge answers a tenth of all calls with a random 409, 429 or 500 and takes up to
    0.2 s for each answer: a rollout and an upgrade still land on every target, each object is
    applied a bounded number of times, and nothing is marked Failed on the way."""
    platform.start_controller()
    await platform.wait_for(
        "/api/v1/clusters", lambda d: {c["status"]["phase"] for c in d["items"]} == {"Ready"}
    )
    for edge in platform.fleet.values():
        edge.error_rate, edge.jitter = 0.1, 0.2
    await create_example(platform)
    seen_phases: set[str] = set()

    def ready(body: dict[str, Any]) -> bool:
        seen_phases.update(t["phase"] for t in body["status"]["targets"])
        return bool(body["status"]["phase"] == "Ready")

    await platform.wait_for(f"{BASE}/cross-region-app", ready, within=60)
    upgraded = await platform.client.patch(
        f"{BASE}/cross-region-app",
        json={"spec": {"applicationVersionRef": "monitoring-stack-v2.1.0"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert upgraded.status_code == 200, upgraded.text
    await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: d["status"]["revision"] == 2 and ready(d),
        within=60,
    )
    assert "Failed" not in seen_phases
    injected = sum(sum(edge.injected.values()) for edge in platform.fleet.values())
    assert injected > 0  # the flakiness happened
    for name in EXPECTED:
        edge = platform.fleet[name]
        assert edge.get("deployments", NAMESPACE, "prometheus") is not None, name
        # Two revisions, each applied once plus retries. A failed call redoes the target's
        # pass (about 6 calls, so about half of the passes meet an injected error): two
        # revisions take about 4 passes; 20 would take a run of bad luck of about 1 in 10^5.
        # (8 was exceeded once in CI: 11, on a machine at load 6.)
        assert 2 <= edge.applies[("deployments", NAMESPACE, "prometheus")] <= 20, edge.applies
    print(f"\ninjected {injected} errors")


async def test_an_edge_422_fails_only_that_target(platform: Platform) -> None:
    refusal = 'Deployment.apps "prometheus" is invalid: spec.template: Invalid value'
    platform.fleet["shenzhen-cluster"].fail(422, plural="deployments", message=refusal)
    platform.start_controller()
    await create_example(platform)

    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: d["status"]["summary"]["ready"] == 3 and d["status"]["summary"]["failed"] == 1,
    )
    row = targets_of(body)["shenzhen-cluster"]
    assert row["phase"] == "Failed"
    assert refusal in row["message"]
    assert "422" in row["message"]
    assert body["status"]["phase"] == "Degraded"
    await asyncio.sleep(1.5)  # permanent for this revision: not retried
    again = (await platform.client.get(f"{BASE}/cross-region-app")).json()
    assert targets_of(again)["shenzhen-cluster"]["phase"] == "Failed"
    events = (await platform.client.get(f"{BASE}/cross-region-app/events")).json()["items"]
    assert any(e["type"] == "Warning" and refusal in e["message"] for e in events)


LOST_LEASES = "edge_dispatch_lost_leases_total"


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_a_burst_of_500_and_429_is_retried_until_it_lands(platform: Platform) -> None:
    shanghai = platform.fleet["shanghai-cluster"]
    shanghai.fail(500, times=3, message="etcdserver: request timed out")
    shanghai.fail(429, times=2, message="too many requests")
    before = metric((await platform.client.get("/metrics")).text, "edge_dispatch_retries_total")
    platform.start_controller()
    await create_example(platform)

    await platform.ready("cross-region-app")
    assert shanghai.faults == []  # all five refusals were met, and then it converged
    after = metric((await platform.client.get("/metrics")).text, "edge_dispatch_retries_total")
    assert after - before >= 5


async def test_drift_at_the_edge_is_repaired(platform: Platform) -> None:
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")
    hangzhou, beijing = platform.fleet["hangzhou-cluster"], platform.fleet["beijing-cluster"]

    del hangzhou.store[("deployments", NAMESPACE, "prometheus")]  # someone deleted it
    beijing.store[("deployments", NAMESPACE, "grafana")]["spec"]["replicas"] = 7  # or scaled it

    async def repaired() -> bool:
        gone = hangzhou.get("deployments", NAMESPACE, "prometheus")
        scaled = beijing.get("deployments", NAMESPACE, "grafana")
        return gone is not None and scaled is not None and scaled["spec"]["replicas"] == 3

    for _ in range(50):  # the drift check runs every second here
        if await repaired():
            break
        await asyncio.sleep(0.1)
    assert await repaired()
    events = await platform.wait_for(
        f"{BASE}/cross-region-app/events",
        lambda d: (
            {"hangzhou-cluster", "beijing-cluster"}
            <= {e["cluster"] for e in d["items"] if e["reason"] == "DriftRepaired"}
        ),
    )
    repairs = {
        e["cluster"]: e["message"] for e in events["items"] if e["reason"] == "DriftRepaired"
    }
    assert "deleted at the edge" in repairs["hangzhou-cluster"]
    assert "changed at the edge" in repairs["beijing-cluster"]


async def test_two_controllers_apply_each_revision_once(platform: Platform) -> None:
    platform.start_controller()
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")
    await asyncio.sleep(1.5)  # a drift check passes too, and must not re-apply
    for name in EXPECTED:
        applies = platform.fleet[name].applies
        assert sorted(applies.values()) == [1, 1, 1], (name, applies)


async def test_paused_deployments_wait(platform: Platform) -> None:
    platform.start_controller()
    body = yaml.safe_load(EXAMPLE_YAML)
    body["spec"]["paused"] = True
    assert (await platform.client.post(BASE, json=body)).status_code == 201
    await asyncio.sleep(1.0)
    status = (await platform.client.get(f"{BASE}/cross-region-app")).json()["status"]
    assert status["phase"] == "Paused"
    assert all(not edge.applies for edge in platform.fleet.values())

    resumed = await platform.client.patch(
        f"{BASE}/cross-region-app",
        json={"spec": {"paused": False}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resumed.status_code == 200
    assert resumed.json()["status"]["revision"] == 1  # pausing is not a new revision
    await platform.ready("cross-region-app", within=10)


async def test_failure_policy_rollback_returns_a_failed_cluster_to_its_last_revision(
    platform: Platform,
) -> None:
    platform.start_controller()
    body = yaml.safe_load(EXAMPLE_YAML)
    body["spec"]["strategy"] = {"failurePolicy": "Rollback"}
    assert (await platform.client.post(BASE, json=body)).status_code == 201
    await platform.ready("cross-region-app")

    shenzhen = platform.fleet["shenzhen-cluster"]
    shenzhen.fail(422, plural="deployments", message="admission webhook denied the request")
    body["spec"]["applicationVersionRef"] = "monitoring-stack-v2.1.0"
    assert (await platform.client.put(f"{BASE}/cross-region-app", json=body)).status_code == 200

    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            targets_of(d)["shenzhen-cluster"]["phase"] == "Ready"
            and targets_of(d)["shenzhen-cluster"]["revision"] == 1
            and d["status"]["summary"]["ready"] == 3
        ),
    )
    assert "rolled back to revision 1" in targets_of(body)["shenzhen-cluster"]["message"]
    assert body["status"]["phase"] == "Degraded"
    assert image_of(platform, "shenzhen-cluster") == "prom/prometheus:v2.0.0"
    assert image_of(platform, "beijing-cluster") == "prom/prometheus:v2.1.0"


async def test_removing_a_target_removes_its_objects(platform: Platform) -> None:
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")

    body = yaml.safe_load(EXAMPLE_YAML)
    body["spec"]["targets"] = body["spec"]["targets"][:1]  # east-china only
    assert (await platform.client.put(f"{BASE}/cross-region-app", json=body)).status_code == 200
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: d["status"]["phase"] == "Ready" and len(d["status"]["targets"]) == 2,
    )
    assert set(targets_of(body)) == {"shanghai-cluster", "hangzhou-cluster"}
    for gone in ("beijing-cluster", "shenzhen-cluster"):
        assert platform.fleet[gone].of_kind("deployments") == {}


async def test_delete_cleans_the_edges_then_the_record(platform: Platform) -> None:
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")

    deleted = await platform.client.delete(f"{BASE}/cross-region-app")
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["deletionTimestamp"] is not None
    changed = await platform.client.put(
        f"{BASE}/cross-region-app", content=EXAMPLE_YAML, headers=YAML
    )
    assert changed.status_code in (404, 409)  # being deleted, or already gone

    for _ in range(100):
        if (await platform.client.get(f"{BASE}/cross-region-app")).status_code == 404:
            break
        await asyncio.sleep(0.1)
    final = await platform.client.get(f"{BASE}/cross-region-app")
    assert final.status_code == 404, final.text
    for name in EXPECTED:
        edge = platform.fleet[name]
        assert edge.of_kind("deployments") == {}, name
        assert edge.get("namespaces", None, NAMESPACE) is not None  # shared by the workspace


async def test_delete_with_orphan_leaves_the_edges_alone(platform: Platform) -> None:
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app")

    deleted = await platform.client.delete(
        f"{BASE}/cross-region-app", params={"propagationPolicy": "Orphan"}
    )
    assert deleted.status_code == 200
    assert (await platform.client.get(f"{BASE}/cross-region-app")).status_code == 404
    await asyncio.sleep(1.0)
    for name in EXPECTED:
        assert len(platform.fleet[name].of_kind("deployments")) == 2, name


async def test_a_helm_version_lands_as_a_helmchart_for_the_k3s_helm_controller(
    platform: Platform,
) -> None:
    client = platform.client
    uploaded = await client.post(
        "/chartrepo/api/charts",
        content=chart_archive("edge-metrics", "1.5.0"),
        headers={"content-type": "application/gzip"},
    )
    assert uploaded.status_code == 201, uploaded.text
    await client.post("/api/v1/applications", json={"metadata": {"name": "edge-metrics"}})
    version = {
        "metadata": {"name": "edge-metrics-v1.5.0"},
        "spec": {
            "application": "edge-metrics",
            "version": "1.5.0",
            "helm": {
                "chart": "edge-metrics",
                "version": "1.5.0",
                "values": {"replicaCount": 1, "image": {"tag": "a", "pull": "Always"}},
            },
        },
    }
    assert (await client.post("/api/v1/applicationversions", json=version)).status_code == 201
    shanghai = platform.fleet["shanghai-cluster"]
    shanghai.auto_ready = False
    platform.start_controller()
    body = {
        "metadata": {"name": "metrics"},
        "spec": {
            "applicationVersionRef": "edge-metrics-v1.5.0",
            "namespace": "ws-team-a-observability",
            "targets": [
                {
                    "clusters": ["shanghai-cluster"],
                    "nodeGroupRef": "monitoring-nodes",
                    "replicas": 2,
                    "values": {"image": {"tag": "b"}},
                }
            ],
        },
    }
    assert (await client.post(BASE, json=body)).status_code == 201
    await platform.wait_for(
        f"{BASE}/metrics", lambda d: d["status"]["targets"][0]["phase"] == "Applied"
    )
    chart = shanghai.get("helmcharts", "ws-team-a-observability", "metrics")
    assert chart is not None
    spec = chart["spec"]
    assert spec["repo"] == f"{platform.settings.public_url}/chartrepo"
    assert (spec["chart"], spec["version"], spec["targetNamespace"]) == (
        "edge-metrics", "1.5.0", "ws-team-a-observability",
    )  # fmt: skip
    assert yaml.safe_load(spec["valuesContent"]) == {
        "replicaCount": 2,
        "image": {"tag": "b", "pull": "Always"},  # Helm's merge: maps merge, the target wins
        "nodeSelector": {"theriseunion.io/nodegroup": "monitoring-nodes"},
    }
    assert shanghai.get("namespaces", None, "ws-team-a-observability") is not None

    # The helm-controller authenticates to /chartrepo with the Secret named in authSecret.
    assert spec["authSecret"] == {"name": "metrics-chartrepo"}
    secret = shanghai.get("secrets", "ws-team-a-observability", "metrics-chartrepo")
    assert secret is not None
    assert secret["type"] == "kubernetes.io/basic-auth"
    username, password = (
        base64.b64decode(secret["data"][k]).decode() for k in ("username", "password")
    )
    bare = {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }
    index = await client.get("/chartrepo/index.yaml", headers=bare)
    assert index.status_code == 200
    assert "edge-metrics" in index.text
    chart_url = "/chartrepo/charts/edge-metrics-1.5.0.tgz"
    assert (await client.get(chart_url, headers=bare)).status_code == 200
    upload = await client.post(
        "/chartrepo/api/charts", content=chart_archive("evil", "1.0.0"),
        headers=bare | {"content-type": "application/gzip"},
    )  # fmt: skip
    assert upload.status_code == 403  # read only
    forged = base64.b64encode(f"chartpull.other-team:{password}".encode()).decode()
    refused = await client.get(
        "/chartrepo/index.yaml", headers={"Authorization": f"Basic {forged}"}
    )
    assert refused.status_code == 401  # bound to its workspace
    assert password not in (await client.get(f"{BASE}/metrics/events")).text

    shanghai.complete_helm_install(
        "ws-team-a-observability", "metrics"
    )  # the helm-controller's job
    body = await platform.ready("metrics")
    assert body["status"]["targets"][0]["readyReplicas"] == 2


@pytest.mark.slow
async def test_a_new_revision_written_during_an_apply_is_not_lost(platform: Platform) -> None:
    # A long drift interval: the new revision must not wait for the next periodic look.
    platform.settings = platform.settings.model_copy(update={"drift_check_interval": 60.0})
    shenzhen = platform.fleet["shenzhen-cluster"]
    shenzhen.apply_delay = 0.5  # revision 1 is still being applied there when 2 arrives
    platform.start_controller()
    await create_example(platform)
    for _ in range(50):
        if shenzhen.applies:
            break
        await asyncio.sleep(0.05)
    patched = await platform.client.patch(
        f"{BASE}/cross-region-app",
        json={"spec": {"applicationVersionRef": "monitoring-stack-v2.1.0"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: (
            d["status"]["phase"] == "Ready"
            and all(t["revision"] == 2 for t in d["status"]["targets"])
        ),
        within=15,
    )
    assert image_of(platform, "shenzhen-cluster") == "prom/prometheus:v2.1.0"
    assert body["status"]["summary"]["ready"] == 4


@pytest.mark.slow
async def test_a_slow_edge_is_applied_once_however_long_it_takes(platform: Platform) -> None:
    beijing = platform.fleet["beijing-cluster"]
    beijing.apply_delay = 1.2  # three objects: longer than the 3 s lease in these tests
    # The counter is the process's: earlier tests may have dropped results legitimately (a
    # deployment deleted with orphan while its passes ran).
    lost_before = metric((await platform.client.get("/metrics")).text, LOST_LEASES)
    platform.start_controller()
    platform.start_controller()
    await create_example(platform)
    await platform.ready("cross-region-app", within=30)
    assert sorted(beijing.applies.values()) == [1, 1, 1], beijing.applies
    metrics = (await platform.client.get("/metrics")).text
    assert metric(metrics, LOST_LEASES) == lost_before


async def test_a_partly_applied_version_is_still_cleaned_up(platform: Platform) -> None:
    shenzhen = platform.fleet["shenzhen-cluster"]
    shenzhen.fail(422, plural="deployments", name="grafana", message="grafana is invalid")
    platform.start_controller()
    await create_example(platform)
    await platform.wait_for(
        f"{BASE}/cross-region-app", lambda d: d["status"]["summary"]["failed"] == 1
    )
    assert shenzhen.get("deployments", NAMESPACE, "prometheus") is not None  # it went first

    assert (await platform.client.delete(f"{BASE}/cross-region-app")).status_code == 200
    for _ in range(100):
        if (await platform.client.get(f"{BASE}/cross-region-app")).status_code == 404:
            break
        await asyncio.sleep(0.1)
    assert shenzhen.of_kind("deployments") == {}


@pytest.mark.slow
async def test_a_failed_target_says_failed_again_after_its_cluster_was_away(
    platform: Platform,
) -> None:
    shenzhen = platform.fleet["shenzhen-cluster"]
    shenzhen.fail(422, plural="deployments", message="refused")
    platform.start_controller()
    await create_example(platform)
    await platform.wait_for(
        f"{BASE}/cross-region-app", lambda d: d["status"]["summary"]["failed"] == 1
    )
    await shenzhen.stop()
    await platform.wait_for(
        f"{BASE}/cross-region-app", lambda d: d["status"]["summary"]["unreachable"] == 1
    )
    await shenzhen.start()
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: d["status"]["summary"] == {
            "clusters": 4, "ready": 3, "failed": 1, "unreachable": 0,
        },
    )  # fmt: skip
    assert targets_of(body)["shenzhen-cluster"]["phase"] == "Failed"


@pytest.mark.slow
async def test_a_ready_revision_that_wobbles_is_followed_not_failed(platform: Platform) -> None:
    platform.start_controller()
    body = yaml.safe_load(EXAMPLE_YAML)
    body["spec"]["strategy"] = {"progressDeadlineSeconds": 10}
    assert (await platform.client.post(BASE, json=body)).status_code == 201
    await platform.ready("cross-region-app")
    await asyncio.sleep(10.5)  # past the deadline counted from the apply
    hangzhou = platform.fleet["hangzhou-cluster"]
    hangzhou.set_ready(NAMESPACE, "prometheus", ready=1)  # a pod restarts: 1 of 2
    body = await platform.wait_for(
        f"{BASE}/cross-region-app",
        lambda d: targets_of(d)["hangzhou-cluster"]["phase"] != "Ready",
    )
    assert targets_of(body)["hangzhou-cluster"]["phase"] == "Applied"  # waiting, not Failed
    hangzhou.set_ready(NAMESPACE, "prometheus")
    await platform.ready("cross-region-app", within=10)


async def test_a_row_whose_pass_is_still_finishing_is_not_claimed_again(
    platform: Platform,
) -> None:
    """A pass's write-back frees its row before the pass's task has ended, and a nudge can make
    the row due at once. A claim in that moment must leave the row to the next one: claimed, it
    held a lease with no pass under it, and the target waited for the lease to run out (seen
    as a deployment stuck in Deleting for two minutes with two controllers)."""
    await create_example(platform)  # four targets due; no controller has looked yet
    state = platform.app.state
    controller = Controller(platform.settings, state.sessionmaker, state.redis, state.cache,
                            state.secrets)  # fmt: skip
    async with state.sessionmaker() as session:
        finishing = await session.scalar(select(func.min(RolloutTarget.id)))
    # A pass for that row, written back, whose task has not ended yet.
    not_ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    controller.dispatcher._inflight[finishing] = not_ended  # type: ignore[assignment]
    try:
        assert await controller.dispatcher.run_once() == 3
        async with state.sessionmaker() as session:
            leases = dict((await session.execute(
                select(RolloutTarget.id, RolloutTarget.lock_token)
            )).all())  # fmt: skip
        assert leases[finishing] is None  # left for the claim after the pass has ended
        assert all(token is not None for row, token in leases.items() if row != finishing)
    finally:
        del controller.dispatcher._inflight[finishing]
        not_ended.cancel()
        await controller.dispatcher.drain(10)
        await controller.clients.close()
