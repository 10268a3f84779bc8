"""Cache-aside for single objects, coherent across API replicas and in Redis Cluster.

Entries are stored as `<resourceVersion>:<json>` and only ever replaced by a copy with a
resourceVersion at least as new (one Lua script on one key, so it is atomic in a cluster too).
Writers put the committed object after commit and deletes leave a short tombstone; a reader
that loaded an older row from PostgreSQL can therefore never overwrite a newer entry, and a
read after an update never returns the old object. Redis trouble only means a cache miss.

If a put or tombstone cannot reach Redis (an outage, or a partition between this replica and
Redis), it is kept and written before this process uses the cache again; until then other
replicas may serve the older copy, for at most the entry TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.redis import RedisClient, RedisGateway, RedisUnavailable

logger = logging.getLogger(__name__)

_SET_IF_NOT_OLDER = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  local version = sep and tonumber(string.sub(current, 1, sep - 1))
  if version and version > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
"""

TOMBSTONE = ""

Loaded = tuple[int, dict[str, Any]]


class ObjectCache:
    def __init__(self, gateway: RedisGateway, ttl_seconds: float = 60.0) -> None:
        self._gateway = gateway
        self._ttl_ms = int(ttl_seconds * 1000)
        # Stores that failed, newest per key: (version, payload, ttl_ms).
        self._unsent: dict[str, tuple[int, str, int]] = {}
        self._flushing = asyncio.Lock()

    @property
    def gateway(self) -> RedisGateway:
        return self._gateway

    async def _send(self, key: str, version: int, payload: str, ttl_ms: int) -> None:
        async def store(client: RedisClient) -> Any:
            return await client.eval(_SET_IF_NOT_OLDER, 1, key, str(version), payload, ttl_ms)

        await self._gateway.run(store)

    async def _flush_unsent(self) -> None:
        """Raises RedisUnavailable while Redis is still out of reach. One flusher at a time:
        concurrent callers each sending the whole backlog made 50 puts cost 2,000 EVALs."""
        if not self._unsent:
            return
        async with self._flushing:
            while self._unsent:
                key, (version, payload, ttl_ms) = next(iter(self._unsent.items()))
                await self._send(key, version, payload, ttl_ms)
                if self._unsent.get(key) == (version, payload, ttl_ms):
                    del self._unsent[key]

    async def _store(self, key: str, version: int, payload: str, ttl_ms: int) -> None:
        try:
            await self._flush_unsent()  # what failed before goes first
            await self._send(key, version, payload, ttl_ms)
        except RedisUnavailable:
            self._defer(key, version, payload, ttl_ms)
            logger.debug("cache store for %s deferred: redis unavailable", key)

    def _defer(self, key: str, version: int, payload: str, ttl_ms: int) -> None:
        previous = self._unsent.get(key)
        if previous is None or previous[0] <= version:
            self._unsent[key] = (version, payload, ttl_ms)

    async def put(self, key: str, version: int, obj: dict[str, Any]) -> None:
        await self._store(key, version, json.dumps(obj, separators=(",", ":")), self._ttl_ms)

    async def put_many(self, entries: list[tuple[str, int, dict[str, Any]]]) -> None:
        """`put` for many objects in one round trip (a pipeline: in a cluster, one per node),
        for writers of many rows at once (the agents' heartbeats)."""
        if not entries:
            return
        ttl_ms = self._ttl_ms
        stores = [
            (key, version, json.dumps(obj, separators=(",", ":"))) for key, version, obj in entries
        ]

        async def store(client: RedisClient) -> Any:
            pipeline = client.pipeline(transaction=False)
            for key, version, payload in stores:
                pipeline.eval(_SET_IF_NOT_OLDER, 1, key, str(version), payload, ttl_ms)
            return await pipeline.execute()

        try:
            await self._flush_unsent()
            await self._gateway.run(store)
        except RedisUnavailable:
            for key, version, payload in stores:
                self._defer(key, version, payload, ttl_ms)
            logger.debug("cache stores of %d objects deferred: redis unavailable", len(stores))

    async def forget(self, key: str, version: int) -> None:
        """Mark `key` deleted at `version` so no older copy can be cached after it."""
        await self._store(key, version, TOMBSTONE, min(self._ttl_ms, 60_000))

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            await self._flush_unsent()
            raw = await self._gateway.run(lambda client: client.get(key))
        except RedisUnavailable:
            return None
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        _, _, payload = text.partition(":")
        if payload == TOMBSTONE:
            return None
        cached: dict[str, Any] = json.loads(payload)
        return cached

    async def get_or_load(
        self, key: str, load: Callable[[], Awaitable[Loaded | None]]
    ) -> dict[str, Any] | None:
        cached = await self.get(key)
        if cached is not None:
            return cached
        loaded = await load()
        if loaded is None:
            return None
        version, obj = loaded
        await self.put(key, version, obj)
        return obj
