"""The console's store on the Redis the nodes share (``hub.admin.store`` states the policies).

Keys (on the first shard, where the control channel lives): ``<prefix>:admin:{audit}`` a list, newest
first, trimmed to ``max_entries`` in the same script as each push, and ``<prefix>:admin-id:{audit}`` its
id counter; ``<prefix>:admin:{revoked:<sid>}`` one key per revoked session, expiring when the session
would have.
"""

from __future__ import annotations

import math
import time

from channels.redis_shards import RedisShards, Script, ShardUnavailable
from hub.admin.store import AuditEntry, StoreUnavailable

_APPEND = Script(
    """
local id = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[1], '{"id":' .. id .. ',' .. string.sub(ARGV[1], 2))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return id
"""
)


class RedisConsoleStore:
    def __init__(self, shards: RedisShards, max_entries: int) -> None:
        self.shard = shards.shards[0]
        self.max_entries = max_entries
        self._audit = shards.key("admin", "audit")
        self._counter = shards.key("admin-id", "audit")  # the same hash tag: one slot in a cluster
        self._shards = shards

    async def append(self, entry: AuditEntry) -> None:
        try:
            await self.shard.eval(_APPEND, [self._audit, self._counter], [entry.pack(), self.max_entries])
        except ShardUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None

    async def entries(self, limit: int, before: int = 0) -> list[AuditEntry]:
        # Ids descend along the list, so "before" is found by reading on; the list is capped, so is this.
        out: list[AuditEntry] = []
        start, page = 0, max(limit, 100)
        try:
            while len(out) < limit and start < self.max_entries:
                raw = await self.shard.execute("LRANGE", self._audit, start, start + page - 1)
                if not raw:
                    break
                for item in raw:
                    entry = AuditEntry.unpack(item)
                    if before <= 0 or entry.id < before:
                        out.append(entry)
                start += page
        except ShardUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None
        return out[:limit]

    async def revoke(self, sid: str, until: float) -> None:
        ttl_ms = max(1, math.ceil((until - time.time()) * 1000))
        try:
            await self.shard.execute("SET", self._shards.key("admin", f"revoked:{sid}"), b"1", "PX", ttl_ms)
        except ShardUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None

    async def revoked(self, sid: str) -> bool:
        try:
            return bool(await self.shard.execute("EXISTS", self._shards.key("admin", f"revoked:{sid}")))
        except ShardUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None

    async def close(self) -> None:
        pass
