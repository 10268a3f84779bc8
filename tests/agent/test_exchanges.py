"""The platform's Kubernetes requests through a real tunnel: a running agent (joined with a join
token) connected to the test platform's WebSocket, forwarding to the kmock emulator of an
edge cluster (tests/agent/support.py). kmock serves watches (`?watch=true` on the resources
it knows, nodes here): the watch below is the emulator's own, and the emulator's handler is
seen to end when the platform resets the stream."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import app
from app.agent.exchange import check_head
from app.agent.settings import AgentSettings
from tests.agent.support import (
    MiB,
    PlatformConnection,
    RecordingEdge,
    TestPlatform,
    eventually,
    running,
)
from tests.support.edge import node

APPLY = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
APPLY_QUERY = "fieldManager=edge-platform&force=true"


@pytest.fixture
async def connection(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> AsyncIterator[PlatformConnection]:
    async with running(settings_for()):
        yield await platform.next_connection()


def configmap(name: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "apps"},
        "data": data,
    }


def path_of(name: str) -> str:
    return f"/api/v1/namespaces/apps/configmaps/{name}"


async def test_hello_names_the_agent_and_the_clusters_kubernetes(
    connection: PlatformConnection,
) -> None:
    assert connection.hello.result() == {
        "version": app.__version__,
        "kubernetesVersion": "v1.30.2",
    }


async def test_get_version_through_the_tunnel(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    answer = await connection.request("GET", "/version", headers={"Accept": "application/json"})
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["gitVersion"] == "v1.30.2"
    assert edge.seen[-1].path == "/version"
    # The agent offered the protocol's version 2 and the platform agreed: END flags.
    assert connection.mux.end_flag


async def test_server_side_apply_and_read_back(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    document = configmap("settings", {"mode": "edge", "replicas": "3"})
    applied = await connection.request(
        "PATCH",
        path_of("settings"),
        query=APPLY_QUERY,
        headers=APPLY,
        body=json.dumps(document).encode(),
    )
    assert applied.status == 201, applied.body
    assert applied.json()["metadata"]["uid"]
    seen = edge.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("PATCH", path_of("settings"), APPLY_QUERY)
    assert seen.headers["Content-Type"] == "application/apply-patch+yaml"
    assert edge.store[("configmaps", "apps", "settings")]["data"] == {
        "mode": "edge",
        "replicas": "3",
    }

    read = await connection.request("GET", path_of("settings"))
    assert read.status == 200
    assert read.json()["data"] == {"mode": "edge", "replicas": "3"}
    missing = await connection.request("GET", path_of("absent"))
    assert missing.status == 404
    assert missing.json()["reason"] == "NotFound"


async def test_twenty_exchanges_at_once_on_one_connection(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    edge.apply_delay = 0.3  # each apply takes this long at the edge: in turn, 6 s

    async def apply(index: int) -> tuple[int, str]:
        body = json.dumps(configmap(f"item-{index}", {"index": str(index)})).encode()
        answer = await connection.request(
            "PATCH", path_of(f"item-{index}"), query=APPLY_QUERY, headers=APPLY, body=body
        )
        return answer.status, answer.json()["data"]["index"]

    started = time.monotonic()
    answers = await asyncio.gather(*(apply(i) for i in range(20)))
    elapsed = time.monotonic() - started
    assert answers == [(201, str(i)) for i in range(20)]
    assert elapsed < 2.5, f"20 exchanges took {elapsed:.1f} s: not served at once"
    assert len(edge.of_kind("configmaps")) == 20


async def test_a_mebibyte_each_way(connection: PlatformConnection, edge: RecordingEdge) -> None:
    blob = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=MiB))
    body = json.dumps(configmap("large", {"blob": blob})).encode()
    assert len(body) > MiB
    applied = await connection.request(
        "PATCH", path_of("large"), query=APPLY_QUERY, headers=APPLY, body=body
    )
    assert applied.status == 201
    assert edge.store[("configmaps", "apps", "large")]["data"]["blob"] == blob

    read = await connection.request("GET", path_of("large"))
    assert read.status == 200
    assert len(read.body) > MiB
    assert read.json()["data"]["blob"] == blob


async def test_a_watch_streams_until_the_platform_resets_it(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    stream, upload = await connection.open("GET", "/api/v1/nodes", query="watch=true")
    await upload
    answer = await asyncio.wait_for(stream.response, 5)
    assert answer["status"] == 200
    events: list[dict[str, object]] = []
    buffer = b""

    async def until_events(count: int) -> None:
        nonlocal buffer
        while len(events) < count:
            buffer += await asyncio.wait_for(stream.read(), 5)
            *lines, buffer = buffer.split(b"\n")
            events.extend(json.loads(line) for line in lines if line.strip())

    await until_events(2)  # the nodes there are, then the watch stays open
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [  # type: ignore[index]
        ("ADDED", "edge-1"),
        ("ADDED", "edge-2"),
    ]
    assert edge.watches_open == 1

    # Another exchange on the same connection meanwhile: a node joins, the watch tells.
    created = await connection.request(
        "POST",
        "/api/v1/nodes",
        headers={"Content-Type": "application/json"},
        body=json.dumps(node("edge-3", zone="z2")).encode(),
    )
    assert created.status in (200, 201)
    await until_events(3)
    assert events[2]["type"] == "ADDED"
    assert events[2]["object"]["metadata"]["name"] == "edge-3"  # type: ignore[index]

    await stream.reset("the platform's caller went away")
    # The agent cancels its request: the emulator's watch handler ends (cancelled by the
    # server when the agent's connection to it closes).
    await eventually(lambda: edge.watches_open == 0, within=3)
    # The tunnel carries on.
    assert (await connection.request("GET", "/version")).status == 200


REFUSED = [
    ("GET", "//evil.example/"),
    ("GET", "/../secret"),
    ("GET", "http://evil.example/api/v1/secrets"),
    ("GET", "/metrics"),
    ("CONNECT", "/api/v1"),
    ("GET", "/api/v1/namespaces/%2e%2e/secrets"),
    ("GET", "/api/v1/namespaces/default/../../../metrics"),
    ("GET", "/api/v1/nodes/a%2f..%2f..%2fmetrics"),
    ("GET", "/api/v1\\..\\metrics"),
    ("GET", "/api/v1/nodes#fragment"),
    ("GET", "/api/v1/nodes/\x00"),
    ("GET", "/%6detrics"),
    ("get", "/api/v1/nodes"),
    ("TRACE", "/version"),
]


async def test_refused_requests_never_reach_the_api_server(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    edge.seen.clear()
    for method, path in REFUSED:
        answer = await connection.request(method, path)
        assert answer.status == 403, (method, path)
        status = answer.json()
        assert status["kind"] == "Status", (method, path)
        assert status["reason"] == "Forbidden"
        assert status["code"] == 403
        assert "does not forward" in status["message"]
    # A body with a refused request: read and dropped, so that the 403 reaches the platform
    # (which sends the whole body before it reads the answer; more than the stream's window).
    answer = await connection.request("POST", "/metrics", body=b"x" * (600 * 1024))
    assert answer.status == 403
    answer = await connection.request("GET", "/api/v1/nodes", query="watch=true#x")
    assert answer.status == 403
    assert edge.seen == []
    # And what is allowed still is.
    assert (await connection.request("GET", "/api/v1/nodes")).status == 200
    assert (await connection.request("GET", "/version/")).status == 200
    assert [s.path for s in edge.seen] == ["/api/v1/nodes", "/version/"]


async def test_the_platforms_headers_are_not_passed_on(
    connection: PlatformConnection, edge: RecordingEdge
) -> None:
    edge.seen.clear()
    answer = await connection.request(
        "GET",
        "/api/v1/nodes",
        headers={
            "Authorization": "Bearer the-platforms-own-token",
            "Impersonate-User": "system:admin",
            "Impersonate-Group": "system:masters",
            "Connection": "close, X-Secret",
            "Host": "evil.example",
            "X-Forwarded-For": "10.0.0.1",
            "accept": "application/json;as=Table;g=meta.k8s.io;v=v1",
            "User-Agent": "edge-platform-controller/0.1.0",
        },
    )
    assert answer.status == 200
    (seen,) = edge.seen
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["authorization"] == "Bearer edge-test-token"  # the agent's own
    assert headers["user-agent"] == "edge-platform-controller/0.1.0"
    assert headers["accept"] == "application/json;as=Table;g=meta.k8s.io;v=v1"
    assert headers["accept-encoding"] == "identity"
    assert headers["host"] == f"127.0.0.1:{edge.port}"
    assert not any(name.startswith("impersonate-") for name in headers)
    assert "x-forwarded-for" not in headers
    assert "x-secret" not in headers


async def test_an_unreachable_api_server_is_a_502_status(
    tmp_path: Path, platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = RecordingEdge()
    down.port = port
    kubeconfig = tmp_path / "down.kubeconfig"
    kubeconfig.write_text(down.kubeconfig())
    async with running(settings_for(kubeconfig=str(kubeconfig))):
        connection = await platform.next_connection()
        assert connection.hello.result()["kubernetesVersion"] is None
        for path in ("/version", "/api/v1/nodes"):
            answer = await connection.request("GET", path)
            assert answer.status == 502
            status = answer.json()
            assert status["kind"] == "Status"
            assert status["code"] == 502
            assert status["message"].startswith(
                "the edge agent cannot reach its cluster's API server: ClientConnectorError"
            )
            assert len(status["message"]) < 300
        # A body that the API server never took is read to its end: the answer arrives.
        answer = await connection.request("POST", "/api/v1/nodes", body=b"{}" * (300 * 1024))
        assert answer.status == 502


@pytest.mark.parametrize(
    ("path", "query", "streams"),
    [
        ("/api/v1/nodes", "", False),
        ("/api/v1/nodes", "watch=true", True),
        ("/api/v1/nodes", "watch=1&resourceVersion=5", True),
        ("/api/v1/nodes", "watch=false", False),
        ("/api/v1/watch/nodes", "", True),
        ("/api/v1/namespaces/a/pods/p/log", "follow=true", True),
        ("/api/v1/namespaces/a/services/s/proxy/metrics", "", True),
    ],
)
def test_answers_that_may_not_end_are_passed_on_as_they_come(
    path: str, query: str, streams: bool
) -> None:
    """Other answers hold each chunk back until the next, so the last carries the END."""
    assert check_head({"method": "GET", "path": path, "query": query}).streams is streams
