"""One Redis factory for a single server and for Redis Cluster, and the availability guard.

Cluster mode is detected (`INFO cluster` on the first reachable address), not guessed, so one
address of a cluster works in `REDIS_URL` as well as a list in `REDIS_ADDRESSES`.

Redis is never the only copy of anything: callers treat `RedisUnavailable` as "carry on
without it". After a failure the gateway stops trying for a short while, so an outage costs
each request nothing instead of a socket timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

logger = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
T = TypeVar("T")
# What a Redis call can fail with. redis-py raises RedisClusterException, which is not a
# RedisError, when a cluster client finds none of its nodes (as during a master's failover).
FAILURES = (RedisError, RedisClusterException, OSError)
# Operations in flight at once per process, below redis-py's pool of 100 connections (per node
# in a cluster): past it redis-py raises instead of waiting, which is no sign of Redis being
# down. A burst (a thousand agents reconnecting at once) waits here for its turn instead.
MAX_IN_FLIGHT = 64

KEY_PREFIX = "edge:"


def key(*parts: str, tag: str | None = None) -> str:
    """Build a key; keys that must share a cluster slot share `tag` (`edge:{tag}:...`)."""
    head = f"{KEY_PREFIX}{{{tag}}}:" if tag is not None else KEY_PREFIX
    return head + ":".join(parts)


class RedisUnavailable(Exception):
    pass


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class RedisGateway:
    def __init__(
        self,
        *,
        url: str | None = None,
        addresses: list[str] | None = None,
        timeout: float = 0.5,
        retry_interval: float = 2.0,
    ) -> None:
        self._url = url
        self._addresses = addresses or []
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._client: RedisClient | None = None
        self._down_until = 0.0
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._connecting = asyncio.Lock()
        self.mode: Literal["standalone", "cluster"] | None = None
        self.last_error: str | None = None

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "health_check_interval": 30,
            # One retry, at once (a stale connection; in a cluster, after the client has
            # refreshed its map of the slots). redis-py's defaults retry ten times with backoff
            # (a client made from an address, a cluster client): a call to a stopped server took
            # 4 s to fail, one to a killed cluster master's slot waited until a replica was
            # promoted (4.7 s with a 2 s node timeout). Every request meanwhile waited as long,
            # and the guard in run(), which makes an outage cost requests nothing, stayed shut.
            "retry": Retry(NoBackoff(), retries=1),
        }

    def _probe_clients(self) -> list[Redis]:
        if self._url:
            return [Redis.from_url(self._url, **self._options())]
        return [
            Redis(host=host, port=port, **self._options())
            for host, port in map(_host_port, self._addresses)
        ]

    async def _connect(self) -> RedisClient:
        if not self._url and not self._addresses:
            raise RedisUnavailable("Redis is not configured (set REDIS_ADDRESSES or REDIS_URL)")
        errors = []
        for probe in self._probe_clients():
            try:
                info = await probe.info("cluster")
            except FAILURES as exc:
                errors.append(str(exc))
                continue
            finally:
                await probe.aclose()
            if info.get("cluster_enabled") in (1, "1"):
                self.mode = "cluster"
                return await self._cluster_client(probe)
            if len(self._addresses) > 1:
                raise RedisUnavailable(
                    f"REDIS_ADDRESSES lists {len(self._addresses)} servers but they are not a "
                    "Redis Cluster; give one server in REDIS_URL instead"
                )
            self.mode = "standalone"
            if self._url:
                return Redis.from_url(self._url, **self._options())
            host, port = _host_port(self._addresses[0])
            return Redis(host=host, port=port, **self._options())
        raise RedisUnavailable("no Redis address answered: " + "; ".join(errors))

    async def _cluster_client(self, probe: Redis) -> RedisCluster:
        options = self._options()
        options.pop("health_check_interval")
        if self._url:
            client = RedisCluster.from_url(self._url, **options)
        else:
            nodes = [ClusterNode(*_host_port(a)) for a in self._addresses]
            client = RedisCluster(startup_nodes=nodes, **options)
        await client.initialize()
        return client

    async def client(self) -> RedisClient:
        if self._client is not None:
            return self._client
        # One connects; callers that come meanwhile wait for it (a burst at start-up made as
        # many cluster clients, each discovering the slots, until connecting timed out).
        async with self._connecting:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._down_until:
                raise RedisUnavailable(self.last_error or "Redis is unavailable")
            try:
                self._client = await self._connect()
            except (*FAILURES, RedisUnavailable) as exc:
                self._mark_down(exc)
                raise RedisUnavailable(str(exc)) from exc
            return self._client

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + self._retry_interval
        logger.warning("redis unavailable for %.1fs: %s", self._retry_interval, self.last_error)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def run(self, operation: Callable[[RedisClient], Awaitable[T]]) -> T:
        """Run one operation; any Redis failure becomes RedisUnavailable and opens the guard."""
        if not self.available:
            raise RedisUnavailable(self.last_error or "Redis is unavailable")
        client = await self.client()
        try:
            async with self._in_flight:
                result = await operation(client)
        except FAILURES as exc:
            self._mark_down(exc)
            raise RedisUnavailable(str(exc)) from exc
        self.last_error = None
        return result

    async def check(self) -> dict[str, Any]:
        """Readiness detail: always tries the server (ignores the guard), with the short timeout."""
        self._down_until = 0.0
        try:
            await self.run(lambda c: c.ping())
        except RedisUnavailable as exc:
            return {"status": "degraded", "mode": self.mode, "error": str(exc)}
        return {"status": "ok", "mode": self.mode}

    def subscriber(self, attempt: int = 0) -> Redis:
        """A connection of its own for SUBSCRIBE (no read timeout: it waits for messages).

        In a Redis Cluster any node will do (PUBLISH reaches every node), so each attempt takes
        the next one: the configured addresses, then the nodes the cluster has shown since — a
        lost node is not retried forever, and a promoted replica is found."""
        settings: dict[str, Any] = dict(parse_url(self._url)) if self._url else {}
        options: dict[str, Any] = {
            "socket_connect_timeout": self._timeout,
            "health_check_interval": 30,
        }
        if "path" in settings:  # a Unix socket: one server, nowhere else to go
            return Redis.from_url(self._url or "", **options)
        if self._url:
            candidates = [(settings.get("host", "localhost"), int(settings.get("port", 6379)))]
        else:
            candidates = [_host_port(a) for a in self._addresses]
        if isinstance(self._client, RedisCluster):
            for node in self._client.get_nodes():
                if (node.host, int(node.port)) not in candidates:
                    candidates.append((node.host, int(node.port)))
        host, port = candidates[attempt % len(candidates)]
        pool = ConnectionPool(**settings | options | {"host": host, "port": port})
        return Redis.from_pool(pool)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
