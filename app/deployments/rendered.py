"""ApplicationDeployments' documents encoded once per change, per process.

A deployment's document is a pure function of its row of repository.DOCUMENT_COLUMNS (its
columns and its targets' status, as one JSON text) and its workspace's name, and most reads of
a page find most deployments as the last read left them. Each document is therefore kept as
the JSON bytes it encodes to, under a digest of everything it is built from: a change to any
of it — the rollout, any of its targets — is another key, so what is kept is never stale and
nothing has to be invalidated. Least recently used entries go beyond a byte budget.

Reads and lists send these bytes as they are. It saves the decoding, building and encoding of
each unchanged document (a page of a thousand deployments spent most of its time there); the
read of the rows stays what it was."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import pydantic_core

from app.deployments.status import deployment_document

DEFAULT_BUDGET_BYTES = 16 * 2**20
# What an entry costs beside its bytes: the key (a 16-byte digest) and the ordered dict's node.
_ENTRY_OVERHEAD = 160


def document_key(row: Any, workspace: str) -> bytes:
    """A digest of everything `deployment_document(row, workspace)` reads."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(workspace.encode())
    digest.update(b"\0")
    digest.update(repr(tuple(row)).encode())
    return digest.digest()


class RenderedDocuments:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._size = 0
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def encoded(self, row: Any, workspace: str) -> bytes:
        """The deployment's document as JSON, as `pydantic_core.to_json` writes it."""
        key = document_key(row, workspace)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        encoded = pydantic_core.to_json(deployment_document(row, workspace))
        self._entries[key] = encoded
        self._size += len(encoded) + _ENTRY_OVERHEAD
        while self._size > self._budget and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped) + _ENTRY_OVERHEAD
        return encoded

    def __len__(self) -> int:
        return len(self._entries)
