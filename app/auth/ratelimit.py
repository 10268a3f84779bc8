"""Sliding-window rate limits in Redis (two counters per bucket, one hash slot: cluster-safe).

Each bucket counts requests per minute-long window; a request is admitted while the current
window's count plus the previous window's, weighted by how much of it still lies within the
last minute, stays within the limit. Unlike a fixed window this admits no double burst across
a window boundary. Refused requests are not counted, so Retry-After is when a caller that
waits is admitted again.

When Redis is unavailable requests are not limited: the limits protect capacity, and the
login lockout, which protects passwords, is counted in PostgreSQL.

`PrincipalSlots` is the other limit: how many requests of one principal a process handles at
once, counted in memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

WINDOW_SECONDS = 60
_WINDOW_MS = WINDOW_SECONDS * 1000

# KEYS: current window, previous window. ARGV: milliseconds of the previous window still within
# the last minute, limit, window in milliseconds, TTL, how many to take. Integers throughout, so
# a request is never refused by a rounding error. Takes as many of those asked as fit and
# returns {taken (0 when none fits), current count, previous count}.
_TAKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local window = tonumber(ARGV[3])
local fit = math.floor((tonumber(ARGV[2]) * window - previous * tonumber(ARGV[1])) / window)
local taken = math.min(tonumber(ARGV[5]), fit - current)
if taken <= 0 then
  return {0, current, previous}
end
current = redis.call('INCRBY', KEYS[1], taken)
if current == taken then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return {taken, current, previous}
"""

# On the hot path (every authenticated request) a process takes admissions from Redis in
# batches of up to this share of the limit and hands them out itself: most requests cost no
# Redis round trip. What a process took and did not use by the end of a window counts there all
# the same, so a caller spread over several processes may be refused up to a batch per process
# early; never admitted beyond the limit. The other limits (sign-ins, secret checks, joins)
# guard against guessing and take one admission at a time: exact, and rare enough.
BATCH_SHARE = 50
MAX_BATCH = 100


