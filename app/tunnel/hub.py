"""The platform's end of the edge agents' tunnels, in every API replica.

An agent connects (`GET /api/v1/agent/tunnel`, a WebSocket) with its cluster's credential;
the replica it reaches holds the connection and says so in Redis (`tunnel:agents:<uid>` → the
replica's address, with a TTL it keeps renewing), so a request for the cluster that arrives
at another replica is forwarded to this one (app.tunnel.proxy). A newer connection of the
same cluster replaces an older one. The cluster's row records the connection (status.agent),
renewed as a heartbeat; a replica checks its connections every few seconds against the rows
and drops those whose cluster was disabled, deleted, re-joined or switched to direct.

Why in `serve` rather than a process of its own: agents reach the platform at the address
operators already publish (PUBLIC_URL, its TLS and ingress), the API's replicas scale and
fail over the same way, and a deployment has one thing less to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import ARRAY, BigInteger, any_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.cache import ObjectCache
from app.clusters import agents
from app.clusters.schemas import cluster_cache_key, cluster_document
from app.db.base import resource_version_seq
from app.models.clusters import Cluster
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key
from app.tunnel.protocol import SUBPROTOCOL_V2, Mux, ProtocolError, TunnelClosed

logger = logging.getLogger(__name__)

TUNNEL_PATH = "/api/v1/agent/tunnel"
CHECK_SECONDS = 5.0  # connections checked against their clusters' rows this often
HEARTBEAT_SECONDS = 30.0  # status.agent.lastHeartbeatTime and the registry renewed this often
REGISTRY_TTL_MS = 90_000  # a dead replica's entries go after this (agents reconnect sooner)
HANDSHAKES_AT_ONCE = 8  # connections admitted (a read and a write of the row) at once
RETRY_AFTER_SECONDS = 5  # said to an agent that could not be admitted now

CONNECTED = Gauge("edge_tunnel_agents_connected", "Agents connected to this API replica.")
CONNECTS = Counter(
    "edge_tunnel_connects_total", "Agent connection attempts, by result.", ["result"]
)


def registry_key(uid: str) -> str:
    return redis_key("tunnel", "agents", uid, tag=f"tunnel:{uid}")


@dataclass
class AgentConnection:
    cluster_id: int
    uid: str
    name: str
    credential: str  # the digest it connected with: dropped once that is no longer valid
    session: uuid.UUID
    mux: Mux
    websocket: WebSocket
    since: datetime
    remote: str | None
    version: str | None = None
    newest_credential: bool = False  # connected with the credential issued last
    closing: bool = field(default=False)


class _WebSocketTransport:
    """Starlette's server-side WebSocket as the tunnel's Transport."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise TunnelClosed("the agent's connection is gone") from exc

    async def receive(self) -> bytes:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise TunnelClosed("the agent closed the connection")
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("a text message on the tunnel")
        return bytes(data)


