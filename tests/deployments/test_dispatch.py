"""Rollouts to the five emulated edge clusters of the deployment guide, through the controller."""

from __future__ import annotations

import asyncio

import yaml

from tests.deployments.conftest import (
    BASE,
    EXAMPLE_YAML,
    EXPECTED,
    NAMESPACE,
    Platform,
    targets_of,
)

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
            assert namespace is None and not deployments, f"{name} was not a target"
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
