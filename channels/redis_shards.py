"""The shared Redis connection layer: every part of the hub that talks to Redis goes through here.

Three deployment shapes, one interface:

- one standalone Redis: ``RedisShards(["redis://host:6379"])``, one ``Shard``;
- several standalone Redis servers: one ``Shard`` per URL; a channel (or document) lives on the shard its
  *route* hashes to on a consistent-hash ring with virtual nodes (adding a server moves ~1/n of routes);
- a Redis Cluster: ``RedisShards(seeds, cluster=True)``, exactly one ``Shard`` whose ``redis`` is a
  ``RedisCluster``; every key of one route shares a hash slot through its ``{route}`` hash tag, and pub/sub is
  sharded (SSUBSCRIBE / SPUBLISH on the node owning the channel's slot).

Pub/sub policy: one connection per Redis server (per cluster primary that owns a subscribed channel), one
reader task per connection, every message handed synchronously, in order, to its channel's handler (no task
per message). A lost connection is re-established with exponential backoff plus jitter (0.05 s doubling to
2 s); every channel is resubscribed, then the shard's ``on_reconnect`` callbacks fire, because anything
published meanwhile was missed. Subscribing and unsubscribing one channel concurrently is deterministic: the
last call wins, and a channel whose ``subscribe`` returned stays subscribed until a later ``unsubscribe``.

Commands (scripts, history, presence) use ``Shard.redis`` directly (bytes in and out, no retries: a command
whose reply was lost must be reported, not silently run twice). ``DOWN_ERRORS`` lists what "Redis cannot be
reached now" looks like from redis-py; callers map it to their own unavailable error.

Error tree::

    ConnectionError (builtin)
     +-- ShardUnavailable    the shard's Redis cannot be reached now (publish/subscribe)
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import hashlib
import logging
import random
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlparse

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

log = logging.getLogger(__name__)

VIRTUAL_NODES = 160
"""Points per server on the hash ring: enough that servers get near-equal shares of routes."""
FEED_SLICE = 16384
"""Bytes handed to the reply parser at a time (see _PubSubConnection.data_received)."""
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


class ShardUnavailable(ConnectionError):
    """The shard's Redis cannot be reached now."""


DOWN_ERRORS: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes BusyLoadingError
    rexc.TimeoutError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.RedisClusterException,  # "cannot connect to any seed", slot not covered
    OSError,  # includes the builtin ConnectionError and ShardUnavailable
    asyncio.TimeoutError,
)
"""Exceptions meaning "Redis cannot be reached now" (as opposed to a bad command or a script error)."""


def _escape(text: str, *, colon: bool) -> str:
    text = text.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return text.replace(":", "%3A") if colon else text


def route_of(tenant: str, name: str) -> str:
    """An unambiguous, hash-tag-safe routing string for (tenant, name).

    The consistent-hash input in standalone mode and the text inside ``{...}`` of every Redis key of that
    channel/document in cluster mode. ``%``, ``{`` and ``}`` are percent-escaped (so a name holding ``}``
    keeps all its keys on one slot), and ``:`` in the tenant, so the first ``:`` always ends the tenant.
    """
    return f"{_escape(tenant, colon=True)}:{_escape(name, colon=False)}"


