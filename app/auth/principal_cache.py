"""Principals kept in process, per login session: a bearer token is resolved once (is its
session revoked? who is its subject, with which role?), not on every request.

Correctness rests on broadcasts: every change that can alter a principal (a session revoked; a
user or service account changed, disabled or deleted; a workspace, with its accounts, deleted)
is announced on PRINCIPALS_CHANNEL after its commit, and every process drops what it holds of
it. While this process is not subscribed it cannot hear them, so it keeps nothing then. An
entry also ages out after MAX_AGE_SECONDS, a bound for whatever changed without an
announcement (an operator's SQL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.broadcast import Broadcasts, Listener, publish
from app.db.session import after_commit
from app.redis import RedisGateway
from app.redis import key as redis_key

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.principal import Principal

PRINCIPALS_CHANNEL = redis_key("principals", tag="principals")
MAX_AGE_SECONDS = 60.0
CAPACITY = 10_000


def session_changed(session_id: str) -> str:
    return f"session:{session_id}"


def subject_changed(subject: str) -> str:
    return f"subject:{subject}"


EVERYONE_CHANGED = "everyone"


@dataclass(frozen=True)
class _Entry:
    stored_at: float
    subject: str
    principal: Principal


class PrincipalCache:
    def __init__(self, broadcasts: Broadcasts, clock: Callable[[], float] = time.monotonic) -> None:
        self._broadcasts = broadcasts
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # by session id, oldest first
        # Bumped by every announcement: a principal loaded before one is not kept after it.
        self.generation = 0
        broadcasts.listen(PRINCIPALS_CHANNEL, Listener(self._on_message, self._on_subscribed))

    def get(self, session_id: str, subject: str) -> Principal | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if entry.subject != subject or self._clock() - entry.stored_at > MAX_AGE_SECONDS:
            del self._entries[session_id]
            return None
        return entry.principal

    def put(self, session_id: str, principal: Principal, subject: str, generation: int) -> None:
        """Keep `principal`, loaded when `generation` was current, unless something was
        announced since (it may have been loaded before that change committed)."""
        if generation != self.generation or not self._broadcasts.connected:
            return
        self._entries[session_id] = _Entry(self._clock(), subject, principal)
        self._entries.move_to_end(session_id)
        while len(self._entries) > CAPACITY:
            self._entries.popitem(last=False)

    def _on_message(self, message: str) -> None:
        self.generation += 1
        kind, _, value = message.partition(":")
        if kind == "session":
            self._entries.pop(value, None)
        elif kind == "subject":
            for session_id in [s for s, e in self._entries.items() if e.subject == value]:
                del self._entries[session_id]
        else:  # EVERYONE_CHANGED, or a message of a newer version: drop everything
            self._entries.clear()

    def _on_subscribed(self, subscribed: bool) -> None:
        # Whatever was announced while not subscribed is unknown: start again.
        self.generation += 1
        self._entries.clear()


def announce_after_commit(session: AsyncSession, redis: RedisGateway, message: str) -> None:
    """Tell every process, once `session` has committed, that a principal changed."""

    async def announce() -> None:
        await publish(redis, PRINCIPALS_CHANNEL, message)

    after_commit(session, announce)
