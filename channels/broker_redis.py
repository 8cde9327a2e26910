"""Redis Broker: many nodes share publications, joins/leaves and history through Redis.

Layout of one channel ``(tenant, name)``, with ``route = route_of(tenant, name)`` (every key carries the
tenant and the prefix, and shares one hash slot in a cluster):

- ``{prefix}:hist:{route}``  a stream; entry id ``<offset>-0`` (so ranges are by offset), fields
  ``d`` (the msgpack'ed publication body) and ``x`` (Redis-clock expiry in ms); MAXLEN = history size,
  the whole key expires history ttl after the last publish;
- ``{prefix}:meta:{route}``  a hash: ``e`` epoch, ``s`` top offset; expires meta_ttl (default 90 days, as
  broker_memory) after the last publish. When it is missing the stream is started over with a new epoch;
- ``{prefix}:idem:{route}:<key>``  the result of a publish with that idempotency key, for IDEMPOTENCY_TTL;
- ``{prefix}:last:{route}``  (with ``HistoryPolicy.latest_keys``) a hash: each feed key's latest
  publication as ``<offset>:<body>``; at most ``latest_keys`` fields (a publication that would add one
  more is refused by the script, nothing written); expires with the meta, dropped when a new epoch starts;
- ``{prefix}:ch:{route}``  the pub/sub channel (sharded pub/sub in a cluster; ``/<db>`` appended on a db other
  than 0, since pub/sub ignores the db: ``RedisShards.channel``). Every message is one type byte and a
  payload: ``P<offset>:<epoch>:<body>`` a publication (``P0::<body>`` without history; the epoch lets a
  node tell a stream Redis lost and started over from the old one), ``J<info>`` a join, ``L<info>`` a
  leave; one channel for all three, so a node sees them in the order Redis accepted them.

One Lua script publishes atomically: idempotency check, epoch creation, offset increment, XADD + trim,
expiries, PUBLISH/SPUBLISH with the offset and the idempotency record. Another reads history and writes
nothing: a stream that does not exist (never published, or idle past its meta ttl) is answered with its
derived epoch (``channels.broker``: from the server's run id, the meta key, the meta ttl and the window of
the server clock), which the publish script gives the stream when it creates it. A Redis restart or a
failover changes the run id, so an empty stream read before it and published after it gets another epoch
(its readers are told they cannot recover, never handed a gap).

Failure policy: Redis unreachable -> ``BrokerUnavailable`` (never a false success). A publish whose script
may have run but whose reply was lost is reported as unavailable too: the client may retry with its
idempotency key. After a shard's pub/sub connection comes back, the handler's ``handle_resubscribed`` gets
that shard's channels, because publications sent meanwhile were missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from channels.broker import IDEMPOTENCY_TTL, BrokerEventHandler, HistoryPolicy
from channels.broker_memory import DEFAULT_META_TTL
from channels.errors import BrokerUnavailable, TooManyKeys, UnrecoverablePosition
from channels.names import ChannelKey
from channels.publication import ClientInfo, HistoryResult, Publication, PublishResult, StreamPosition
from channels.redis_shards import DOWN_ERRORS, RedisShards, Script, Shard, route_of

log = logging.getLogger(__name__)

DERIVED_EPOCH_LUA = """
-- The epoch of a stream that does not exist (channels.broker.derived_epoch): this server's run, the
-- stream's meta key, the meta ttl and the meta-ttl window of the server's clock. A read of an absent
-- stream answers with it and keeps nothing; the stream's first publication takes it.
local function derived_epoch(meta_key, meta_ttl_ms)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local window = string.format('%d', math.floor(now / meta_ttl_ms))
  return string.sub(redis.sha1hex(run .. '|' .. meta_key .. '|' .. meta_ttl_ms .. '|' .. window), 1, 8)
end
"""

PUBLISH_SCRIPT = Script(
    DERIVED_EPOCH_LUA
    + """
