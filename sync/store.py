"""The document store interface: an append-only update log per document, compacted into a snapshot.

A document's identity is ``(tenant, name)``. Its stored form is an ordered list of Yjs updates: at most one
snapshot (a full-state update) first, then the updates appended since. Applying them in order rebuilds
the document; applying one twice is harmless (Yjs updates are idempotent), which is what makes
compaction safe to run beside appends (see ``Compact``).

Obligations of an implementation:

- ``write`` applies a batch of operations in order, atomically, and returns only once the batch is
  durable (it survives a crash of the process). It raises ``StoreError`` and changes nothing otherwise.
- ``load`` returns what every completed ``write`` left; a document never written loads empty.
- The space a document takes stays proportional to its snapshot plus the log since, not to its history:
  a ``Compact`` frees the rows it replaces, and the implementation gives freed space back or reuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sync.protocol import SyncError

DocKey = tuple[str, str]
"""(tenant, document name)."""


class StoreError(SyncError):
    """The store could not read or write; the batch that failed changed nothing."""


@dataclass(frozen=True, slots=True)
class Append:
    """Append one update to a document's log."""

    key: DocKey
    update: bytes


@dataclass(frozen=True, slots=True)
class Compact:
    """Replace everything stored for a document by ``snapshot``.

    ``snapshot`` must contain every update appended before this operation in write order (the caller
    takes it from the live document after queueing those appends). Appends queued after it stay in
    the log; if the snapshot already contains them, loading applies them twice, which Yjs ignores.
    """

    key: DocKey
    snapshot: bytes


StoreOp = Append | Compact


@dataclass(slots=True)
class StoredDocument:
    updates: list[bytes] = field(default_factory=list)
    """The snapshot (if any) first, then the log in append order."""
    snapshot_bytes: int = 0
    log_rows: int = 0
    """Updates stored after the snapshot."""
    log_bytes: int = 0


class DocumentStore(Protocol):
    async def open(self) -> None:
        """Prepare the store (create files and tables); idempotent."""

    async def close(self) -> None: ...

    async def load(self, key: DocKey) -> StoredDocument: ...

    async def write(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in order, atomically; return once they are durable."""
