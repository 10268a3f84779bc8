"""Wake-ups for the controller: PostgreSQL LISTEN on the dispatch channel.

NOTIFY is sent inside the transaction that writes the work and delivered only when it commits,
so a wake-up never arrives before its rows are visible. A lost connection is re-made with
backoff; meanwhile the controller's periodic sweep still finds the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


class Wakeups:
    def __init__(self, engine: AsyncEngine, channel: str, event: asyncio.Event) -> None:
        self._engine = engine
        self._channel = channel
        self._event = event
        self.listening = asyncio.Event()

    def _notified(self, *_: Any) -> None:
        self._event.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._listen(stop)
                backoff = 1.0
            except Exception as exc:
                logger.warning("cannot listen for dispatch wake-ups: %s", exc)
            self.listening.clear()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Listen until `stop` or until the connection is lost."""
        lost = asyncio.Event()
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(self._channel, self._notified)
            driver.add_termination_listener(lambda *_: lost.set())
            self.listening.set()
            self._event.set()  # work may have arrived while nobody listened
            waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if not lost.is_set():
                with contextlib.suppress(Exception):
                    await driver.remove_listener(self._channel, self._notified)
