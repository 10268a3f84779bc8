"""The agent's life against the test platform (tests/agent/support.py): joining once and keeping
the credential, reusing it after a restart, backing off when the platform refuses it, joining
again with a new token, reconnecting after a dropped connection, replacing the credential when
due; and the same tunnel against a platform end written with the `websockets` server."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import ssl
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

import app
from app.agent.settings import AgentSettings, JoinTokenSource
from app.agent.tunnel import WebSocketTransport
from app.tunnel.protocol import Mux, TunnelClosed
from tests.agent.support import (
    ConnectProxy,
    Pki,
    PlatformConnection,
    RecordingEdge,
    TestPlatform,
    UpperBound,
    eventually,
    running,
)


def stored(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def write_state(
    path: Path, credential: str, *, issued: datetime, rotate_after: int, token: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "credential": credential,
                "issuedAt": issued.isoformat(),
                "rotateAfterSeconds": str(rotate_after),
                "cluster": "edge-1",
                "joinTokenDigest": hashlib.sha256(token.encode()).hexdigest(),
            }
        )
    )


async def test_join_keeps_the_credential_and_a_restart_reuses_it(
    platform: TestPlatform,
    settings_for: Callable[..., AgentSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = platform.issue_token("edge-1")
    settings = settings_for(join_token=JoinTokenSource(value=token))
    async with running(settings):
        connection = await platform.next_connection()
        assert platform.joins == [{"token": token, "version": app.__version__}]
        assert connection.credential in platform.credentials
        state = stored(settings.state_file)
        assert state["credential"] == connection.credential
        assert state["cluster"] == "edge-1"
        assert state["joinTokenDigest"] == hashlib.sha256(token.encode()).hexdigest()
        assert state["rotateAfterSeconds"] == "3600"
        issued = datetime.fromisoformat(state["issuedAt"])
        assert abs((datetime.now(UTC) - issued).total_seconds()) < 10
        assert stat.S_IMODE(settings.state_file.stat().st_mode) == 0o600
        assert (await connection.request("GET", "/version")).status == 200

    # Restarted: the token is spent (joining again would be refused), the credential is not.
    async with running(settings):
        again = await platform.next_connection()
        assert again.credential == connection.credential
        assert len(platform.joins) == 1
        assert (await again.request("GET", "/version")).status == 200

    # Neither the token nor the credential was ever logged, even at DEBUG (websockets logs the
    # handshake's headers there).
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "connected to the platform" in logged
    assert token not in logged
    assert connection.credential not in logged


async def test_a_refused_credential_backs_off_until_a_new_token_is_installed(
    tmp_path: Path,
    platform: TestPlatform,
    settings_for: Callable[..., AgentSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    token_file = secret_dir / "token"
    first_token = platform.issue_token("edge-1")
    token_file.write_text(first_token + "\n")
    settings = settings_for(
        join_token=JoinTokenSource(path=token_file),
        reconnect_base_seconds=0.05,
        reconnect_max_seconds=0.4,
    )
    async with running(settings):
        first = await platform.next_connection()
    platform.revoke(first.credential)  # the cluster was joined again on the platform
    platform.handshakes.clear()

    # Without jitter the waits are 0.05, 0.1, 0.2, 0.4, 0.4 … seconds.
    async with running(settings, rng=UpperBound()):
        await asyncio.sleep(1.6)
        attempts = [h.at for h in platform.handshakes]
        assert all(not h.accepted for h in platform.handshakes)
        assert all(h.authorization == f"Bearer {first.credential}" for h in platform.handshakes)
        assert 4 <= len(attempts) <= 8, attempts
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        for gap, wait in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], strict=False):
            assert gap >= wait * 0.9, (gaps, "no backoff")
        assert len(platform.joins) == 1  # the used token is not tried again
        assert "the configured join token is the one used already" in caplog.text

        # An operator installs a new token (the kubelet updates the mounted Secret): the
        # agent joins with it and connects.
        second_token = platform.issue_token("edge-1")
        token_file.write_text(second_token)
        rejoined = await platform.next_connection(within=3)
        assert [j["token"] for j in platform.joins] == [first_token, second_token]
        assert rejoined.credential != first.credential
        assert stored(settings.state_file)["credential"] == rejoined.credential
        assert (await rejoined.request("GET", "/version")).status == 200


async def test_a_refused_join_token_is_not_tried_again(
    platform: TestPlatform,
    settings_for: Callable[..., AgentSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(join_token=JoinTokenSource(value="join-not-issued-by-the-platform"))
    async with running(settings):
        await eventually(lambda: "the platform refused the join token" in caplog.text)
        await asyncio.sleep(0.5)  # backoff: the agent keeps waiting for a new token
    assert len(platform.joins) == 1
    assert platform.handshakes == []
    assert not settings.state_file.exists()


async def test_a_busy_platform_is_asked_again_no_sooner_than_it_said(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    platform.busy = [
        web.json_response({"title": "Too Many Requests"}, status=429, headers={"Retry-After": "1"}),
        web.json_response({"title": "Service Unavailable"}, status=503),
    ]
    async with running(settings_for()):
        connection = await platform.next_connection(within=5)
    first, second, third = platform.join_times
    assert second - first >= 0.95  # Retry-After: 1, although the backoff was at 0.05 s
    assert third > second
    assert connection.credential in platform.credentials


async def test_a_tunnel_handshake_turned_away_is_tried_again_no_sooner_than_it_said(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    """The platform's replica could not admit the connection now (its database is out of
    reach, or a whole fleet is reconnecting): 503 with Retry-After, not a refused credential."""
    platform.busy_tunnel = [
        web.json_response(
            {"title": "Service Unavailable"}, status=503, headers={"Retry-After": "1"}
        )
    ]
    async with running(settings_for()):
        connection = await platform.next_connection(within=5)
    first, second = platform.handshakes
    assert second.at - first.at >= 0.95  # Retry-After: 1, although the backoff was at 0.05 s
    assert [h.accepted for h in platform.handshakes] == [True, True]  # the credential kept
    assert len(platform.joins) == 1
    assert connection.credential in platform.credentials


async def test_reconnects_after_the_platform_drops_the_connection(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    async with running(settings_for()):
        first = await platform.next_connection()
        assert (await first.request("GET", "/version")).status == 200
        await first.drop()
        second = await platform.next_connection(within=3)
        assert second.credential == first.credential
        assert first.ended.is_set()
        answer = await second.request("GET", "/api/v1/nodes")
        assert answer.status == 200
        assert [n["metadata"]["name"] for n in answer.json()["items"]] == ["edge-1", "edge-2"]
        assert len(platform.joins) == 1


async def test_a_credential_due_is_replaced_and_stored_before_it_is_used(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    token = platform.issue_token("edge-1")
    old = platform.grant("edge-1")
    settings = settings_for(join_token=JoinTokenSource(value=token))
    issued = datetime.now(UTC) - timedelta(seconds=120)
    write_state(settings.state_file, old, issued=issued, rotate_after=60, token=token)
    async with running(settings):
        connection = await platform.next_connection()
        assert platform.rotations == [old]
        assert connection.credential not in (old, "")
        state = stored(settings.state_file)
        assert state["credential"] == connection.credential
        assert state["rotateAfterSeconds"] == "3600"
        assert datetime.fromisoformat(state["issuedAt"]) > issued
        assert platform.joins == []
        assert old not in platform.credentials  # retired once the new one connected


async def test_a_credential_due_while_connected_is_replaced_and_the_agent_reconnects(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    token = platform.issue_token("edge-1")
    old = platform.grant("edge-1")
    settings = settings_for(join_token=JoinTokenSource(value=token))
    write_state(settings.state_file, old, issued=datetime.now(UTC), rotate_after=1, token=token)
    async with running(settings):
        first = await platform.next_connection()
        assert first.credential == old
        second = await platform.next_connection(within=5)
        assert platform.rotations == [old]
        assert second.credential == stored(settings.state_file)["credential"] != old
        assert (await second.request("GET", "/version")).status == 200


async def test_the_tunnel_with_a_websockets_server_as_the_platform(
    edge: RecordingEdge, settings_for: Callable[..., AgentSettings]
) -> None:
    """The platform's end written with the `websockets` server (the library uvicorn serves
    WebSockets with): the handshake's Authorization checked, HELLO, one exchange."""
    credential = "cred-websockets-end"
    connections: asyncio.Queue[tuple[Mux, asyncio.Future[dict[str, Any]]]] = asyncio.Queue()
    refused: list[str | None] = []

    def check(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") == f"Bearer {credential}":
            return None
        refused.append(request.headers.get("Authorization"))
        return Response(401, "Unauthorized", Headers(), b"")

    async def tunnel(websocket: ServerConnection) -> None:
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        mux = Mux(WebSocketTransport(websocket), on_hello=hello.set_result)
        connections.put_nowait((mux, hello))
        try:
            await mux.run()
        finally:
            mux.close(TunnelClosed("ended"))

    async with serve(tunnel, "127.0.0.1", 0, process_request=check) as server:
        port = server.sockets[0].getsockname()[1]
        settings = settings_for(platform_url=f"http://127.0.0.1:{port}")
        write_state(
            settings.state_file,
            credential,
            issued=datetime.now(UTC),
            rotate_after=3600,
            token="used",
        )
        async with running(settings):
            mux, hello = await asyncio.wait_for(connections.get(), 5)
            assert await asyncio.wait_for(hello, 5) == {
                "version": app.__version__,
                "kubernetesVersion": "v1.30.2",
            }
            stream = await mux.open(
                {"method": "GET", "path": "/version", "query": "", "headers": {}}
            )
            await stream.end()
            head = await asyncio.wait_for(stream.response, 5)
            body = b"".join([chunk async for chunk in stream.chunks()])
            assert head["status"] == 200
            assert json.loads(body)["gitVersion"] == "v1.30.2"
            mux.close(TunnelClosed("test over"))
        assert refused == []


async def test_an_agent_connection_reads_only_binary_messages(
    platform: TestPlatform, settings_for: Callable[..., AgentSettings]
) -> None:
    """A text message breaks the protocol: the agent closes that connection and comes back."""
    async with running(settings_for()):
        first: PlatformConnection = await platform.next_connection()
        await first.websocket.send_str("not a frame")
        await asyncio.wait_for(first.ended.wait(), 3)
        assert first.websocket.close_code == 1002
        second = await platform.next_connection(within=3)
        assert (await second.request("GET", "/version")).status == 200


async def test_an_https_platform_with_a_private_ca_through_the_sites_proxy(
    tmp_path: Path,
    edge: RecordingEdge,
    settings_for: Callable[..., AgentSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Join and tunnel go out through HTTPS_PROXY (CONNECT), the platform's certificate checked
    against its private CA; the local API server is reached directly all the same."""
    pki = Pki()
    certificate, key = pki.issue("platform", server_names=["127.0.0.1"])
    (tmp_path / "platform.crt").write_bytes(certificate)
    (tmp_path / "platform.key").write_bytes(key)
    (tmp_path / "platform-ca.pem").write_bytes(pki.ca_pem)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "platform.crt", tmp_path / "platform.key")
    platform = await TestPlatform().start(tls)
    proxy = await ConnectProxy().start()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")  # not for the API server
        assert platform.url.startswith("https://")
        settings = settings_for(
            platform_url=platform.url,
            join_token=JoinTokenSource(value=platform.issue_token("edge-1")),
            platform_ca_file=tmp_path / "platform-ca.pem",
        )
        async with running(settings):
            connection = await platform.next_connection()
            assert (await connection.request("GET", "/version")).status == 200
        platform_address = platform.url.removeprefix("https://")
        assert proxy.requests == [
            f"CONNECT {platform_address} HTTP/1.1",  # the join
            f"CONNECT {platform_address} HTTP/1.1",  # the tunnel
        ]
        assert len(platform.joins) == 1
        assert edge.seen  # reached, and not through the proxy
    finally:
        await proxy.stop()
        await platform.stop()


async def test_an_https_platform_whose_certificate_is_not_trusted_is_not_joined(
    tmp_path: Path,
    settings_for: Callable[..., AgentSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pki, other = Pki(), Pki()
    certificate, key = pki.issue("platform", server_names=["127.0.0.1"])
    (tmp_path / "platform.crt").write_bytes(certificate)
    (tmp_path / "platform.key").write_bytes(key)
    (tmp_path / "other-ca.pem").write_bytes(other.ca_pem)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "platform.crt", tmp_path / "platform.key")
    platform = await TestPlatform().start(tls)
    try:
        settings = settings_for(
            platform_url=platform.url,
            join_token=JoinTokenSource(value=platform.issue_token("edge-1")),
            platform_ca_file=tmp_path / "other-ca.pem",
        )
        async with running(settings):
            await eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, within=5)
        assert platform.joins == []  # the token never left for a server that is not the platform
    finally:
        await platform.stop()
