"""The document relay over Redis pub/sub (``channels.redis_shards``): documents across nodes.

Every node holding document ``(tenant, name)`` subscribes to its channel
``shards.channel("doc", route_of(tenant, name))`` on the shard the route hashes to (sharded pub/sub in a
cluster). Messages are msgpack arrays ``[kind, origin node id, ...]``; a node ignores its own::

    [0 UPDATE,     origin, [update, ...]]                       changes integrated from origin's own peers
    [1 AWARENESS,  origin, [[connection, awareness update], ...]]
    [2 SYNC_REQ,   origin, request id, state vector]
    [3 SYNC_REPLY, origin, to node, request id, diff, state vector, [[connection, awareness update], ...]]
    [4 RELEASED,   origin]                                      origin gave up the writer lease

Outgoing messages of one document are sent in order by one task; consecutive updates (and awareness
updates) queued while a publish was in flight go out together in one message (up to ``MAX_BATCH_BYTES``),
so a busy document costs one PUBLISH per round trip, not one per keystroke.

Bound: the relay counts the bytes queued on all its links until their publish ended (``backlog``); past
``max_backlog`` it is ``backlog_full`` and the document connections stop being read until ``has_room``
returns (``sync.rooms``), so a slow or stopped Redis slows the writers down instead of growing the queues
(a publish that gets no answer fails after the shards' timeout, and its batch is repaired by a resync). A
sync reply to a node that still has one queued replaces it (a node asking again has what the first answer
carried, or will ask again).

The sync exchange (``catch_up``): the node publishes its state vector; every holder answers with the diff
the requester lacks, its own state vector and the awareness of its own connections; the requester applies
the diff and publishes (as an UPDATE, to everyone) what that holder lacked. On a load the requester first
asks Redis how many nodes hold the channel (PUBSUB NUMSUB, SHARDNUMSUB in a cluster; one pub/sub
connection per node and server) and waits for that many answers, at most ``sync_timeout`` seconds. The
exchange runs again, without waiting, after the shard's pub/sub reconnected (``Shard.on_reconnect``) and
after a publish failed (retried with backoff until a request goes out), since messages were missed then.

The writer lease: key ``shards.key("doclease", route)`` holds the writer's node id with a TTL of
``lease_ttl``. One Lua script takes a free lease or renews one's own (``SET PX`` / ``PEXPIRE``), another
deletes it only if it is one's own. Every ``lease_ttl / 3`` a writer renews; a holder that is not the
writer tries to take it. A writer whose renewals failed stops writing by its own clock two thirds of a TTL
after its last successful renewal began, before Redis can hand the lease to someone else. A node that
unloads the document deletes its lease and publishes RELEASED, so another holder takes over at once; a
node that dies loses it when the TTL runs out.

Durability policy across nodes (see also ``sync.room``): on the writer node an update is relayed to its
peers after its commit, as on a single node; on the other nodes it is relayed at once and made durable by
the writer within a batch after it arrives. A node taking the lease merges what the store holds and then
appends its whole state once (CRDT merges make the repeat harmless), so a writer that died loses nothing
another node held. What only a dead writer held and had not committed is lost from the server, and Yjs
clients resend it when they sync again.

Errors: a link that cannot subscribe raises ``sync.store.StoreError`` from ``attach`` (the room is not
opened; the client retries); so does ``catch_up`` when its sync request cannot be published (Redis down, or
an error reply): a load fails with the storage error, never with a Redis exception. Everything else is
logged and retried and never reaches peers, whatever Redis answered (unreachable, or an error reply such as
-BUSY, -OOM, -READONLY, -MOVED):

- a failed relay publish drops its batch and schedules the sync exchange (``resync_soon``), which retries
  until a request goes out and repairs what the batch carried;
- a failed lease claim counts as "unknown": a writer keeps writing only until its own clock says the lease
  may have expired, then stops; the upkeep loop survives any error of one link;
- ``close`` always stops receiving, even when the last publish or the lease release failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import time
import uuid
from collections.abc import Hashable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from redis.crc import key_slot

from channels.redis_shards import (
    CLAIM_LEASE,
    DOWN_ERRORS,
    RELEASE_LEASE,
    RedisShards,
    Shard,
    ShardUnavailable,
    route_of,
)
from sync.relay import LeaseCallback, RelayedRoom
from sync.store import DocKey, StoreError

log = logging.getLogger("switchboard.sync.relay")

UPDATE = 0
AWARENESS = 1
SYNC_REQUEST = 2
SYNC_REPLY = 3
RELEASED = 4

MAX_BATCH_BYTES = 1024 * 1024
"""Queued updates are joined into one message up to about this size (a PUBLISH of tens of MB would hold
Redis up and pass a subscriber's output buffer limit)."""

FULL_LOG_SPACING = 10.0
"""Seconds between two log lines saying that the relay's backlog is full."""

RESYNC_BACKOFF_MIN = 0.1
RESYNC_BACKOFF_MAX = 2.0


def _pack(message: list[Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


class _Request:
    __slots__ = ("expected", "answers", "done")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answers = 0
        self.done = asyncio.Event()


class RedisDocLink:
    """One document's link (``sync.relay.DocLink``) over one shard's pub/sub."""

    def __init__(self, relay: RedisDocumentRelay, key: DocKey) -> None:
        self.relay = relay
        self.key = key
        route = route_of(*key)
        self.shard: Shard = relay.shards.shard_for(route)
        self.channel = relay.shards.channel("doc", route)
        self.lease_key = relay.shards.key("doclease", route)
        self.writer = False
        self.closed = False
        self._room: RelayedRoom | None = None
        self._on_lease: LeaseCallback | None = None
        self._early: list[bytes] | None = []
        """Messages that arrived before ``bind`` (None once bound)."""
        self._out: list[tuple[int, Any, int]] = []
        """Queued messages: kind, payload, bytes counted in the relay's backlog."""
        self._sender: asyncio.Task[None] | None = None
        self._requests: dict[int, _Request] = {}
        self._valid_until = 0.0
        """While writer: the monotonic time by which a renewal must have succeeded, or we stop writing."""
        self._resync: asyncio.Task[None] | None = None
        self.published = 0
        self.received = 0

    # ---------------------------------------------------------------- receiving

    def _on_message(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
            return
        self._handle(data)

    def bind(self, room: RelayedRoom, on_lease: LeaseCallback) -> None:
        self._room = room
        self._on_lease = on_lease
        early, self._early = self._early, None
        for data in early or ():
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        room = self._room
        if room is None or room.closed or self.closed:
            return
        try:
            message = msgpack.unpackb(data, raw=False)
            kind, origin = message[0], message[1]
        except Exception:
            log.warning("undecodable document relay message on %r", self.channel)
            return
        if origin == self.relay.node_id:
            return
        self.received += 1
        try:
            if kind == UPDATE:
                for update in message[2]:
                    room.apply_remote(update)
            elif kind == AWARENESS:
                self._apply_awareness(room, origin, message[2])
            elif kind == SYNC_REQUEST:
                request_id, state_vector = message[2], message[3]
                self._drop_queued_replies(origin)
                diff = room.doc.get_update(state_vector)
                reply = [SYNC_REPLY, self.relay.node_id, origin, request_id, diff, room.doc.get_state()]
                awareness = room.local_awareness()
                size = len(diff) + sum(len(update) for _, update in awareness)
                self._queue(SYNC_REPLY, [*reply, [list(a) for a in awareness]], size)
            elif kind == SYNC_REPLY:
                if message[2] == self.relay.node_id:
                    self._apply_reply(room, origin, message)
            elif kind == RELEASED:
                if not self.writer:
                    self.relay._spawn(self.claim())
        except Exception:  # a bad message from another node must not stop the channel
            log.exception("document relay message (kind %r) for %r failed", kind, self.key[1])

    @staticmethod
    def _apply_awareness(room: RelayedRoom, origin: str, items: list[Any]) -> None:
        for connection, update in items:
            owner: Hashable = ("node", origin, connection)
            room.apply_remote_awareness(owner, update)

    def _apply_reply(self, room: RelayedRoom, origin: str, message: list[Any]) -> None:
        request_id, diff, their_state, awareness = message[3], message[4], message[5], message[6]
        room.apply_remote(diff)
        self._apply_awareness(room, origin, awareness)
        # Back-fill: what the answering node lacks (it may hold less than this one, e.g. edits made here
        # while Redis was unreachable). Sent to every holder; those that have it ignore it.
        back = room.doc.get_update(their_state)
        self._queue(UPDATE, back, len(back))
        request = self._requests.get(request_id)
        if request is not None:
            request.answers += 1
            if request.answers >= request.expected:
                request.done.set()

    # ---------------------------------------------------------------- sending

    def publish_update(self, update: bytes) -> None:
        self._queue(UPDATE, update, len(update))

    def publish_awareness(self, connection: int, update: bytes) -> None:
        self._queue(AWARENESS, [connection, update], len(update))

    def _queue(self, kind: int, payload: Any, size: int) -> None:
        if self.closed:
            return
        self._out.append((kind, payload, size))
        self.relay._add_backlog(size)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    def _drop_queued_replies(self, to: str) -> None:
        kept = [item for item in self._out if not (item[0] == SYNC_REPLY and item[1][2] == to)]
        if len(kept) != len(self._out):
            dropped = sum(item[2] for item in self._out) - sum(item[2] for item in kept)
            self._out = kept
            self.relay._add_backlog(-dropped)

    def _next_batch(self) -> tuple[bytes, int]:
        """The next message and the bytes it takes from the backlog: consecutive updates (or awareness
        updates) queued become one."""
        node = self.relay.node_id
        kind, payload, size = self._out[0]
        if kind not in (UPDATE, AWARENESS):
            del self._out[0]
            return _pack(payload), size
        n, total = 1, size
        while n < len(self._out) and self._out[n][0] == kind and total < MAX_BATCH_BYTES:
            total += self._out[n][2]
            n += 1
        batch = self._out[:n]
        del self._out[:n]
        return _pack([kind, node, [p for _, p, _ in batch]]), sum(s for _, _, s in batch)

    async def _send_queued(self) -> None:
        size = 0
        try:
            while self._out:
                data, size = self._next_batch()
                try:
                    await self.shard.publish(self.channel, data)
                    self.published += 1
                except Exception as exc:  # down or an error reply (-BUSY, -MOVED...): the batch is lost
                    log.warning("document %r: relay publish failed (%r); will resync", self.key[1], exc)
                    self.resync_soon()
                self.relay._add_backlog(-size)
                size = 0
        finally:
            self._sender = None
            if size:  # cancelled while publishing
                self.relay._add_backlog(-size)

    async def flush(self) -> None:
        """Wait until everything queued so far was published (or failed: a failure schedules a resync and
        never raises here)."""
        while (sender := self._sender) is not None:
            try:
                await asyncio.shield(sender)
            except asyncio.CancelledError:
                if not sender.cancelled():
                    raise  # our caller was cancelled, not the sender
            except Exception:  # the sender catches its own errors; this is only a guard
                log.exception("document %r: relay sender failed", self.key[1])
            if self._sender is sender:  # it ended without clearing itself
                self._sender = None

    # ---------------------------------------------------------------- the sync exchange

    async def catch_up(self, wait: bool = True) -> int:
        room = self._room
        if room is None or self.closed:
            return 0
        expected = 0
        if wait:
            try:
                expected = max(0, await self._holders() - 1)
            except Exception as exc:  # down or an error reply: then nobody is waited for
                log.warning("document %r: counting holders failed: %r", self.key[1], exc)
        request_id = next(self.relay._request_ids)
        request = _Request(expected)
        self._requests[request_id] = request
        try:
            message = _pack([SYNC_REQUEST, self.relay.node_id, request_id, room.doc.get_state()])
            try:
                await self.shard.publish(self.channel, message)
            except Exception as exc:  # down or an error reply (-BUSY, -MOVED...): a load fails as storage
                raise StoreError(f"documents across nodes unavailable: {exc!r}") from None
            if wait and expected > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.relay.sync_timeout):
                        await request.done.wait()
                if request.answers < expected:
                    log.info(
                        "document %r: %d of %d holders answered the sync request in time",
                        self.key[1],
                        request.answers,
                        expected,
                    )
            return request.answers
        finally:
            # Later answers are still applied when they come (they are addressed to this node); only the
            # counting stops.
            self._requests.pop(request_id, None)

    async def _holders(self) -> int:
        """How many nodes subscribe to this document's channel (this one included)."""
        redis = self.shard.redis
        if isinstance(redis, aioredis.RedisCluster):
            if not redis.nodes_manager.slots_cache:
                await redis.initialize()
            node = redis.nodes_manager.get_node_from_slot(key_slot(self.channel.encode()))
            reply = await redis.execute_command("PUBSUB SHARDNUMSUB", self.channel, target_nodes=node)
        else:
            reply = await self.shard.execute("PUBSUB", "NUMSUB", self.channel)
        if isinstance(reply, dict):
            return int(next(iter(reply.values()), 0))
        if isinstance(reply, list) and reply:
            last = reply[-1]
            return int(last[1] if isinstance(last, list | tuple) else last)
        return 0

    def resync_soon(self) -> None:
        """Run the exchange again in the background (retried with backoff until a request goes out)."""
        if self._resync is None or self._resync.done():
            self._resync = self.relay._spawn(self._resync_until_sent())

    async def _resync_until_sent(self) -> None:
        delay = RESYNC_BACKOFF_MIN
        while not self.closed:
            try:
                await self.catch_up(wait=False)
                return
            except Exception as exc:  # down (StoreError) or an error reply: try again
                log.debug("document %r: sync request failed (%r); retrying", self.key[1], exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # retry backoff
                delay = min(RESYNC_BACKOFF_MAX, delay * 2)

    # ---------------------------------------------------------------- the writer lease

    async def claim(self) -> bool:
        """Take the lease if it is free (or renew it if it is ours); tell the room when that changed."""
        if self.closed or self._room is None:
            return False
        started = time.monotonic()
        try:
            held = await self.relay._claim(self.shard, self.lease_key)
        except DOWN_ERRORS as exc:
            log.debug("document %r: lease claim failed: %s", self.key[1], exc)
            held = None
        except Exception as exc:  # an error reply (-BUSY, -OOM, -READONLY, -NOPERM): as unknown as down
            log.warning("document %r: lease claim failed: %r", self.key[1], exc)
            held = None
        if self.closed:
            return False
        if held:
            self._valid_until = started + self.relay.lease_ttl * 2 / 3
            self._set_writer(True)
        elif held is not None or time.monotonic() >= self._valid_until:
            self._set_writer(False)
        return self.writer

    def _set_writer(self, writer: bool) -> None:
        if writer == self.writer:
            return
        self.writer = writer
        log.debug("document %r: %s writer", self.key[1], "became" if writer else "no longer")
        if self._on_lease is not None:
            try:
                self._on_lease(writer)
            except Exception:
                log.exception("lease callback of %r failed", self.key[1])

    async def close(self) -> None:
        """Send what is queued, give up the lease, stop receiving. The channel is unsubscribed only while
        this link is still the relay's link of the document: a newer link of a reloaded room shares the
        channel (a shard's subscriptions are per channel, last call wins), and it must stay subscribed."""
        if self.closed:
            return
        try:
            await self.flush()
        finally:
            self.closed = True
            try:
                if self.writer:
                    self.writer = False
                    try:
                        await self.relay._release(self.shard, self.lease_key)
                        await self.shard.publish(self.channel, _pack([RELEASED, self.relay.node_id]))
                    except Exception as exc:  # the lease expires by its TTL instead
                        log.warning("document %r: releasing the writer lease failed: %r", self.key[1], exc)
            finally:
                if self._resync is not None:
                    self._resync.cancel()
                if self.relay.links.get(self.key) is self:
                    del self.relay.links[self.key]
                    await self.shard.unsubscribe(self.channel)


class RedisDocumentRelay:
    """``sync.relay.DocumentRelay`` over ``RedisShards`` (which the caller starts and closes)."""

    def __init__(
        self,
        shards: RedisShards,
        *,
        node_id: str | None = None,
        lease_ttl: float = 10.0,
        sync_timeout: float = 2.0,
        max_backlog: int = 16 * 1024 * 1024,
    ) -> None:
        self.shards = shards
        self.node_id = node_id or uuid.uuid4().hex
        self.lease_ttl = lease_ttl
        self.sync_timeout = sync_timeout
        self.max_backlog = max_backlog
        self.backlog = 0
        """Bytes queued on the links, until their publish ended."""
        self._room = asyncio.Event()
        self._room.set()
        self._full_logged = float("-inf")
        self.links: dict[DocKey, RedisDocLink] = {}
        self._request_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._started = False
        self._watching = False
        """The shards' reconnect callbacks are registered (once for the relay's life: they cannot be
        removed, and ``_reconnected`` ignores them while the relay is stopped)."""

    @property
    def backlog_full(self) -> bool:
        return self.backlog > self.max_backlog

    async def has_room(self) -> None:
        await self._room.wait()

    def _add_backlog(self, size: int) -> None:
        self.backlog += size
        if self.backlog > self.max_backlog:
            if self._room.is_set():
                self._room.clear()
                now = time.monotonic()
                if now - self._full_logged < FULL_LOG_SPACING:
                    return
                self._full_logged = now
                log.warning(
                    "Redis is behind (%d bytes of document messages waiting): document connections are "
                    "not read until it catches up",
                    self.backlog,
                )
        else:
            self._room.set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if not self._watching:
            self._watching = True
            for shard in self.shards.shards:
                shard.on_reconnect(functools.partial(self._reconnected, shard))
        if self._upkeep is None or self._upkeep.done():
            self._upkeep = asyncio.get_running_loop().create_task(self._run_upkeep())

    async def attach(self, key: DocKey) -> RedisDocLink:
        link = RedisDocLink(self, key)
        self.links[key] = link
        try:
            await link.shard.subscribe(link.channel, link._on_message)
        except ShardUnavailable as exc:
            if self.links.get(key) is link:
                del self.links[key]
            raise StoreError(f"documents across nodes unavailable: {exc}") from None
        return link

    def _reconnected(self, shard: Shard) -> None:
        """Messages published while the pub/sub connection was down were missed: sync every document."""
        if not self._started:
            return
        for link in list(self.links.values()):
            if link.shard is shard:
                link.resync_soon()

    async def _run_upkeep(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            for link in list(self.links.values()):
                if link._room is not None and not link.closed:
                    try:
                        await link.claim()
                    except Exception:  # one document's trouble must not end every lease's upkeep
                        log.exception("lease upkeep of document %r failed", link.key[1])

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _claim(self, shard: Shard, lease_key: str) -> bool:
        ttl_ms = max(1, int(self.lease_ttl * 1000))
        return bool(await shard.eval(CLAIM_LEASE, [lease_key], [self.node_id, ttl_ms]))

    async def _release(self, shard: Shard, lease_key: str) -> None:
        await shard.eval(RELEASE_LEASE, [lease_key], [self.node_id])

    async def close(self) -> None:
        tasks = [t for t in (self._upkeep, *self._tasks) if t is not None]
        self._upkeep = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._started = False
