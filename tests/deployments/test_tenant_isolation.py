"""Two workspaces on one shared edge cluster: neither can write, replace or delete the other's
objects there, nor objects the platform did not create (the security review's first finding:
workspace `team` could use `ws-team-b`, workspace `team-b`'s own namespace)."""

from __future__ import annotations

from typing import Any

from tests.support.charts import chart_archive
from tests.support.deployments import WORKSPACE, Platform
from tests.support.tenancy import add_member, as_user, create_user

SHARED = "shanghai-cluster"


def configsync(name: str, namespace: str | None = None, **data: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"data": data or {"k": "v"}, "targets": [{"clusters": [SHARED]}]}
    if namespace is not None:
        spec["namespace"] = namespace
    return {"metadata": {"name": name}, "spec": spec}


async def workspace(platform: Platform, name: str) -> int:
    response = await platform.client.post(
        "/api/v1/workspaces", json={"metadata": {"name": name}, "spec": {"clusters": [SHARED]}}
    )
    return response.status_code


def configs(ws: str) -> str:
    return f"/api/v1/workspaces/{ws}/configsyncs"


async def test_a_workspace_cannot_use_another_workspaces_namespace(platform: Platform) -> None:
    client = platform.client
    assert await workspace(platform, "team") == 201
    assert await workspace(platform, "team-b") == 201
    await create_user(client, "otto")
    await add_member(client, "team", "otto", "operator")
    operator = await as_user(client, "otto")

    # `ws-team-b` has the form of one of team's namespaces (`ws-team-` + `b`) but is team-b's.
    for kind, body in (
        ("configsyncs", configsync("grab", "ws-team-b")),
        (
            "applicationdeployments",
            {
                "metadata": {"name": "grab"},
                "spec": {
                    "applicationVersionRef": "monitoring-stack-v2.0.0",
                    "namespace": "ws-team-b",
                    "targets": [{"clusters": [SHARED]}],
                },
            },
        ),
    ):
        refused = await client.post(f"/api/v1/workspaces/team/{kind}", json=body, headers=operator)
        assert refused.status_code == 422, refused.text
        assert "belongs to another workspace" in refused.text
        assert (await client.get(f"/api/v1/workspaces/team/{kind}/grab")).status_code == 404
    # A dry run says the same, and claims nothing.
    dry_run = await client.post(
        "/api/v1/workspaces/team/applicationdeployments:resolve",
        json={
            "spec": {
                "applicationVersionRef": "monitoring-stack-v2.0.0",
                "namespace": "ws-team-b",
                "targets": [{"clusters": [SHARED]}],
            }
        },
        headers=operator,
    )
    assert dry_run.status_code == 422
    assert "belongs to another workspace" in dry_run.text

    # team's own sub-namespaces stay usable; the first user of one holds it.
    mine = await client.post(configs("team"), json=configsync("mine", "ws-team-tools"))
    assert mine.status_code == 201, mine.text
    # A workspace created later whose own namespace is taken is refused, not handed it.
    taken = await client.post(configs("team"), json=configsync("early", "ws-team-c"))
    assert taken.status_code == 201
    late = await client.post("/api/v1/workspaces", json={"metadata": {"name": "team-c"}})
    assert late.status_code == 409, late.text
    assert "ws-team-c" in late.json()["detail"]
    # Names cut to 63 characters collide the same way.
    long_name = "l" * 61
    assert await workspace(platform, long_name + "-a") == 201
    clash = await client.post("/api/v1/workspaces", json={"metadata": {"name": long_name + "-b"}})
    assert clash.status_code == 409


