"""Password and client-secret hashing with argon2id (OWASP's first choice).

argon2 is expensive on purpose: one check here takes about 0.2 s of CPU, on threads of its own,
and 64 MiB. So every hash and check of the process takes one of a few slots, one per two CPUs
(each check keeps more than one busy); a caller that finds none free within a second is refused
(429, Retry-After) instead of queueing, so a flood of guesses can neither pile up nor starve the
requests of those signed in. (During a flood of bad Basic credentials the admin's slowest answer
took 0.36-0.52 s, against 0.54-0.61 s with a slot per CPU, on two.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.auth.ratelimit import RateLimited

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Verifying against this when a user does not exist keeps both paths equally slow, so response
# times do not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap stops CPU abuse

HASHING_SLOTS = max(1, (os.cpu_count() or 1) // 2)
SLOT_WAIT_SECONDS = 1.0
# One per process, which serves from one event loop (asyncio binds a semaphore to the loop
# that first waits on it).
_slots = asyncio.Semaphore(HASHING_SLOTS)
_holding_slot: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "holding_hashing_slot", default=False
)


@contextlib.asynccontextmanager
async def hashing_slot() -> AsyncIterator[None]:
    """Hold one of the process's hashing slots; the hashes and checks within use it. A caller
    that reads the database before a check takes the slot first, so that it waits for one
    holding no connection."""
    if _holding_slot.get():
        yield
        return
    try:
        async with asyncio.timeout(SLOT_WAIT_SECONDS):
            await _slots.acquire()
    except TimeoutError:
        raise RateLimited(
            "too many password checks at once; retry in 1s", headers={"Retry-After": "1"}
        ) from None
    holding = _holding_slot.set(True)
    try:
        yield
    finally:
        _holding_slot.reset(holding)
        _slots.release()


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


async def hash_secret_async(secret: str) -> str:
    async with hashing_slot():
        return await asyncio.to_thread(hash_secret, secret)


async def verify_secret_async(stored_hash: str | None, secret: str) -> bool:
    """Check `secret` in a hashing slot, off the event loop."""
    async with hashing_slot():
        return await asyncio.to_thread(verify_secret, stored_hash, secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """A password for a person to type once and then change: 16 URL-safe characters (96
    bits)."""
    return secrets.token_urlsafe(12)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


class VerifiedSecrets:
    """Client secrets verified lately, each with the stored hash it matched, so a client that
    sends the same secret again and again (Helm polling its repository) pays argon2 once per
    `ttl`. An entry stands only while the account's stored hash is still the one it matched:
    callers re-read the account each time, so a new secret ends it at once (and a disabled or
    deleted account is refused by that same read). Keys are keyed digests: the secrets
    themselves are not kept."""

    def __init__(self, ttl: float, capacity: int) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[str, float]] = {}

    def _digest(self, client_id: str, secret: str) -> bytes:
        # Length-prefixed, so no other (client id, secret) pair is the same bytes.
        message = f"{len(client_id)}:{client_id}{secret}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def matched_hash(self, client_id: str, secret: str) -> str | None:
        """The stored hash `secret` matched within the last `ttl`, if it did."""
        digest = self._digest(client_id, secret)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._entries[digest]
            return None
        return entry[0]

    def remember(self, client_id: str, secret: str, stored_hash: str) -> None:
        if len(self._entries) >= self._capacity:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            while len(self._entries) >= self._capacity:  # all live: the oldest goes
                del self._entries[next(iter(self._entries))]
        self._entries[self._digest(client_id, secret)] = (stored_hash, time.monotonic() + self._ttl)

    def forget(self, client_id: str, secret: str) -> None:
        self._entries.pop(self._digest(client_id, secret), None)
