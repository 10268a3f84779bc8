"""ConfigSyncs to emulated clusters: pushed, changed, caught up after an outage; secrets sealed."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.support.deployments import NAMESPACE, WORKSPACE, Platform
from tests.support.platform import authenticated, running_app

CONFIGS = f"/api/v1/workspaces/{WORKSPACE}/configsyncs"
THREE = {"shanghai-cluster", "hangzhou-cluster", "beijing-cluster"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def config(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "edge-settings"},
        "spec": {
            "data": {"log.level": "info", "upstream": "https://mgmt.example"},
            "targets": [
                {"region": "east-china"},  # shanghai and hangzhou
                {"region": "north-china", "clusters": ["beijing-cluster"]},
            ],
        }
        | spec,
    }


def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["cluster"]: t for t in body["status"]["targets"]}


@pytest.mark.slow
async def test_a_config_reaches_three_clusters_follows_changes_and_catches_up(
    platform: Platform,
) -> None:
    platform.start_controller()
    created = await platform.client.post(CONFIGS, json=config())
    assert created.status_code == 201, created.text
    body = await platform.wait_for(
        f"{CONFIGS}/edge-settings",
        lambda d: d["status"]["phase"] == "Ready" and len(d["status"]["targets"]) == 3,
    )
    assert set(rows(body)) == THREE
    assert all(t["appliedRevision"] == 1 for t in rows(body).values())
    for cluster in THREE:
        cm = platform.fleet[cluster].get("configmaps", NAMESPACE, "edge-settings")
        assert cm is not None
        assert cm["data"] == {"log.level": "info", "upstream": "https://mgmt.example"}
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "edge-platform"
    assert platform.fleet["shenzhen-cluster"].of_kind("configmaps") == {}

    beijing = platform.fleet["beijing-cluster"]
    await beijing.stop()
    await platform.wait_for(
        f"{CONFIGS}/edge-settings", lambda d: d["status"]["summary"]["unreachable"] == 1
    )
    changed = await platform.client.patch(
        f"{CONFIGS}/edge-settings", json={"spec": {"data": {"log.level": "debug"}}}, headers=MERGE
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"]["revision"] == 2
    body = await platform.wait_for(
        f"{CONFIGS}/edge-settings",
        lambda d: (
            rows(d)["shanghai-cluster"]["appliedRevision"] == 2
            and rows(d)["hangzhou-cluster"]["appliedRevision"] == 2
        ),
    )
    assert rows(body)["beijing-cluster"]["phase"] == "Unreachable"
    assert rows(body)["beijing-cluster"]["appliedRevision"] == 1  # what it last had

    await beijing.start()  # it catches up by itself
    body = await platform.wait_for(
        f"{CONFIGS}/edge-settings",
        lambda d: (
            d["status"]["phase"] == "Ready"
            and all(t["appliedRevision"] == 2 for t in d["status"]["targets"])
        ),
    )
    cm = beijing.get("configmaps", NAMESPACE, "edge-settings")
    assert cm is not None
    assert cm["data"]["log.level"] == "debug"

    del platform.fleet["hangzhou-cluster"].store[("configmaps", NAMESPACE, "edge-settings")]
    await platform.wait_for(
        f"{CONFIGS}/edge-settings/events",
        lambda d: any(e["reason"] == "DriftRepaired" for e in d["items"]),
    )
    assert platform.fleet["hangzhou-cluster"].get("configmaps", NAMESPACE, "edge-settings")

    assert (await platform.client.delete(f"{CONFIGS}/edge-settings")).status_code == 200
    await platform.wait_for(CONFIGS, lambda d: d["items"] == [])
    assert all(platform.fleet[c].of_kind("configmaps") == {} for c in THREE)


async def test_a_secret_config_is_sealed_and_never_returned(platform: Platform) -> None:
    platform.start_controller()
    token = "s3cr3t-edge-token"
    binary = base64.b64encode(b"\x00\x01binary").decode()
    body = config(secret=True, data={"token": token}, binaryData={"blob": binary})
    created = await platform.client.post(CONFIGS, json=body)
    assert created.status_code == 201, created.text
    assert token not in created.text
    await platform.wait_for(f"{CONFIGS}/edge-settings", lambda d: d["status"]["phase"] == "Ready")
    read = await platform.client.get(f"{CONFIGS}/edge-settings")
    assert token not in read.text
    assert read.json()["spec"]["data"] == {}
    assert read.json()["status"]["dataKeys"] == ["blob", "token"]
    secret = platform.fleet["shanghai-cluster"].get("secrets", NAMESPACE, "edge-settings")
    assert secret is not None
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    assert secret["data"]["blob"] == binary

    # A patch that does not touch the data keeps it (it is decrypted for the merge only).
    relabel = await platform.client.patch(
        f"{CONFIGS}/edge-settings", json={"metadata": {"labels": {"team": "ops"}}}, headers=MERGE
    )
    assert relabel.status_code == 200
    assert relabel.json()["status"]["revision"] == 1
    listed = await platform.client.get(CONFIGS)
    assert token not in listed.text

    # Writing back what was read (values absent) keeps them; it cannot be made plain.
    as_read = (await platform.client.get(f"{CONFIGS}/edge-settings")).json()
    as_read["metadata"]["labels"] = {"team": "platform"}
    put = await platform.client.put(f"{CONFIGS}/edge-settings", json=as_read)
    assert put.status_code == 200, put.text
    assert put.json()["status"]["revision"] == 1
    assert put.json()["status"]["dataKeys"] == ["blob", "token"]
    reveal = await platform.client.patch(
        f"{CONFIGS}/edge-settings", json={"spec": {"secret": False}}, headers=MERGE
    )
    assert reveal.status_code == 422
    assert token not in reveal.text
    rotated = await platform.client.patch(
        f"{CONFIGS}/edge-settings", json={"spec": {"data": {"token": "new-token-2"}}}, headers=MERGE
    )
    assert rotated.status_code == 200
    assert rotated.json()["metadata"]["generation"] > relabel.json()["metadata"]["generation"]
    assert rotated.json()["status"]["revision"] == 2
    events = await platform.client.get(f"/api/v1/workspaces/{WORKSPACE}/events")
    assert token not in events.text
    missing = await platform.client.get(f"{CONFIGS}/no-such-config")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "ConfigSync 'no-such-config' not found"

    async with platform.app.state.sessionmaker() as session:
        from sqlalchemy import text

        stored = await session.scalar(text("SELECT content::text FROM rollouts"))
        revisions = await session.scalar(
            text("SELECT string_agg(content::text, '') FROM rollout_revisions")
        )
    assert token not in (stored or "")
    assert token not in (revisions or "")


async def test_config_input_is_checked(platform: Platform) -> None:
    client = platform.client
    cases = {
        "spec.targets": config(targets=[]),
        "spec": config(data={"a": "1"}, binaryData={"a": "AA=="}),
        "spec.namespace": config(namespace="kube-system"),
    }
    for field, body in cases.items():
        response = await client.post(CONFIGS, json=body)
        assert response.status_code == 422, (field, response.text)
        assert any(e["field"].startswith(field) for e in response.json()["errors"]), response.text
    bad_key = await client.post(CONFIGS, json=config(data={"no/slash": "x"}))
    assert bad_key.status_code == 422
    not_b64 = await client.post(CONFIGS, json=config(binaryData={"b": "%%%"}))
    assert not_b64.status_code == 422
    assert (await client.get(CONFIGS)).json()["items"] == []


async def test_a_secret_no_configured_key_opens_is_a_503_for_the_operator(
    platform: Platform,
) -> None:
    """A replica started without the key a secret was sealed with (ENCRYPTION_KEY changed
    before `rotate-key` ran) answers what needs the secret with 503 naming the settings, not a
    500, and changes nothing."""
    body = config(secret=True, data={"token": "s3cr3t-edge-token"})
    assert (await platform.client.post(CONFIGS, json=body)).status_code == 201
    other_key = platform.settings.model_copy(update={"encryption_key": "k" * 40})
    async with running_app(other_key) as (_, client):
        await authenticated(client)
        relabel = await client.patch(
            f"{CONFIGS}/edge-settings", json={"metadata": {"labels": {"team": "ops"}}},
            headers=MERGE,
        )  # fmt: skip
    assert relabel.status_code == 503, relabel.text
    assert relabel.headers["Retry-After"]
    assert relabel.json()["code"] == "SecretUndecryptable"
    assert "ENCRYPTION_KEY" in relabel.json()["detail"]
    assert "s3cr3t" not in relabel.text
    kept = (await platform.client.get(f"{CONFIGS}/edge-settings")).json()
    assert kept["metadata"]["labels"] == {}
