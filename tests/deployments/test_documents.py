"""What reads and creates of ApplicationDeployments answer, held to the models: documents built
straight from the columns (lists and GET) must be exactly what the output model would render,
and a create answered by the unique constraint must still be a clean 409."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from sqlalchemy import func, select, text

from app.deployments.schemas import ApplicationDeploymentList, ApplicationDeploymentOut
from app.models.audit import AuditLog
from app.models.deployments import Event, Rollout, RolloutRevision, RolloutTarget
from tests.support.deployments import BASE, EXAMPLE_YAML, Platform

EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_YAML)
MERGE = {"Content-Type": "application/merge-patch+json"}


def as_model_renders_it(document: dict[str, Any]) -> str:
    """The document through the output model and back, as JSON text (key order included)."""
    out = ApplicationDeploymentOut.model_validate(document)
    return json.dumps(out.model_dump(mode="json", by_alias=True))


async def set_target(platform: Platform, cluster: str, assignments: str) -> None:
    """Leave the targets on `cluster` as the controller would (`assignments`: SQL SET list)."""
    async with platform.app.state.sessionmaker.begin() as session:
        await session.execute(
            text(
                f"UPDATE rollout_targets SET {assignments} WHERE cluster_id ="
                " (SELECT id FROM clusters WHERE name = :cluster)"
            ),
            {"cluster": cluster},
        )


async def test_lists_and_reads_answer_what_the_model_renders(platform: Platform) -> None:
    client = platform.client
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] |= {"labels": {"env": "prod"}, "annotations": {"note": "日本語 ok"}}
    body["spec"]["strategy"] = {"failurePolicy": "Pause", "maxUnavailableClusters": 1}
    body["spec"]["targets"][0]["values"] = {"ratio": 0.5, "nested": {"list": [1, "two", None]}}
    assert (await client.post(BASE, json=body)).status_code == 201
    path = f"{BASE}/cross-region-app"
    targets = copy.deepcopy(EXAMPLE["spec"]["targets"])
    targets[0]["clusters"] = ["shanghai-cluster"]  # hangzhou is dropped: its target is removing
    changed = await client.patch(path, json={"spec": {"targets": targets}}, headers=MERGE)
    assert changed.json()["status"]["revision"] == 2
    # Targets as the controller would leave them: one Ready at the revision, one Failed.
    # Timestamps with no fraction, with trailing zeros, and the latest change, as written.
    ready = "phase = 'Ready', applied_revision = 2, ready_replicas = 2, last_sync_time ="
    await set_target(platform, "shanghai-cluster", f"{ready} '2026-01-02T03:04:05Z'")
    failed = "phase = 'Failed', message = 'boom', last_transition_time = '2099-01-02T03:04:05.12Z'"
    await set_target(platform, "beijing-cluster", failed)
    second = copy.deepcopy(EXAMPLE)
    second["metadata"]["name"] = "a-second-one"
    second["spec"]["namespace"] = "ws-team-a-second"
    assert (await client.post(BASE, json=second)).status_code == 201
    deleting = await client.delete(f"{BASE}/a-second-one")
    assert deleting.status_code == 200, deleting.text

    read = (await client.get(path)).json()
    assert as_model_renders_it(read) == json.dumps(read)
    status = read["status"]
    assert status["phase"] == "Progressing"  # shenzhen is still Pending
    assert status["summary"] == {"clusters": 3, "ready": 1, "failed": 1, "unreachable": 0}
    assert [t["cluster"] for t in status["targets"]] == [
        "beijing-cluster", "hangzhou-cluster", "shanghai-cluster", "shenzhen-cluster",
    ]  # fmt: skip
    assert [t["phase"] for t in status["targets"]] == ["Failed", "Deleting", "Ready", "Pending"]
    assert [h["reason"] for h in status["history"]] == ["Initial", "Upgrade"]
    on = {t["cluster"]: t for t in status["targets"]}
    assert on["shanghai-cluster"]["lastSyncTime"] == "2026-01-02T03:04:05Z"
    assert on["beijing-cluster"]["lastTransitionTime"] == "2099-01-02T03:04:05.120000Z"
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {
        "2099-01-02T03:04:05.120000Z"
    }
    assert read["spec"]["strategy"] == {
        "maxUnavailableClusters": 1, "failurePolicy": "Pause", "progressDeadlineSeconds": 600,
    }  # fmt: skip
    assert read["spec"]["targets"][1]["region"] == "north-china"
    assert read["metadata"]["annotations"] == {"note": "日本語 ok"}

    gone = (await client.get(f"{BASE}/a-second-one")).json()
    assert gone["metadata"]["deletionTimestamp"] is not None
    assert as_model_renders_it(gone) == json.dumps(gone)

    listed = await client.get(BASE)
    page = listed.json()
    assert listed.headers["content-type"] == "application/json"
    canonical = ApplicationDeploymentList.model_validate(page).model_dump(
        mode="json", by_alias=True
    )
    assert json.dumps(canonical) == json.dumps(page)
    assert page["items"] == [gone, read]
    assert page["metadata"] == {"continue": None, "remainingItemCount": None}

    first = (await client.get(BASE, params={"limit": 1})).json()
    assert first["items"] == [gone]
    assert first["metadata"]["remainingItemCount"] == 1
    rest = await client.get(BASE, params={"limit": 1, "continue": first["metadata"]["continue"]})
    assert rest.json()["items"] == [read]
    selected = await client.get(BASE, params={"labelSelector": "env=prod"})
    assert [i["metadata"]["name"] for i in selected.json()["items"]] == ["cross-region-app"]

    as_yaml = {"Accept": "application/yaml"}
    assert yaml.safe_load((await client.get(path, headers=as_yaml)).text) == read
    assert yaml.safe_load((await client.get(BASE, headers=as_yaml)).text) == page
    etag = (await client.get(path)).headers["etag"]
    assert etag == f'"{read["metadata"]["resourceVersion"]}"'
    assert (await client.get(path, headers={"If-None-Match": etag})).status_code == 304


async def test_writes_answer_the_object_as_reads_render_it(platform: Platform) -> None:
    """A write's answer is the object as the next read shows it — metadata, spec and what the
    write decided of the status, in the same key order — with no status of the targets yet."""
    client = platform.client
    body = copy.deepcopy(EXAMPLE)
    body["metadata"]["labels"] = {"env": "prod"}
    body["spec"]["strategy"] = {"failurePolicy": "Pause"}
    path = f"{BASE}/cross-region-app"
    created = await client.post(BASE, json=body)
    assert created.status_code == 201, created.text
    paused = await client.patch(path, json={"spec": {"paused": True}}, headers=MERGE)
    assert paused.status_code == 200, paused.text
    for written in (created.json(), paused.json()):
        assert as_model_renders_it(written) == json.dumps(written)
        assert written["status"]["targets"] == []
        assert written["status"]["history"][0]["reason"] == "Initial"
    read = (await client.get(path)).json()
    answer = paused.json()
    assert json.dumps(answer["metadata"]) == json.dumps(read["metadata"])
    assert json.dumps(answer["spec"]) == json.dumps(read["spec"])
    assert answer["spec"]["paused"] is True
    assert answer["spec"]["strategy"]["failurePolicy"] == "Pause"
    for field in ("observedGeneration", "revision", "history"):
        assert answer["status"][field] == read["status"][field]


async def test_a_page_read_again_shows_every_change_since(platform: Platform) -> None:
    """Reads and lists send documents encoded at an earlier read when nothing they show has
    changed: a target the controller moved, a label, a deletion must each show on the next."""
    client = platform.client
    second = copy.deepcopy(EXAMPLE)
    second["metadata"]["name"] = "b-second-one"
    second["spec"]["namespace"] = "ws-team-a-second"
    for body in (EXAMPLE, second):
        assert (await client.post(BASE, json=body)).status_code == 201
    first_read = (await client.get(BASE)).json()["items"]
    assert (await client.get(BASE)).json()["items"] == first_read
    one = f"{BASE}/cross-region-app"
    assert [i["metadata"]["name"] for i in first_read] == ["b-second-one", "cross-region-app"]
    assert (await client.get(one)).json() == first_read[1]
    assert len(platform.app.state.rendered_deployments) >= 2  # kept, and sent again

    await set_target(platform, "beijing-cluster", "phase = 'Failed', message = 'boom'")
    read_again = (await client.get(one)).json()
    assert read_again["status"]["summary"]["failed"] == 1
    moved = (await client.get(BASE)).json()["items"]
    assert moved[1] == read_again
    for before, after in zip(first_read, moved, strict=True):
        on = {t["cluster"]: t for t in after["status"]["targets"]}
        assert on["beijing-cluster"]["phase"] == "Failed"
        assert on["beijing-cluster"]["message"] == "boom"
        assert after["status"]["summary"]["failed"] == 1
        assert before["status"]["summary"]["failed"] == 0

    labelled = await client.patch(
        f"{BASE}/b-second-one", json={"metadata": {"labels": {"tier": "gold"}}}, headers=MERGE
    )
    assert labelled.status_code == 200
    deleting = await client.delete(f"{BASE}/cross-region-app")
    assert deleting.status_code == 200
    items = {i["metadata"]["name"]: i for i in (await client.get(BASE)).json()["items"]}
    assert items["b-second-one"]["metadata"]["labels"] == {"tier": "gold"}
    assert items["cross-region-app"]["metadata"]["deletionTimestamp"] is not None
    assert {t["phase"] for t in items["cross-region-app"]["status"]["targets"]} == {"Deleting"}
    as_yaml = yaml.safe_load((await client.get(BASE, headers={"Accept": "application/yaml"})).text)
    assert as_yaml["items"] == list(items.values())


async def counts(platform: Platform) -> dict[str, int]:
    async with platform.app.state.sessionmaker() as session:
        return {
            model.__tablename__: int(await session.scalar(select(func.count()).select_from(model)))
            for model in (Rollout, RolloutRevision, RolloutTarget, Event)
        }


async def last_audit_id(platform: Platform) -> int:
    async with platform.app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.coalesce(func.max(AuditLog.id), 0))))


async def test_a_duplicate_create_is_a_409_and_changes_nothing(platform: Platform) -> None:
    client = platform.client
    since = await last_audit_id(platform)
    created = await client.post(BASE, json=EXAMPLE)
    assert created.status_code == 201, created.text
    before, stored = await counts(platform), (await client.get(f"{BASE}/cross-region-app")).json()

    again = copy.deepcopy(EXAMPLE)
    again["spec"]["applicationVersionRef"] = "monitoring-stack-v2.1.0"
    again["spec"]["namespace"] = "ws-team-a-other"
    for headers in ({}, {"Idempotency-Key": "dup-1"}):
        duplicate = await client.post(BASE, json=again, headers=headers)
        assert duplicate.status_code == 409, duplicate.text
        assert duplicate.headers["content-type"].startswith("application/problem+json")
        problem = duplicate.json()
        assert problem["status"] == 409
        assert problem["code"] == "AlreadyExists"
        assert problem["detail"] == "ApplicationDeployment 'cross-region-app' already exists"

    assert await counts(platform) == before
    assert (await client.get(f"{BASE}/cross-region-app")).json() == stored
    async with platform.app.state.sessionmaker() as session:
        audited = (
            await session.execute(
                select(AuditLog.action, AuditLog.outcome, AuditLog.resource_name)
                .where(AuditLog.id > since)
                .order_by(AuditLog.id)
            )
        ).all()
    # The object's one create, and each refusal in a transaction of its own.
    assert [(a.action, a.outcome) for a in audited] == [
        ("create", 201),
        ("post", 409),
        ("post", 409),
    ]
    assert audited[0].resource_name == "cross-region-app"
    # The key of the refused attempt was not kept: the same request may be tried again.
    renamed = copy.deepcopy(again)
    renamed["metadata"]["name"] = "other-app"
    retried = await client.post(BASE, json=renamed, headers={"Idempotency-Key": "dup-1"})
    assert retried.status_code == 201, retried.text
