"""Live events over real HTTP: two API servers on their own ports share PostgreSQL and Redis;
a watcher on one sees what is done through the other, in order, and resumes without gaps."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from tests.support.deployments import EXAMPLE_YAML, EXPECTED, WORKSPACE, Platform
from tests.support.servers import api_server

EVENTS = f"/api/v1/workspaces/{WORKSPACE}/events"


async def watch(
    base: str, headers: dict[str, str], seen: list[dict[str, Any]], *, until: int, **extra: str
) -> None:
    """Read the workspace's event stream into `seen` until `until` events arrived."""
    # No read timeout: a stream may stay quiet; the test bounds the wait itself.
    timeout = httpx.Timeout(5.0, read=None)
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as client:  # noqa: SIM117
        async with client.stream(
            "GET", EVENTS, headers=headers | {"Accept": "text/event-stream"} | extra
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # comments: the greeting and heartbeats
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "data" in fields:
                    event = json.loads(fields["data"])
                    assert str(event["id"]) == fields["id"]
                    seen.append(event)
                    if len(seen) >= until:
                        return
                fields = {}


def ready_again(events: list[dict[str, Any]]) -> bool:
    return any(e["reason"] == "PhaseChanged" and e["phase"] == "Ready" for e in events)


async def test_watchers_see_every_transition_in_order_across_servers_and_resume(
    platform: Platform,
) -> None:
    auth = {"Authorization": platform.client.headers["Authorization"]}
    async with api_server(platform.settings) as first, api_server(platform.settings) as second:
        early: list[dict[str, Any]] = []
        watcher = asyncio.create_task(watch(first, auth, early, until=3))
        await asyncio.sleep(0.5)  # connected and waiting
        platform.start_controller()
        async with httpx.AsyncClient(base_url=second, headers=auth) as other:
            created = await other.post(
                f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments",
                content=EXAMPLE_YAML,
                headers={"Content-Type": "application/yaml"},
            )
            assert created.status_code == 201
        # Heartbeats come every 15 s; events within a few seconds came through Redis.
        await asyncio.wait_for(watcher, 10)
        assert early[0]["reason"] == "Created"
        assert early[0]["name"] == "cross-region-app"

        # The watcher went away after three events; it comes back where it left off.
        late: list[dict[str, Any]] = []
        resumed = asyncio.create_task(
            watch(second, auth, late, until=1000, **{"Last-Event-ID": str(early[-1]["id"])})
        )
        await platform.ready("cross-region-app")
        for _ in range(50):
            if ready_again(late):
                break
            await asyncio.sleep(0.1)
        resumed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resumed

    stored = (await platform.client.get(EVENTS, params={"since": 0})).json()["items"]
    streamed = early + late
    assert [e["id"] for e in streamed] == [e["id"] for e in stored]  # no gap, no repeat
    assert [e["id"] for e in streamed] == sorted(e["id"] for e in streamed)
    assert ready_again(streamed)
    for cluster in EXPECTED:
        phases = [e["phase"] for e in streamed if e["cluster"] == cluster and e["phase"]]
        assert phases, cluster
        assert phases[-1] == "Ready", (cluster, phases)


async def test_event_lists_page_by_id_and_refuse_bad_resume_points(platform: Platform) -> None:
    client = platform.client
    created = await client.post(
        f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments",
        content=EXAMPLE_YAML,
        headers={"Content-Type": "application/yaml"},
    )
    assert created.status_code == 201
    listed = (await client.get(EVENTS)).json()
    assert [e["reason"] for e in listed["items"]] == ["Created"]
    assert listed["lastId"] == listed["items"][0]["id"]
    after = await client.get(EVENTS, params={"since": listed["lastId"]})
    assert after.json() == {"items": [], "lastId": listed["lastId"]}
    own = await client.get(
        f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments/cross-region-app/events"
    )
    assert [e["reason"] for e in own.json()["items"]] == ["Created"]
    for bad_id in ("yesterday", "-1", "99999999999999999999"):
        bad = await client.get(EVENTS, headers={"Last-Event-ID": bad_id})
        assert bad.status_code == 422, bad_id
    missing = await client.get(
        f"/api/v1/workspaces/{WORKSPACE}/applicationdeployments/nothing-here/events"
    )
    assert missing.status_code == 404
