"""ApplicationDeployments' documents encoded once per change, per process.

A deployment's document is a pure function of its row of repository.DOCUMENT_COLUMNS (its
columns and its targets' status, as one JSON text) and its workspace's name, and most reads of
a page find most deployments as the last read left them. Each document is therefore kept as
the JSON bytes it encodes to, beside everything it is built from, and served again only to a
row equal to that one value for value: a change to any of it — the rollout, any of its
targets — renders the document again, so what is served is never stale and nothing has to be
invalidated. One entry per rollout (its last rendering); least recently used entries go
beyond a byte budget, which counts the rows too (a row's text is about the size of its
document).

Reads and lists send these bytes as they are. It saves the decoding, building and encoding of
each unchanged document (a page of a thousand deployments spent most of its time there); the
read of the rows stays what it was."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pydantic_core

from app.deployments.status import deployment_document

DEFAULT_BUDGET_BYTES = 16 * 2**20
# What an entry costs beside its bytes and the text of its row: the tuples, the row's other
# values and the strings' headers, and the ordered dict's node.
_ENTRY_OVERHEAD = 800


class RenderedDocuments:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._size = 0
        # (workspace, rollout id): (the row's values, the document's bytes) — the rollout's
        # last rendering only.
        self._entries: OrderedDict[tuple[str, int], tuple[tuple[Any, ...], bytes]] = OrderedDict()

    def encoded(self, row: Any, workspace: str) -> bytes:
        """The deployment's document as JSON, as `pydantic_core.to_json` writes it."""
        # Found by the rollout's id and compared value by value: hashing or digesting the row's
        # text instead cost a page of a thousand deployments half its CPU (6.4 µs a row).
        key, values = (workspace, row.id), tuple(row)
        found = self._entries.get(key)
        if found is not None and found[0] == values:
            self._entries.move_to_end(key)
            return found[1]
        encoded = pydantic_core.to_json(deployment_document(row, workspace))
        if found is not None:
            self._size -= _entry_size(*found)
        self._entries[key] = (values, encoded)
        self._entries.move_to_end(key)
        self._size += _entry_size(values, encoded)
        while self._size > self._budget and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= _entry_size(*dropped)
        return encoded

    def __len__(self) -> int:
        return len(self._entries)


def _entry_size(values: tuple[Any, ...], encoded: bytes) -> int:
    return len(encoded) + sum(len(v) for v in values if isinstance(v, str)) + _ENTRY_OVERHEAD
