"""Presence in Redis, shared by every node of one hub.

Per channel, on the shard its route hashes to (one hash slot per channel in a cluster):

- a hash ``<prefix>:presence:{route}``: client id -> msgpack ``user`` followed by msgpack
  ``[conn_info, chan_info]`` (two objects: the stats script reads the first alone, with Redis's built-in
  cmsgpack, which cannot decode the msgpack bin type the info bytes are packed as);
- a sorted set ``<prefix>:presence_exp:{route}``: client id -> the time (seconds) at which the entry expires.

Expiry policy: an entry lives ``ttl`` seconds after its last add; the owning node re-adds its live entries
every ``presence_update_interval`` (``refresh``), so only a dead node's entries run out. Expired entries are
dropped lazily, inside the scripts that read (``get``, ``stats``) and that write (``add``, ``refresh``), so
a channel nobody reads does not pile up a dead node's entries either. Every add also sets both keys to expire
``ttl`` after it, so the keys of an abandoned channel vanish without anyone touching them again.

Owners: a node that dies (SIGKILL, a lost machine) removes nothing, and the other nodes notice within three
``node_info_interval`` (hub.control) where the ttl would take a minute. So every entry is also listed in
its owner's index, a sorted set ``<prefix>:presence_owner:{<owner>}`` (member: msgpack ``[tenant, channel,
client id]``, score: the entry's expire-at time), kept with the entries: added and removed with them,
rewritten by every refresh, expired entries dropped, and the key expiring ``ttl`` after its last write.
The owner is the instance (``owner``: the node id and a random incarnation, so a node restarted under the
same name is a new owner). ``purge(owner)`` reads that index a chunk at a time, removes each listed entry
from its channel and the members from the index, then deletes the index. Several nodes purging the same
owner at once do it once: the first to set ``<prefix>:presence_purge:{<owner>}`` (NX, expiring after
``ttl``) purges, the others return at once; a purge is idempotent anyway. The index costs one more command
per add and remove (on the owner's shard, sent concurrently with the channel's) and about the size of the
owner's entries in Redis; it is best effort (an add or remove still succeeds when only the index's shard
is down, and the next refresh, which does fail then, writes the index again). No leave pushes go out for
purged clients (as Centrifugo, which has no purge at all): presence queries stop listing them.

Clock: the expire-at times are Redis's own (``TIME`` inside the scripts), never a node's. Every entry of a
channel lives on one Redis server, so they are all measured on one clock: nodes whose clocks differ cannot
expire each other's entries early, and the keys' own EXPIRE runs on that same clock.

``num_users`` is counted inside the stats script from the hash (the user is the value's first msgpack
object), not kept in a per-user counter: stats are rare (server API, admin console) while adds and removes
come with every subscribe and unsubscribe, so the counting cost goes where it is rare, and a count read from
the very hash it counts can never drift from it (a counter would have to be corrected by every expiry, with
the user of each expired entry read back anyway).

Error tree (what callers see)::

    presence.presence.PresenceError
     +-- PresenceUnavailable    the channel's Redis cannot be reached now (any of DOWN_ERRORS)

A script error (a bug) propagates as ``redis.exceptions.ResponseError``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis.exceptions as rexc
from redis.crc import key_slot

from channels.names import ChannelKey
from channels.publication import ClientInfo
from channels.redis_shards import DOWN_ERRORS, RedisShards, Shard, route_of
from channels.redis_shards import Script as ShardScript
from presence.presence import PresenceStats, PresenceUnavailable

log = logging.getLogger("switchboard.presence")

_CLEAN = """
local function now()
  local t = redis.call('time')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function clean(hkey, zkey, t)
  local expired = redis.call('zrangebyscore', zkey, '-inf', t)
  if #expired > 0 then
    for i = 1, #expired, 1000 do
      redis.call('hdel', hkey, unpack(expired, i, math.min(i + 999, #expired)))
    end
    redis.call('zremrangebyscore', zkey, '-inf', t)
  end
end
"""

_ADD = (
    _CLEAN
    + """
-- KEYS: hash, zset of each channel. ARGV: ttl seconds, ttl milliseconds, then for each channel
-- n followed by n client id, info pairs.
local t = now()
local expire_at = t + tonumber(ARGV[1])
local a = 3
for k = 1, #KEYS, 2 do
  local h, z = KEYS[k], KEYS[k + 1]
  clean(h, z, t)
  local n = tonumber(ARGV[a])
  redis.call('hset', h, unpack(ARGV, a + 1, a + 2 * n))
  local scores = {}
  for i = a + 1, a + 2 * n, 2 do
    scores[#scores + 1] = expire_at
    scores[#scores + 1] = ARGV[i]
  end
  redis.call('zadd', z, unpack(scores))
  redis.call('pexpire', h, ARGV[2])
  redis.call('pexpire', z, ARGV[2])
  a = a + 1 + 2 * n
end
return 1
"""
)

_REMOVE = """
-- KEYS: hash, zset. ARGV: client id. An emptied hash/zset is deleted by Redis itself.
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""

_GET = (
    _CLEAN
    + """
-- KEYS: hash, zset. Returns the live entries as a flat client id, info list.
clean(KEYS[1], KEYS[2], now())
return redis.call('hgetall', KEYS[1])
"""
)

_STATS = (
    _CLEAN
    + """
-- KEYS: hash, zset. Returns {number of clients, number of distinct users}.
clean(KEYS[1], KEYS[2], now())
local users, n = {}, 0
for _, v in ipairs(redis.call('hvals', KEYS[1])) do
  local _, user = cmsgpack.unpack_one(v)
  if users[user] == nil then
    users[user] = true
    n = n + 1
  end
end
return {redis.call('hlen', KEYS[1]), n}
"""
)

_OWN = """
-- KEYS: an owner's index. ARGV: ttl seconds, ttl milliseconds, then index members. Adds (or renews) the
-- members to expire with their entries, drops the expired ones, renews the key's own expiry.
local t = redis.call('time')
t = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('zremrangebyscore', KEYS[1], '-inf', t)
local expire_at = t + tonumber(ARGV[1])
local scores = {}
for i = 3, #ARGV do
  scores[#scores + 1] = expire_at
  scores[#scores + 1] = ARGV[i]
end
if #scores > 0 then
  redis.call('zadd', KEYS[1], unpack(scores))
end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""

_DISOWN = """
-- KEYS: hash, zset of one channel. ARGV: client ids (of a purged owner). Returns how many were present.
redis.call('zrem', KEYS[2], unpack(ARGV))
return redis.call('hdel', KEYS[1], unpack(ARGV))
"""

CALL_ENTRIES = 500
"""At most this many entries per script call (a few ms of Redis time): one call never holds Redis long."""
CALL_CHANNELS = 100
"""At most this many channels per script call."""
INDEX_CHUNK = 1000
"""Index members per call of the owner-index script, and per read of a purge."""
PIPELINE_CALLS = 20
PIPELINE_ENTRIES = 2000
"""At most this many script calls / entries per round trip: encoding and parsing a pipeline runs on the
event loop without a break, so a node refreshing 10,000 entries must not stall its clients for all of it."""
REFRESH_SLICE = 2000
"""Entries a refresh reads from its caller (and groups) between two lets-go of the loop: reading 100,000
entries at once held the loop ~100 ms, and building their index members another ~40 ms."""
RETRY_MIN = 0.1
RETRY_MAX = 2.0
"""Backoff (seconds, doubling, with jitter) between a refresh's retries of the round trips that failed."""


class Script(ShardScript):
    """A Lua script run with EVALSHA, falling back to EVAL (which caches it) after a Redis restart (also the
    scripts of ``presence.occupancy_redis``).

    Calls go through the shard's pipelined command connection (``Shard.eval``), as the broker's do, never
    through a pooled connection each: a crowd subscribing at once would take one pooled connection per
    call and run out of them (redis-py's pool stops at 100: the 101st subscribe failed), and a pooled
    call costs ~160 us of CPU where a pipelined one costs a few."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    async def __call__(self, shard: Shard, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await shard.eval(self, keys, args)


_add = Script(_ADD)
_remove = Script(_REMOVE)
_get = Script(_GET)
_stats = Script(_STATS)
_own = Script(_OWN)
_disown = Script(_DISOWN)


@dataclass(slots=True)
class _Call:
    """One call of the add script: the keys and arguments of up to CALL_CHANNELS channels."""

    keys: list[str]
    args: list[Any]
    channels: int = 0
    entries: int = 0


@dataclass(slots=True)
class _Batch:
    """One round trip of a refresh: calls of one script to one shard."""

    script: Script
    calls: list[_Call]

    @property
    def entries(self) -> int:
        return sum(call.entries for call in self.calls)

    def halves(self) -> list[_Batch]:
        """This round trip as two smaller ones (one, if it is a single call)."""
        half = (len(self.calls) + 1) // 2
        return [_Batch(self.script, part) for part in (self.calls[:half], self.calls[half:]) if part]


@dataclass(slots=True)
class _Run:
    """What one refresh's lanes (a shard's channels, the owner index) share."""

    deadline: float
    """time.monotonic() past which a failed round trip is given up on."""
    retries: int = 0
    missed: int = 0
    """Entries not refreshed in their channel."""
    index_missed: int = 0
    """Entries not listed in the owner index."""
    error: PresenceUnavailable | None = None
    """The last failure."""


def _pack(info: ClientInfo) -> bytes:
    user: bytes = msgpack.packb(info.user)
    rest: bytes = msgpack.packb([info.conn_info, info.chan_info], use_bin_type=True)
    return user + rest


def _member(key: ChannelKey, client_id: str) -> bytes:
    """An entry's member in its owner's index."""
    member: bytes = msgpack.packb([key[0], key[1], client_id])
    return member


async def _with_index(entry: Awaitable[object], index: Awaitable[None]) -> None:
    """Change an entry and its owner's index at once. The index is best effort: when only its shard
    cannot be reached the change still succeeds (the next refresh writes the index again; until then a
    purge would leave that entry to its ttl)."""
    done, listed = await asyncio.gather(entry, index, return_exceptions=True)
    if isinstance(done, BaseException):
        raise done
    if isinstance(listed, BaseException) and not isinstance(listed, PresenceUnavailable):
        raise listed


def _unpack(client: bytes, raw: bytes) -> ClientInfo:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    user = unpacker.unpack()
    conn_info, chan_info = unpacker.unpack()
    return ClientInfo(user, client.decode(), conn_info, chan_info)


class RedisPresence:
    """The PresenceManager over ``shards``; entries expire ``ttl`` seconds after their last add/refresh.

    ``shards`` is shared with the rest of the hub and owned by whoever built it: ``close()`` leaves it open.
    Every method raises PresenceUnavailable when the channel's Redis cannot be reached. Only ``refresh``
    retries (within its budget); an add or a remove is not (one whose reply was lost may or may not have
    happened; the next refresh settles it).
    """

    def __init__(
        self, shards: RedisShards, *, ttl: float, node_id: str = "", refresh_budget: float | None = None
    ) -> None:
        if not ttl > 0:
            raise ValueError("presence ttl must be positive")
        self.shards = shards
        self.ttl = ttl
        self.refresh_budget = ttl / 3 if refresh_budget is None else refresh_budget
        """Seconds a refresh keeps retrying what failed (see refresh). A third of the ttl by default: with the
        hub's defaults (ttl 60 s, a refresh every 22.5-25 s) a refresh that meets a stalled Redis ends about
        when the next one is due (its last try may take a Redis timeout longer), and the node starts that one
        as soon as it has ended (``Node.tick``), with the sessions read anew, in time to reach Redis before
        the entries expire if Redis answers by then."""
        self.owner = f"{node_id}/{uuid.uuid4().hex[:12]}"
        """This instance's entries are listed under this name (see Owners in the module docstring)."""
        self._ttl_ms = max(1, math.ceil(ttl * 1000))
        self._removed_during_refresh: dict[int, set[tuple[ChannelKey, str]]] = {}
        """One set per refresh in flight: the entries removed meanwhile (see refresh)."""
        self._refresh_ids = itertools.count()

    def _where(self, key: ChannelKey) -> tuple[Shard, list[str]]:
        route = route_of(*key)
        return self.shards.shard_for(route), [
            self.shards.key("presence", route),
            self.shards.key("presence_exp", route),
        ]

    def _index(self, owner: str) -> tuple[Shard, str, str]:
        """The shard, index key and purge-lock key of ``owner`` (one hash slot in a cluster)."""
        route = route_of("", owner)
        return (
            self.shards.shard_for(route),
            self.shards.key("presence_owner", route),
            self.shards.key("presence_purge", route),
        )

    async def _own(self, member: bytes) -> None:
        """List ``member`` in this instance's index (or renew it); a refresh lists its entries in batches of
        its own (``_index_batches``)."""
        shard, index, _ = self._index(self.owner)
        try:
            await _own(shard, [index], [self.ttl, self._ttl_ms, member])
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"presence index: redis {shard.name}: {exc}") from exc

    async def _disown(self, member: bytes) -> None:
        shard, index, _ = self._index(self.owner)
        try:
            await shard.execute("ZREM", index, member)
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"presence index: redis {shard.name}: {exc}") from exc

    async def _remove(self, key: ChannelKey, client_id: str) -> None:
        await _with_index(self._run(_remove, key, [client_id]), self._disown(_member(key, client_id)))

    async def _run(self, script: Script, key: ChannelKey, args: Sequence[Any]) -> Any:
        shard, keys = self._where(key)
        try:
            return await script(shard, keys, args)
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"presence of {key!r}: redis {shard.name}: {exc}") from exc

    async def add(self, key: ChannelKey, info: ClientInfo) -> None:
        for removed in self._removed_during_refresh.values():
            removed.discard((key, info.client))  # back again: a refresh in flight must not remove it after
        await _with_index(
            self._run(_add, key, [self.ttl, self._ttl_ms, 1, info.client, _pack(info)]),
            self._own(_member(key, info.client)),
        )

    async def remove(self, key: ChannelKey, client_id: str) -> None:
        for removed in self._removed_during_refresh.values():
            removed.add((key, client_id))
        await self._remove(key, client_id)

    async def get(self, key: ChannelKey) -> dict[str, ClientInfo]:
        flat: list[bytes] = await self._run(_get, key, [])
        return {c.decode(): _unpack(c, v) for c, v in zip(flat[::2], flat[1::2], strict=True)}

    async def stats(self, key: ChannelKey) -> PresenceStats:
        clients, users = await self._run(_stats, key, [])
        return PresenceStats(int(clients), int(users))

    async def refresh(self, entries: Iterable[tuple[ChannelKey, ClientInfo]]) -> None:
        """Re-add every entry: per shard, one script call per up to CALL_CHANNELS channels (standalone) or
        per hash slot (cluster), pipelined up to PIPELINE_CALLS calls / PIPELINE_ENTRIES entries to a round
        trip (10,000 entries of one shard: 5 round trips, not 10,000), and the owner index likewise
        (INDEX_CHUNK members a call), each shard and the index at once, on pooled connections of their
        own: a slow refresh never holds up the node's other commands on the shared one (``Shard.eval``),
        nor does its timeout fail them.

        ``entries`` is read REFRESH_SLICE at a time, the loop let go between slices, and the round trips
        are encoded one at a time as they go out: 100,000 entries never hold the loop for long.

        Failures: a round trip that fails because Redis cannot be reached or does not answer in time
        (any of DOWN_ERRORS: a server restarting, or one too busy to answer within ``connect_timeout``, as
        in a connect storm) is tried again, split in halves, after a backoff (RETRY_MIN doubling to
        RETRY_MAX, with jitter), until ``refresh_budget`` seconds after the refresh began; the rest of
        the shard's round trips wait behind it. The first failure of a refresh is logged once (a
        warning); what is still not refreshed when the budget is spent is given up on, and
        PresenceUnavailable is raised at the end saying how many entries that is (every shard is
        attempted; the reachable ones were refreshed). Those entries expire ``ttl`` after their last
        add unless the next refresh reaches their Redis first. A script error (a bug) is not retried.

        A refresh can race a removal of this node: the caller reads a client's entry, the client leaves
        and is removed, then the refresh's re-add lands and brings the entry back for a whole ttl. So an
        entry of this batch removed (through this instance) while the refresh was in flight, and not added
        again since, is removed once more after it, also when the refresh failed in part or was cancelled
        (a node stopping): a removal always wins over a concurrent refresh. A re-removal that cannot reach
        its shard skips that shard's others (each would wait a timeout; their entries expire by
        themselves) and the rest still run; the refresh's own failure, if any, is the one raised.

        For the rule to hold, the refresh is registered before ``entries`` is read, and the caller hands
        over what it has not read yet (a generator over its sessions), or a list it built in the same step
        as the call, with no await between: an entry read before the registration and removed before it
        would come back.
        """
        removed: set[tuple[ChannelKey, str]] = set()
        token = next(self._refresh_ids)
        self._removed_during_refresh[token] = removed
        try:
            taken: dict[ChannelKey, dict[str, ClientInfo]] = {}
            failure: BaseException | None = None
            try:
                await self._refresh(entries, taken)
            except (Exception, asyncio.CancelledError) as exc:  # the removals below run all the same
                failure = exc
            # The set stays registered while the removals run: an add during their awaits takes its entry
            # out (it is live again), so nothing is removed that came back after being computed here.
            removed.difference_update([(k, c) for k, c in removed if c not in taken.get(k, ())])
            down: set[int] = set()
            """Shards a re-removal just failed on: their other re-removals would each wait a timeout."""
            while removed:
                key, client_id = removed.pop()
                shard = self._where(key)[0].index
                if shard in down:
                    continue  # that entry expires by itself (its re-add most likely failed as well)
                try:
                    await self._remove(key, client_id)  # not self.remove: it would re-record it here
                except PresenceUnavailable as exc:  # that shard is away: the others' removals still run
                    down.add(shard)
                    failure = failure or exc
            if failure is not None:
                raise failure
        finally:
            del self._removed_during_refresh[token]

    async def _refresh(
        self, entries: Iterable[tuple[ChannelKey, ClientInfo]], taken: dict[ChannelKey, dict[str, ClientInfo]]
    ) -> None:
        """Read ``entries`` into ``taken`` (by channel, then client id), then send them (see refresh)."""
        started = time.monotonic()
        lanes: dict[int, tuple[Shard, list[tuple[list[str], dict[str, ClientInfo]]]]] = {}
        for n, (key, info) in enumerate(entries, 1):
            members = taken.get(key)
            if members is None:
                members = taken[key] = {}
                shard, keys = self._where(key)
                lanes.setdefault(shard.index, (shard, []))[1].append((keys, members))
            members[info.client] = info
            if n % REFRESH_SLICE == 0:
                await asyncio.sleep(0)  # let the loop go: the caller's sessions may change meanwhile
        if not taken:
            return
        total = sum(len(members) for members in taken.values())
        run = _Run(started + self.refresh_budget)
        index_shard, index, _ = self._index(self.owner)
        results = await asyncio.gather(
            *(
                self._send_lane(
                    run, shard, self._channel_batches(shard, channels), sum(len(m) for _, m in channels)
                )
                for shard, channels in lanes.values()
            ),
            self._send_lane(run, index_shard, self._index_batches(index, taken), total, index=True),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if run.missed or run.index_missed:
            given_up = [f"{run.missed} of {total} entries not refreshed"] if run.missed else []
            if run.index_missed:
                given_up.append(f"{run.index_missed} of {total} not listed in the owner index")
            raise PresenceUnavailable(
                f"presence refresh: {' and '.join(given_up)} within {self.refresh_budget:g} s ({run.error})"
            )
        if run.retries:
            log.info(
                "presence refresh: all %d entries refreshed after %d retried round trips (%.1f s)",
                total,
                run.retries,
                time.monotonic() - started,
            )

    def _channel_batches(
        self, shard: Shard, channels: list[tuple[list[str], dict[str, ClientInfo]]]
    ) -> Iterator[_Batch]:
        """The round trips of one shard's channels: batched into script calls (standalone: any channels of
        the shard together; cluster: only channels sharing a hash slot), a round trip yielded as soon as
        it is full, so it is encoded just before it goes out and the loop is never held for all of them."""
        open_calls: dict[int, _Call] = {}
        """The call still filling, per group: the one shard in standalone mode, the slot in a cluster."""
        pending: list[_Call] = []
        pending_entries = 0
        for keys, members in channels:
            group = key_slot(keys[0].encode()) if shard.cluster else 0
            infos = list(members.values())
            for start in range(0, len(infos), CALL_ENTRIES):
                chunk = infos[start : start + CALL_ENTRIES]
                call = open_calls.get(group)
                if call is None or call.channels >= CALL_CHANNELS or call.entries + len(chunk) > CALL_ENTRIES:
                    call = open_calls[group] = _Call([], [self.ttl, self._ttl_ms])
                    pending.append(call)
                call.keys += keys
                call.args.append(len(chunk))
                for info in chunk:
                    call.args += (info.client, _pack(info))
                call.channels += 1
                call.entries += len(chunk)
                pending_entries += len(chunk)
                if len(pending) >= PIPELINE_CALLS or pending_entries >= PIPELINE_ENTRIES:
                    yield _Batch(_add, pending)
                    pending, pending_entries = [], 0
                    open_calls.clear()
        if pending:
            yield _Batch(_add, pending)

    def _index_batches(self, index: str, taken: dict[ChannelKey, dict[str, ClientInfo]]) -> Iterator[_Batch]:
        """The round trips listing every entry in this instance's index: INDEX_CHUNK members a call, up to
        PIPELINE_ENTRIES members a round trip, each built just before it goes out."""
        members = (_member(key, client) for key, clients in taken.items() for client in clients)
        calls_per_trip = max(1, PIPELINE_ENTRIES // INDEX_CHUNK)
        while True:
            calls: list[_Call] = []
            for _ in range(calls_per_trip):
                chunk = list(itertools.islice(members, INDEX_CHUNK))
                if not chunk:
                    break
                calls.append(_Call([index], [self.ttl, self._ttl_ms, *chunk], entries=len(chunk)))
            if not calls:
                return
            yield _Batch(_own, calls)

    async def _send_lane(
        self, run: _Run, shard: Shard, batches: Iterator[_Batch], entries: int, *, index: bool = False
    ) -> None:
        """Send ``batches`` (``entries`` in all) to ``shard`` one round trip after the other, retrying
        those that fail (see refresh); what is given up on is counted in ``run``."""
        retry: list[_Batch] = []
        """Failed round trips to send again, the next one last."""
        delay = RETRY_MIN
        sent = 0
        while True:
            batch = retry.pop() if retry else next(batches, None)
            if batch is None:
                return
            try:
                await self._send(shard, batch)
            except PresenceUnavailable as exc:
                if run.error is None:
                    log.warning(
                        "presence refresh: %s; retrying what failed for up to %g s", exc, self.refresh_budget
                    )
                run.error = exc
                if time.monotonic() + delay > run.deadline:
                    if index:
                        run.index_missed += entries - sent
                    else:
                        run.missed += entries - sent
                    return
                run.retries += 1
                retry += reversed(batch.halves())
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # backoff with jitter
                delay = min(RETRY_MAX, delay * 2)
                continue
            sent += batch.entries
            delay = RETRY_MIN

    async def _send(self, shard: Shard, batch: _Batch) -> None:
        script, calls = batch.script, batch.calls
        try:
            results = await self._pipeline(shard, "EVALSHA", script.sha, calls)
            # NOSCRIPT only after Redis lost its script cache (a restart): resend those with the text
            missing = [c for c, r in zip(calls, results, strict=True) if isinstance(r, rexc.NoScriptError)]
            if missing:
                results = [r for r in results if not isinstance(r, rexc.NoScriptError)]
                results += await self._pipeline(shard, "EVAL", script.text, missing)
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"redis {shard.name}: {exc or type(exc).__name__}") from exc
        for result in results:
            if isinstance(result, DOWN_ERRORS):
                raise PresenceUnavailable(f"redis {shard.name}: {result}") from result
            if isinstance(result, Exception):
                raise result

    @staticmethod
    async def _pipeline(shard: Shard, command: str, script: str, calls: list[_Call]) -> list[Any]:
        """``command`` (EVALSHA with a sha, EVAL with the text) of ``script`` for each call, in one round
        trip on a pooled connection of ``shard`` (a failed one is dropped by redis-py, not reused)."""
        r: Any = shard.redis
        pipe = r.pipeline(transaction=False) if not shard.cluster else r.pipeline()
        for call in calls:
            pipe.execute_command(command, script, len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def purge(self, owner: str) -> int:
        """Remove every entry of ``owner`` (see Owners in the module docstring); how many were removed, 0
        when another node purges it (or did)."""
        if not owner:
            return 0
        shard, index, lock = self._index(owner)
        r: Any = shard.redis
        removed = 0
        try:
            if not await r.execute_command("SET", lock, b"1", "NX", "PX", self._ttl_ms):
                return 0
            while members := await r.execute_command("ZRANGE", index, 0, INDEX_CHUNK - 1):
                by_channel: dict[ChannelKey, list[str]] = {}
                for member in members:
                    try:
                        tenant, name, client = msgpack.unpackb(member, raw=False)
                        by_channel.setdefault((str(tenant), str(name)), []).append(str(client))
                    except (ValueError, TypeError):
                        continue  # not ours: dropped from the index below all the same
                found = await asyncio.gather(
                    *(self._run(_disown, key, ids) for key, ids in by_channel.items())
                )
                removed += sum(int(n) for n in found)
                await r.execute_command("ZREM", index, *members)
            await r.execute_command("DEL", index)
        except DOWN_ERRORS as exc:
            raise PresenceUnavailable(f"presence purge of {owner}: redis {shard.name}: {exc}") from exc
        return removed

    async def close(self) -> None:
        """Nothing to release: the shards belong to whoever built them."""
