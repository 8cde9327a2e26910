"""Occupancy in Redis, shared by every node of one hub.

Per channel, on the shard its route hashes to: a sorted set ``<prefix>:occupancy:{route}`` of the owners
(node instances) that have subscribers of it, each scored with the time (Redis's ``TIME``) its share
expires. One script per channel change runs atomically on that shard: it drops expired shares, adds or
removes the caller's, and compares the number of shares before and after: 0 -> some is ``occupied``,
some -> 0 is ``vacated``, reported to that caller alone. The key expires ``ttl`` after its last write.

Shares live ``ttl`` seconds unless renewed: a node reports every channel it holds again now and then
(``update`` with True renews; the hub does it every ``presence_update_interval``, with ``presence_ttl`` as
the ttl). A node that dies leaves its shares behind until the other nodes drop it (``hub.control``, within
three ``node_info_interval``) and one of them ``purge``s its owner: every share it listed in its owner index
``<prefix>:occupancy_owner:{<owner>}`` (member: msgpack ``[tenant, channel]``) is removed, and the channels
that leaves empty are reported vacated by the purging node. The first purger takes
``<prefix>:occupancy_purge:{<owner>}`` (NX) and does it; the others return at once.

Limits, stated: a share that runs out (its node stopped renewing it but was never dropped, e.g. every
node died) ends without a ``vacated``; the next subscriber anywhere reports ``occupied`` again. The index
is best effort, as presence's: a change still succeeds when only the index's shard is down.

Error tree: ``presence.presence.PresenceUnavailable`` (any of ``DOWN_ERRORS``); a script error (a bug)
propagates as ``redis.exceptions.ResponseError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis.exceptions as rexc

from channels.names import ChannelKey
from channels.redis_shards import DOWN_ERRORS, RedisShards, Shard, route_of
from presence.occupancy import Transition
from presence.presence import PresenceUnavailable
from presence.presence_redis import INDEX_CHUNK, Script

_NOW = """
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_UPDATE = Script(
    _NOW
    + """
-- KEYS: the channel's set. ARGV: owner, ttl milliseconds, 1 (has subscribers) or 0.
-- Returns {1 occupied | -1 vacated | 0, now as a string}.
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local before = redis.call('zcard', KEYS[1])
if ARGV[3] == '1' then
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]) / 1000, ARGV[1])
  redis.call('pexpire', KEYS[1], ARGV[2])
else
  redis.call('zrem', KEYS[1], ARGV[1])
end
local after = redis.call('zcard', KEYS[1])
local change = 0
if before == 0 and after > 0 then change = 1 elseif before > 0 and after == 0 then change = -1 end
return {change, tostring(now)}
"""
)

_DISOWN = Script(
    _NOW
    + """
-- KEYS: the channel's set. ARGV: a purged owner. {-1 if its removal left the channel empty, else 0; now}.
if not redis.call('zscore', KEYS[1], ARGV[1]) then return {0, tostring(now)} end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if redis.call('zcard', KEYS[1]) == 0 then return {-1, tostring(now)} end
return {0, tostring(now)}
"""
)

PIPELINE_CALLS = 500
"""Script calls per round trip."""


