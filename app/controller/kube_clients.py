"""The clients of the edge clusters' APIs (`kube` makes the calls with them): one per cluster,
built from its decrypted kubeconfig, or for a cluster behind NAT pointed at the agents' tunnels,
and cached: rebuilt when the way to the cluster changes, evicted when idle, capped in number.

The address a name resolves to is checked against the SSRF policy on each connection (a literal
address once, when the client is built); no proxy or ~/.netrc is taken from the environment;
the kubeconfig's credentials are loaded into memory, never written to a file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import time
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.rest import RESTClientObject

from app.certs import load_client_certificate
from app.clusters.address_guard import CheckedResolver, check_host
from app.controller.kube import (
    IDLE_CONNECTION_MAX_SECONDS,
    READ_BUFSIZE,
    USER_AGENT,
    ClusterTarget,
    EdgeError,
)
from app.crypto import Sealed, SecretBox
from app.tunnel.proxy import PROXY_PREFIX, proxy_token


class _RestClient(RESTClientObject):
    """What the controller uses of the library's REST client — the HTTP session, the TLS server
    name — given, not built. The library's constructor loads the system's whole trust store
    into a new SSL context (~830 KiB) for every client, only for the controller to replace it;
    fifty probes building clients at once held fifty of them, and the process kept that
    high-water mark."""

    def __init__(self, configuration: Configuration, session: aiohttp.ClientSession) -> None:
        # Not RESTClientObject.__init__: that builds the context and session this replaces.
        # The library's stubs say str where it keeps None (no SNI override, no proxy: edges
        # are reached directly, a kubeconfig's proxy-url is refused).
        self.server_hostname = configuration.tls_server_name  # type: ignore[assignment]
        self.proxy = None  # type: ignore[assignment]
        self.proxy_headers = None  # type: ignore[assignment]
        self.pool_manager = session


class _ApiClient(ApiClient):
    """ApiClient's state, with the REST client above instead of the one it would build."""

    def __init__(self, configuration: Configuration, session: aiohttp.ClientSession) -> None:
        self.configuration = configuration
        self.pool_threads = 1
        self.rest_client = _RestClient(configuration, session)
        self.default_headers: dict[str, str] = {}
        self.cookie = None  # type: ignore[assignment]  # as the library keeps it
        self.user_agent = USER_AGENT
        self.client_side_validation = configuration.client_side_validation


@dataclass
class _Entry:
    fingerprint: str
    client: ApiClient
    used_at: float


@dataclass(frozen=True)
class _Tls:
    """What a cluster's TLS connections take from its kubeconfig, decoded (PEM)."""

    certificate_authority: bytes | None
    client_certificate: bytes | None
    client_key: bytes | None
    verify: bool

    @classmethod
    def of(cls, cluster: dict[str, Any], user: dict[str, Any]) -> _Tls:
        def decoded(value: Any) -> bytes | None:
            return base64.b64decode(value) if value else None

        return cls(
            decoded(cluster.get("certificate-authority-data")),
            decoded(user.get("client-certificate-data")),
            decoded(user.get("client-key-data")),
            # Only a boolean true turns verification off, as in client-go.
            verify=cluster.get("insecure-skip-tls-verify") is not True,
        )

    def digest(self) -> str:
        digest = hashlib.sha256()
        for part in (self.certificate_authority, self.client_certificate, self.client_key):
            digest.update(hashlib.sha256(part or b"").digest())
        digest.update(b"verify" if self.verify else b"no-verify")
        return digest.hexdigest()


