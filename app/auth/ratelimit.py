"""Fixed-window rate limits in Redis (one key per bucket and window: cluster-safe).

When Redis is unavailable requests are not limited: the limits protect capacity, and the
login lockout, which protects passwords, is counted in PostgreSQL.
"""

from __future__ import annotations

import time

from app.errors import AppError
from app.redis import RedisClient, RedisGateway, RedisUnavailable
from app.redis import key as redis_key

WINDOW_SECONDS = 60

_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RateLimited(AppError):
    status, code, title = 429, "TooManyRequests", "Too many requests"


class RateLimiter:
    def __init__(self, gateway: RedisGateway, api_per_minute: int, token_per_minute: int) -> None:
        self._gateway = gateway
        self.api_per_minute = api_per_minute
        self.token_per_minute = token_per_minute

    async def check(self, bucket: str, limit: int) -> None:
        """Count one request in `bucket`; 429 with Retry-After beyond `limit` per minute."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        counter = redis_key("ratelimit", bucket, str(window), tag=f"rl:{bucket}")

        async def increment(client: RedisClient) -> int:
            return int(await client.eval(_INCREMENT, 1, counter, str(WINDOW_SECONDS * 2)))

        try:
            count = await self._gateway.run(increment)
        except RedisUnavailable:
            return
        if count > limit:
            retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
            raise RateLimited(
                f"rate limit of {limit} requests per minute exceeded; retry in {retry_after}s",
                headers={"Retry-After": str(retry_after)},
            )
