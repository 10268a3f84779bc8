"""The edge agent's counterparts in tests, all real servers on loopback:

- `RecordingEdge`: the kmock emulator of tests/support/edge.py as the agent's local API server,
  recording every request that reaches it (method, path, query, headers) and the watches open
  on it, and taking request bodies up to 4 MiB (an API server takes 3 MiB; aiohttp's default
  is 1 MiB);
- `TestPlatform`: the platform's side of the contract, an aiohttp application serving the join
  and rotation endpoints and the tunnel's WebSocket (refused with 401 for a credential it does
  not know), running `Mux` over each connection it accepts; over TLS when given a context;
- `TlsKubernetes`: kmock alone behind TLS, as a pod's API server (Secrets, client certificates);
- `Pki`: a throwaway CA; `ConnectProxy`: a site's outbound HTTP proxy (CONNECT only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
from aiohttp import WSMsgType, web
from aiohttp.test_utils import RawTestServer, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.agent.run import run_agent
from app.agent.settings import AgentSettings
from app.tunnel.protocol import (
    MAX_FRAME_BYTES,
    SUBPROTOCOL_V2,
    Mux,
    ProtocolError,
    Stream,
    TunnelClosed,
)
from tests.support.edge import EdgeCluster

MiB = 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class RecordingEdge(EdgeCluster):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Seen] = []
        self.watches_open = 0

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        request = request.clone(client_max_size=4 * MiB)
        self.seen.append(
            Seen(request.method, request.path, request.query_string, dict(request.headers))
        )
        watching = request.query.get("watch") == "true"
        self.watches_open += watching
        try:
            # Test servers cancel a handler when its client goes away: a watch ends here.
            return await super()._serve(request)
        finally:
            self.watches_open -= watching


class AiohttpServerTransport:
    """aiohttp's server-side WebSocket as the tunnel's Transport."""

    def __init__(self, websocket: web.WebSocketResponse) -> None:
        self._websocket = websocket

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send_bytes(message)
        except (ConnectionError, RuntimeError) as exc:
            raise TunnelClosed("the agent's connection is gone") from exc

    async def receive(self) -> bytes:
        message = await self._websocket.receive()
        if message.type is WSMsgType.BINARY:
            data: bytes = message.data
            return data
        if message.type is WSMsgType.TEXT:
            raise ProtocolError("a text message")
        raise TunnelClosed(f"the agent's connection ended ({message.type.name})")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PlatformConnection:
    """One agent connection, as the platform holds it."""

    mux: Mux
    websocket: web.WebSocketResponse
    credential: str
    hello: asyncio.Future[dict[str, Any]]
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[Stream, asyncio.Task[None]]:
        """An exchange opened and its body being sent (as the platform sends it: the whole
        body, then END)."""
        head = {"method": method, "path": path, "query": query, "headers": headers or {}}
        stream = await self.mux.open(head)

        async def upload() -> None:
            if body:
                await stream.send(body)
            await stream.end()

        return stream, asyncio.create_task(upload())

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Answer:
        stream, upload = await self.open(method, path, query=query, headers=headers, body=body)
        try:
            head = await asyncio.wait_for(stream.response, 10)
            parts = []
            async with asyncio.timeout(10):
                async for chunk in stream.chunks():
                    parts.append(chunk)
            async with asyncio.timeout(10):
                await upload  # the agent read the whole body, or the exchange would hang here
        finally:
            upload.cancel()
        return Answer(head["status"], head["headers"], b"".join(parts))

    async def drop(self) -> None:
        await self.websocket.close(code=1001, message=b"going away")


@dataclass
class Handshake:
    at: float
    authorization: str | None
    accepted: bool


def _problem(status: int, detail: str) -> web.Response:
    body = {
        "title": "Unauthorized" if status == 401 else "Error",
        "status": status,
        "detail": detail,
    }
    return web.json_response(body, status=status, content_type="application/problem+json")


def _bearer(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential if scheme.lower() == "bearer" and credential else None


class TestPlatform:
    __test__ = False

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}  # join tokens not used yet → cluster
        self.credentials: dict[str, str] = {}  # valid credentials → cluster
        self.replaced: dict[str, str] = {}  # a rotated credential → the one it replaces
        self.rotate_after = 3600
        self.joins: list[dict[str, Any]] = []
        self.join_times: list[float] = []
        self.busy: list[web.Response] = []  # answers to the next joins, before any is served
        self.busy_tunnel: list[web.Response] = []  # likewise for the next tunnel handshakes
        self.rotations: list[str] = []
        self.handshakes: list[Handshake] = []
        self.connections: asyncio.Queue[PlatformConnection] = asyncio.Queue()
        self.live: list[PlatformConnection] = []
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self._server.scheme}://127.0.0.1:{self._server.port}"

    def issue_token(self, cluster: str = "edge-1") -> str:
        token = f"join-{secrets.token_urlsafe(16)}"
        self.tokens[token] = cluster
        return token

    def grant(self, cluster: str = "edge-1") -> str:
        credential = f"cred-{secrets.token_urlsafe(24)}"
        self.credentials[credential] = cluster
        return credential

    def revoke(self, credential: str) -> None:
        self.credentials.pop(credential, None)

    async def start(self, tls: ssl.SSLContext | None = None) -> TestPlatform:
        app = web.Application()
        app.router.add_post("/api/v1/agent/join", self._join)
        app.router.add_post("/api/v1/agent/credential", self._rotate)
        app.router.add_get("/api/v1/agent/tunnel", self._tunnel)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server(ssl=tls)
        return self

    async def stop(self) -> None:
        for connection in list(self.live):
            await connection.drop()
        if self._server is not None:
            await self._server.close()

    async def next_connection(self, within: float = 5.0) -> PlatformConnection:
        """The next connection the platform accepted, once its HELLO came."""
        connection = await asyncio.wait_for(self.connections.get(), within)
        await asyncio.wait_for(asyncio.shield(connection.hello), within)
        return connection

    async def _join(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.joins.append(body)
        self.join_times.append(time.monotonic())
        if self.busy:
            return self.busy.pop(0)
        cluster = self.tokens.pop(body.get("token"), None)
        if cluster is None:
            return _problem(401, "the join token is not valid: wrong, expired or used already")
        credential = self.grant(cluster)
        answer = {
            "cluster": cluster,
            "credential": credential,
            "rotateAfterSeconds": self.rotate_after,
        }
        return web.json_response(answer)

    async def _rotate(self, request: web.Request) -> web.Response:
        credential = _bearer(request)
        self.rotations.append(credential or "")
        cluster = self.credentials.get(credential or "")
        if cluster is None:
            return _problem(401, "the agent credential is not valid")
        new = self.grant(cluster)
        self.replaced[new] = credential or ""
        answer = {"cluster": cluster, "credential": new, "rotateAfterSeconds": self.rotate_after}
        return web.json_response(answer)

    async def _tunnel(self, request: web.Request) -> web.StreamResponse:
        credential = _bearer(request)
        accepted = credential is not None and credential in self.credentials
        self.handshakes.append(
            Handshake(time.monotonic(), request.headers.get("Authorization"), accepted)
        )
        if not accepted or credential is None:
            return _problem(401, "the agent credential is not valid (revoked or wrong)")
        if self.busy_tunnel:
            return self.busy_tunnel.pop(0)
        retired = self.replaced.pop(credential, None)
        if retired is not None:  # the new credential connected: the old one stops working
            self.credentials.pop(retired, None)
        # aiohttp refuses a message of exactly max_msg_size bytes (its bound is exclusive).
        websocket = web.WebSocketResponse(
            max_msg_size=MAX_FRAME_BYTES + 1, protocols=(SUBPROTOCOL_V2,)
        )
        await websocket.prepare(request)
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_hello(info: dict[str, Any]) -> None:
            if not hello.done():
                hello.set_result(info)

        mux = Mux(
            AiohttpServerTransport(websocket),
            on_hello=on_hello,
            end_flag=websocket.ws_protocol == SUBPROTOCOL_V2,  # as the platform agrees
        )
        connection = PlatformConnection(mux, websocket, credential, hello)
        self.live.append(connection)
        self.connections.put_nowait(connection)
        try:
            await mux.run()
        except ProtocolError:
            pass
        finally:
            mux.close(TunnelClosed("the connection ended"))
            connection.ended.set()
            self.live.remove(connection)
            await websocket.close()
        return websocket


class UpperBound(random.Random):
    """Full jitter at its ceiling: the backoff's waits become exactly base·2ⁿ (capped)."""

    def uniform(self, a: float, b: float) -> float:
        return b


