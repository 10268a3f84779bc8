"""Who a caller is and what they may do in a workspace, kept in process: a bearer token's
principal (per login session), workspaces by name, and members' roles. A request resolves them
once instead of reading PostgreSQL and Redis on every call.

Correctness rests on announcements: every change that can alter one of them (a session
revoked; a user or service account changed, disabled or deleted; a workspace changed or
deleted; a member added, changed or removed) is announced on ACCESS_CHANNEL after its commit,
and every process drops what it holds of it. While this process is not subscribed it cannot
hear them, so it keeps nothing then. An entry also ages out after MAX_AGE_SECONDS, a bound for
whatever changed without an announcement (an operator's SQL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from app.broadcast import Broadcasts, Listener, publish
from app.db.session import after_commit
from app.redis import RedisGateway
from app.redis import key as redis_key

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.identity import Principal
    from app.models.workspaces import Workspace

ACCESS_CHANNEL = redis_key("access", tag="access")
MAX_AGE_SECONDS = 60.0
CAPACITY = 10_000  # of each kind of entry


def session_changed(session_id: str) -> str:
    return f"session:{session_id}"


def subject_changed(subject: str) -> str:
    return f"subject:{subject}"


def workspace_changed(name: str) -> str:
    """The workspace itself, or any of its members."""
    return f"workspace:{name}"


EVERYONE_CHANGED = "everyone"

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class _Entry(Generic[V]):
    stored_at: float
    value: V
    about: str  # what announcement drops it: a subject, or a workspace's name


class _Entries(Generic[K, V]):
    """At most CAPACITY entries, the oldest let go first, none older than MAX_AGE_SECONDS."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    def get(self, key: K) -> _Entry[V] | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.stored_at > MAX_AGE_SECONDS:
            del self._entries[key]
            return None
        return entry

    def put(self, key: K, value: V, about: str) -> None:
        self._entries[key] = _Entry(self._clock(), value, about)
        self._entries.move_to_end(key)
        while len(self._entries) > CAPACITY:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def drop_about(self, about: str) -> None:
        for key in [k for k, e in self._entries.items() if e.about == about]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()


class AccessCache:
    def __init__(self, broadcasts: Broadcasts, clock: Callable[[], float] = time.monotonic) -> None:
        self._broadcasts = broadcasts
        self._principals: _Entries[str, Principal] = _Entries(clock)  # by login session
        self._workspaces: _Entries[str, Workspace] = _Entries(clock)  # by name
        # (workspace id, user id) -> role, None for "not a member"
        self._roles: _Entries[tuple[int, int], str | None] = _Entries(clock)
        # Bumped by every announcement: what was loaded before one is not kept after it.
        self.generation = 0
        broadcasts.listen(ACCESS_CHANNEL, Listener(self._on_message, self._on_subscribed))

    def principal(self, session_id: str, subject: str) -> Principal | None:
        entry = self._principals.get(session_id)
        return entry.value if entry is not None and entry.about == subject else None

    def put_principal(
        self, session_id: str, principal: Principal, subject: str, generation: int
    ) -> None:
        """Keep `principal`, loaded when `generation` was current, unless something was
        announced since (it may have been loaded before that change committed)."""
        if self._may_keep(generation):
            self._principals.put(session_id, principal, subject)

    def workspace(self, name: str) -> Workspace | None:
        """A workspace row as loaded (detached: read it, never change or add it)."""
        entry = self._workspaces.get(name)
        return entry.value if entry is not None else None

    def put_workspace(self, workspace: Workspace, generation: int) -> None:
        if self._may_keep(generation):
            self._workspaces.put(workspace.name, workspace, workspace.name)

    def member_role(self, workspace: Workspace, user_id: int) -> tuple[bool, str | None]:
        """(known, role): role None for a user who is not a member."""
        entry = self._roles.get((workspace.id, user_id))
        return (False, None) if entry is None else (True, entry.value)

    def put_member_role(
        self, workspace: Workspace, user_id: int, role: str | None, generation: int
    ) -> None:
        if self._may_keep(generation):
            self._roles.put((workspace.id, user_id), role, workspace.name)

    def _may_keep(self, generation: int) -> bool:
        return generation == self.generation and self._broadcasts.connected

    def _on_message(self, message: str) -> None:
        self.generation += 1
        kind, _, value = message.partition(":")
        if kind == "session":
            self._principals.drop(value)
        elif kind == "subject":
            self._principals.drop_about(value)
        elif kind == "workspace":
            self._workspaces.drop(value)
            self._roles.drop_about(value)
        else:  # EVERYONE_CHANGED, or a message of a newer version: drop everything
            self._clear()

    def _on_subscribed(self, subscribed: bool) -> None:
        # Whatever was announced while not subscribed is unknown: start again.
        self.generation += 1
        self._clear()

    def _clear(self) -> None:
        self._principals.clear()
        self._workspaces.clear()
        self._roles.clear()


def announce_after_commit(session: AsyncSession, redis: RedisGateway, message: str) -> None:
    """Tell every process, once `session` has committed, that what `message` names changed."""

    async def announce() -> None:
        await publish(redis, ACCESS_CHANNEL, message)

    after_commit(session, announce)