def _ring_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _server_identity(url: str) -> str:
    """What places a server on the ring: host, port and db, not credentials nor query options."""
    p = urlparse(url)
    db = (p.path or "/0").lstrip("/") or "0"
    return f"{p.hostname or 'localhost'}:{p.port or 6379}/{db}"


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL (which also loads it) on NOSCRIPT.

    Every script is loaded (SCRIPT LOAD) on each new command connection before anything else is sent on
    it, so a restarted Redis (an empty script cache) answers the first EVALSHA too: no NOSCRIPT, and no
    retry that another command could overtake (see ``Shard.eval``)."""

    known: list[Script] = []
    """Every script made: what a new connection loads."""

    def __init__(self, lua: str) -> None:
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()
        Script.known.append(self)


class _Pipe(asyncio.Protocol):
    """One pipelined command connection (standalone servers): commands are written in call order, batched
    per loop tick, and replies matched to waiters first in, first out (Redis answers in order).

    redis-py's asyncio client costs ~160 us of CPU per command on this machine (pool checkout, health
    probes, metrics hooks); this costs a few microseconds plus the shared syscalls, so concurrent publishes
    from many sessions share writes and reads instead of each taking a pooled connection.
    """

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=rexc.ResponseError)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is no subclass of asyncio.Transport, but it is one in every way we use
        self._transport = cast(asyncio.Transport, transport)
        self.alive = True

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self._waiters
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiters:
                continue
            fut = waiters.popleft()
            if fut.done():  # its caller gave up (timeout): the reply is still consumed in order
                continue
            if isinstance(reply, rexc.ResponseError):
                fut.set_exception(_response_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        waiters, self._waiters = self._waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(ShardUnavailable(f"connection lost: {exc or 'closed by server'}"))

    def send(self, packed: bytes, fut: asyncio.Future[Any] | None = None) -> asyncio.Future[Any]:
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(ShardUnavailable("connection lost"))
            return fut
        self._waiters.append(fut)
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(packed)
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and self.alive:
            self._transport.write(b"".join(out))

    def abort(self) -> None:
        self.alive = False  # at once: connection_lost only runs on a later loop iteration
        if self._transport is not None:
            self._transport.abort()


def _response_error(err: rexc.ResponseError) -> rexc.ResponseError:
    """The redis-py class for an error reply (NOSCRIPT, BUSY, ...), so callers can tell them apart."""
    text = str(err)
    if text.startswith("NOSCRIPT"):
        return rexc.NoScriptError(text)
    if text.startswith("LOADING"):
        return rexc.BusyLoadingError(text)  # type: ignore[return-value]
    return err


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget future's outcome, so a lost connection logs no 'never retrieved'."""
    if not fut.cancelled():
        fut.exception()


