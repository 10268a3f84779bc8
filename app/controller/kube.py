"""All Kubernetes I/O goes through here: one client per edge cluster, built from its decrypted
kubeconfig, cached (rebuilt when the kubeconfig changes, evicted when idle, capped in number),
with the cluster address checked against the SSRF policy on what it resolves to when built."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config_dict

from app.clusters.endpoints import resolve_and_check
from app.crypto import Sealed, SecretBox

REQUEST_TIMEOUT = (5.0, 10.0)  # (connect, read) seconds for every call to an edge cluster
RESOLVE_TIMEOUT = 5.0  # seconds to resolve a cluster's API host name


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
        max_clients: int = 1000,
        idle_seconds: float = 600.0,
    ) -> None:
        self._secrets = secrets
        self._allow_private = allow_private
        self._max = max_clients
        self._idle = idle_seconds
        self._entries: dict[int, _Entry] = {}
        # One lock per cluster: a slow build (DNS, TLS) holds up only its own cluster.
        self._locks: dict[int, asyncio.Lock] = {}

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
        return client

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