class KubeClients:
    def __init__(
        self,
        secrets: SecretBox,
        *,
        allow_private: bool,
        keepalive_seconds: float = IDLE_CONNECTION_MAX_SECONDS,
        max_clients: int = 1000,
        idle_seconds: float = 600.0,
        agent_proxy_url: str | None = None,
    ) -> None:
        self._secrets = secrets
        self._agent_proxy_url = agent_proxy_url
        self._agent_session: aiohttp.ClientSession | None = None
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
        fingerprint = target.fingerprint
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
        if target.agent:
            return await self._agent_client(target)
        assert target.key_id is not None
        assert target.ciphertext is not None
        plain = self._secrets.open(
            Sealed(target.key_id, target.ciphertext), bound_to=f"cluster:{target.uid}"
        )
        # The reduced kubeconfig parse_kubeconfig stored: one cluster, one user, credentials
        # embedded (no file fields, no exec or auth-provider plugins).
        config: dict[str, Any] = yaml.safe_load(plain)
        cluster: dict[str, Any] = config["clusters"][0]["cluster"]
        user: dict[str, Any] = config["users"][0]["user"]
        server = str(cluster["server"]).rstrip("/")
        # A literal address never reaches the resolver (the connector uses it as written):
        # checked here, once, as it cannot change. Names are checked on every connection.
        check_host(urlsplit(server).hostname or "", allow_private=self._allow_private)
        configuration = Configuration(host=server)
        if user.get("token"):
            configuration.api_key["BearerToken"] = f"Bearer {user['token']}"
        elif user.get("username") and user.get("password"):
            pair = f"{user['username']}:{user['password']}".encode()
            configuration.api_key["BearerToken"] = f"Basic {base64.b64encode(pair).decode()}"
        tls = _Tls.of(cluster, user)
        configuration.verify_ssl = tls.verify
        configuration.tls_server_name = cluster.get("tls-server-name")
        # From a configuration with no file in it: nothing is written (the library's
        # new_client_from_config_dict wrote the CA, certificate and key to temporary files,
        # left there until the process exits).
        return _ApiClient(configuration, self._session(configuration, tls))

    async def _agent_client(self, target: ClusterTarget) -> ApiClient:
        """A client for a cluster behind NAT: its calls go to the platform's API, which relays
        them over the agent's tunnel (app.tunnel.proxy). All agent clusters share one HTTP
        session to the API (one host), never closed with a client."""
        if self._agent_proxy_url is None:
            raise EdgeError(
                f"cluster {target.name} is reached through its agent, and this process has "
                "no AGENT_PROXY_URL to reach the agents' tunnels",
                permanent=False,
            )
        configuration = Configuration(host=f"{self._agent_proxy_url}{PROXY_PREFIX}{target.uid}")
        configuration.api_key["BearerToken"] = f"Bearer {proxy_token(self._secrets)}"
        if self._agent_session is None or self._agent_session.closed:
            self._agent_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive),
                read_bufsize=READ_BUFSIZE,
                trust_env=False,
            )
        return _ApiClient(configuration, self._agent_session)

    def _session(self, configuration: Configuration, tls: _Tls) -> aiohttp.ClientSession:
        """A cluster's HTTP session: a shared SSL context, idle connections closed after
        `keepalive_seconds`, every name checked on what it resolves to for the connection that
        uses it, and no proxy from the environment. The platform connects to edges directly (a
        kubeconfig's proxy-url is refused); the Kubernetes client's trust_env also read the
        proxy variables and ~/.netrc in a thread on every request, about a third of a probe's
        cost."""
        connector = aiohttp.TCPConnector(
            limit=configuration.connection_pool_maxsize,
            ssl=self._ssl_context(tls),
            keepalive_timeout=self._keepalive,
            resolver=CheckedResolver(allow_private=self._allow_private),
        )
        return aiohttp.ClientSession(
            connector=connector, read_bufsize=READ_BUFSIZE, trust_env=False
        )

    def _ssl_context(self, tls: _Tls) -> ssl.SSLContext:
        """As the Kubernetes client builds it (kubernetes_asyncio.client.rest), from the
        kubeconfig's data in memory, and shared by the clusters with the same."""
        key = tls.digest()
        context = self._contexts.get(key)
        if context is None:
            authority = tls.certificate_authority
            context = ssl.create_default_context(cadata=authority.decode() if authority else None)
            if tls.client_certificate and tls.client_key:
                load_client_certificate(context, tls.client_certificate, tls.client_key)
            if not tls.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[key] = context
        return context

    async def _close(self, cluster_id: int) -> None:
        entry = self._entries.pop(cluster_id, None)
        if entry is not None and entry.client.rest_client.pool_manager is not self._agent_session:
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
        if self._agent_session is not None:
            await self._agent_session.close()
