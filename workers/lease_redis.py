"""A worker's lease in Redis (``workers.lease.Lease``): the key ``shards.key("lease", name)`` holds the
holder's id with a TTL; ``CLAIM_LEASE`` takes a free one or renews one's own, ``RELEASE_LEASE`` deletes it
only if it is one's own (the document writer's scripts)."""

from __future__ import annotations

from channels.redis_shards import CLAIM_LEASE, RELEASE_LEASE, RedisShards


class RedisLease:
    def __init__(self, shards: RedisShards, name: str, holder: str, ttl: float) -> None:
        self.holder = holder
        self.key = shards.key("lease", name)
        self.shard = shards.shard_for(name)
        self.ttl_ms = max(1, int(ttl * 1000))

    async def claim(self) -> bool:
        return bool(await self.shard.eval(CLAIM_LEASE, [self.key], [self.holder, self.ttl_ms]))

    async def release(self) -> None:
        await self.shard.eval(RELEASE_LEASE, [self.key], [self.holder])
