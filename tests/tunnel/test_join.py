"""Joining a cluster behind NAT, as the platform sees it: the join token (shown once, single
use, expiring) exchanged for the cluster's credential, the credential replaced, the tunnel's
door refusing what it must, and a live tunnel dropped when the cluster is re-joined or
disabled. (The agent process itself: tests/agent/; a rollout through it: test_agent_fleet.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from app.config import Settings
from app.main import create_app
from app.tunnel.protocol import MAX_FRAME_BYTES, SUBPROTOCOL_V2
from tests.support.platform import authenticated, flush_redis, make_settings
from tests.support.servers import http_server
from tests.support.services import PostgresProcess, RedisProcess

REGION = {"metadata": {"name": "east-china"}, "spec": {"displayName": "East China"}}


def agent_cluster(name: str = "factory-7") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"region": "east-china", "connection": {"type": "agent"}},
    }


@contextlib.asynccontextmanager
async def platform(settings: Settings) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The API over real HTTP (the tunnel is a WebSocket), and an admin's client."""
    async with (
        http_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        await authenticated(client)
        assert (await client.post("/api/v1/regions", json=REGION)).status_code == 201
        yield url, client


async def join_token(client: httpx.AsyncClient, cluster: str = "factory-7") -> dict[str, Any]:
    response = await client.post(f"/api/v1/clusters/{cluster}/join-token")
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


async def join(client: httpx.AsyncClient, token: str) -> httpx.Response:
    anonymous = {"Authorization": ""}
    return await client.post("/api/v1/agent/join", json={"token": token}, headers=anonymous)


def tunnel(url: str, credential: str, *, offer: list[str] | None = None) -> Any:
    return connect(
        url.replace("http://", "ws://") + "/api/v1/agent/tunnel",
        additional_headers={"Authorization": f"Bearer {credential}"},
        max_size=MAX_FRAME_BYTES,
        open_timeout=5,
        subprotocols=[Subprotocol(p) for p in offer] if offer else None,
    )


async def agent_status(client: httpx.AsyncClient, cluster: str = "factory-7") -> dict[str, Any]:
    response = await client.get(f"/api/v1/clusters/{cluster}")
    status: dict[str, Any] = response.json()["status"]["agent"]
    return status


async def closed_within(connection: ClientConnection, seconds: float) -> str:
    """The reason the platform gave when it closed the connection."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(connection.recv(), seconds)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.reason


async def test_an_agent_cluster_is_registered_without_an_address_and_waits_for_its_agent(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (_, client):
        created = await client.post("/api/v1/clusters", json=agent_cluster())
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["spec"]["connection"]["type"] == "agent"
        assert body["status"]["phase"] == "Pending"
        assert body["status"]["agent"] == {
            "joined": False,
            "connected": False,
            "connectedSince": None,
            "lastHeartbeatTime": None,
            "version": None,
            "remoteAddress": None,
        }
        # No address of the platform's choosing: the agent is the way in.
        with_kubeconfig = agent_cluster("other")
        with_kubeconfig["spec"]["connection"]["endpoint"] = "https://10.0.0.1:6443"
        refused = await client.post("/api/v1/clusters", json=with_kubeconfig)
        assert refused.status_code == 422
        assert "spec.connection.endpoint" in refused.text
        # A direct cluster has nothing to join.
        direct = {"metadata": {"name": "direct"}, "spec": {"region": "east-china"}}
        assert (await client.post("/api/v1/clusters", json=direct)).status_code == 201
        assert (await client.post("/api/v1/clusters/direct/join-token")).status_code == 409


async def test_a_join_token_is_exchanged_once_for_the_clusters_credential(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (_, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        issued = await join_token(client)
        token = issued["token"]
        expires = datetime.fromisoformat(issued["expiresAt"])
        assert abs(expires - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=1)
        command = issued["command"]
        assert command.startswith("helm install edge-agent edge-agent --repo ")
        public = standalone_settings.public_url  # where agents reach the platform
        assert f"--repo {public}/chartrepo" in command
        assert f"platformUrl={public}" in command
        assert f"joinToken={token}" in command

        joined = await join(client, token)
        assert joined.status_code == 200, joined.text
        assert joined.headers["cache-control"] == "no-store"
        credential = joined.json()
        assert credential["cluster"] == "factory-7"
        assert credential["rotateAfterSeconds"] == 24 * 3600
        assert (await agent_status(client))["joined"] is True

        again = await join(client, token)  # single use
        assert again.status_code == 401
        assert again.headers["content-type"] == "application/problem+json"
        assert (await join(client, "edge-join-" + "x" * 43)).status_code == 401

        audit = (await client.get("/api/v1/auditlogs")).json()["items"]
        actions = [(e["action"], e["outcome"], e["resourceName"]) for e in audit]
        assert ("join", 200, "factory-7") in actions
        assert sum(1 for a, o, _ in actions if a == "join" and o == 401) == 2
        assert ("issue-join-token", 200, "factory-7") in actions
        # The secrets are in no answer but the ones that hand them out, and not in the audit.
        assert token not in str(audit)
        assert credential["credential"] not in (await client.get("/api/v1/clusters")).text


async def test_an_expired_join_token_is_refused(standalone_settings: Settings) -> None:
    async with platform(standalone_settings) as (_, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        token = (await join_token(client))["token"]
        engine = create_async_engine(
            standalone_settings.database_url.replace("postgresql://", "postgresql+asyncpg://")
        )
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE clusters SET agent_join_token_expires_at = now() - interval '1 s'")
            )
        await engine.dispose()
        assert (await join(client, token)).status_code == 401


async def test_the_tunnel_admits_only_a_valid_credential_and_reports_the_connection(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (url, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        credential = (await join(client, (await join_token(client))["token"])).json()["credential"]
        for wrong in ("", "edge-agent-wrong", "Basic abc", credential + "x"):
            with pytest.raises(InvalidStatus) as refused:
                async with tunnel(url, wrong):
                    pass
            assert refused.value.response.status_code == 401

        async with tunnel(url, credential):
            await asyncio.sleep(0.3)
            status = await agent_status(client)
            assert status["connected"] is True
            assert status["remoteAddress"] == "127.0.0.1"
            assert status["connectedSince"] is not None
        for _ in range(50):  # the platform notices the agent left
            if not (await agent_status(client))["connected"]:
                break
            await asyncio.sleep(0.1)
        assert (await agent_status(client))["connected"] is False


async def test_agents_are_told_to_come_back_later_while_the_database_is_down(
    own_postgres: PostgresProcess, redis_server: RedisProcess
) -> None:
    """The handshake cannot check the credential: 503 with Retry-After (the agent waits and
    keeps its credential), not a 500 and not a 401 (which would make it join again)."""
    settings = make_settings(own_postgres.url, redis_url=redis_server.url, database_pool_timeout=2)
    await flush_redis(settings)  # a database of its own: no cached copies of other tests' rows
    async with platform(settings) as (url, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        credential = (await join(client, (await join_token(client))["token"])).json()["credential"]
        await asyncio.to_thread(own_postgres.stop, "immediate")
        with pytest.raises(InvalidStatus) as refused:
            async with tunnel(url, credential):
                pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"

        await asyncio.to_thread(own_postgres.start)
        for _ in range(100):  # admitted again once the database is back
            with contextlib.suppress(InvalidStatus):
                async with tunnel(url, credential):
                    await asyncio.sleep(0.3)
                    assert (await agent_status(client))["connected"] is True
                    return
            await asyncio.sleep(0.2)
        raise AssertionError("the agent was never admitted after the database came back")


async def test_the_tunnel_speaks_version_2_only_with_an_agent_that_offers_it(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (url, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        credential = (await join(client, (await join_token(client))["token"])).json()["credential"]
        async with tunnel(url, credential) as older_agent:
            assert older_agent.subprotocol is None
        async with tunnel(url, credential, offer=["edge-tunnel.v9", SUBPROTOCOL_V2]) as agent:
            assert agent.subprotocol == SUBPROTOCOL_V2


async def test_a_rotated_credential_replaces_the_old_one_once_used(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (url, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        old = (await join(client, (await join_token(client))["token"])).json()["credential"]
        rotated = await client.post(
            "/api/v1/agent/credential", json={}, headers={"Authorization": f"Bearer {old}"}
        )
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["credential"]
        assert new != old
        async with tunnel(url, old):  # not yet stored by the agent: still accepted
            pass
        async with tunnel(url, new):  # the new one used: the old one is retired
            await asyncio.sleep(0.2)
        with pytest.raises(InvalidStatus):
            async with tunnel(url, old):
                pass


@pytest.mark.parametrize("cut", ["re-joined", "disabled"])
@pytest.mark.slow
async def test_a_live_tunnel_is_dropped_within_seconds_when_the_cluster_is_cut_off(
    standalone_settings: Settings, cut: str
) -> None:
    async with platform(standalone_settings) as (url, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        credential = (await join(client, (await join_token(client))["token"])).json()["credential"]
        async with tunnel(url, credential) as connection:
            await asyncio.sleep(0.2)
            if cut == "re-joined":
                await join_token(client)  # revokes the credential
                reason = await closed_within(connection, 8)
                assert "revoked" in reason
            else:
                patched = await client.patch(
                    "/api/v1/clusters/factory-7",
                    json={"spec": {"enabled": False}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert patched.status_code == 200, patched.text
                reason = await closed_within(connection, 8)
                assert "disabled" in reason
        with pytest.raises(InvalidStatus):
            async with tunnel(url, credential):
                pass


async def test_the_controllers_door_to_the_tunnels_is_closed_to_others(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (_, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        uid = (await client.get("/api/v1/clusters/factory-7")).json()["metadata"]["uid"]
        path = f"/internal/tunnel/{uid}/version"
        # An admin's token is not the controller's.
        assert (await client.get(path)).status_code == 401
        from app.crypto import secret_box
        from app.tunnel.proxy import proxy_token

        token = proxy_token(secret_box(standalone_settings))
        answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 503
        assert answer.json()["kind"] == "Status"
        assert "not connected" in answer.json()["message"]


async def test_the_join_command_can_fetch_the_agents_chart_and_nothing_else(
    standalone_settings: Settings,
) -> None:
    async with platform(standalone_settings) as (_, client):
        await client.post("/api/v1/clusters", json=agent_cluster())
        token = (await join_token(client))["token"]
        helm = httpx.BasicAuth("agent-join", token)  # as the command's --username/--password
        anonymous = {"Authorization": ""}

        index = await client.get("/chartrepo/index.yaml", auth=helm, headers=anonymous)
        assert index.status_code == 200, index.text
        entries = yaml.safe_load(index.text)["entries"]
        assert list(entries) == ["edge-agent"]  # hello-edge is in the repository too
        archive = entries["edge-agent"][0]["urls"][0].rsplit("/", 1)[-1]
        fetched = await client.get(f"/chartrepo/charts/{archive}", auth=helm, headers=anonymous)
        assert fetched.status_code == 200
        other = await client.get(
            "/chartrepo/charts/hello-edge-0.1.0.tgz", auth=helm, headers=anonymous
        )
        assert other.status_code == 404
        listing = await client.get("/chartrepo/api/charts", auth=helm, headers=anonymous)
        assert listing.status_code == 401

        wrong = httpx.BasicAuth("agent-join", token[:-2] + "xx")
        refused = await client.get("/chartrepo/index.yaml", auth=wrong, headers=anonymous)
        assert refused.status_code == 401
        # Reading the chart does not use the token up; joining does, and then the chart is shut.
        assert (await join(client, token)).status_code == 200
        used = await client.get("/chartrepo/index.yaml", auth=helm, headers=anonymous)
        assert used.status_code == 401