async def test_the_controller_leaves_objects_that_are_not_its_owners_alone(
    platform: Platform,
) -> None:
    client, edge = platform.client, platform.fleet[SHARED]
    namespace = f"ws-{WORKSPACE}"
    # At the edge: a ConfigMap someone made by hand, in the workspace's namespace, and a
    # namespace of the workspace's form that another party labelled as theirs.
    edge.store[("namespaces", None, namespace)] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "uid": "ns-uid",
            "labels": {"edge.theriseunion.io/workspace": WORKSPACE},
        },
    }
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "by-hand", "namespace": namespace, "uid": "cm-uid", "labels": {}},
        "data": {"owner": "the site's admin"},
    }
    edge.store[("configmaps", namespace, "by-hand")] = foreign
    edge.store[("namespaces", None, f"{namespace}-other")] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": f"{namespace}-other",
            "uid": "ns2-uid",
            "labels": {"edge.theriseunion.io/workspace": "someone-else"},
        },
    }
    platform.start_controller()

    created = await client.post(configs(WORKSPACE), json=configsync("by-hand", owner="platform"))
    assert created.status_code == 201, created.text
    body = await platform.wait_for(
        f"{configs(WORKSPACE)}/by-hand", lambda d: d["status"]["phase"] == "Failed"
    )
    message = body["status"]["targets"][0]["message"]
    assert "ConfigMap ws-team-a/by-hand exists at the edge" in message
    assert "edge.theriseunion.io/configsync=team-a.by-hand" in message  # how to adopt it
    assert edge.get("configmaps", namespace, "by-hand")["data"] == {"owner": "the site's admin"}

    elsewhere = await client.post(
        configs(WORKSPACE), json=configsync("elsewhere", f"{namespace}-other")
    )
    assert elsewhere.status_code == 201, elsewhere.text
    body = await platform.wait_for(
        f"{configs(WORKSPACE)}/elsewhere", lambda d: d["status"]["phase"] == "Failed"
    )
    assert "another workspace holds it" in body["status"]["targets"][0]["message"]
    assert edge.get("configmaps", f"{namespace}-other", "elsewhere") is None

    # Deleting the refused ConfigSync does not delete the object it never owned.
    assert (await client.delete(f"{configs(WORKSPACE)}/by-hand")).status_code == 200
    await platform.wait_for(configs(WORKSPACE), lambda d: len(d["items"]) == 1)
    assert edge.get("configmaps", namespace, "by-hand") == foreign


async def test_an_object_replaced_at_the_edge_is_neither_repaired_nor_deleted(
    platform: Platform,
) -> None:
    client, edge = platform.client, platform.fleet[SHARED]
    namespace = f"ws-{WORKSPACE}"
    platform.start_controller()
    created = await client.post(configs(WORKSPACE), json=configsync("settings"))
    assert created.status_code == 201, created.text
    await platform.wait_for(
        f"{configs(WORKSPACE)}/settings", lambda d: d["status"]["phase"] == "Ready"
    )
    # Someone at the edge replaces it with their own object of the same name.
    replacement = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": namespace,
            "uid": "theirs",
            "labels": {"edge.theriseunion.io/configsync": "other.settings"},
        },
        "data": {"theirs": "yes"},
    }
    edge.store[("configmaps", namespace, "settings")] = replacement
    body = await platform.wait_for(
        f"{configs(WORKSPACE)}/settings", lambda d: d["status"]["phase"] == "Failed", within=15
    )
    assert "another owner holds it" in body["status"]["targets"][0]["message"]
    assert edge.get("configmaps", namespace, "settings")["data"] == {"theirs": "yes"}
    assert (await client.delete(f"{configs(WORKSPACE)}/settings")).status_code == 200
    await platform.wait_for(configs(WORKSPACE), lambda d: d["items"] == [])
    assert edge.get("configmaps", namespace, "settings") == replacement


async def test_only_workspace_admins_choose_where_a_vclusters_credential_goes(
    platform: Platform,
) -> None:
    """Pointing `spec.endpoint` elsewhere sends the vcluster's admin token there: as good as
    reading its kubeconfig, which only workspace admins may."""
    client = platform.client
    uploaded = await client.post(
        "/chartrepo/api/charts",
        content=chart_archive("vcluster", "0.30.1"),
        headers={"content-type": "application/gzip"},
    )
    assert uploaded.status_code == 201
    await create_user(client, "olga")
    await add_member(client, WORKSPACE, "olga", "operator")
    operator = await as_user(client, "olga")
    base = f"/api/v1/workspaces/{WORKSPACE}/vclusters"
    body = {"metadata": {"name": "tenant"}, "spec": {"cluster": SHARED}}
    refused = await client.post(
        base,
        json=body | {"spec": body["spec"] | {"endpoint": "https://attacker.example:6443"}},
        headers=operator,
    )
    assert refused.status_code == 403, refused.text
    assert "admin role" in refused.json()["detail"]
    created = await client.post(base, json=body, headers=operator)  # no endpoint: fine
    assert created.status_code == 201, created.text
    merge = {"Content-Type": "application/merge-patch+json"}
    moved = await client.patch(
        f"{base}/tenant",
        json={"spec": {"endpoint": "https://attacker.example:6443"}},
        headers=operator | merge,
    )
    assert moved.status_code == 403
    assert (await client.get(f"{base}/tenant")).json()["spec"].get("endpoint") is None
    by_admin = await client.patch(
        f"{base}/tenant", json={"spec": {"endpoint": "https://vc.example:6443"}}, headers=merge
    )
    assert by_admin.status_code == 200, by_admin.text