@contextlib.asynccontextmanager
async def running(
    settings: AgentSettings, rng: random.Random | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """The agent running (as `edge-platform agent` runs it) until the block ends."""
    task = asyncio.create_task(run_agent(settings, rng=rng))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def eventually(check: Any, within: float = 5.0, interval: float = 0.02) -> None:
    """Wait until `check()` is true (a condition of the servers above that no event marks)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polls state that no event marks
            await asyncio.sleep(interval)


# TLS -----------------------------------------------------------------------------------------


class Pki:
    """A throwaway CA issuing server and client certificates (ECDSA P-256)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
        self.ca_pem = self._sign(self._name, self._key.public_key(), ca=True).public_bytes(
            serialization.Encoding.PEM
        )

    def _sign(
        self,
        subject: x509.Name,
        public_key: Any,
        *,
        ca: bool,
        extensions: list[Any] = (),  # type: ignore[assignment]
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(
        self, common_name: str, *, server_names: list[str] | None = None
    ) -> tuple[bytes, bytes]:
        """(certificate, key) as PEM: a server's for `server_names` (DNS names or addresses),
        else a client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        extensions: list[Any] = [x509.ExtendedKeyUsage([usage])]
        if server_names:
            names: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    names.append(x509.DNSName(name))
            extensions.append(x509.SubjectAlternativeName(names))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = self._sign(subject, key.public_key(), ca=False, extensions=extensions)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem


class TlsKubernetes:
    """kmock's Kubernetes emulator alone (it creates, merge-patches and reads Secrets, which
    the EdgeCluster adapter does not) behind TLS, as a pod reaches its API server; optionally
    requiring a client certificate. Records the Authorization header of every request."""

    def __init__(
        self, pki: Pki, folder: Path, *, server_names: list[str], client_certificates: bool = False
    ) -> None:
        self.k = kmock.KubernetesEmulator()
        self.k["get", re.compile(r"/version/?")] << {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.4",
        }
        certificate, key = pki.issue("apiserver", server_names=server_names)
        (folder / "apiserver.crt").write_bytes(certificate)
        (folder / "apiserver.key").write_bytes(key)
        self._context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cadata=pki.ca_pem.decode()
        )
        self._context.load_cert_chain(folder / "apiserver.crt", folder / "apiserver.key")
        self._context.verify_mode = ssl.CERT_REQUIRED if client_certificates else ssl.CERT_NONE
        self.authorizations: list[str | None] = []
        self.client_subjects: list[str] = []
        self._server: RawTestServer | None = None
        self.port = 0

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization"))
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            self.client_subjects.append(str(peer.get("subject")))
        return await self.k(request)

    async def start(self) -> TlsKubernetes:
        await self.k.__aenter__()
        self._server = RawTestServer(self._serve, host="127.0.0.1")
        await self._server.start_server(ssl=self._context)
        self.port = self._server.port or 0
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            await self.k.__aexit__(None, None, None)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        for key, obj in self.k.objects.items():
            resource, object_namespace, object_name = key
            if resource.plural == "secrets" and (object_namespace, object_name) == (
                namespace,
                name,
            ):
                if obj.deleted:
                    return None
                raw: dict[str, Any] = obj.raw
                return raw
        return None


class ConnectProxy:
    """An HTTP proxy that knows only CONNECT (how HTTPS and WSS go through one): it records
    each request line it gets and relays the tunnelled bytes both ways."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.wait(self._relays)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        self.requests.append(line)
        while (await reader.readline()).strip():
            pass  # the request's headers
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._relay(source, sink))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

    @staticmethod
    async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
