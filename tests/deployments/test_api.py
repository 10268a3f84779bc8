"""The ApplicationDeployment API without a controller: validation, resolution, revisions,
permissions, and what other kinds may no longer do while deployments use them."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import asyncpg
import yaml

from tests.support.deployments import BASE, EXAMPLE_YAML, WORKSPACE, Platform
from tests.support.tenancy import add_member, as_user, create_user

EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_YAML)


def example(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["spec"].update(spec)
    return body


def fields(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_every_reference_is_checked_and_named(platform: Platform) -> None:
    client = platform.client
    await client.post(
        "/api/v1/regions", json={"metadata": {"name": "west-china"}}
    )  # a region with no cluster granted
    body = example(
        applicationVersionRef="monitoring-stack-v9.9.9",
        targets=[
            {"region": "east-china", "clusters": ["shanghai-cluster", "nowhere-cluster"]},
            {"region": "north-china", "clusters": ["shenzhen-cluster"]},
            {"region": "north-china", "clusters": ["tianjin-cluster"], "nodeGroupRef": "gpu-nodes"},
            {"clusters": ["shanghai-cluster"]},
            {"region": "atlantis"},
            {"region": "west-china"},
        ],
    )
    problems = fields(await client.post(BASE, json=body))
    assert problems == {
        "spec.applicationVersionRef": "application version 'monitoring-stack-v9.9.9' does not "
        "exist",
        "spec.targets[0].clusters[1]": "cluster 'nowhere-cluster' does not exist or is not "
        "granted to workspace 'team-a'",
        "spec.targets[1].clusters[0]": "cluster 'shenzhen-cluster' is in region 'south-china', "
        "not 'north-china'",
        "spec.targets[2].nodeGroupRef": "node group 'gpu-nodes' does not exist on tianjin-cluster",
        "spec.targets[3].clusters[0]": "cluster 'shanghai-cluster' is already a target at "
        "spec.targets[0].clusters[0]",
        "spec.targets[4].region": "region 'atlantis' does not exist",
        "spec.targets[5].region": "no cluster of region 'west-china' is granted to workspace "
        "'team-a'",
    }
    for replicas in (-1, 1001):
        bad = example(targets=[{"clusters": ["shanghai-cluster"], "replicas": replicas}])
        assert "spec.targets[0].replicas" in fields(await client.post(BASE, json=bad))
    assert "spec.targets[0]" in fields(await client.post(BASE, json=example(targets=[{}])))
    assert "spec.targets" in fields(await client.post(BASE, json=example(targets=[])))
    listed = await client.get(BASE)
    assert listed.json()["items"] == []  # nothing was saved


async def test_clusters_not_granted_are_refused_like_missing_ones(platform: Platform) -> None:
    client = platform.client
    granted = await client.put(
        f"/api/v1/workspaces/{WORKSPACE}",
        json={"metadata": {"name": WORKSPACE}, "spec": {"clusters": ["shanghai-cluster"]}},
    )
    assert granted.status_code == 200, granted.text
    problems = fields(
        await client.post(BASE, content=EXAMPLE_YAML, headers={"Content-Type": "application/yaml"})
    )
    assert problems["spec.targets[1].clusters[0]"].startswith("cluster 'beijing-cluster' does not")


async def test_resolve_expands_regions_and_saves_nothing(platform: Platform) -> None:
    response = await platform.client.post(
        f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments:resolve",
        json={
            "spec": {
                "applicationVersionRef": "monitoring-stack-v2.0.0",
                "targets": [
                    {"region": "north-china", "nodeGroupRef": "production-nodes", "replicas": 3},
                    {"clusters": ["shenzhen-cluster"]},
                ],
            }
        },
    )
    assert response.status_code == 200, response.text
    assert [tuple(t.values()) for t in response.json()["targets"]] == [
        ("beijing-cluster", "north-china", "production-nodes", 3),
        ("tianjin-cluster", "north-china", "production-nodes", 3),
        ("shenzhen-cluster", "south-china", None, None),
    ]
    assert (await platform.client.get(BASE)).json()["items"] == []


async def test_revisions_come_from_spec_changes_only(platform: Platform) -> None:
    client = platform.client
    assert (await client.post(BASE, json=example())).status_code == 201
    path = f"{BASE}/cross-region-app"
    merge = {"Content-Type": "application/merge-patch+json"}
    paused = await client.patch(path, json={"spec": {"paused": True}}, headers=merge)
    assert paused.json()["status"]["revision"] == 1
    assert paused.json()["metadata"]["generation"] == 2
    scaled = copy.deepcopy(EXAMPLE["spec"]["targets"])
    scaled[2]["replicas"] = 5
    changed = await client.patch(path, json={"spec": {"targets": scaled}}, headers=merge)
    assert changed.json()["status"]["revision"] == 2
    history = changed.json()["status"]["history"]
    assert history[-1]["reason"] == "Upgrade"
    assert history[-1]["fromVersion"] == history[-1]["toVersion"] == "monitoring-stack-v2.0.0"
    rows = {t["cluster"]: t for t in (await client.get(path)).json()["status"]["targets"]}
    assert rows["shenzhen-cluster"]["desiredReplicas"] == 5

    missing = await client.post(f"{path}/rollback", json={"revision": 7})
    assert fields(missing) == {"revision": "deployment 'cross-region-app' has no revision 7"}
    stale = await client.post(f"{path}/rollback", json={"revision": 1}, headers={"If-Match": '"1"'})
    assert stale.status_code in (409, 412)
    assert len((await client.get(f"{path}/revisions")).json()["items"]) == 2


async def test_only_operators_change_deployments_and_strangers_see_nothing(
    platform: Platform,
) -> None:
    client = platform.client
    assert (await client.post(BASE, json=example())).status_code == 201
    for name in ("vera", "otto", "stan"):
        await create_user(client, name)
    await add_member(client, WORKSPACE, "vera", "viewer")
    await add_member(client, WORKSPACE, "otto", "operator")
    viewer, operator, stranger = [await as_user(client, n) for n in ("vera", "otto", "stan")]

    assert (await client.get(f"{BASE}/cross-region-app", headers=viewer)).status_code == 200
    refused = await client.delete(f"{BASE}/cross-region-app", headers=viewer)
    assert refused.status_code == 403
    other = example(namespace="ws-team-a-second")
    other["metadata"]["name"] = "second"
    assert (await client.post(BASE, json=other, headers=viewer)).status_code == 403
    assert (await client.post(BASE, json=other, headers=operator)).status_code == 201
    assert (await client.get(f"{BASE}/cross-region-app", headers=stranger)).status_code == 404
    assert (await client.get(BASE, headers=stranger)).status_code == 404


async def test_what_deployments_use_cannot_be_deleted(platform: Platform) -> None:
    client = platform.client
    assert (await client.post(BASE, json=example())).status_code == 201
    for path in (
        "/api/v1/clusters/beijing-cluster",
        "/api/v1/applicationversions/monitoring-stack-v2.0.0",
        f"/api/v1/workspaces/{WORKSPACE}",
    ):
        response = await client.delete(path)
        assert response.status_code == 409, (path, response.text)
        assert "cross-region-app" in response.json()["detail"]
    # The unused version and cluster are free to go.
    assert (
        await client.delete("/api/v1/applicationversions/monitoring-stack-v2.1.0")
    ).status_code == 200
    assert (await client.delete("/api/v1/clusters/tianjin-cluster")).status_code == 200


async def test_bad_propagation_policy_is_a_clear_422(platform: Platform) -> None:
    assert (await platform.client.post(BASE, json=example())).status_code == 201
    response = await platform.client.delete(
        f"{BASE}/cross-region-app", params={"propagationPolicy": "Sideways"}
    )
    assert response.status_code == 422
    assert (await platform.client.get(f"{BASE}/cross-region-app")).status_code == 200


async def test_a_workspace_writes_only_its_own_namespaces_and_objects(platform: Platform) -> None:
    client = platform.client
    for namespace in ("kube-system", "ws-team-b", "ws-team-ab"):
        problems = fields(await client.post(BASE, json=example(namespace=namespace)))
        assert "a workspace writes only to its own namespaces" in problems["spec.namespace"]
    assert (await client.post(BASE, json=example())).status_code == 201
    twin = example()
    twin["metadata"]["name"] = "twin"  # the same Deployments in the same namespace
    taken = await client.post(BASE, json=twin)
    assert taken.status_code == 409, taken.text
    assert "cross-region-app" in taken.json()["detail"]
    named = example(namespace="ws-team-a")  # the default namespace, named: the same one
    named["metadata"]["name"] = "twin"
    assert (await client.post(BASE, json=named)).status_code == 409
    elsewhere = example(namespace="ws-team-a-canary")
    elsewhere["metadata"]["name"] = "twin"
    assert (await client.post(BASE, json=elsewhere)).status_code == 201


async def test_rollback_to_an_impossible_revision_is_a_422(platform: Platform) -> None:
    assert (await platform.client.post(BASE, json=example())).status_code == 201
    response = await platform.client.post(
        f"{BASE}/cross-region-app/rollback", json={"revision": 2**31}
    )
    assert "revision" in fields(response)


async def test_a_deadlock_victim_is_answered_503_and_writes_nothing(platform: Platform) -> None:
    """PostgreSQL aborts one transaction of a deadlock; when that is a request's, the client
    gets 503 with Retry-After (nothing was written, the same request may be sent again), not
    a 500. The deadlock is a real one: another connection holds the deployment's targets and
    then asks for its row while an update holds the row and waits for the targets."""
    client = platform.client
    assert (await client.post(BASE, json=example())).status_code == 201
    path = f"{BASE}/cross-region-app"
    before = (await client.get(path)).json()
    scaled = copy.deepcopy(EXAMPLE["spec"]["targets"])
    scaled[2]["replicas"] = 5
    merge = {"Content-Type": "application/merge-patch+json"}

    other = await asyncpg.connect(platform.settings.database_url)
    try:
        async with other.transaction():
            # Long enough that the request's backend runs the deadlock check first, so it is
            # the request that is aborted.
            await other.execute("SET LOCAL deadlock_timeout = '20s'")
            rollout_id = await other.fetchval(
                "SELECT id FROM rollouts WHERE name = 'cross-region-app'"
            )
            await other.execute(
                "SELECT id FROM rollout_targets WHERE rollout_id = $1 ORDER BY id FOR UPDATE",
                rollout_id,
            )
            update = asyncio.create_task(
                client.patch(path, json={"spec": {"targets": scaled}}, headers=merge)
            )
            deadline = time.monotonic() + 10
            while not await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ):
                assert time.monotonic() < deadline, "the update never waited for the targets"
                await asyncio.sleep(0.02)
            await other.execute("SELECT id FROM rollouts WHERE id = $1 FOR UPDATE", rollout_id)
            answer = await update
    finally:
        await other.close()

    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["Retry-After"]
    assert answer.json()["code"] == "TransactionConflict"
    after = (await client.get(path)).json()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["revision"] == 1
    retried = await client.patch(path, json={"spec": {"targets": scaled}}, headers=merge)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"]["revision"] == 2
