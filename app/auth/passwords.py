"""Password and client-secret hashing with argon2id (OWASP's first choice)."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Verifying against this when a user does not exist keeps both paths equally slow, so response
# times do not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a cap stops CPU abuse


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


async def hash_secret_async(secret: str) -> str:
    return await asyncio.to_thread(hash_secret, secret)


async def verify_secret_async(stored_hash: str | None, secret: str) -> bool:
    """argon2 takes tens of milliseconds of CPU: run it off the event loop."""
    return await asyncio.to_thread(verify_secret, stored_hash, secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)
