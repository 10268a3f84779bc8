"""Cluster inventory through the API: regions, filters, node groups, visibility, and the
kubeconfig — validated, encrypted at rest, never returned or logged."""

from __future__ import annotations

import base64
import json
import logging

import asyncpg
import httpx
import pytest
import yaml
from fastapi import FastAPI

from app.crypto import Sealed, SecretBox
from tests.support.clusters import FLEET, TOKEN_VALUE, cluster_body, kubeconfig, register_fleet
from tests.support.platform import ENCRYPTION_KEY
from tests.support.problems import assert_problem
from tests.support.tenancy import add_member, as_user, create_user, create_workspace


async def test_register_fleet_filters_and_region_counts(api: httpx.AsyncClient) -> None:
    await register_fleet(api)
    listed = (await api.get("/api/v1/clusters")).json()
    assert len(listed["items"]) == 5
    one = listed["items"][0]
    assert one["status"]["phase"] == "Pending"
    assert one["spec"]["connection"] == {
        "type": "direct",
        "endpoint": None,
        "kubeconfigConfigured": True,
    }

    async def names(**params: str) -> set[str]:
        items = (await api.get("/api/v1/clusters", params=params)).json()["items"]
        return {i["metadata"]["name"] for i in items}

    assert await names(region="east-china") == {"shanghai-cluster", "hangzhou-cluster"}
    assert await names(provider="k3s") == {"shanghai-cluster", "shenzhen-cluster"}
    assert await names(region="north-china", provider="k3s") == set()
    assert await names(phase="Ready") == set()
    assert await names(labelSelector="region in (south-china)") == {"shenzhen-cluster"}

    region = (await api.get("/api/v1/regions/east-china")).json()
    assert region["status"] == {"clusterCount": 2, "readyClusterCount": 0}
    regions = (await api.get("/api/v1/regions")).json()["items"]
    assert {r["metadata"]["name"]: r["status"]["clusterCount"] for r in regions} == {
        "east-china": 2,
        "north-china": 2,
        "south-china": 1,
    }


async def test_region_must_exist_and_cannot_be_deleted_with_clusters(
    api: httpx.AsyncClient,
) -> None:
    missing = await api.post("/api/v1/clusters", json=cluster_body("c1", "nowhere"))
    assert_problem(missing, 422, "spec.region")
    await register_fleet(api)
    refused = await api.delete("/api/v1/regions/east-china")
    assert_problem(refused, 409, "shanghai-cluster", "hangzhou-cluster")
    assert (await api.get("/api/v1/regions/east-china")).status_code == 200
    for name in FLEET["south-china"]:
        assert (await api.delete(f"/api/v1/clusters/{name}")).status_code == 200
    assert (await api.delete("/api/v1/regions/south-china")).status_code == 200