-- KEYS: stream, meta, idempotency, latest
-- ARGV: body, size, ttl_ms, meta_ttl_ms, channel, publish command, use_idem, idem_ttl_ms, latest_keys,
--       feed key
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {1, seen} end
end
local offset = 0
local epoch = ''
local size = tonumber(ARGV[2])
local keep = tonumber(ARGV[9])
if size > 0 then
  epoch = redis.call('HGET', KEYS[2], 'e')
  if not epoch then
    -- a new stream (or its meta expired): whatever history is left belongs to no epoch any more
    epoch = derived_epoch(KEYS[2], tonumber(ARGV[4]))
    redis.call('DEL', KEYS[1], KEYS[4])
    redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  end
  if keep > 0 and redis.call('HLEN', KEYS[4]) >= keep and redis.call('HEXISTS', KEYS[4], ARGV[10]) == 0 then
    return {2, ''}
  end
  offset = redis.call('HINCRBY', KEYS[2], 's', 1)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local deadline = string.format('%d', now + tonumber(ARGV[3]))
  redis.call('XADD', KEYS[1], 'MAXLEN', size, offset .. '-0', 'd', ARGV[1], 'x', deadline)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  if keep > 0 then
    redis.call('HSET', KEYS[4], ARGV[10], offset .. ':' .. ARGV[1])
    redis.call('PEXPIRE', KEYS[4], ARGV[4])
  end
