"""A document's version: what an agent sends back as ``if_version`` to say "apply this only to what I read".

A Yjs state vector alone does not tell whether a document changed: it counts the structs each client
inserted, and a deletion inserts none (a delete-only transaction carries only a delete set). Two replicas
with equal state vectors can differ by every character somebody deleted since. So a version is the pair

    (state vector, digest of the delete set)

written ``"<state vector>.<digest>"``: the state vector in Yjs's own encoding (``Y.encodeStateVector``:
``varUint(n)`` then n pairs ``varUint(client) varUint(clock)``, clients in descending order), base64; then
a base64 BLAKE2b digest (12 bytes) of the canonical delete set (clients ascending, each client's deleted
clock ranges sorted and merged). Both halves are computed from pycrdt's snapshot of the document (the Yjs
snapshot encoding: delete set, then state vector), so equal documents have equal versions on every node,
however each of them received its updates.

A version grows with every client id that ever edited (about 12 characters each, and every page load of an
editor is a new id), so it is sent as an HTTP header only as its **tag** (``Version.tag``): ``t`` and a
base64url BLAKE2b digest (16 bytes) of the version string, 23 characters whatever the version. A tag is
accepted as ``if_version`` too; it can only say "same" or "changed" (not "behind"), since it holds no state
vector. A tag has no ``.``, a version always has one, so the two never mix up.

"Changed since version V" means precisely: the document's state vector differs from V's (somebody
inserted, or this replica has not yet received everything V had seen) or, with equal state vectors, its
delete set differs (somebody deleted). ``compare`` tells these cases apart so that a refusal can say
whether to rebase (the document moved on) or retry (this replica is behind the version, as a node of
several can be for a moment).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pycrdt import Doc, Snapshot

from sync.protocol import ProtocolError, Reader, var_uint
from sync.update import read_delete_set

DIGEST_SIZE = 12
TAG_PREFIX = "t"
TAG_DIGEST_SIZE = 16
TAG_LENGTH = len(TAG_PREFIX) + 22
"""A tag: the prefix, then 16 bytes in unpadded base64url."""
MAX_VERSION_LENGTH = 64 * 1024
"""Longest version string accepted (a state vector of a few thousand clients)."""


class Relation(Enum):
    SAME = "same"
    CHANGED = "changed"
    """The document has everything the version had, and more (inserts or deletions since)."""
    BEHIND = "behind"
    """The version holds inserts this replica has not received (yet)."""


@dataclass(frozen=True, slots=True)
class Version:
    state: dict[int, int]
    """Client id -> clock (the number of structs of that client integrated); no zero clocks."""
    deletions: bytes
    """Digest of the delete set."""

    def encode(self) -> str:
        return f"{base64.b64encode(encode_state_vector(self.state)).decode()}.{_b64(self.deletions)}"

    def tag(self) -> str:
        """The fixed-size tag of this version (see the module docstring): for an HTTP ``ETag``."""
        return tag_of(self.encode())

    @classmethod
    def decode(cls, raw: Any) -> Version:
        """Parse a version string; raise ``ValueError`` with a short reason for anything else."""
        if not isinstance(raw, str) or not raw:
            raise ValueError("a version is a non-empty string")
        if len(raw) > MAX_VERSION_LENGTH:
            raise ValueError("version too long")
        state_part, dot, digest_part = raw.partition(".")
        if not dot:
            raise ValueError("a version is '<state vector>.<digest>' (a bare state vector misses deletions)")
        try:
            state = decode_state_vector(base64.b64decode(state_part, validate=True))
            digest = base64.b64decode(digest_part + "=" * (-len(digest_part) % 4), validate=True)
        except (binascii.Error, ProtocolError):
            raise ValueError("malformed version") from None
        if len(digest) != DIGEST_SIZE:
            raise ValueError("malformed version")
        return cls(state, digest)


def tag_of(encoded: str) -> str:
    """The tag of an encoded version (``Version.tag``)."""
    digest = hashlib.blake2b(encoded.encode(), digest_size=TAG_DIGEST_SIZE).digest()
    return TAG_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_tag(raw: str) -> bool:
    """Whether ``raw`` has the shape of a tag (a version always holds a ``.``)."""
    return len(raw) == TAG_LENGTH and raw.startswith(TAG_PREFIX) and "." not in raw


def document_version(doc: Doc[Any]) -> Version:
    """The version of ``doc`` as it is now. Not inside a transaction (``RuntimeError``)."""
    if doc._txn is not None:  # pycrdt's snapshot would wait forever for the open transaction to end
        raise RuntimeError("document_version inside a transaction")
    reader = Reader(Snapshot.from_doc(doc).encode())
    deleted = read_delete_set(reader)
    state = {client: clock for client, clock in _read_state_vector(reader).items() if clock}
    reader.expect_end()
    return Version(state, _delete_set_digest(deleted))


def compare(current: Version, seen: Version) -> Relation:
    """How ``current`` (the document now) stands to ``seen`` (the version an agent read)."""
    if any(current.state.get(client, 0) < clock for client, clock in seen.state.items()):
        return Relation.BEHIND
    if current.state != seen.state or current.deletions != seen.deletions:
        return Relation.CHANGED
    return Relation.SAME


def encode_state_vector(state: dict[int, int]) -> bytes:
    """Yjs ``writeStateVector``: clients in descending order."""
    parts = [var_uint(len(state))]
    for client in sorted(state, reverse=True):
        parts.append(var_uint(client))
        parts.append(var_uint(state[client]))
    return b"".join(parts)


def decode_state_vector(raw: bytes) -> dict[int, int]:
    reader = Reader(raw)
    state = {client: clock for client, clock in _read_state_vector(reader).items() if clock}
    reader.expect_end()
    return state


def _read_state_vector(reader: Reader) -> dict[int, int]:
    state: dict[int, int] = {}
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        state[client] = reader.var_uint()
    return state


def _delete_set_digest(deleted: dict[int, list[tuple[int, int]]]) -> bytes:
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for client in sorted(deleted):
        merged: list[list[int]] = []
        for start, end in sorted(deleted[client]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            elif end > start:
                merged.append([start, end])
        if not merged:
            continue
        digest.update(var_uint(client) + var_uint(len(merged)))
        for start, end in merged:
            digest.update(var_uint(start) + var_uint(end - start))
    return digest.digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")