class TunnelHub:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: RedisGateway,
        cache: ObjectCache,
        *,
        advertise_url: str,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._cache = cache
        self.advertise_url = advertise_url.rstrip("/")
        self._connections: dict[str, AgentConnection] = {}
        self._handshakes = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    def local(self, uid: str) -> AgentConnection | None:
        connection = self._connections.get(uid)
        if connection is None or connection.mux.closed or connection.closing:
            return None
        return connection

    async def holder(self, uid: str) -> str | None:
        """The address of the replica holding the cluster's tunnel, by the registry."""

        async def read(client: RedisClient) -> Any:
            return await client.get(registry_key(uid))

        try:
            found = await self._redis.run(read)
        except RedisUnavailable:
            return None
        if found is None:
            return None
        text = found.decode() if isinstance(found, bytes) else str(found)
        return text.partition(" ")[0] or None

    # the WebSocket endpoint --------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        # The handshake's database work, a few at a time: a fleet reconnecting at once (a
        # replica restarted) queues here instead of taking the connection pool from the API.
        async with self._handshakes:
            try:
                connection = await self._admit(websocket)
            except Exception as exc:
                CONNECTS.labels("unavailable").inc()
                logger.warning("an agent's connection could not be admitted: %s", exc)
                await _deny(
                    websocket, 503, "the platform cannot take the connection now; try again"
                )
                return
        if connection is None:
            CONNECTS.labels("refused").inc()
            await _deny(websocket, 401, "the agent credential is not valid (revoked or wrong)")
            return
        await websocket.accept(subprotocol=SUBPROTOCOL_V2 if connection.mux.end_flag else None)
        CONNECTS.labels("accepted").inc()
        replaced = self._connections.get(connection.uid)
        self._connections[connection.uid] = connection
        CONNECTED.set(len(self._connections))
        if replaced is not None:
            await self._close(replaced, "replaced by a newer connection of the same cluster")
        logger.info("agent of cluster %s connected from %s", connection.name, connection.remote)
        try:
            # Registered before the row says so: recording it asks for a probe at once, which
            # must find the connection wherever it lands.
            await self._register(connection)
            try:
                async with self._handshakes:
                    await self._record_connected(connection)
            except Exception as exc:
                logger.warning(
                    "recording cluster %s's agent connection failed: %s", connection.name, exc
                )
                await self._close(
                    connection, "the platform could not record the connection; try again", code=1013
                )
                return
            await connection.mux.run()
        except ProtocolError as exc:
            logger.warning("agent of cluster %s broke the protocol: %s", connection.name, exc)
        except Exception:
            logger.warning("agent connection of cluster %s failed", connection.name, exc_info=True)
        finally:
            connection.mux.close(TunnelClosed("the agent's connection ended"))
            if self._connections.get(connection.uid) is connection:
                del self._connections[connection.uid]
                CONNECTED.set(len(self._connections))
            with contextlib.suppress(Exception):
                await websocket.close()
            await self._unregister(connection)
            logger.info("agent of cluster %s disconnected", connection.name)

    async def _admit(self, websocket: WebSocket) -> AgentConnection | None:
        """The connection of the cluster whose credential the agent presents; None when the
        credential is not valid."""
        scheme, _, credential = (websocket.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return None
        async with self._sessionmaker() as session:
            found = await agents.authenticate(session, credential.strip())
        if found is None:
            return None
        row, hashed = found
        connection = AgentConnection(
            cluster_id=row.id,
            uid=str(row.uid),
            name=row.name,
            credential=hashed,
            session=uuid.uuid4(),
            # The agent's HELLO names its version (called once `connection` exists).
            mux=Mux(
                _WebSocketTransport(websocket),
                on_hello=lambda info: self._hello(connection, info),
                end_flag=SUBPROTOCOL_V2 in websocket.scope.get("subprotocols", ()),
            ),
            websocket=websocket,
            since=datetime.now(UTC),
            remote=websocket.client.host if websocket.client else None,
            version=_agent_version(websocket.headers.get("user-agent")),
            newest_credential=hashed == row.agent_credential_hash,
        )
        return connection

    def _hello(self, connection: AgentConnection, info: dict[str, Any]) -> None:
        version = info.get("version")
        version = str(version)[:64] if version is not None else None
        if version == connection.version:  # as its User-Agent said: recorded already
            return
        connection.version = version
        task = asyncio.create_task(self._record_version(connection))
        task.add_done_callback(_log_failure)

    async def _close(self, connection: AgentConnection, why: str, *, code: int = 1008) -> None:
        """Drop a connection (the agent reconnects, or cannot when it was cut off). `code`:
        1008 (policy violation) when it was cut off, 1013 (try again later) when not."""
        connection.closing = True
        logger.info("dropping the agent connection of cluster %s: %s", connection.name, why)
        connection.mux.close(TunnelClosed(why))
        with contextlib.suppress(Exception):
            await connection.websocket.close(code=code, reason=why[:120])

    # the registry --------------------------------------------------------------------------

    async def _register(self, *connections: AgentConnection) -> None:
        """Say in the registry that this replica holds these connections (one round trip)."""

        async def write(client: RedisClient) -> None:
            pipeline = client.pipeline(transaction=False)
            for connection in connections:
                value = f"{self.advertise_url} {connection.session}"
                pipeline.set(registry_key(connection.uid), value, px=REGISTRY_TTL_MS)
            await pipeline.execute()

        with contextlib.suppress(RedisUnavailable):
            await self._redis.run(write)

    async def _unregister(self, connection: AgentConnection) -> None:
        """Remove the registry entry and the row's connection, both only if still this
        connection's (a newer one, here or at another replica, keeps its own)."""
        value = f"{self.advertise_url} {connection.session}"

        async def remove(client: RedisClient) -> None:
            await client.eval(_DELETE_IF_EQUAL, 1, registry_key(connection.uid), value)

        with contextlib.suppress(RedisUnavailable):
            await self._redis.run(remove)
        try:
            await self._write(
                update(Cluster)
                .where(Cluster.id == connection.cluster_id)
                .where(Cluster.agent_session == connection.session)
                .values(agent_session=None, agent_connected_since=None)
            )
        except Exception:
            logger.warning("could not record that cluster %s's agent left", connection.name)

    # the rows ------------------------------------------------------------------------------

    async def _record_connected(self, connection: AgentConnection) -> None:
        values: dict[str, Any] = {
            "agent_session": connection.session,
            "agent_connected_since": connection.since,
            "agent_last_heartbeat": connection.since,
            "agent_remote_address": (connection.remote or "")[:64] or None,
            "agent_version": connection.version,
            # Probe it now, not after an Unreachable spell's backoff: what waited converges.
            "next_probe_at": func.now(),
        }
        if connection.newest_credential:  # the credential before it is retired
            values["agent_credential_previous_hash"] = None
        await self._write(
            update(Cluster).where(Cluster.id == connection.cluster_id).values(**values)
        )

    async def _record_version(self, connection: AgentConnection) -> None:
        await self._write(
            update(Cluster)
            .where(Cluster.id == connection.cluster_id)
            .where(Cluster.agent_session == connection.session)
            .values(agent_version=connection.version)
        )

    async def _write(self, statement: Any, *, lock: Any = None) -> None:
        """One UPDATE of cluster rows; each row written gets a new resourceVersion and is
        published to the read cache. `lock`: a SELECT of the ids to lock first, in id order
        (as the prober's write-back does), when the UPDATE writes several rows."""
        async with self._sessionmaker.begin() as session:
            if lock is not None:
                await session.execute(lock.order_by(Cluster.id).with_for_update(key_share=True))
            rows = (
                await session.scalars(
                    statement.values(resource_version=resource_version_seq.next_value())
                    .returning(Cluster)
                    .execution_options(synchronize_session=False)
                )
            ).all()
        await self._cache.put_many(
            [
                (cluster_cache_key(row.name), row.resource_version, cluster_document(row))
                for row in rows
            ]
        )

    # the periodic work ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Check connections against their rows; renew heartbeats and the registry."""
        last_heartbeat = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_SECONDS)
            if stop.is_set():
                break
            try:
                await self._check()
                if time.monotonic() - last_heartbeat >= HEARTBEAT_SECONDS:
                    last_heartbeat = time.monotonic()
                    await self._heartbeat()
            except Exception:
                logger.warning("checking the agents' connections failed", exc_info=True)
        await self.close()

    async def _check(self) -> None:
        connections = list(self._connections.values())
        if not connections:
            return
        ids = [c.cluster_id for c in connections]
        async with self._sessionmaker() as session:
            # Only what decides whether a connection may go on: a thousand full rows every
            # few seconds were a fifth of the API's CPU with its agents idle.
            found = await session.execute(
                select(
                    Cluster.id,
                    Cluster.enabled,
                    Cluster.connection_type,
                    Cluster.agent_credential_hash,
                    Cluster.agent_credential_previous_hash,
                ).where(Cluster.id == any_(bindparam("ids", ids, ARRAY(BigInteger))))
            )
            rows = {row.id: row for row in found}
        for connection in connections:
            row = rows.get(connection.cluster_id)
            if row is None or not agents.still_valid(row, connection.credential):
                why = "the cluster was deleted" if row is None else _revoked_why(row)
                await self._close(connection, why)

    async def _heartbeat(self) -> None:
        connections = [c for c in self._connections.values() if not c.closing]
        if not connections:
            return
        await self._register(*connections)
        sessions = [c.session for c in connections]
        await self._write(
            update(Cluster)
            .where(Cluster.agent_session.in_(sessions))
            .values(agent_last_heartbeat=func.now()),
            lock=select(Cluster.id).where(Cluster.agent_session.in_(sessions)),
        )

    async def close(self) -> None:
        """The process stops: its agents reconnect to another replica."""
        for connection in list(self._connections.values()):
            await self._close(connection, "the platform's API replica is stopping")


def _agent_version(user_agent: str | None) -> str | None:
    """The version in the agent's User-Agent (`edge-agent/<version>`), when it is one."""
    product, _, version = (user_agent or "").partition("/")
    if product != "edge-agent" or not version:
        return None
    return version.split(" ", 1)[0][:64] or None


def _revoked_why(row: agents.CredentialState) -> str:
    if not row.enabled:
        return "the cluster was disabled"
    if row.connection_type != "agent":
        return "the cluster is now reached directly"
    return "the cluster's agent credential was revoked (a new join token was issued)"


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the WebSocket handshake with an HTTP status where the server allows it (the
    agent then knows not to retry with the same credential, or when to retry), else with a
    close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        title = "Unauthorized" if status == 401 else "Service Unavailable"
        body = json.dumps({"title": title, "status": status, "detail": message})
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        response = Response(
            body, status_code=status, headers=headers, media_type="application/problem+json"
        )
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=message[:120])


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("recording an agent's version failed: %s", task.exception())


# Delete the key only while it holds this connection's value (Redis Cluster: one key, one slot).
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