async def test_kubeconfig_is_encrypted_never_returned_and_kept_on_update(
    app_client: tuple[FastAPI, httpx.AsyncClient], database_url: str
) -> None:
    _, client = app_client
    await client.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
    encoded = base64.b64encode(kubeconfig().encode()).decode()
    body = cluster_body("shanghai-cluster", "east-china")
    body["spec"]["connection"]["kubeconfig"] = encoded  # type: ignore[index]
    created = await client.post("/api/v1/clusters", json=body)
    assert created.status_code == 201, created.text
    uid = created.json()["metadata"]["uid"]

    patched = await client.patch(
        "/api/v1/clusters/shanghai-cluster",
        json={"spec": {"displayName": "Shanghai"}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    replaced = await client.put(
        "/api/v1/clusters/shanghai-cluster", json={**cluster_body("shanghai-cluster", "east-china"),
                                                   "spec": {"region": "east-china"}},
    )  # fmt: skip
    assert replaced.json()["spec"]["connection"]["kubeconfigConfigured"] is True
    for response in (created, patched, replaced, await client.get("/api/v1/clusters")):
        assert TOKEN_VALUE not in response.text
        assert 'kubeconfig"' not in response.text.replace("kubeconfigConfigured", "")

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT kubeconfig_key_id, kubeconfig_ciphertext FROM clusters WHERE name = $1",
            "shanghai-cluster",
        )
    finally:
        await conn.close()
    assert TOKEN_VALUE.encode() not in row["kubeconfig_ciphertext"]
    box = SecretBox(ENCRYPTION_KEY)
    plain = box.open(
        Sealed(row["kubeconfig_key_id"], row["kubeconfig_ciphertext"]), f"cluster:{uid}"
    )
    stored = yaml.safe_load(plain)
    assert stored["users"][0]["user"]["token"] == TOKEN_VALUE
    assert stored["current-context"] == "main"


BAD_KUBECONFIGS = [
    (kubeconfig(user={"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}),
     "exec credential plugins are not accepted"),
    (kubeconfig(user={"auth-provider": {"name": "gcp"}}), "auth-provider"),
    (kubeconfig(server="https://169.254.169.254"), "metadata"),
    (kubeconfig(server="https://[fd00:ec2::254]:443"), "metadata"),
    (kubeconfig(server="https://100.100.100.200"), "metadata"),
    (kubeconfig(server="file:///etc/passwd"), "only https://"),
    (kubeconfig(server="http://127.0.0.1:8080"), "http:// is refused"),
    (kubeconfig(server="https://user:pw@127.0.0.1"), "credentials"),
    ("clusters: [unclosed", "not valid YAML"),
    ("just text without structure", "neither YAML nor base64"),
    ("\u00e9t\u00e9", "neither YAML nor base64"),  # found by fuzzing: was a 500
    (kubeconfig().replace("current-context: main", "current-context: other"), "no such contexts"),
    (yaml.safe_dump({"apiVersion": "v1", "kind": "Config"}), "no current-context"),
    (kubeconfig(user={}), "no credentials"),
    (kubeconfig(user={"client-certificate": "/etc/ssl/cert.pem", "client-key": "/k"}),
     "refers to a file"),
    ("x" * (1 << 20), "larger than 512 KiB"),
    (kubeconfig().replace("server: https://127.0.0.1:6443",
                          "server: https://127.0.0.1:6443\n    proxy-url: http://169.254.169.254"),
     "proxy-url is not accepted"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "fragment"), BAD_KUBECONFIGS)
async def test_bad_kubeconfigs_are_422_and_nothing_is_stored(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, document: str, fragment: str
) -> None:
    caplog.set_level(logging.DEBUG)
    await api.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
    body = cluster_body("shanghai-cluster", "east-china")
    body["spec"]["connection"]["kubeconfig"] = document  # type: ignore[index]
    response = await api.post("/api/v1/clusters", json=body)
    problem = assert_problem(response, 422, "spec.connection.kubeconfig", fragment)
    assert TOKEN_VALUE not in str(problem)
    assert (await api.get("/api/v1/clusters")).json()["items"] == []
    assert not any(TOKEN_VALUE in r.getMessage() for r in caplog.records)


async def test_private_addresses_need_the_setting(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    await client.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
    app.state.settings = app.state.settings.model_copy(
        update={"allow_private_cluster_endpoints": False}
    )
    for server in ("https://127.0.0.1:6443", "https://10.1.2.3", "https://192.168.1.100"):
        body = cluster_body("c", "east-china")
        body["spec"]["connection"]["kubeconfig"] = kubeconfig(server=server)  # type: ignore[index]
        response = await client.post("/api/v1/clusters", json=body)
        assert_problem(response, 422, "ALLOW_PRIVATE_CLUSTER_ENDPOINTS")
    public = cluster_body("c", "east-china")
    public["spec"]["connection"]["kubeconfig"] = kubeconfig(server="https://203.0.113.10:6443")  # type: ignore[index]
    assert (await client.post("/api/v1/clusters", json=public)).status_code == 201


async def test_workspace_members_see_only_granted_clusters(api: httpx.AsyncClient) -> None:
    await register_fleet(api)
    await create_user(api, "tenant")
    await api.post(
        "/api/v1/workspaces",
        json={"metadata": {"name": "team-a"},
              "spec": {"clusters": ["shanghai-cluster", "beijing-cluster"]}},
    )  # fmt: skip
    await api.post(
        "/api/v1/workspaces",
        json={"metadata": {"name": "team-s"},
              "spec": {"clusterSelector": {"matchLabels": {"region": "south-china"}}}},
    )  # fmt: skip
    await create_workspace(api, "team-z")
    await add_member(api, "team-a", "tenant", "viewer")
    await add_member(api, "team-s", "tenant", "viewer")
    tenant = await as_user(api, "tenant")
    items = (await api.get("/api/v1/clusters", headers=tenant)).json()["items"]
    assert {i["metadata"]["name"] for i in items} == {
        "shanghai-cluster",
        "beijing-cluster",
        "shenzhen-cluster",
    }
    assert (await api.get("/api/v1/clusters/shanghai-cluster", headers=tenant)).status_code == 200
    assert (await api.get("/api/v1/clusters/tianjin-cluster", headers=tenant)).status_code == 404
    hidden = await api.get("/api/v1/clusters/tianjin-cluster/nodegroups", headers=tenant)
    assert hidden.status_code == 404
    hidden = await api.get("/api/v1/clusters/tianjin-cluster/nodes", headers=tenant)
    assert hidden.status_code == 404
    granted = await api.get("/api/v1/clusters/shanghai-cluster/nodes", headers=tenant)
    assert granted.status_code == 200
    denied = await api.delete("/api/v1/clusters/shanghai-cluster", headers=tenant)
    assert denied.status_code == 403


async def test_node_groups(api: httpx.AsyncClient) -> None:
    await register_fleet(api)
    base = "/api/v1/clusters/shanghai-cluster/nodegroups"
    default = await api.post(base, json={"metadata": {"name": "monitoring-nodes"}})
    assert default.status_code == 201, default.text
    assert default.json()["status"] == {"nodeCount": 0, "readyNodeCount": 0, "nodes": []}
    custom = await api.post(
        base,
        json={"metadata": {"name": "gpu"},
              "spec": {"selector": {"matchExpressions": [
                  {"key": "accelerator", "operator": "In", "values": ["a100", "h100"]}]}}},
    )  # fmt: skip
    assert custom.status_code == 201, custom.text
    names = [i["metadata"]["name"] for i in (await api.get(base)).json()["items"]]
    assert names == ["gpu", "monitoring-nodes"]
    # The same name on another cluster is another node group.
    other = await api.post(
        "/api/v1/clusters/hangzhou-cluster/nodegroups", json={"metadata": {"name": "gpu"}}
    )
    assert other.status_code == 201
    bad = await api.post(
        base,
        json={"metadata": {"name": "x"},
              "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}},
    )  # fmt: skip
    assert_problem(bad, 422, "spec.selector")
    assert (await api.get("/api/v1/clusters/nowhere/nodegroups")).status_code == 404
    # Deleting the cluster removes its node groups with it.
    await api.delete("/api/v1/clusters/shanghai-cluster")
    await api.post("/api/v1/clusters", json=cluster_body("shanghai-cluster", "east-china"))
    assert (await api.get(base)).json()["items"] == []


async def test_lists_and_reads_answer_what_the_model_renders(
    app_client: tuple[FastAPI, httpx.AsyncClient], database_url: str
) -> None:
    """Cluster lists are built straight from the rows, without a model per cluster: they must
    be exactly what the output model renders (fields, order, timestamps), as single reads are."""
    from app.clusters.schemas import ClusterList, ClusterOut

    _, client = app_client
    await register_fleet(client)
    # A probed cluster's status, as the prober writes it: conditions with their times in
    # isoformat (with and without a fraction), zones, versions, a message.
    conditions = [
        {"type": "Reachable", "status": "True", "reason": "ProbeSucceeded", "message": None,
         "lastTransitionTime": "2026-12-03T08:00:00.123400+00:00"},
        {"type": "Ready", "status": "False", "reason": "NodesNotReady",
         "message": "1 of 2 nodes ready", "lastTransitionTime": "2026-12-03T08:00:00+00:00"},
    ]  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE clusters SET phase = 'NotReady', kubernetes_version = 'v1.30.2',"
            ' node_count = 2, ready_node_count = 1, zones = \'["z1", "z2"]\','
            " conditions = $1::jsonb, status_message = 'probe failed: 日本語',"
            " last_probe_time = '2026-12-03T08:00:05Z', last_ready_time = NULL,"
            " labels = '{\"tier\": \"edge\"}', display_name = 'Shanghai'"
            " WHERE name = 'shanghai-cluster'",
            json.dumps(conditions),
        )
    finally:
        await conn.close()

    listed = await client.get("/api/v1/clusters", params={"region": "east-china"})
    page = listed.json()
    assert listed.headers["content-type"] == "application/json"
    canonical = ClusterList.model_validate(page).model_dump(mode="json", by_alias=True)
    assert json.dumps(canonical) == json.dumps(page)
    probed = next(i for i in page["items"] if i["metadata"]["name"] == "shanghai-cluster")
    assert probed["status"]["conditions"][0]["lastTransitionTime"] == "2026-12-03T08:00:00.123400Z"
    assert probed["status"]["conditions"][1]["lastTransitionTime"] == "2026-12-03T08:00:00Z"
    assert probed["status"]["lastProbeTime"] == "2026-12-03T08:00:05Z"
    assert probed["status"]["message"] == "probe failed: 日本語"

    # A read answers the model's rendering (cached when the cluster was registered; the
    # update above went around the API): the list's document of that cluster is the same.
    read = (await client.get("/api/v1/clusters/hangzhou-cluster")).json()
    assert read == next(i for i in page["items"] if i["metadata"]["name"] == "hangzhou-cluster")
    model = ClusterOut.model_validate(read).model_dump(mode="json", by_alias=True)
    assert json.dumps(model) == json.dumps(read)
    as_yaml = await client.get("/api/v1/clusters", params={"region": "east-china"},
                               headers={"Accept": "application/yaml"})  # fmt: skip
    assert yaml.safe_load(as_yaml.text) == page