class RedisOccupancy:
    """The Occupancy over ``shards`` (owned by whoever built them: ``close`` leaves them open)."""

    def __init__(self, shards: RedisShards, *, ttl: float, owner: str) -> None:
        if not ttl > 0:
            raise ValueError("occupancy ttl must be positive")
        self.shards = shards
        self.ttl_ms = max(1, math.ceil(ttl * 1000))
        self.owner = owner
        """The node's presence owner (``RedisPresence.owner``): the name it announces, which the other
        nodes purge once it is gone."""

    def _key(self, key: ChannelKey) -> tuple[Shard, str]:
        route = route_of(*key)
        return self.shards.shard_for(route), self.shards.key("occupancy", route)

    def _index(self, owner: str) -> tuple[Shard, str, str]:
        route = route_of("", owner)
        shard = self.shards.shard_for(route)
        return shard, self.shards.key("occupancy_owner", route), self.shards.key("occupancy_purge", route)

    async def update(self, changes: Sequence[tuple[ChannelKey, bool]]) -> list[Transition]:
        calls = [(key, [self.owner, self.ttl_ms, 1 if has else 0]) for key, has in changes]
        results = await self._run(_UPDATE, calls)
        await self._list(changes)
        return [
            Transition(key, change == 1, float(at))
            for (key, _), (change, at) in zip(calls, results, strict=True)
            if change
        ]

    async def _list(self, changes: Sequence[tuple[ChannelKey, bool]]) -> None:
        """Keep the owner index in step (best effort: see the module docstring)."""
        shard, index, _ = self._index(self.owner)
        added = [msgpack.packb(list(key)) for key, has in changes if has]
        removed = [msgpack.packb(list(key)) for key, has in changes if not has]
        r: Any = shard.redis
        try:
            for start in range(0, len(added), INDEX_CHUNK):
                await r.execute_command("SADD", index, *added[start : start + INDEX_CHUNK])
            for start in range(0, len(removed), INDEX_CHUNK):
                await r.execute_command("SREM", index, *removed[start : start + INDEX_CHUNK])
            if added:
                await r.execute_command("PEXPIRE", index, self.ttl_ms)
        except DOWN_ERRORS:
            pass  # best effort: the next renewal lists them again

    async def purge(self, owner: str) -> list[Transition]:
        if not owner:
            return []
        shard, index, lock = self._index(owner)
        r: Any = shard.redis
        out: list[Transition] = []
        try:
            if not await r.execute_command("SET", lock, b"1", "NX", "PX", self.ttl_ms):
                return []
            while members := await r.execute_command("SRANDMEMBER", index, INDEX_CHUNK):
                keys: list[ChannelKey] = []
                for member in members:
                    try:
                        tenant, name = msgpack.unpackb(member, raw=False)
                        keys.append((str(tenant), str(name)))
                    except (ValueError, TypeError):
                        continue  # not ours: dropped below all the same
                results = await self._run(_DISOWN, [(key, [owner]) for key in keys])
                out += [
                    Transition(k, False, float(at))
                    for k, (gone, at) in zip(keys, results, strict=True)
                    if gone
                ]
                await r.execute_command("SREM", index, *members)
            await r.execute_command("DEL", index)
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"occupancy purge of {owner}: redis {shard.name}: {exc}") from exc
        return out

    async def _run(
        self, script: Script, calls: Sequence[tuple[ChannelKey, list[Any]]]
    ) -> list[tuple[int, str]]:
        """Run ``script`` once per (channel, args), pipelined per shard; results in the calls' order."""
        by_shard: dict[int, tuple[Shard, list[int]]] = {}
        keys: list[str] = []
        for i, (key, _) in enumerate(calls):
            shard, name = self._key(key)
            keys.append(name)
            by_shard.setdefault(shard.index, (shard, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for shard, indexes in by_shard.values():
            for start in range(0, len(indexes), PIPELINE_CALLS):
                chunk = indexes[start : start + PIPELINE_CALLS]
                replies = await self._pipeline(shard, script, [(keys[i], calls[i][1]) for i in chunk])
                for i, reply in zip(chunk, replies, strict=True):
                    results[i] = (
                        int(reply[0]),
                        reply[1].decode() if isinstance(reply[1], bytes) else reply[1],
                    )
        return results

    @staticmethod
    async def _pipeline(shard: Shard, script: Script, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """EVALSHA each call; the calls answered NOSCRIPT (a server that restarted, or a cluster node that
        never ran the script) once more with the text. Only those: the others have run, and running a
        change twice would lose its transition."""
        r: Any = shard.redis

        async def send(command: str, body: str, batch: list[tuple[str, list[Any]]]) -> list[Any]:
            pipe = r.pipeline(transaction=False) if not shard.cluster else r.pipeline()
            for key, args in batch:
                pipe.execute_command(command, body, 1, key, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

        try:
            replies = await send("EVALSHA", script.sha, calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, rexc.NoScriptError)]
            if missing:
                again = await send("EVAL", script.text, [calls[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"occupancy: redis {shard.name}: {exc}") from exc
        for reply in replies:
            if isinstance(reply, DOWN_ERRORS):
                raise PresenceUnavailable(f"occupancy: redis {shard.name}: {reply}") from reply
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def close(self) -> None:
        """Nothing to release: the shards belong to whoever built them."""
