"""All Kubernetes I/O goes through here: one client per edge cluster, built from its decrypted
kubeconfig, cached (rebuilt when the kubeconfig changes, evicted when idle, capped in number),
with the cluster address checked against the SSRF policy on what it resolves to when built."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import hashlib
import json
import ssl
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config_dict

from app import __version__
from app.clusters.endpoints import resolve_and_check
from app.crypto import Sealed, SecretBox

REQUEST_TIMEOUT = (5.0, 10.0)  # (connect, read) seconds for every call to an edge cluster
# The same bounds, as aiohttp takes them.
CALL_TIMEOUT = aiohttp.ClientTimeout(
    connect=REQUEST_TIMEOUT[0], sock_connect=REQUEST_TIMEOUT[0], sock_read=REQUEST_TIMEOUT[1]
)
RESOLVE_TIMEOUT = 5.0  # seconds to resolve a cluster's API host name
# Each managed cluster keeps one connection open between probes, so that neither its probes
# nor a rollout pay for a TLS handshake (a third of a probe's CPU, a fifth of a target's with
# 1,000 clusters). Idle connections are closed after twice the probe interval, at most
# IDLE_CONNECTION_MAX_SECONDS: proxies, load balancers and API servers commonly close idle
# connections after 60 to 90 s, and a request sent down one being closed fails.
IDLE_CONNECTION_MAX_SECONDS = 45.0
# asyncio gives every TLS connection a read buffer of this size (256 KiB by default), filled
# with zeros up front; a thousand kept connections held 300 KiB each. A TLS record is at most
# 16 KiB, so 32 KiB costs no extra reads of the socket.
TLS_READ_BUFFER_BYTES = 32 * 1024
READ_BUFSIZE = 2**21  # what the Kubernetes client allows one response (etcd's 1.5 MiB object)
# As client-go names its callers (kubectl/v1.30.2): the edge's audit log shows who wrote.
USER_AGENT = f"edge-platform-controller/{__version__}"


def keepalive_for(probe_interval: float) -> float:
    """How long a connection to an edge is kept idle: past its next probe, within bounds."""
    return min(IDLE_CONNECTION_MAX_SECONDS, 2 * probe_interval)


def small_tls_read_buffers() -> None:
    """Make asyncio's TLS connections in this process allocate TLS_READ_BUFFER_BYTES to read
    into, not 256 KiB each (`max_size` is the size SSLProtocol allocates and reads with)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES


@dataclass(frozen=True)
class ClusterTarget:
    """What the controller needs to reach one cluster (read from its row)."""

    id: int
    uid: str
    name: str
    key_id: str
    ciphertext: bytes


@dataclass
class _Entry:
    fingerprint: str
    client: ApiClient
    used_at: float


class KubeClients:
    def __init__(
        self,
        secrets: SecretBox,
        *,
        allow_private: bool,
        keepalive_seconds: float = IDLE_CONNECTION_MAX_SECONDS,
        max_clients: int = 1000,
        idle_seconds: float = 600.0,
    ) -> None:
        self._secrets = secrets
        self._allow_private = allow_private
        self._keepalive = keepalive_seconds
        self._max = max_clients
        self._idle = idle_seconds
        self._entries: dict[int, _Entry] = {}
        # One lock per cluster: a slow build (DNS, TLS) holds up only its own cluster.
        self._locks: dict[int, asyncio.Lock] = {}
        # One SSL context per distinct trust and client certificate, shared by the clusters
        # that have the same: a context is ~26 KiB with one CA, ~830 KiB with the system's.
        self._contexts: weakref.WeakValueDictionary[str, ssl.SSLContext] = (
            weakref.WeakValueDictionary()
        )

    async def client_for(self, target: ClusterTarget) -> ApiClient:
        fingerprint = hashlib.sha256(target.ciphertext).hexdigest()
        entry = self._entries.get(target.id)
        if entry is not None and entry.fingerprint == fingerprint:
            entry.used_at = time.monotonic()
            return entry.client
        async with self._locks.setdefault(target.id, asyncio.Lock()):
            entry = self._entries.get(target.id)
            if entry is not None and entry.fingerprint == fingerprint:
                return entry.client  # built by a concurrent caller meanwhile
            if entry is not None:
                await self._close(target.id)
            client = await self._build(target)
            self._entries[target.id] = _Entry(fingerprint, client, time.monotonic())
        await self._evict()
        return client

    async def _build(self, target: ClusterTarget) -> ApiClient:
        plain = self._secrets.open(
            Sealed(target.key_id, target.ciphertext), bound_to=f"cluster:{target.uid}"
        )
        config: dict[str, Any] = yaml.safe_load(plain)
        server = config["clusters"][0]["cluster"]["server"]
        parts = urlsplit(server)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # Refuses names that now resolve to metadata or (unless allowed) private addresses.
        await asyncio.wait_for(
            asyncio.to_thread(
                resolve_and_check, parts.hostname or "", port, allow_private=self._allow_private
            ),
            RESOLVE_TIMEOUT,
        )
        client: ApiClient = await new_client_from_config_dict(config)
        await self._use_own_session(client)
        return client

    async def _use_own_session(self, client: ApiClient) -> None:
        """Give the client an HTTP session of ours: a shared SSL context, idle connections
        closed after `keepalive_seconds`, and no proxy from the environment. The platform
        connects to edges directly (a kubeconfig's proxy-url is refused, and the address
        policy above checks what the name resolves to here); the Kubernetes client's
        trust_env also read the proxy variables and ~/.netrc in a thread on every request,
        about a third of a probe's cost."""
        configuration = client.configuration
        rest = client.rest_client
        built = rest.pool_manager
        connector = aiohttp.TCPConnector(
            limit=configuration.connection_pool_maxsize,
            ssl=self._ssl_context(configuration),
            keepalive_timeout=self._keepalive,
        )
        rest.pool_manager = aiohttp.ClientSession(
            connector=connector, read_bufsize=READ_BUFSIZE, trust_env=False
        )
        await built.close()

    def _ssl_context(self, configuration: Any) -> ssl.SSLContext:
        """As the Kubernetes client builds it (kubernetes_asyncio.client.rest), shared."""
        files = (configuration.ssl_ca_cert, configuration.cert_file, configuration.key_file)
        digest = hashlib.sha256()
        for name in files:
            digest.update(hashlib.sha256(Path(name).read_bytes() if name else b"").digest())
        digest.update(
            f"{configuration.verify_ssl}/{configuration.disable_strict_ssl_verification}".encode()
        )
        key = digest.hexdigest()
        context = self._contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if configuration.disable_strict_ssl_verification:
                context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            self._contexts[key] = context
        return context

    async def _close(self, cluster_id: int) -> None:
        entry = self._entries.pop(cluster_id, None)
        if entry is not None:
            await entry.client.close()

    async def _evict(self) -> None:
        now = time.monotonic()
        for cluster_id, entry in list(self._entries.items()):
            if now - entry.used_at > self._idle:
                await self._close(cluster_id)
        while len(self._entries) > self._max:
            oldest = min(self._entries, key=lambda k: self._entries[k].used_at)
            await self._close(oldest)

    async def forget(self, cluster_id: int) -> None:
        await self._close(cluster_id)

    async def close(self) -> None:
        for cluster_id in list(self._entries):
            await self._close(cluster_id)


