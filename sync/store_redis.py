"""The document store in Redis (``sync.store.DocumentStore``), so nodes need no shared disk.

Layout per document ``(tenant, name)``, both keys on the route's shard (one hash slot in a cluster)::

    {prefix}:docsnap:{route}   string   the snapshot (absent: none yet)
    {prefix}:doclog:{route}    list     the updates appended since, in order

Writes: a batch is grouped per document (order kept within a document) and each document's operations
run in one Lua script, so they apply atomically: an ``Append`` is an RPUSH, a ``Compact`` sets the
snapshot and deletes the log in the same step. Operations before a document's last ``Compact`` in the batch
are not sent (the snapshot contains them). The documents of one batch are written concurrently; a
failure reports the whole batch as failed (``StoreError``), though other documents' scripts may have run:
that is harmless, because the rooms of a failed batch are reloaded from what is stored and a repeated
update changes nothing (Yjs updates are idempotent).

Durability is Redis's: ``write`` returns once Redis applied the script. With ``appendonly yes`` and
``appendfsync always`` that survives a crash of Redis; with the default ``everysec`` up to a second of
writes can be lost with Redis (not with a node: the nodes' crashes lose nothing acknowledged by Redis).

Reads: ``load`` fetches snapshot and log in one script (a consistent view).

Errors: every Redis failure (down, timeout, script error) is a ``StoreError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from channels.redis_shards import DOWN_ERRORS, RedisShards, Script, Shard, route_of
from sync.store import Append, Compact, DocKey, StoredDocument, StoreError, StoreOp

# KEYS[1] log, KEYS[2] snapshot; ARGV pairs of (op, data): "a" append, "c" compact.
_WRITE = Script("""
for i = 1, #ARGV, 2 do
  if ARGV[i] == 'a' then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
  else
    redis.call('DEL', KEYS[1])
    redis.call('SET', KEYS[2], ARGV[i + 1])
  end
end
return 1
""")

_LOAD = Script("""
return {redis.call('GET', KEYS[2]), redis.call('LRANGE', KEYS[1], 0, -1)}
""")


class RedisDocumentStore:
    def __init__(self, shards: RedisShards) -> None:
        self.shards = shards
        self.writes = 0
        """Scripts run (one per document per batch): a test's way to see which node writes."""

    async def open(self) -> None:
        """Nothing to create; the shards are started by their owner."""

    async def close(self) -> None:
        """The shards are closed by their owner."""

    def _keys(self, key: DocKey) -> tuple[Shard, str, str]:
        route = route_of(*key)
        shard = self.shards.shard_for(route)
        return shard, self.shards.key("doclog", route), self.shards.key("docsnap", route)

    async def load(self, key: DocKey) -> StoredDocument:
        shard, log_key, snap_key = self._keys(key)
        try:
            snapshot, log = await shard.eval(_LOAD, [log_key, snap_key], [])
        except DOWN_ERRORS as exc:
            raise StoreError(f"document store unavailable: {exc}") from None
        except Exception as exc:  # a script error: report, never crash the caller
            raise StoreError(f"document store failure: {exc}") from None
        doc = StoredDocument()
        if snapshot:
            doc.updates.append(bytes(snapshot))
            doc.snapshot_bytes = len(snapshot)
        for update in log or ():
            doc.updates.append(bytes(update))
            doc.log_bytes += len(update)
        doc.log_rows = len(log or ())
        return doc

    async def write(self, ops: Sequence[StoreOp]) -> None:
        per_doc: dict[DocKey, list[StoreOp]] = {}
        for op in ops:
            if isinstance(op, Compact):
                per_doc[op.key] = [op]  # the snapshot holds everything queued before it
            else:
                per_doc.setdefault(op.key, []).append(op)
        results = await asyncio.gather(
            *(self._write_doc(key, doc_ops) for key, doc_ops in per_doc.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, DOWN_ERRORS):
                    raise StoreError(f"document store unavailable: {result}") from None
                raise StoreError(f"document store failure: {result}") from None

    async def _write_doc(self, key: DocKey, ops: list[StoreOp]) -> None:
        shard, log_key, snap_key = self._keys(key)
        args: list[bytes] = []
        for op in ops:
            if isinstance(op, Append):
                args += [b"a", op.update]
            else:
                args += [b"c", op.snapshot]
        await shard.eval(_WRITE, [log_key, snap_key], args)
        self.writes += 1
