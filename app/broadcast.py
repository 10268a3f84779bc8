"""One Redis subscription per process, for every channel a part of the process listens on.

Pub/sub messages are fire and forget: one published while a process is not subscribed never
reaches it. So each listener is told when the subscription (re)starts and when it is lost, and
decides what that means for it (event watchers read again; caches drop what they hold and stop
trusting themselves until the subscription is back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.redis import RedisClient, RedisGateway, RedisUnavailable

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
SUBSCRIBE_TIMEOUT_SECONDS = 10.0


# The process's own Broadcasts, by the gateway it subscribes through: what this process
# publishes reaches its own listeners at once, not after the round trip through Redis (a change
# made here must be seen by the next request here).
_LOCAL: weakref.WeakKeyDictionary[RedisGateway, Broadcasts] = weakref.WeakKeyDictionary()


async def publish(redis: RedisGateway, channel: str, message: str) -> None:
    """To this process's listeners at once, and to every process's through Redis (best
    effort: when Redis is out of reach, no process is subscribed either, and each listener was
    told so by `on_subscribed(False)` and relies on no message meanwhile)."""
    local = _LOCAL.get(redis)
    if local is not None:
        local.deliver(channel, message)

    async def send(client: RedisClient) -> Any:
        return await client.publish(channel, message)

    try:
        await redis.run(send)
    except RedisUnavailable as exc:
        logger.warning("broadcast on %s not sent: %s", channel, exc)


@dataclass(frozen=True)
class Listener:
    on_message: Callable[[str], None]
    # Called with True when the subscription starts, False when it is lost or ends.
    on_subscribed: Callable[[bool], None] = lambda _: None


class Broadcasts:
    def __init__(self, redis: RedisGateway) -> None:
        self._redis = redis
        self._listeners: dict[str, list[Listener]] = {}
        self.connected = False
        _LOCAL[redis] = self

    def listen(self, channel: str, listener: Listener) -> None:
        """Register before `run` starts (the channels are subscribed to once)."""
        self._listeners.setdefault(channel, []).append(listener)

    async def run(self, stop: asyncio.Event) -> None:
        if not self._listeners:
            await stop.wait()
            return
        backoff = 1.0
        attempt = 0  # which node to subscribe on: the next one after each failure
        while not stop.is_set():
            try:
                await self._listen_until(stop, attempt)
                backoff = 1.0
            except Exception as exc:
                logger.warning("broadcast subscription lost: %s", exc)
                attempt += 1
            self._set_connected(False)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    def deliver(self, channel: str, message: str) -> None:
        for listener in self._listeners.get(channel, ()):
            try:
                listener.on_message(message)
            except Exception:
                logger.exception("broadcast listener on %s failed", channel)

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.on_subscribed(connected)

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
            await pubsub.subscribe(*self._listeners)
            # Subscribed once Redis confirms each channel: every message published after that
            # reaches us, and only then may a listener trust that it hears every change.
            unconfirmed = len(self._listeners)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                while unconfirmed:
                    message = await pubsub.get_message(timeout=1.0)
                    unconfirmed -= message is not None and message["type"] == "subscribe"
            self._set_connected(True)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                channel, data = message["channel"], message["data"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if isinstance(data, bytes):
                    data = data.decode(errors="replace")
                self.deliver(str(channel), str(data))
        finally:
            self._set_connected(False)
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
            with contextlib.suppress(Exception):
                await client.aclose()
