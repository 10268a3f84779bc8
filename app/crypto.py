"""Secrets at rest: AES-256-GCM, with the key id stored beside each ciphertext so keys rotate.

`ENCRYPTION_KEY` is the current key; `ENCRYPTION_KEYS_PREVIOUS` (comma-separated) still decrypt
what was written before a rotation, until `edge-platform rotate-key` has re-encrypted it.
Each ciphertext is bound to the object it belongs to (associated data), so a ciphertext copied
onto another row does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import ConfigError, Settings

NONCE_BYTES = 12


class DecryptionError(Exception):
    """A ciphertext cannot be decrypted with any known key (wrong key, tampered, or moved)."""


def _derive(secret: str) -> bytes:
    # Operators give a passphrase-like string; a fixed-purpose hash turns it into 32 key bytes.
    return hashlib.sha256(b"edge-platform/secrets/v1\x00" + secret.encode()).digest()


def key_id(secret: str) -> str:
    return hashlib.sha256(b"edge-platform/key-id\x00" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    key_id: str
    ciphertext: bytes  # nonce + AES-GCM output (ciphertext and tag)


class SecretBox:
    def __init__(self, current: str, previous: list[str] | tuple[str, ...] = ()) -> None:
        self.current_id = key_id(current)
        self._keys = {key_id(k): AESGCM(_derive(k)) for k in (*previous, current)}
        self._mac_keys = {
            key_id(k): hashlib.sha256(b"edge-platform/mac/v1\x00" + k.encode()).digest()
            for k in (*previous, current)
        }

    def seal(self, plaintext: bytes, bound_to: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_id].encrypt(nonce, plaintext, bound_to.encode())
        return Sealed(self.current_id, nonce + sealed)

    def open(self, sealed: Sealed, bound_to: str) -> bytes:
        cipher = self._keys.get(sealed.key_id)
        if cipher is None:
            raise DecryptionError(f"no key with id {sealed.key_id} is configured")
        nonce, body = sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, bound_to.encode())
        except InvalidTag:
            raise DecryptionError("ciphertext does not decrypt (tampered or moved)") from None

    def token_for(self, purpose: str) -> str:
        """A secret derived from the current key for `purpose` (nothing to store): whoever
        holds it can prove it was given for that purpose; it changes when the key rotates."""
        digest = hmac.new(self._mac_keys[self.current_id], purpose.encode(), "sha256")
        return f"{self.current_id}.{digest.hexdigest()}"

    def verify_token(self, purpose: str, token: str) -> bool:
        """True for a token of `purpose` made with the current or a previous key."""
        found_id, _, _ = token.partition(".")
        key = self._mac_keys.get(found_id)
        if key is None:
            return False
        digest = hmac.new(key, purpose.encode(), "sha256").hexdigest()
        return hmac.compare_digest(f"{found_id}.{digest}", token)

    def needs_rotation(self, sealed: Sealed) -> bool:
        return sealed.key_id != self.current_id


def secret_box(settings: Settings) -> SecretBox:
    if not settings.encryption_key:
        raise ConfigError("ENCRYPTION_KEY must be set (secrets such as kubeconfigs are encrypted)")
    return SecretBox(settings.encryption_key, settings.encryption_keys_previous)