def batch_size(limit: int) -> int:
    return max(1, min(limit // BATCH_SHARE, MAX_BATCH))


class RateLimited(AppError):
    status, code, title = 429, "TooManyRequests", "Too many requests"


@dataclass
class _Taken:
    window: int = -1
    left: int = 0
    refilling: asyncio.Lock = field(default_factory=asyncio.Lock)


# Buckets kept in memory beyond which those of past windows are let go.
MAX_BUCKETS = 10_000


class RateLimiter:
    def __init__(
        self,
        gateway: RedisGateway,
        api_per_minute: int,
        token_per_minute: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._taken: dict[str, _Taken] = {}
        self.api_per_minute = api_per_minute
        self.token_per_minute = token_per_minute

    async def check(self, bucket: str, limit: int, *, batch: int = 1) -> None:
        """Count one request in `bucket`; 429 with Retry-After beyond `limit` per minute.
        `batch`: how many admissions to take from Redis at a time (see BATCH_SHARE)."""
        window = int(self._clock() * 1000) // _WINDOW_MS
        taken = self._taken.get(bucket)
        if taken is None:
            if len(self._taken) >= MAX_BUCKETS:
                self._let_go_before(window)
            taken = self._taken[bucket] = _Taken()
        if taken.window == window and taken.left > 0:
            taken.left -= 1
            return
        async with taken.refilling:  # one trip to Redis per bucket at a time; the others wait
            if taken.window != window or taken.left == 0:
                window, taken.left = await self._take(bucket, limit, batch)
                taken.window = window
            if taken.left == 0:
                return  # Redis out of reach: not limited
            taken.left -= 1

    def _let_go_before(self, window: int) -> None:
        for bucket in [b for b, t in self._taken.items() if t.window < window]:
            del self._taken[bucket]

    async def _take(self, bucket: str, limit: int, batch: int) -> tuple[int, int]:
        """(window, admissions taken for it); 429 when none fits; (window, 0) when Redis is
        out of reach."""
        window, elapsed_ms = divmod(int(self._clock() * 1000), _WINDOW_MS)
        keys = [
            redis_key("ratelimit", bucket, str(w), tag=f"rl:{bucket}") for w in (window, window - 1)
        ]
        args = [_WINDOW_MS - elapsed_ms, limit, _WINDOW_MS, WINDOW_SECONDS * 2, batch]

        async def take(client: RedisClient) -> list[int]:
            return [int(n) for n in await client.eval(_TAKE, 2, *keys, *map(str, args))]

        try:
            taken, current, previous = await self._gateway.run(take)
        except RedisUnavailable:
            return window, 0
        if not taken:
            retry_after = _retry_after(elapsed_ms, current, previous, limit)
            raise RateLimited(
                f"rate limit of {limit} requests per minute exceeded; retry in {retry_after}s",
                headers={"Retry-After": str(retry_after)},
            )
        return window, taken


def _retry_after(elapsed_ms: int, current: int, previous: int, limit: int) -> int:
    """Whole seconds until one more request fits, if none comes meanwhile."""
    if current + 1 <= limit:
        # The previous window's share must shrink: previous * remaining <= (limit - current - 1)
        # * window, where remaining is what of it still lies within the last minute.
        remaining_ms = (limit - current - 1) * _WINDOW_MS // previous
        wait_ms = _WINDOW_MS - remaining_ms - elapsed_ms
    else:
        # This window is full; in the next it is the previous: current * remaining <= (limit - 1)
        # * window.
        remaining_ms = (limit - 1) * _WINDOW_MS // current
        wait_ms = _WINDOW_MS - elapsed_ms + _WINDOW_MS - remaining_ms
    return max(1, math.ceil(wait_ms / 1000))


SLOT_WAIT_SECONDS = 1.0


@dataclass
class _Turns:
    free: asyncio.Semaphore
    users: int = 0  # holders and waiters: the entry goes when the last one leaves


class PrincipalSlots:
    """At most `per_principal` requests of one principal handled at once in this process, so
    one caller cannot hold the whole connection pool. A request holds its slot from the moment
    it is authenticated (for a bearer token, before its first query) until its response
    starts: the request's session has committed by then (and an event stream holds no
    connection while it waits). Past the cap a request waits a second for a slot, then gets
    429."""

    def __init__(self, per_principal: int) -> None:
        self.per_principal = per_principal
        self._turns: dict[str, _Turns] = {}

    async def claim(self, request: Request, principal: str) -> None:
        """Take a slot for `principal` (a token subject), released by
        `ReleasePrincipalSlots` when the response starts."""
        if getattr(request.state, "principal_slot", None) is not None:
            return  # a second authentication of the same request
        turns = self._turns.get(principal)
        if turns is None:
            turns = self._turns[principal] = _Turns(asyncio.Semaphore(self.per_principal))
        turns.users += 1
        try:
            async with asyncio.timeout(SLOT_WAIT_SECONDS):
                await turns.free.acquire()
        except BaseException as exc:
            self._leave(principal, turns)
            if isinstance(exc, TimeoutError):
                raise RateLimited(
                    f"more than {self.per_principal} requests of this caller at once; retry in 1s",
                    headers={"Retry-After": "1"},
                ) from None
            raise
        request.state.principal_slot = principal

    def release(self, scope: Scope) -> None:
        principal = scope.get("state", {}).pop("principal_slot", None)
        if principal is not None:
            turns = self._turns[principal]
            turns.free.release()
            self._leave(principal, turns)

    def _leave(self, principal: str, turns: _Turns) -> None:
        turns.users -= 1
        if turns.users == 0:
            del self._turns[principal]


class ReleasePrincipalSlots:
    """Frees the request's principal slot when its response starts, or when it ends without
    one."""

    def __init__(self, app: ASGIApp, slots: PrincipalSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_releasing(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.slots.release(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            self.slots.release(scope)
