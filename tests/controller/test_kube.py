"""The per-cluster Kubernetes clients: connections and SSL contexts (issue #9's memory figures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.controller import kube
from app.controller.kube import get_json
from app.controller.kube_clients import KubeClients
from tests.support.kube import SECRETS, target


class Edge:
    """An API server that notes which client connection (peer port) each request came on."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        app = web.Application()
        app.router.add_get("/version", self._version)
        self.server = TestServer(app, host="127.0.0.1")

    async def _version(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.json_response({"gitVersion": "v1.30.2"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    server = Edge()
    await server.server.start_server()
    yield server
    await server.server.close()


def certificate_authority(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_calls_share_a_kept_connection_and_an_idle_one_is_closed(edge: Edge) -> None:
    clients = KubeClients(SECRETS, allow_private=True, keepalive_seconds=0.3)
    try:
        api = await clients.client_for(target(edge.url))
        await get_json(api, "/version")
        await asyncio.sleep(0.1)  # as between probes: the connection waits for the next call
        await get_json(api, "/version")
        assert len(set(edge.peers)) == 1  # a probe's calls, a dispatch pass: one connection
        await asyncio.sleep(0.8)  # idle past keepalive_seconds: closed, not held
        await get_json(api, "/version")
        assert len(set(edge.peers)) == 2
    finally:
        await clients.close()


def test_connections_are_kept_past_the_next_probe_within_a_bound() -> None:
    assert kube.keepalive_for(10.0) == 20.0  # the default probe interval: each probe reuses it
    assert kube.keepalive_for(600.0) == kube.IDLE_CONNECTION_MAX_SECONDS


async def test_edges_are_reached_directly_whatever_the_proxy_variables_say(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: a client that took the proxy would fail.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    clients = KubeClients(SECRETS, allow_private=True)
    try:
        api = await clients.client_for(target(edge.url))
        assert (await get_json(api, "/version"))["gitVersion"] == "v1.30.2"
    finally:
        await clients.close()


async def test_clusters_trusting_the_same_ca_share_one_ssl_context() -> None:
    ours, theirs = certificate_authority("fleet"), certificate_authority("other")
    clients = KubeClients(SECRETS, allow_private=True)
    try:
        built = [
            await clients.client_for(target("https://127.0.0.1:6443", ca=ca, cluster_id=i))
            for i, ca in enumerate((ours, ours, theirs, None, None))
        ]
        contexts = [client.rest_client.pool_manager.connector._ssl for client in built]
        assert contexts[0] is contexts[1]
        assert contexts[2] is not contexts[0]
        # Without a CA the system's trust store is loaded: once, not per cluster.
        assert contexts[3] is contexts[4]
        assert contexts[3] is not contexts[0]
    finally:
        await clients.close()


async def test_calls_as_the_edge_sees_them_and_its_refusals() -> None:
    """Server-side apply as kubectl sends it (token, field manager, apply content type); an
    answer other than 2xx becomes an EdgeError saying whether asking again can help."""
    seen: list[dict[str, Any]] = []
    answers = {
        "ok": (200, None),
        "gone": (404, 'configmaps "gone" not found'),
        "invalid": (422, "spec.replicas: Invalid value: -1"),
        "terminating": (403, "namespace app is being terminated"),
        "busy": (500, "etcdserver: request timed out"),
    }

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen.append({
            "method": request.method, "name": name, "query": dict(request.query),
            "headers": dict(request.headers), "body": await request.text(),
        })  # fmt: skip
        status, message = answers[name]
        if message is None:
            return web.json_response({"kind": "ConfigMap", "metadata": {"name": name}})
        return web.json_response({"kind": "Status", "message": message}, status=status)

    app = web.Application()
    app.router.add_route("*", "/api/v1/namespaces/app/configmaps/{name}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    clients = KubeClients(SECRETS, allow_private=True)
    try:
        api = await clients.client_for(target(url))

        def configmap(name: str) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "app"}, "data": {"k": "v"}}  # fmt: skip

        assert await kube.apply_object(api, configmap("ok")) == {
            "kind": "ConfigMap", "metadata": {"name": "ok"},
        }  # fmt: skip
        call = seen[-1]
        assert call["method"] == "PATCH"
        assert call["query"] == {"fieldManager": "edge-platform", "force": "true"}
        assert call["headers"]["Authorization"] == "Bearer edge-test-token"
        assert call["headers"]["Content-Type"] == "application/apply-patch+yaml"
        assert call["headers"]["User-Agent"].startswith("edge-platform-controller/")
        assert yaml.safe_load(call["body"]) == configmap("ok")

        ref = kube.ObjectRef("v1", "ConfigMap", "gone", "app")
        assert await kube.read_object(api, ref) is None
        await kube.delete_object(api, ref)  # already gone: done
        assert seen[-1]["method"] == "DELETE"
        assert '"propagationPolicy": "Background"' in seen[-1]["body"]

        refusals = {}
        for name in ("invalid", "terminating", "busy"):
            with pytest.raises(kube.EdgeError) as caught:
                await kube.apply_object(api, configmap(name))
            refusals[name] = caught.value
        assert refusals["invalid"].permanent
        assert str(refusals["invalid"]) == (
            "apply ConfigMap app/invalid: 422 spec.replicas: Invalid value: -1"
        )
        assert not refusals["terminating"].permanent  # passes once the namespace is gone
        assert not refusals["busy"].permanent
        assert refusals["busy"].status == 500
    finally:
        await clients.close()
        await server.close()

    # Nothing answers any more: a failure to retry, saying what was being done.
    clients = KubeClients(SECRETS, allow_private=True)
    try:
        api = await clients.client_for(target(url))
        with pytest.raises(kube.EdgeError) as caught:
            await kube.read_object(api, ref)
        assert not caught.value.permanent
        assert str(caught.value).startswith("read ConfigMap app/gone: ClientConnectorError")
    finally:
        await clients.close()
