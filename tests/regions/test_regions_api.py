"""Region through the HTTP API: the resource pattern every kind follows (API.md), exercised
against PostgreSQL and against both a single Redis server and a Redis Cluster."""

from __future__ import annotations

import asyncio
import json

import httpx
import yaml

from tests.support.problems import assert_problem
from tests.support.regions import API, region

GUIDE_STYLE_YAML = """\
apiVersion: edge.theriseunion.io/v1alpha1
kind: Region
metadata:
  name: east-china
  labels:
    geo: cn
    tier: core
spec:
  displayName: East China
  description: Shanghai and Hangzhou edge sites
"""


async def test_create_returns_the_envelope_with_server_owned_fields(
    client: httpx.AsyncClient,
) -> None:
    body = region("east-china", {"geo": "cn"}, displayName="East China")
    # Server-owned fields in the body are ignored, never taken.
    body["metadata"].update(  # type: ignore[attr-defined]
        {"uid": "forged", "resourceVersion": None, "generation": 99, "creationTimestamp": "x"}
    )
    body["status"] = {"clusterCount": 42}
    response = await client.post(API, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["apiVersion"] == "edge.theriseunion.io/v1alpha1"
    assert created["kind"] == "Region"
    meta = created["metadata"]
    assert meta["name"] == "east-china"
    assert meta["uid"] != "forged"
    assert len(meta["uid"]) == 36
    assert meta["generation"] == 1
    assert meta["labels"] == {"geo": "cn"}
    assert meta["creationTimestamp"].startswith("20")
    assert created["spec"] == {"displayName": "East China", "description": None}
    assert created["status"] == {"clusterCount": 0, "readyClusterCount": 0}
    assert response.headers["location"] == f"{API}/east-china"
    assert response.headers["etag"] == f'"{meta["resourceVersion"]}"'

    fetched = await client.get(f"{API}/east-china")
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert fetched.headers["etag"] == response.headers["etag"]


async def test_yaml_in_and_out(client: httpx.AsyncClient) -> None:
    response = await client.post(
        API, content=GUIDE_STYLE_YAML, headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 201, response.text
    as_yaml = await client.get(f"{API}/east-china", headers={"accept": "application/yaml"})
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    document = yaml.safe_load(as_yaml.text)
    assert document["metadata"]["labels"] == {"geo": "cn", "tier": "core"}
    assert document["spec"]["description"] == "Shanghai and Hangzhou edge sites"
    listed = await client.get(API, headers={"accept": "application/yaml"})
    assert yaml.safe_load(listed.text)["kind"] == "RegionList"


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post(API, json=region("north-china"))).status_code == 201
    second = await client.post(API, json=region("north-china", displayName="other"))
    assert_problem(second, 409, "already exists")
    kept = (await client.get(f"{API}/north-china")).json()
    assert kept["spec"]["displayName"] is None


async def test_missing_objects_and_routes_are_problem_json(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{API}/nowhere"), 404, "nowhere")
    assert_problem(await client.get("/api/v1/no-such-kind"), 404)
    assert_problem(await client.post(f"{API}/x", json={}), 405)


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get(API, headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    generated = await client.get(f"{API}/missing")
    assert len(generated.headers["x-request-id"]) == 32


async def test_if_none_match_gives_304(client: httpx.AsyncClient) -> None:
    created = await client.post(API, json=region("south-china"))
    tag = created.headers["etag"]
    again = await client.get(f"{API}/south-china", headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert again.headers["etag"] == tag


async def test_replace_with_concurrency_control(client: httpx.AsyncClient) -> None:
    created = (await client.post(API, json=region("east-china", displayName="East"))).json()
    version = created["metadata"]["resourceVersion"]

    updated_body = region("east-china", displayName="East China")
    updated_body["metadata"]["resourceVersion"] = version  # type: ignore[index]
    updated = await client.put(f"{API}/east-china", json=updated_body)
    assert updated.status_code == 200, updated.text
    after = updated.json()
    assert after["spec"]["displayName"] == "East China"
    assert int(after["metadata"]["resourceVersion"]) > int(version)
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["uid"] == created["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]

    # The same stale resourceVersion again: somebody else's write must not be lost.
    stale = await client.put(f"{API}/east-china", json=updated_body)
    assert_problem(stale, 409, "stale")

    wrong_tag = await client.put(
        f"{API}/east-china", json=region("east-china"), headers={"If-Match": f'"{version}"'}
    )
    assert_problem(wrong_tag, 412, "If-Match")
    current = await client.get(f"{API}/east-china")
    assert current.json()["spec"]["displayName"] == "East China"

    right_tag = await client.put(
        f"{API}/east-china",
        json=region("east-china", displayName="E"),
        headers={"If-Match": current.headers["etag"]},
    )
    assert right_tag.status_code == 200


async def test_generation_changes_with_spec_only(client: httpx.AsyncClient) -> None:
    await client.post(API, json=region("east-china", displayName="East"))
    relabelled = await client.put(
        f"{API}/east-china", json=region("east-china", {"env": "prod"}, displayName="East")
    )
    assert relabelled.json()["metadata"]["generation"] == 1
    assert relabelled.json()["metadata"]["labels"] == {"env": "prod"}


async def test_replace_cannot_rename(client: httpx.AsyncClient) -> None:
    await client.post(API, json=region("east-china"))
    renamed = await client.put(f"{API}/east-china", json=region("west-china"))
    assert_problem(renamed, 422, "metadata.name")
    assert (await client.get(f"{API}/west-china")).status_code == 404


async def test_merge_patch(client: httpx.AsyncClient) -> None:
    await client.post(API, json=region("east-china", {"a": "1", "b": "2"}, displayName="East"))
    patch = {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"description": "coastal"}}
    patched = await client.patch(
        f"{API}/east-china",
        content=json.dumps(patch),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert body["spec"] == {"displayName": "East", "description": "coastal"}

    as_json = await client.patch(f"{API}/east-china", json=patch)
    assert_problem(as_json, 415, "merge-patch")

    bad_value = await client.patch(
        f"{API}/east-china",
        content=json.dumps({"spec": {"displayName": 7}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(bad_value, 422, "spec.displayName")

    rename = await client.patch(
        f"{API}/east-china",
        content=json.dumps({"metadata": {"name": "other"}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(rename, 422, "metadata.name")

    stale = await client.patch(
        f"{API}/east-china",
        content=json.dumps({"metadata": {"resourceVersion": "1"}, "spec": {"description": "x"}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert_problem(stale, 409)
    assert (await client.get(f"{API}/east-china")).json()["spec"]["description"] == "coastal"


async def test_delete(client: httpx.AsyncClient) -> None:
    created = await client.post(API, json=region("east-china"))
    refused = await client.delete(f"{API}/east-china", headers={"If-Match": '"999999"'})
    assert_problem(refused, 412)
    deleted = await client.delete(
        f"{API}/east-china", headers={"If-Match": created.headers["etag"]}
    )
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["name"] == "east-china"
    assert_problem(await client.get(f"{API}/east-china"), 404)
    assert_problem(await client.delete(f"{API}/east-china"), 404)
    # The name is free again.
    assert (await client.post(API, json=region("east-china"))).status_code == 201


async def test_idempotency_key_replays_the_first_response(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "create-east-1"}
    first = await client.post(API, json=region("east-china"), headers=headers)
    assert first.status_code == 201
    replay = await client.post(API, json=region("east-china"), headers=headers)
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["location"] == first.headers["location"]
    assert replay.headers["idempotent-replayed"] == "true"

    # The same content as YAML is the same request.
    as_yaml = await client.post(
        API,
        content=yaml.safe_dump(region("east-china")),
        headers={**headers, "content-type": "application/yaml"},
    )
    assert as_yaml.status_code == 201
    assert as_yaml.json() == first.json()

    reused = await client.post(API, json=region("east-china", displayName="x"), headers=headers)
    assert_problem(reused, 422, "Idempotency-Key")

    listed = (await client.get(API)).json()
    assert [item["metadata"]["name"] for item in listed["items"]] == ["east-china"]


async def test_idempotency_key_under_concurrent_retries(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post(API, json=region("burst-region"), headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["metadata"]["uid"] for r in responses}) == 1


async def test_failed_create_does_not_burn_the_key(client: httpx.AsyncClient) -> None:
    await client.post(API, json=region("taken"))
    headers = {"Idempotency-Key": "k-1"}
    failed = await client.post(API, json=region("taken"), headers=headers)
    assert failed.status_code == 409
    retried = await client.post(API, json=region("taken"), headers=headers)
    assert retried.status_code == 409
    assert "idempotent-replayed" not in retried.headers