class _PubSubConnection(asyncio.Protocol):
    """One pub/sub connection to one Redis server: reconnect with backoff, resubscribe, dispatch.

    Replies are parsed by hiredis in ``data_received`` and every message is handed to its channel's
    handler right there, synchronously and in order (no task, no await per message). Commands are written
    synchronously, so Redis sees them in call order (last call wins). Confirmations come back in command
    order, so a waiter is matched by (kind, channel), oldest first; an error or status reply answers the
    oldest waiter. ``sharded``: SSUBSCRIBE/smessage (cluster) instead of SUBSCRIBE/message.
    """

    def __init__(self, shard: Shard, host: str, port: int, *, sharded: bool, label: str) -> None:
        self.shard = shard
        self.host, self.port = host, port
        self.sub = b"ssubscribe" if sharded else b"subscribe"
        self.unsub = b"sunsubscribe" if sharded else b"unsubscribe"
        self._msg = b"smessage" if sharded else b"message"
        self.label = label
        self.handlers: dict[bytes, Callable[[bytes], None]] = {}
        """The desired state: channel -> handler. Resubscribed after every reconnect."""
        self._waiters: list[tuple[bytes, bytes, asyncio.Future[Any]]] = []
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=rexc.ResponseError)
        self._lost: asyncio.Future[None] | None = None
        self.connected = False
        self.first_attempt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connecting_failed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"redis-pubsub {self.label}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_waiters()

    # -- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is no subclass of asyncio.Transport, but it is one in every way we use
        self._transport = cast(asyncio.Transport, transport)
        self._reader = hiredis.Reader(replyError=rexc.ResponseError)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        # hiredis moves its unread buffer down after every 1 KiB consumed, so a 256 KiB read fed at once
        # costs twice the parsing; fed in 16 KiB slices it stays at the parser's floor (~0.6 us a message)
        size = len(data)
        for offset in range(0, size, FEED_SLICE):
            self._received(data, offset, min(FEED_SLICE, size - offset))

    def _received(self, data: bytes, offset: int, length: int) -> None:
        reader, handlers, msg_kind = self._reader, self.handlers, self._msg
        reader.feed(data, offset, length)
        while (reply := reader.gets()) is not False:
            if type(reply) is list and len(reply) >= 3:
                kind = reply[0]
                if kind == msg_kind:
                    handler = handlers.get(reply[1])
                    if handler is not None:
                        try:
                            handler(reply[2])
                        except Exception:  # a handler's bug must not stop delivery to every other channel
                            log.exception("redis pub/sub handler failed for %r", reply[1])
                elif kind == self.sub or kind == self.unsub:
                    self._confirm(kind, reply[1])
            elif self._waiters:
                # an error reply (MOVED for an SSUBSCRIBE on the wrong node, NOAUTH, ...) or AUTH's +OK
                _, _, fut = self._waiters.pop(0)
                if not fut.done():
                    if isinstance(reply, rexc.ResponseError):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)

    # -- commands ----------------------------------------------------------------------------------------

    def _send(self, kind: bytes, channel: bytes, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport = self._transport
        if transport is None or transport.is_closing():
            fut.set_exception(ShardUnavailable(f"redis {self.label} is not connected"))
            return fut
        self._waiters.append((kind, channel, fut))
        transport.write(hiredis.pack_command(args))
        return fut

    async def command(self, kind: bytes, channel: bytes, wait: float) -> None:
        """Send (S)SUBSCRIBE/(S)UNSUBSCRIBE for one channel and wait for Redis to confirm it."""
        if not self.connected:
            raise ShardUnavailable(f"redis {self.label} is not connected")
        fut = self._send(kind, channel, (kind.decode(), channel))
        try:
            async with asyncio.timeout(wait):
                await fut
        except TimeoutError as exc:
            # the waiter stays queued (cancelled): Redis answers every command once and in order, so its late
            # confirmation is matched to it and swallowed, never taken for an unsolicited one (a slot move)
            raise ShardUnavailable(f"redis {self.label} did not confirm {kind.decode()} in {wait} s") from exc

    async def ping(self, wait: float) -> None:
        """A round trip on this connection: Redis answers after every message it sent here before."""
        if not self.connected:
            raise ShardUnavailable(f"redis {self.label} is not connected")
        fut = self._send(b"ping", b"", ("PING",))
        try:
            async with asyncio.timeout(wait):
                await fut
        except TimeoutError as exc:  # the waiter stays queued for the late reply (see command)
            raise ShardUnavailable(f"redis {self.label} did not answer PING in {wait} s") from exc

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, _, fut in waiters:
            if not fut.done():
                fut.set_exception(ShardUnavailable(f"redis {self.label}: connection lost"))

    def _confirm(self, kind: bytes, channel: bytes) -> None:
        for i, (k, ch, fut) in enumerate(self._waiters):
            if k == kind and ch == channel:
                del self._waiters[i]
                if not fut.done():
                    fut.set_result(None)
                return
        if kind == self.unsub and channel in self.handlers and self.shard.cluster:
            # unsolicited (every command's own confirmation has a waiter until it arrives): in a cluster, the
            # channel's slot moved to another node. A standalone Redis never drops a subscription by itself.
            self.shard._moved([channel], self)

    # -- the connection loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        ever_connected = False
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._lost = loop.create_future()
            try:
                async with asyncio.timeout(self.shard.connect_timeout):
                    await self.shard._open(lambda: self, self.host, self.port)
                    for args in self.shard._hello(select=False):
                        await self._send(b"hello", b"", args)
                channels = list(self.handlers)
                resubscribed = [self._send(self.sub, ch, (self.sub.decode(), ch)) for ch in channels]
                elsewhere: list[bytes] = []
                for ch, fut in zip(channels, resubscribed, strict=True):
                    try:
                        async with asyncio.timeout(self.shard.connect_timeout):
                            await fut
                    except rexc.ResponseError:
                        elsewhere.append(ch)  # MOVED: this node no longer owns the channel's slot
                if elsewhere:
                    self.shard._moved(elsewhere, self)
                for ch in channels:
                    if ch not in self.handlers and ch not in elsewhere:
                        # unsubscribed during the handshake, after its SUBSCRIBE went out: drop it at Redis
                        # too (its confirmation is matched to this waiter; nobody awaits it)
                        self._send(self.unsub, ch, (self.unsub.decode(), ch)).add_done_callback(_consume)
                self._up(ever_connected)
                self._connecting_failed = False
                ever_connected = True
                attempt = 0
                await self._lost
                raise ConnectionError("closed by server")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure of the connection: log, back off, reconnect
                if self.connected or attempt == 0:
                    log.warning("redis pub/sub %s lost: %r", self.label, exc)
                if self.shard.cluster and self.handlers and not self._connecting_failed:
                    # the node may be gone for good (failover): channels whose slots moved go elsewhere
                    self._connecting_failed = True
                    self.shard._remap(self)
            finally:
                was_connected, self.connected = self.connected, False
                if was_connected:
                    self.shard._state_changed()
                if self._transport is not None:
                    self._transport.abort()
                    self._transport = None
                self._fail_waiters()
            self.first_attempt.set()
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt)
            attempt = min(attempt + 1, 16)
            await asyncio.sleep(
                delay * random.uniform(0.5, 1.0)
            )  # backoff with jitter, not a wait for an effect

    def _up(self, reconnect: bool) -> None:
        self.connected = True
        self.first_attempt.set()
        self.shard._state_changed()
        if reconnect:
            log.info("redis pub/sub %s reconnected; %d channels resubscribed", self.label, len(self.handlers))
            self.shard._fire_reconnect()