end
redis.call(ARGV[6], ARGV[5], 'P' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
local result = offset .. ':' .. epoch
if ARGV[7] == '1' then redis.call('SET', KEYS[3], result, 'PX', ARGV[8]) end
return {0, result}
"""
)

HISTORY_SCRIPT = Script(
    DERIVED_EPOCH_LUA
    + """
-- KEYS: stream, meta
-- ARGV: meta_ttl_ms, since_offset ('' = none), since_epoch, limit, reverse ('1'/'0')
-- Read-only: a stream that does not exist stays so (what is left of an expired one belongs to no epoch).
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = derived_epoch(KEYS[2], tonumber(ARGV[1]))
  if ARGV[2] ~= '' and ARGV[3] ~= epoch then return {epoch, 0, 0} end
  return {epoch, 0, {}}
end
local top = tonumber(redis.call('HGET', KEYS[2], 's'))
if ARGV[2] ~= '' and ARGV[3] ~= epoch then return {epoch, top, 0} end
local limit = tonumber(ARGV[4])
local out = {}
if limit == 0 then return {epoch, top, out} end
local entries
if ARGV[5] == '1' then
  local upper = '+'
  if ARGV[2] ~= '' then
    local since = tonumber(ARGV[2])
    if since <= 1 then return {epoch, top, out} end
    upper = string.format('%d', since - 1) .. '-0'
  end
  entries = redis.call('XREVRANGE', KEYS[1], upper, '-')
else
  local lower = '-'
  if ARGV[2] ~= '' then lower = string.format('%d', tonumber(ARGV[2]) + 1) .. '-0' end
  entries = redis.call('XRANGE', KEYS[1], lower, '+')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, e in ipairs(entries) do
  local f = e[2]
  local d, x
  for i = 1, #f, 2 do
    if f[i] == 'd' then d = f[i + 1] elseif f[i] == 'x' then x = tonumber(f[i + 1]) end
  end
  if x > now then
    out[#out + 1] = e[1]
    out[#out + 1] = d
    if limit > 0 and #out >= 2 * limit then break end
  end
end
return {epoch, top, out}
"""
)


LATEST_SCRIPT = Script(
    DERIVED_EPOCH_LUA
    + """
-- KEYS: meta, latest
-- ARGV: meta_ttl_ms
-- Read-only, as HISTORY_SCRIPT: the position and every key's latest publication in one step.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {derived_epoch(KEYS[1], tonumber(ARGV[1])), 0, {}} end
return {epoch, tonumber(redis.call('HGET', KEYS[1], 's')), redis.call('HGETALL', KEYS[2])}
"""
)


def _info_row(info: ClientInfo | None) -> list[Any] | None:
    return None if info is None else [info.user, info.client, info.conn_info, info.chan_info]


def _info_of(row: list[Any] | None) -> ClientInfo | None:
    return None if row is None else ClientInfo(row[0], row[1], row[2], row[3])


def encode_body(pub: Publication) -> bytes:
    row: list[Any] = [pub.data, _info_row(pub.info), pub.tags, pub.time]
    if pub.key:
        row.append(pub.key)
    return msgpack.packb(row, use_bin_type=True)  # type: ignore[no-any-return]


def decode_body(body: bytes, offset: int) -> Publication:
    """A publication from its body; one written before feed keys existed (four members) has the key ''."""
    data, info, tags, ms, *rest = msgpack.unpackb(body, raw=False)
    key = rest[0] if rest else ""
    return Publication(data=data, offset=offset, info=_info_of(info), tags=tags, time=ms, key=key)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisBroker:
    """Broker over Redis shards (standalone, consistent-hashed standalone servers, or a cluster).

    ``node_id`` names this node in logs. ``publish`` returns once the script ran on Redis; delivery to
    this node's own handler comes back through pub/sub like everyone else's, in Redis order. Its command
    is written before its first suspension (``Shard.send``), so publishes started one after another run
    in that order on Redis (``pipelined``, standalone only).
    """

    def __init__(self, shards: RedisShards, *, node_id: str) -> None:
        self.shards = shards
        self.node_id = node_id
        self.pipelined = not shards.cluster
        """Standalone shards write each command in call order on one connection (``Shard.send``), so
        publishes started one after another are accepted in that order; a cluster's pooled connections
        keep no order."""
        self._handler: BrokerEventHandler | None = None
        self._subscribed: dict[ChannelKey, Shard] = {}
        self._hooked: set[int] = set()

    def set_handler(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        for shard in self.shards.shards:
            if shard.index not in self._hooked:
                self._hooked.add(shard.index)
                shard.on_reconnect(self._reconnected_callback(shard))
        await self.shards.start()

    async def close(self) -> None:
        # the shards are shared (presence, control channel): their owner closes them
        self._subscribed.clear()

    def _reconnected_callback(self, shard: Shard) -> Callable[[], None]:
        def reconnected() -> None:
            keys = [k for k, s in self._subscribed.items() if s is shard]
            handler = self._handler
            if keys and handler is not None:
                handler.handle_resubscribed(keys)

        return reconnected

    def _where(self, key: ChannelKey) -> tuple[str, Shard]:
        route = route_of(key[0], key[1])
        return route, self.shards.shard_for(route)

    # -- pub/sub -----------------------------------------------------------------------------------------

    async def subscribe(self, key: ChannelKey) -> None:
        route, shard = self._where(key)
        try:
            await shard.subscribe(self.shards.channel("ch", route, shard=shard), self._dispatcher(key))
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
        self._subscribed[key] = shard

    async def barrier(self, key: ChannelKey) -> None:
        """A PING on the pub/sub connection that carries ``key``: Redis answers it after every message it
        sent on that connection before, and the reader dispatches in order."""
        route, shard = self._where(key)
        try:
            await shard.barrier(self.shards.channel("ch", route, shard=shard))
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc

    async def unsubscribe(self, key: ChannelKey) -> None:
        route, shard = self._where(key)
        self._subscribed.pop(key, None)
        await shard.unsubscribe(self.shards.channel("ch", route, shard=shard))

    def _dispatcher(self, key: ChannelKey) -> Callable[[bytes], None]:
        def dispatch(msg: bytes) -> None:
            handler = self._handler
            if handler is None:
                return
            kind = msg[0]
            if kind == 0x50:  # P<offset>:<epoch>:<body> (an epoch is hex: no colon); one split is cheapest
                head, epoch, body = msg.split(b":", 2)
                handler.handle_publication(key, decode_body(body, int(head[1:])), epoch.decode())
            elif kind == 0x4A:  # J
                info = _info_of(msgpack.unpackb(msg[1:], raw=False))
                assert info is not None
                handler.handle_join(key, info)
            elif kind == 0x4C:  # L
                info = _info_of(msgpack.unpackb(msg[1:], raw=False))
                assert info is not None
                handler.handle_leave(key, info)

        return dispatch

    # -- publish -----------------------------------------------------------------------------------------

    async def publish(
        self,
        key: ChannelKey,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        history: HistoryPolicy | None = None,
        idempotency_key: str | None = None,
        feed_key: str = "",
    ) -> PublishResult:
        route, shard = self._where(key)
        now_ms = int(time.time() * 1000)
        body = encode_body(Publication(data=data, info=info, tags=tags, time=now_ms, key=feed_key))
        channel = self.shards.channel("ch", route, shard=shard)
        with_history = history is not None and history.size > 0 and history.ttl > 0
        if not with_history and not idempotency_key:
            try:
                await shard.publish(channel, b"P0::" + body)
            except DOWN_ERRORS as exc:
                raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
            return PublishResult(StreamPosition())
        keys = [
            self.shards.key("hist", route),
            self.shards.key("meta", route),
            f"{self.shards.key('idem', route)}:{idempotency_key or ''}",
            self.shards.key("last", route),
        ]
        args = [
            body,
            history.size if history is not None and with_history else 0,
            _ms(history.ttl) if history is not None and with_history else 0,
            _ms(history.meta_ttl or DEFAULT_META_TTL) if history is not None else 1,
            channel,
            "SPUBLISH" if self.shards.cluster else "PUBLISH",
            "1" if idempotency_key else "0",
            _ms(IDEMPOTENCY_TTL),
            history.latest_keys if history is not None and with_history else 0,
            feed_key,
        ]
        try:
            suppressed, result = await shard.eval(PUBLISH_SCRIPT, keys, args, ordered=True)
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
        if suppressed == 2:
            assert history is not None
            raise TooManyKeys(f"{key[1]} keeps the latest of {history.latest_keys} keys already")
        offset, _, epoch = result.partition(b":")
        return PublishResult(StreamPosition(int(offset), epoch.decode()), suppressed=bool(suppressed))

    async def _publish_event(self, key: ChannelKey, kind: bytes, info: ClientInfo) -> None:
        route, shard = self._where(key)
        payload = kind + msgpack.packb(_info_row(info), use_bin_type=True)
        try:
            await shard.publish(self.shards.channel("ch", route, shard=shard), payload)
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc

    async def publish_join(self, key: ChannelKey, info: ClientInfo) -> None:
        await self._publish_event(key, b"J", info)

    async def publish_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        await self._publish_event(key, b"L", info)

    # -- history -----------------------------------------------------------------------------------------

    async def history(
        self,
        key: ChannelKey,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
        meta_ttl: float = 0.0,
    ) -> HistoryResult:
        route, shard = self._where(key)
        keys = [self.shards.key("hist", route), self.shards.key("meta", route)]
        args = [
            _ms(meta_ttl or DEFAULT_META_TTL),
            "" if since is None else since.offset,
            "" if since is None else since.epoch,
            max(limit, -1),
            "1" if reverse else "0",
        ]
        try:
            epoch_b, top, entries = await shard.eval(HISTORY_SCRIPT, keys, args)
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
        epoch = epoch_b.decode()
        position = StreamPosition(int(top), epoch)
        if since is not None and since.epoch != epoch:
            raise UnrecoverablePosition(f"epoch {since.epoch!r} is not the stream's {epoch!r}")
        pubs = [
            decode_body(entries[i + 1], int(entries[i].partition(b"-")[0])) for i in range(0, len(entries), 2)
        ]
        return HistoryResult(pubs, position)

    async def latest(self, key: ChannelKey, *, meta_ttl: float = 0.0) -> HistoryResult:
        route, shard = self._where(key)
        keys = [self.shards.key("meta", route), self.shards.key("last", route)]
        try:
            epoch_b, top, fields = await shard.eval(LATEST_SCRIPT, keys, [_ms(meta_ttl or DEFAULT_META_TTL)])
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
        pubs = []
        for i in range(1, len(fields), 2):
            offset, _, body = fields[i].partition(b":")
            pubs.append(decode_body(body, int(offset)))
        pubs.sort(key=lambda pub: pub.offset)
        return HistoryResult(pubs, StreamPosition(int(top), epoch_b.decode()))

    async def remove_history(self, key: ChannelKey) -> None:
        """Drop the publications (and each key's latest), keep the position (epoch and top offset), as
        broker_memory does."""
        route, shard = self._where(key)
        try:
            await shard.execute("DEL", self.shards.key("hist", route), self.shards.key("last", route))
        except DOWN_ERRORS as exc:
            raise BrokerUnavailable(f"redis {shard.name}: {exc}") from exc
