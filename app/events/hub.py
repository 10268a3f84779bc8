"""One Redis subscription per API process, fanned out to the watchers in it.

Watchers never queue events in memory: a wake-up only tells them to read what is new from
PostgreSQL, at their own pace. Without Redis they still see everything, by polling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from app.events.service import CHANNEL
from app.redis import RedisGateway

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


class EventHub:
    def __init__(self, redis: RedisGateway) -> None:
        self._redis = redis
        self._waiters: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self.connected = False

    @contextlib.contextmanager
    def watch(self, workspace_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever something new happens in the workspace."""
        wake = asyncio.Event()
        self._waiters[workspace_id].add(wake)
        try:
            yield wake
        finally:
            self._waiters[workspace_id].discard(wake)
            if not self._waiters[workspace_id]:
                del self._waiters[workspace_id]

    def _wake(self, workspace_id: int) -> None:
        for wake in self._waiters.get(workspace_id, ()):
            wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        attempt = 0  # which node to subscribe on: the next one after each failure
        while not stop.is_set():
            try:
                await self._listen_until(stop, attempt)
                backoff = 1.0
            except Exception as exc:
                logger.warning("event subscription lost: %s", exc)
                attempt += 1
            self.connected = False
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def _listen_until(self, stop: asyncio.Event, attempt: int) -> None:
        """Listen until the subscription fails or `stop` is set; a stop ends it at once (the
        listener is cancelled, not left to notice between reads), so a shutdown waits for
        nothing here."""
        listening = asyncio.create_task(self._listen(attempt))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            listening.cancel()
            await asyncio.wait({listening})  # its `finally` closes the subscription
        if not listening.cancelled():
            listening.result()  # raises what the subscription failed with

    async def _listen(self, attempt: int) -> None:
        client = self._redis.subscriber(attempt)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            self.connected = True
            for workspace_id in list(self._waiters):  # anything may have happened meanwhile
                self._wake(workspace_id)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    self._wake(int(message["data"]))
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            with contextlib.suppress(Exception):
                await client.aclose()