# A lease (one holder at a time, by TTL): the document writer's (sync.relay_redis), the MQTT bridge's
# (workers.lease_redis). KEYS[1] lease, ARGV[1] holder id, ARGV[2] ttl ms -> 1 if the caller holds the lease
# now (taken when free, renewed when its own), else 0.
CLAIM_LEASE = Script("""
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
""")

# KEYS[1] lease, ARGV[1] holder id -> 1 if it was the caller's and is deleted, else 0.
RELEASE_LEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


class Shard:
    """One Redis server (standalone) or the whole cluster (cluster mode): commands and pub/sub.

    ``connected`` is true while every pub/sub connection is up and every channel is (re)subscribed.
    """

    def __init__(
        self, index: int, url: str, *, seeds: Sequence[str], cluster: bool, connect_timeout: float
    ) -> None:
        self.index = index
        self.url = url
        self.name = "cluster" if cluster else _server_identity(url)
        """For logs and errors: host:port/db, never the URL's credentials."""
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        self._callbacks: list[Callable[[], None]] = []
        self._conns: dict[str, _PubSubConnection] = {}
        self._owner: dict[bytes, str] = {}
        """cluster: channel -> the node name its subscription lives on."""
        self._conn_kwargs: dict[str, Any] = dict(parse_url(url))
        self.db = 0 if cluster else int(self._conn_kwargs.get("db") or 0)
        """The database number from the URL (a cluster has only db 0). Redis pub/sub ignores it, so it is
        part of the pub/sub channel names carried by this shard (see RedisShards.channel)."""
        self._tls = urlparse(url).scheme == "rediss"
        self._address: tuple[str, int] = (
            self._conn_kwargs.get("host", "localhost"),
            self._conn_kwargs.get("port", 6379),
        )
        common: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": connect_timeout,
            "socket_keepalive": True,
            "decode_responses": False,
            "protocol": 2,  # RESP2: plain replies; pub/sub messages as arrays, not RESP3 push frames
        }
        self.redis: aioredis.Redis | aioredis.RedisCluster
        if cluster:
            auth = {k: v for k, v in self._conn_kwargs.items() if k in ("username", "password", "ssl")}
            nodes = [
                ClusterNode(urlparse(u).hostname or "localhost", urlparse(u).port or 6379) for u in seeds
            ]
            self.redis = aioredis.RedisCluster(
                startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **auth, **common
            )
        else:
            self.redis = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        self._generation: dict[bytes, int] = {}
        self._state = asyncio.Event()
        self._pipe: _Pipe | None = None
        self._pipe_lock = asyncio.Lock()
        self._queued: list[tuple[bytes, asyncio.Future[Any]]] = []
        """Commands sent while the command connection is (re)connecting, in call order."""
        self._reconnecting: asyncio.Task[None] | None = None
        self.sent = 0
        """Commands sent on the command connection so far (standalone): tells ``eval`` whether another
        command went out after one of its own."""
        self._tasks: set[asyncio.Future[None]] = set()

    async def check(self) -> None:
        """Raise ShardUnavailable unless this shard answers now: its pub/sub connections are up and a PING
        on the command path comes back within connect_timeout (from every primary, in a cluster). A server
        that stopped without closing its sockets (SIGSTOP, a partition) is found this way; a closed
        connection alone would not show it."""
        if not self.connected:
            raise ShardUnavailable(f"redis {self.name}: pub/sub connection down")
        if not isinstance(self.redis, aioredis.RedisCluster):
            try:
                await self.execute("PING")
            except rexc.ResponseError as exc:  # NOAUTH, LOADING, ...: not usable either
                raise ShardUnavailable(f"redis {self.name}: {exc}") from exc
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.redis.execute_command("PING", target_nodes=aioredis.RedisCluster.PRIMARIES)
        except DOWN_ERRORS as exc:
            raise ShardUnavailable(f"redis {self.name}: {exc!r}") from exc
        except rexc.ResponseError as exc:
            raise ShardUnavailable(f"redis {self.name}: {exc}") from exc

    async def wait_connected(self, connected: bool = True) -> None:
        """Wait until ``connected`` has this value (operations and tests; wrap it in a timeout)."""
        while self.connected != connected:
            await self._state.wait()

    def _state_changed(self) -> None:
        self._state.set()
        self._state = asyncio.Event()

    @property
    def connected(self) -> bool:
        if not self.cluster:
            return all(c.connected for c in self._conns.values())
        return all(c.connected for c in self._conns.values() if c.handlers)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pub/sub loops and wait (up to connect_timeout) for their first attempt; never fails."""
        if self.cluster:
            with contextlib.suppress(*DOWN_ERRORS):
                async with asyncio.timeout(self.connect_timeout):
                    await self.redis.initialize()
            return
        conn = self._connection("main", *self._address)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout):
                await conn.first_attempt.wait()

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await conn.close()
        self._conns.clear()
        if self._pipe is not None:
            self._pipe.abort()
            self._pipe = None
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def _connection(self, name: str, host: str, port: int) -> _PubSubConnection:
        conn = self._conns.get(name)
        if conn is None:
            conn = _PubSubConnection(self, host, port, sharded=self.cluster, label=f"{self.name} {name}")
            self._conns[name] = conn
            conn.start()
        return conn

    async def _open(self, factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
        """A TCP (or TLS, for rediss://) connection to ``host:port`` driven by ``factory``'s protocol."""
        ssl = None
        if self._tls:
            import ssl as ssl_module

            ssl = ssl_module.create_default_context()
        transport, _ = await asyncio.get_running_loop().create_connection(factory, host, port, ssl=ssl)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def _hello(self, *, select: bool) -> list[tuple[Any, ...]]:
        """The commands a new connection starts with: AUTH from the URL, SELECT its db (commands only)."""
        kw, out = self._conn_kwargs, []
        if kw.get("password"):
            out.append(
                ("AUTH", kw["username"], kw["password"]) if kw.get("username") else ("AUTH", kw["password"])
            )
        if select and kw.get("db"):
            out.append(("SELECT", kw["db"]))
        return out

    async def _node_connection(self, channel: bytes) -> _PubSubConnection:
        """cluster: the pub/sub connection of the primary owning ``channel``'s slot (created on demand)."""
        rc = self.redis
        assert isinstance(rc, aioredis.RedisCluster)
        try:
            if not rc.nodes_manager.slots_cache:
                await rc.initialize()
            node = rc.nodes_manager.get_node_from_slot(key_slot(channel))
        except DOWN_ERRORS as exc:
            raise ShardUnavailable(f"redis cluster: {exc}") from exc
        conn = self._connection(node.name, node.host, int(node.port))
        if not conn.first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await conn.first_attempt.wait()
        return conn

    async def _conn_for(self, channel: bytes) -> _PubSubConnection:
        if not self.cluster:
            return self._conns["main"] if "main" in self._conns else self._connection("main", *self._address)
        return await self._node_connection(channel)

    # -- commands ----------------------------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Run one command; the reply as RESP2 gives it (bytes, int, lists; nil as None).

        Standalone: over one pipelined connection (reconnected on the next call after a loss). Cluster:
        through ``redis`` (routed by key). Raises ShardUnavailable if Redis cannot be reached or does not
        answer within connect_timeout (the command may or may not have run), ResponseError for an error
        reply. Never retries.
        """
        if self.cluster:  # (not isinstance: RedisCluster is a typing Protocol, ~2 us a check)
            try:
                return await self.redis.execute_command(*args)
            except DOWN_ERRORS as exc:
                raise ShardUnavailable(f"redis {self.name}: {exc}") from exc
        return await self._reply(self.send(args))

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Standalone: send one command now, without waiting; its reply comes through the future. Commands
        reach Redis in the order of these calls, and Redis runs them in that order, also while the
        connection is being (re)established (they wait for it, in order). Callers that must keep an order
        (a session's pipelined publishes) rely on this: the command takes its place in the call."""
        self.sent += 1
        packed = hiredis.pack_command(args)
        pipe = self._pipe
        if pipe is not None and pipe.alive and not self._queued:
            return pipe.send(packed)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((packed, fut))
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        return fut

    async def _reconnect(self) -> None:
        """Connect the command connection, then send what was queued meanwhile, in order (or fail it all)."""
        try:
            pipe = await self._connect_pipe()
        except ShardUnavailable as exc:
            queued, self._queued = self._queued, []
            for _, fut in queued:
                if not fut.done():
                    fut.set_exception(ShardUnavailable(str(exc)))
            return
        finally:
            self._reconnecting = None
        queued, self._queued = self._queued, []
        for packed, fut in queued:
            if not fut.done():  # one whose caller gave up (timeout) is not run later behind its back
                pipe.send(packed, fut)

    async def _reply(self, fut: asyncio.Future[Any]) -> Any:
        """The reply of a command sent with ``send``, within connect_timeout (see ``execute``)."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await fut
        except TimeoutError as exc:
            if self._pipe is not None:  # a server that stopped answering: every waiter fails now, the next
                self._pipe.abort()  # call reconnects
            raise ShardUnavailable(f"redis {self.name} did not answer in {self.connect_timeout} s") from exc

    async def eval(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[Any], *, ordered: bool = False
    ) -> Any:
        """Run ``script`` (EVALSHA, then EVAL if Redis does not know it yet).

        ``ordered``: the caller relies on the order of its calls (``send``). A NOSCRIPT (the script cache
        was flushed by hand: a new connection loads every script first) is then retried with EVAL only if
        nothing was sent after the EVALSHA, which would otherwise run before the retry; else the call fails
        as unavailable (it did not run), and the calls after it keep their order."""
        if self.cluster:
            try:
                return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                return await self.execute("EVAL", script.lua, len(keys), *keys, *args)
        fut = self.send(("EVALSHA", script.sha, len(keys), *keys, *args))
        mine = self.sent
        try:
            return await self._reply(fut)
        except rexc.NoScriptError as exc:
            if ordered and self.sent != mine:
                raise ShardUnavailable(f"redis {self.name}: {exc} (a later command went out first)") from exc
            return await self.execute("EVAL", script.lua, len(keys), *keys, *args)

    async def _connect_pipe(self) -> _Pipe:
        async with self._pipe_lock:
            if self._pipe is not None and self._pipe.alive:
                return self._pipe
            pipe = _Pipe()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._open(lambda: pipe, *self._address)
                    hello = [*self._hello(select=True), *(("SCRIPT", "LOAD", s.lua) for s in Script.known)]
                    for fut in [pipe.send(hiredis.pack_command(cmd)) for cmd in hello]:
                        await fut
            except (OSError, TimeoutError, rexc.ResponseError, ShardUnavailable) as exc:
                pipe.abort()
                raise ShardUnavailable(f"redis {self.name}: {exc!r}") from exc
            self._pipe = pipe
            return pipe

    # -- pub/sub -----------------------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        """PUBLISH (SPUBLISH in cluster mode). Raises ShardUnavailable if Redis cannot be reached."""
        try:
            if self.cluster:
                rc = self.redis
                assert isinstance(rc, aioredis.RedisCluster)
                if not rc.nodes_manager.slots_cache:
                    await rc.initialize()
                node = rc.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
                await rc.execute_command("SPUBLISH", channel, data, target_nodes=node)
            else:
                await self.execute("PUBLISH", channel, data)
        except DOWN_ERRORS as exc:
            raise ShardUnavailable(f"redis {self.name}: {exc}") from exc

    async def barrier(self, channel: str) -> None:
        """Return once every message Redis sent for ``channel`` before this call has been dispatched: a PING
        on the pub/sub connection carrying it (replies and messages share its order)."""
        conn = await self._conn_for(channel.encode())
        await conn.ping(self.connect_timeout)

    async def subscribe(self, channel: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe ``channel``; returns once Redis confirmed. ``handler`` gets every message, synchronously
        and in order; the subscription survives reconnects. Raises ShardUnavailable if Redis is down (the
        channel is then not subscribed, unless a later call subscribed it again)."""
        ch = channel.encode()
        gen = self._generation[ch] = self._generation.get(ch, 0) + 1
        for attempt in range(3):
            conn = await self._conn_for(ch)
            self._owner[ch] = conn.label
            conn.handlers[ch] = handler
            try:
                await conn.command(conn.sub, ch, self.connect_timeout)
                return
            except rexc.ResponseError as exc:
                # MOVED / ASK / CLUSTERDOWN: the slot table is stale; refresh and try the new owner
                self._forget(ch, conn, gen)
                if attempt == 2 or not self.cluster:
                    raise ShardUnavailable(f"redis {self.name}: {exc}") from exc
                await self._refresh_slots()
            except ShardUnavailable:
                self._forget(ch, conn, gen)
                raise

    def _forget(self, ch: bytes, conn: _PubSubConnection, gen: int) -> None:
        # only if no later subscribe/unsubscribe of this channel took over (last call wins)
        if self._generation.get(ch) == gen:
            conn.handlers.pop(ch, None)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``. Never raises for a down Redis (a lost connection forgets it anyway)."""
        ch = channel.encode()
        self._generation[ch] = self._generation.get(ch, 0) + 1
        for conn in list(self._conns.values()):
            if conn.handlers.pop(ch, None) is not None and conn.connected:
                with contextlib.suppress(ShardUnavailable, rexc.ResponseError):
                    await conn.command(conn.unsub, ch, self.connect_timeout)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs after a lost pub/sub connection is back and every channel was resubscribed:
        anything published meanwhile was missed, so listeners re-check what they hold."""
        self._callbacks.append(callback)

    def _fire_reconnect(self) -> None:
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:
                log.exception("on_reconnect callback failed")

    async def _refresh_slots(self) -> None:
        rc = self.redis
        assert isinstance(rc, aioredis.RedisCluster)
        with contextlib.suppress(*DOWN_ERRORS):
            await rc.nodes_manager.initialize()

    def _moved(self, channels: list[bytes], conn: _PubSubConnection) -> None:
        """cluster: ``channels`` are no longer served by ``conn``'s node (Redis dropped them, or answered
        MOVED): subscribe them on their new owner, then tell listeners (they may have missed messages)."""
        if not self.cluster:
            return  # slots exist only in a cluster; a standalone channel never moves
        moving = [(ch, h) for ch in channels if (h := conn.handlers.pop(ch, None)) is not None]
        if moving:
            self._tasks.add(task := asyncio.ensure_future(self._resubscribe_moved(moving)))
            task.add_done_callback(self._tasks.discard)

    def _remap(self, conn: _PubSubConnection) -> None:
        """cluster: ``conn``'s node is unreachable; move the channels whose slots have another owner now."""

        async def remap() -> None:
            await self._refresh_slots()
            rc = self.redis
            assert isinstance(rc, aioredis.RedisCluster)
            gone = []
            for ch in list(conn.handlers):
                with contextlib.suppress(*DOWN_ERRORS):
                    node = rc.nodes_manager.get_node_from_slot(key_slot(ch))
                    if (node.host, int(node.port)) != (conn.host, conn.port):
                        gone.append(ch)
            self._moved(gone, conn)

        self._tasks.add(task := asyncio.ensure_future(remap()))
        task.add_done_callback(self._tasks.discard)

    async def _resubscribe_moved(self, moving: list[tuple[bytes, Callable[[bytes], None]]]) -> None:
        generations = {ch: self._generation.get(ch) for ch, _ in moving}
        await self._refresh_slots()
        for channel, handler in moving:
            if self._generation.get(channel) != generations[channel]:
                continue  # someone subscribed/unsubscribed meanwhile: their call wins
            for attempt in range(6):
                try:
                    await self.subscribe(channel.decode(), handler)
                    break
                except ShardUnavailable:
                    if attempt == 5:
                        log.warning("redis cluster: channel %r moved and could not be resubscribed", channel)
                        break
                    await asyncio.sleep(BACKOFF_MIN * 2**attempt)  # backoff while the cluster settles
                    await self._refresh_slots()
        self._fire_reconnect()


class RedisShards:
    """Every Redis the hub uses: standalone servers on a hash ring, or one cluster."""

    def __init__(
        self, urls: Sequence[str], *, cluster: bool = False, prefix: str = "sb", connect_timeout: float = 5.0
    ) -> None:
        if not urls:
            raise ValueError("at least one Redis URL is needed")
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not hold braces: they would take over the hash tag")
        self.prefix = prefix
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        if cluster:
            self.shards = [Shard(0, urls[0], seeds=urls, cluster=True, connect_timeout=connect_timeout)]
        else:
            ids = [_server_identity(u) for u in urls]
            if len(set(ids)) != len(ids):
                raise ValueError(f"the same Redis server is listed twice: {list(urls)}")
            self.shards = [
                Shard(i, u, seeds=[u], cluster=False, connect_timeout=connect_timeout)
                for i, u in enumerate(urls)
            ]
        points = sorted(
            (_ring_hash(f"{_server_identity(s.url)}#{v}"), s.index)
            for s in self.shards
            for v in range(VIRTUAL_NODES)
        )
        self._ring_keys = [p for p, _ in points]
        self._ring_shards = [self.shards[i] for _, i in points]

    def shard_for(self, route: str) -> Shard:
        """The shard holding ``route`` (consistent hashing; the only shard in cluster mode)."""
        if len(self.shards) == 1:
            return self.shards[0]
        i = bisect.bisect(self._ring_keys, _ring_hash(route))
        return self._ring_shards[i % len(self._ring_shards)]

    def key(self, kind: str, route: str) -> str:
        """A Redis key of ``route``: ``prefix:kind:{route}`` (one hash slot per route in a cluster)."""
        return f"{self.prefix}:{kind}:{{{route}}}"

    def channel(self, kind: str, route: str, *, shard: Shard | None = None) -> str:
        """A pub/sub channel name of ``route`` carried by ``shard`` (default: the shard ``route`` hashes to):
        ``prefix:kind:{route}``, plus ``/db`` when that shard's db is not 0.

        Redis pub/sub ignores SELECT: deployments kept apart only by the db number on one server would
        otherwise receive each other's publications. The db goes after the route, which holds no braces,
        so no prefix can make two names of different dbs equal, and the hash tag stays the route's.
        """
        db = (shard or self.shard_for(route)).db
        return f"{self.prefix}:{kind}:{{{route}}}/{db}" if db else f"{self.prefix}:{kind}:{{{route}}}"

    async def start(self) -> None:
        """Connect every shard. Never fails on a down Redis: the reconnect loops keep trying."""
        await asyncio.gather(*(s.start() for s in self.shards))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.shards))

    async def unreachable(self) -> dict[str, str]:
        """The shards that do not answer now (``Shard.check``, all at once), by name, with the reason."""
        results = await asyncio.gather(*(s.check() for s in self.shards), return_exceptions=True)
        down: dict[str, str] = {}
        for shard, result in zip(self.shards, results, strict=True):
            if isinstance(result, ShardUnavailable):
                down[shard.name] = str(result)
            elif isinstance(result, BaseException):
                raise result
        return down
