"""What whoever answers at an edge cluster's address can make the controller do: no redirect is
followed, the address is checked on the connection actually used, answers are bounded in size
and in time, nothing of a foreign answer is echoed back to the operator, and no client key is
written to disk. The OpenID issuer's answers are bounded and not followed either.

Every server here listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import tempfile
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.auth.oidc import OIDCClient, OIDCError
from app.clusters.address_guard import EndpointRefused, check_address
from app.controller import kube
from app.controller.kube import ClusterTarget, EdgeError, get_json
from app.controller.kube_clients import KubeClients
from app.redis import RedisGateway
from tests.support.kube import SECRETS, target
from tests.support.platform import make_settings

MiB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[TestServer]:
    """An HTTP server on loopback answering every path with `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def raw_serving(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on loopback that reads one request head and answers with `answer`; yields
    its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what these tests expect of it
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def edge_api(
    cluster: ClusterTarget, *, allow_private: bool = True
) -> AsyncIterator[kube.ApiClient]:
    clients = KubeClients(SECRETS, allow_private=allow_private)
    try:
        yield await clients.client_for(cluster)
    finally:
        await clients.close()


def url(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def refusal(cluster: ClusterTarget, path: str = "/version") -> EdgeError:
    async with edge_api(cluster) as api:
        with pytest.raises(EdgeError) as caught:
            await get_json(api, path)
    return caught.value


# Redirects and addresses ----------------------------------------------------------------------


async def test_a_redirect_is_refused_and_its_target_never_asked() -> None:
    """As reported: an endpoint answering 302 to a metadata service had the controller call it
    and show the operator the start of its answer."""
    asked: list[str] = []

    async def metadata_service(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(status=500, text="AccessKeyId=ASIA-INTERNAL-SECRET")

    async with serving(metadata_service) as internal:
        where = f"{url(internal)}/latest/meta-data/iam/security-credentials/"

        async def redirecting(request: web.Request) -> web.Response:
            raise web.HTTPFound(where)

        async with serving(redirecting) as edge:
            refused = await refusal(target(url(edge)))

    assert asked == []
    assert str(refused) == (
        "GET /version: 302 Found: the API server answered with a redirect, which is not "
        "followed; check the cluster's address"
    )
    assert refused.status == 302
    assert not refused.permanent  # fixing the address fixes it: retried, not given up on


async def test_a_name_resolving_to_loopback_when_connecting_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name looked public when it was checked, and resolves to loopback by
    the time the controller connects. The connection's own resolution is what is checked, so
    the loopback service is never asked."""
    asked: list[str] = []

    async def loopback_service(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"gitVersion": "v1.30.2"})

    system_getaddrinfo = socket.getaddrinfo
    answers = iter(["203.0.113.10"])  # the first answer only, then loopback; never connected to
    given: list[str] = []

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.edge.example":
            return system_getaddrinfo(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        given.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    async with serving(loopback_service) as service:
        # The look a check made before connecting (when the kubeconfig was stored): public.
        looked = socket.getaddrinfo("rebind.edge.example", service.port)
        check_address(looked[0][4][0], allow_private=False)

        cluster = target(f"http://rebind.edge.example:{service.port}")
        async with edge_api(cluster, allow_private=False) as api:
            with pytest.raises(EdgeError) as caught:
                await get_json(api, "/version")
        assert given == ["203.0.113.10", "127.0.0.1"]
        assert asked == []
        assert "127.0.0.1 is a loopback or private address" in str(caught.value)
        assert str(caught.value).startswith("GET /version: refused: 'rebind.edge.example'")

        # Where private addresses are allowed, the same name is reached through the same
        # resolver: the refusal above is the policy, not a failure to resolve.
        async with edge_api(cluster, allow_private=True) as api:
            assert await get_json(api, "/version") == {"gitVersion": "v1.30.2"}
        assert asked == ["/version"]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback or private address"),
        ("[::ffff:127.0.0.1]", "127.0.0.1 is a loopback or private address"),
        ("0.0.0.0", "0.0.0.0 is a link-local or cloud metadata address"),  # noqa: S104
    ],
)
async def test_a_literal_forbidden_address_is_refused(host: str, why: str) -> None:
    """Addresses written as such never go through a resolver: they are checked as written."""
    asked: list[str] = []

    async def loopback_service(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"gitVersion": "v1.30.2"})

    async with serving(loopback_service) as service:
        clients = KubeClients(SECRETS, allow_private=False)

        async def build_and_call() -> None:
            api = await clients.client_for(target(f"http://{host}:{service.port}"))
            await get_json(api, "/version")

        try:
            with pytest.raises((EndpointRefused, EdgeError)) as caught:
                await build_and_call()
        finally:
            await clients.close()
    assert asked == []
    assert why in str(caught.value)


# Answers bounded in size and time -------------------------------------------------------------


def _gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join(packer.compress(zeros) for _ in range(size // MiB)) + packer.flush()


@pytest.mark.parametrize("how", ["declared", "streamed", "compressed"])
async def test_a_huge_answer_is_cut_off(how: str) -> None:
    """100 MiB sent for one probe: refused at its declared length, or read no further than the
    bound when the length is not declared (or is only the compressed size)."""
    sent = 0
    body = _gzip_of_zeros(100 * MiB) if how == "compressed" else bytes(MiB) * 100
    pieces = [body[i : i + MiB] for i in range(0, len(body), MiB)]

    async def huge(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if how == "declared":
            response.content_length = len(body)
        if how == "compressed":
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for piece in pieces:
                await response.write(piece)
                sent += len(piece)
        return response

    async with serving(huge) as edge:
        refused = await refusal(target(url(edge)), "/api/v1/nodes")
    assert str(refused) == (
        f"GET /api/v1/nodes: the answer is larger than {kube.MAX_ANSWER_BYTES // MiB} MiB"
    )
    if how != "compressed":
        assert sent < 60 * MiB  # the client stopped reading; the rest was never taken in


async def test_a_large_but_plausible_answer_is_read() -> None:
    """The bound leaves room for what edges do send: a few MiB of node list."""
    nodes = [
        {"metadata": {"name": f"node-{i}", "labels": {"zone": "a"}}, "status": {"x": "y" * 3000}}
        for i in range(1000)
    ]

    async def node_list(request: web.Request) -> web.Response:
        return web.json_response({"kind": "NodeList", "items": nodes})

    async with serving(node_list) as edge, edge_api(target(url(edge))) as api:
        listed = await get_json(api, "/api/v1/nodes")
    assert len(listed["items"]) == 1000


async def test_an_answer_trickling_in_is_cut_off_by_the_total_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A byte every 50 ms never trips the read timeout; the bound on the whole call does."""
    monkeypatch.setattr(
        kube, "CALL_TIMEOUT", aiohttp.ClientTimeout(total=1.0, connect=5.0, sock_read=10.0)
    )

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with raw_serving(trickle) as port:
        started = time.monotonic()
        refused = await asyncio.wait_for(refusal(target(f"http://127.0.0.1:{port}")), 10)
        took = time.monotonic() - started
    assert 0.9 < took < 3.0
    assert str(refused) == "GET /version: TimeoutError: no complete answer within 1 s"
    assert not refused.permanent


# What comes back to the operator --------------------------------------------------------------


async def test_only_a_kubernetes_status_message_is_shown_and_only_cleaned_up() -> None:
    status_message = "spec.replicas: Invalid value\x1b[31m\r\n\u202e" + "x" * 1000

    async def answers(request: web.Request) -> web.Response:
        if request.path == "/html":
            return web.Response(
                status=502, text="<html>db-password=hunter2</html>", content_type="text/html"
            )
        if request.path == "/json":
            return web.json_response({"message": "db-password=hunter2"}, status=500)
        return web.json_response({"kind": "Status", "message": status_message}, status=422)

    async with serving(answers) as edge, edge_api(target(url(edge))) as api:
        refused = {}
        for path in ("/html", "/json", "/status"):
            with pytest.raises(EdgeError) as caught:
                await get_json(api, path)
            refused[path] = caught.value

    assert str(refused["/html"]) == (
        "GET /html: 502 Bad Gateway (the answer is not a Kubernetes Status)"
    )
    assert str(refused["/json"]) == (
        "GET /json: 500 Internal Server Error (the answer is not a Kubernetes Status)"
    )
    shown = str(refused["/status"])
    assert shown.startswith("GET /status: 422 spec.replicas: Invalid value [31m ")
    assert shown.isprintable()
    assert len(shown) <= len("GET /status: 422 ") + kube.MAX_MESSAGE_CHARS
    assert refused["/status"].permanent


async def test_an_answer_that_is_not_http_is_not_echoed() -> None:
    """A service that is not an HTTP server (here, one greeting like SSH) is named a protocol
    error; its greeting is not passed on."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6 internal-host-7f3a secret-banner\r\n\r\n")
        await writer.drain()

    async with raw_serving(banner) as port:
        refused = await refusal(target(f"http://127.0.0.1:{port}"))
    assert str(refused) == "GET /version: the answer is not valid HTTP"
    assert not refused.permanent


# Client keys stay in memory -------------------------------------------------------------------


class Pki:
    """A CA, an API server certificate for a name, and a client certificate it signed."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-ca")])
        self.certificate = self._sign(self.name, self.key.public_key(), ca=True, extensions=[])

    def _sign(
        self, subject: x509.Name, public_key: Any, *, ca: bool, extensions: list[Any]
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue(self, common_name: str, *, dns: str | None = None) -> tuple[bytes, bytes]:
        """(certificate, key) as PEM; a server certificate when `dns` is given."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if dns else ExtendedKeyUsageOID.CLIENT_AUTH
        extensions: list[Any] = [x509.ExtendedKeyUsage([usage])]
        if dns:
            extensions.append(x509.SubjectAlternativeName([x509.DNSName(dns)]))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = self._sign(subject, key.public_key(), ca=False, extensions=extensions)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem

    @property
    def ca_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def sealed(cluster: dict[str, Any], user: dict[str, Any]) -> ClusterTarget:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "edge",
        "clusters": [{"name": "edge", "cluster": cluster}],
        "users": [{"name": "operator", "user": user}],
        "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "operator"}}],
    }
    uid = str(uuid.uuid4())
    box = SECRETS.seal(yaml.safe_dump(config).encode(), bound_to=f"cluster:{uid}")
    return ClusterTarget(7, uid, "edge-7", box.key_id, box.ciphertext)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "no-memfd"])
async def test_a_client_certificate_is_used_without_its_key_written_to_disk(
    memfd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutual TLS to an API server known by another name than its address (tls-server-name),
    with the kubeconfig's embedded certificate and key; the temporary directory is left as it
    was, also where the system offers no in-memory file."""
    pki = Pki()
    server_cert, server_key = pki.issue("api.edge.test", dns="api.edge.test")
    client_cert, client_key = pki.issue("edge-operator")
    server_files = tmp_path / "server"
    server_files.mkdir()
    (server_files / "tls.crt").write_bytes(server_cert)
    (server_files / "tls.key").write_bytes(server_key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=pki.ca_pem.decode())
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_cert_chain(server_files / "tls.crt", server_files / "tls.key")

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    made: list[str] = []
    if not memfd:
        monkeypatch.delattr(os, "memfd_create")
        system_mkdtemp = tempfile.mkdtemp

        def noted_mkdtemp(*args: Any, **kwargs: Any) -> str:
            made.append(system_mkdtemp(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(tempfile, "mkdtemp", noted_mkdtemp)

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
        names = [value for rdn in peer["subject"] for key, value in rdn if key == "commonName"]
        return web.json_response({"user": names})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    cluster = sealed(
        {
            "server": f"https://127.0.0.1:{port}",
            "certificate-authority-data": b64(pki.ca_pem),
            "tls-server-name": "api.edge.test",
        },
        {"client-certificate-data": b64(client_cert), "client-key-data": b64(client_key)},
    )
    try:
        async with edge_api(cluster) as api:
            assert await get_json(api, "/whoami") == {"user": ["edge-operator"]}
    finally:
        await runner.cleanup()
    key_body = b"".join(client_key.splitlines()[1:-1])
    written = [p for p in temporary.rglob("*") if p.is_file() and key_body in p.read_bytes()]
    assert written == []
    assert list(temporary.rglob("*")) == []
    # Without memfd the key did go through a private directory, removed once read.
    assert len(made) == (0 if memfd else 1)


async def test_basic_auth_and_a_token_are_sent_as_the_kubeconfig_says() -> None:
    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({})

    async with serving(echo) as edge:
        basic = sealed({"server": url(edge)}, {"username": "ops", "password": "s3cret"})
        async with edge_api(basic) as api:
            await get_json(api, "/version")
        async with edge_api(target(url(edge))) as api:
            await get_json(api, "/version")
    assert seen == [f"Basic {b64(b'ops:s3cret')}", "Bearer edge-test-token"]


# The OpenID issuer ----------------------------------------------------------------------------


def oidc_client(issuer: str) -> OIDCClient:
    settings = make_settings("postgresql://127.0.0.1:9/unused", oauth_issuer=issuer)
    return OIDCClient(settings, RedisGateway(url="redis://127.0.0.1:9"))


async def test_the_issuers_answers_are_bounded_and_redirects_not_followed() -> None:
    asked: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"issuer": "http://elsewhere"})

    async with serving(elsewhere) as other:

        async def issuer(request: web.Request) -> web.StreamResponse:
            if request.path.startswith("/redirecting/"):
                raise web.HTTPFound(f"{url(other)}/.well-known/openid-configuration")
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                await response.write(b'{"issuer": "' + b"x" * (4 * MiB) + b'"}')
            return response

        async with serving(issuer) as idp:
            with pytest.raises(OIDCError) as redirected:
                await oidc_client(f"{url(idp)}/redirecting").metadata()
            with pytest.raises(OIDCError) as huge:
                await oidc_client(f"{url(idp)}/huge").metadata()

    assert asked == []
    assert redirected.value.status == 503
    assert huge.value.status == 503
    assert huge.value.description == "the identity provider's answer is larger than 1 MiB"
