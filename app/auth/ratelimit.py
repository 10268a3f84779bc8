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
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

WINDOW_SECONDS = 60
_WINDOW_MS = WINDOW_SECONDS * 1000

# KEYS: current window, previous window. ARGV: milliseconds of the previous window still within
# the last minute, limit, window in milliseconds, TTL. Integers throughout, so a request is
# never refused by a rounding error. Returns {admitted (0 or 1), current count, previous count}.
_ADMIT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local window = tonumber(ARGV[3])
if previous * tonumber(ARGV[1]) + (current + 1) * window > tonumber(ARGV[2]) * window then
  return {0, current, previous}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return {1, current, previous}
"""


class RateLimited(AppError):
    status, code, title = 429, "TooManyRequests", "Too many requests"


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
        self.api_per_minute = api_per_minute
        self.token_per_minute = token_per_minute

    async def check(self, bucket: str, limit: int) -> None:
        """Count one request in `bucket`; 429 with Retry-After beyond `limit` per minute."""
        window, elapsed_ms = divmod(int(self._clock() * 1000), _WINDOW_MS)
        keys = [
            redis_key("ratelimit", bucket, str(w), tag=f"rl:{bucket}") for w in (window, window - 1)
        ]
        args = [_WINDOW_MS - elapsed_ms, limit, _WINDOW_MS, WINDOW_SECONDS * 2]

        async def admit(client: RedisClient) -> list[int]:
            return [int(n) for n in await client.eval(_ADMIT, 2, *keys, *map(str, args))]

        try:
            admitted, current, previous = await self._gateway.run(admit)
        except RedisUnavailable:
            return
        if not admitted:
            retry_after = _retry_after(elapsed_ms, current, previous, limit)
            raise RateLimited(
                f"rate limit of {limit} requests per minute exceeded; retry in {retry_after}s",
                headers={"Retry-After": str(retry_after)},
            )


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
