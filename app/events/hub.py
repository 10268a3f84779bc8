"""The event watchers of one API process, woken through its broadcast subscription.

Watchers never queue events in memory: a wake-up only tells them to read what is new from
PostgreSQL, at their own pace. Without Redis they still see everything, by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from app.broadcast import Broadcasts, Listener
from app.events.service import CHANNEL


class EventHub:
    def __init__(self, broadcasts: Broadcasts) -> None:
        self._broadcasts = broadcasts
        self._waiters: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        broadcasts.listen(CHANNEL, Listener(self._on_message, self._on_subscribed))

    @property
    def connected(self) -> bool:
        """Are wake-ups arriving? When not, watchers poll."""
        return self._broadcasts.connected

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

    def _on_message(self, data: str) -> None:
        with contextlib.suppress(ValueError):
            self._wake(int(data))

    def _on_subscribed(self, subscribed: bool) -> None:
        if subscribed:  # anything may have happened while not subscribed
            for workspace_id in list(self._waiters):
                self._wake(workspace_id)
