"""Where the agent keeps its credential: in a pod, a Secret of its own namespace (read and
written through the local API server; the chart's Role allows that Secret); elsewhere,
a file written atomically with mode 0600.

Kept beside the credential: when it was issued and after how long to replace it, the cluster it
serves, and the SHA-256 of the join token it was obtained with (a token that differs from that
one is new, and may be used to join again once the credential is revoked).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from app.agent.kubeapi import LocalApiClient

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MANAGED_BY = "edge-agent"


class StoreError(Exception):
    """The credential could not be read or kept (the message says where and why)."""


@dataclass(frozen=True)
class StoredCredential:
    credential: str = field(repr=False)
    cluster: str
    issued_at: datetime
    rotate_after_seconds: int
    join_token_digest: str

    def seconds_until_rotation(self, now: datetime | None = None) -> float:
        elapsed = ((now or datetime.now(UTC)) - self.issued_at).total_seconds()
        return self.rotate_after_seconds - elapsed

    def rotation_due(self, now: datetime | None = None) -> bool:
        return self.seconds_until_rotation(now) <= 0

    def fields(self) -> dict[str, str]:
        """The stored form: the Secret's keys, the file's JSON members."""
        return {
            "credential": self.credential,
            "issuedAt": self.issued_at.astimezone(UTC).isoformat(timespec="seconds"),
            "rotateAfterSeconds": str(self.rotate_after_seconds),
            "cluster": self.cluster,
            "joinTokenDigest": self.join_token_digest,
        }

    @classmethod
    def of(cls, stored: dict[str, Any]) -> StoredCredential | None:
        """Read back leniently: a field that is missing or unreadable makes the credential due
        for rotation (which rewrites it), rather than unusable."""
        credential = stored.get("credential")
        if not isinstance(credential, str) or not credential.strip():
            return None
        try:
            issued_at = datetime.fromisoformat(str(stored.get("issuedAt")))
            if issued_at.tzinfo is None:
                issued_at = issued_at.replace(tzinfo=UTC)
        except ValueError:
            issued_at = EPOCH
        try:
            rotate_after = int(str(stored.get("rotateAfterSeconds")))
        except ValueError:
            rotate_after = 0
        return cls(
            credential=credential.strip(),
            cluster=str(stored.get("cluster") or ""),
            issued_at=issued_at,
            rotate_after_seconds=rotate_after,
            join_token_digest=str(stored.get("joinTokenDigest") or ""),
        )


class CredentialStore(Protocol):
    description: str

    async def load(self) -> StoredCredential | None: ...

    async def save(self, credential: StoredCredential) -> None: ...


class FileCredentialStore:
    """A JSON file, replaced atomically (written beside it, then renamed), mode 0600 in a
    folder of mode 0700 when the agent creates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"

    async def load(self) -> StoredCredential | None:
        return await asyncio.to_thread(self._load)

    async def save(self, credential: StoredCredential) -> None:
        await asyncio.to_thread(self._save, credential)

    def _load(self) -> StoredCredential | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.path} cannot be read: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            # Not joined again on its own: the join token was most likely used already.
            raise StoreError(f"{self.path} is not a JSON object; remove it to join again")
        return StoredCredential.of(document)

    def _save(self, credential: StoredCredential) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".credential-", dir=folder)
        except OSError as exc:
            raise StoreError(f"{self.path} cannot be written: {exc.strerror}") from None
        try:
            with os.fdopen(descriptor, "w") as file:  # mkstemp: mode 0600
                json.dump(credential.fields(), file, indent=2)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StoreError(f"{self.path} cannot be written: {exc.strerror}") from None
        # The rename itself survives a crash only once the folder is on disk.
        with contextlib.suppress(OSError):
            folder_descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(folder_descriptor)
            finally:
                os.close(folder_descriptor)


class SecretCredentialStore:
    """A Secret of the agent's namespace, through the local API server: read (get), changed
    with a merge patch (patch), created when absent (create; RBAC cannot restrict create to
    one name, the chart's Role grants it on the namespace's Secrets)."""

    def __init__(self, api: LocalApiClient, namespace: str, name: str) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.description = f"Secret {namespace}/{name}"
        self._path = f"/api/v1/namespaces/{namespace}/secrets/{name}"

    async def load(self) -> StoredCredential | None:
        status, document = await self._call("read", "GET", self._path)
        if status == 404:
            return None
        if status != 200 or not isinstance(document, dict):
            raise StoreError(f"{self.description} cannot be read: {_said(status, document)}")
        decoded = {}
        for key, value in (document.get("data") or {}).items():
            try:
                decoded[key] = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, ValueError):
                continue  # not one of the agent's keys
        return StoredCredential.of(decoded)

    async def save(self, credential: StoredCredential) -> None:
        secret = self._secret(credential)
        for _ in range(2):  # created by someone else between our patch and our create: patched
            status, answer = await self._call(
                "written",
                "PATCH",
                self._path,
                {"metadata": {"labels": secret["metadata"]["labels"]}, "data": secret["data"]},
                content_type="application/merge-patch+json",
            )
            if status != 404:
                break
            status, answer = await self._call(
                "created", "POST", f"/api/v1/namespaces/{self.namespace}/secrets", secret
            )
            if status != 409:
                break
        if status not in (200, 201):
            raise StoreError(f"{self.description} cannot be written: {_said(status, answer)}")

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        try:
            return await self._api.call(method, path, body, content_type=content_type)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StoreError(f"{self.description} cannot be {what}: {type(exc).__name__}") from exc

    def _secret(self, credential: StoredCredential) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            },
            "data": {
                key: base64.b64encode(value.encode()).decode()
                for key, value in credential.fields().items()
            },
        }


def _said(status: int, document: Any) -> str:
    """The API server's answer in a line: its status and its Status message."""
    message = document.get("message") if isinstance(document, dict) else None
    text = f"HTTP {status}"
    if isinstance(message, str) and message:
        text += ": " + " ".join(message.split())[:200]
    if status == 403:
        text += " (does the agent's Role allow get, create and patch on this Secret?)"
    return text