# Objects at the edge --------------------------------------------------------------------------

FIELD_MANAGER = "edge-platform"
# Where each kind the platform writes lives in the Kubernetes API: (plural, namespaced).
KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("helm.cattle.io/v1", "HelmChart"): ("helmcharts", True),
    ("batch/v1", "Job"): ("jobs", True),
}
# Answers that will not change by asking again: the object or the request is wrong.
# 409 is not here: at the edge it means another writer got there first ("the object has been
# modified"), which passes when asked again, as client-go's RetryOnConflict assumes.
PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 415, 422})


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        }

    def path(self) -> str:
        plural, namespaced = KINDS[(self.api_version, self.kind)]
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        where = f"/namespaces/{self.namespace}" if namespaced else ""
        return f"{root}{where}/{plural}/{self.name}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


class EdgeError(Exception):
    """A call to an edge cluster failed. `permanent`: asking again will not help (the edge
    refused the object); otherwise (timeouts, connection errors, 429, 5xx) retry later."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def _refusal(what: str, status: int, reason: str, answer: bytes) -> EdgeError:
    """The edge answered other than 2xx: its Status message, and whether asking again helps."""
    message = reason
    try:
        message = json.loads(answer).get("message") or message
    except (ValueError, AttributeError):
        message = answer[:300].decode(errors="replace") or message
    # A namespace being terminated refuses new objects for a while (403): that passes.
    passing = status == 403 and "being terminated" in message
    return EdgeError(
        f"{what}: {status} {message}"[:1000],
        permanent=status in PERMANENT_STATUSES and not passing,
        status=status,
    )


async def _call(
    api: ApiClient,
    method: str,
    path: str,
    what: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> Any:
    """One request to the cluster's API, its answer decoded from JSON; any failure raises
    EdgeError saying `what` failed. The client's configuration gives the address, the
    credentials (refreshed as its kubeconfig says) and the TLS server name; the request goes
    out on its session directly, not through `call_api`, which walks every object sent and
    received to convert model classes the platform does not use."""
    try:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        await api.update_params_for_auth(headers, [], ["BearerToken"])
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        rest = api.rest_client
        async with rest.pool_manager.request(
            method,
            f"{api.configuration.host}{path}",
            params=query,
            data=data,
            headers=headers,
            timeout=CALL_TIMEOUT,
            server_hostname=rest.server_hostname,
        ) as response:
            answer = await response.read()
        if not 200 <= response.status <= 299:
            raise _refusal(what, response.status, response.reason or "", answer)
        return json.loads(answer) if answer else None
    except EdgeError:
        raise
    except Exception as exc:  # connection refused or reset, timeouts, TLS, a garbled answer
        raise EdgeError(f"{what}: {type(exc).__name__}: {exc}"[:1000], permanent=False) from exc


async def get_json(api: ApiClient, path: str) -> Any:
    """GET a path of the cluster's API as decoded JSON (no model objects built)."""
    return await _call(api, "GET", path, f"GET {path}")


async def apply_object(api: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with the platform's field manager (force: the platform owns them);
    the answer is the object as the edge stored it."""
    ref = ObjectRef.of(obj)
    result: dict[str, Any] = await _call(
        api,
        "PATCH",
        ref.path(),
        f"apply {ref}",
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        # JSON is YAML: the API server takes an apply patch in either.
        content_type="application/apply-patch+yaml",
        body=obj,
    )
    return result


async def read_object(api: ApiClient, ref: ObjectRef) -> dict[str, Any] | None:
    """The object as the edge has it, or None when it does not exist."""
    try:
        result: dict[str, Any] = await _call(api, "GET", ref.path(), f"read {ref}")
    except EdgeError as exc:
        if exc.status == 404:
            return None
        raise
    return result


async def delete_object(api: ApiClient, ref: ObjectRef) -> None:
    """Delete it (background propagation); already gone counts as done."""
    try:
        await _call(
            api,
            "DELETE",
            ref.path(),
            f"delete {ref}",
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
    except EdgeError as exc:
        if exc.status != 404:
            raise
