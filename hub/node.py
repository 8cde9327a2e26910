"""The Node: one hub process. It wires the registry of local connections, the broker, presence, token
verification and hooks together, implements the broker's event handler (the fan-out), and runs the
session clock (pings, expiry, stale connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from channels.broker import Broker, HistoryPolicy
from channels.errors import BrokerUnavailable, InvalidChannel, TooManyKeys, UnknownNamespace
from channels.feeds import BadKey, publication_key
from channels.names import ChannelKey, ChannelName, parse_channel
from channels.options import NamespaceOptions
from channels.publication import ClientInfo, Publication, PublishResult
from channels.streams import chunk_run
from hub import codec_json as codec
from hub import codes
from hub.auth import TokenVerifier
from hub.client import Client, State
from hub.config import Config
from hub.control import Control, LocalControl
from hub.feeds import FeedItem
from hub.hooks import Hooks, RPCContext
from hub.inbox.personal import PersonalChannels
from hub.ingest.metrics import FeedMetrics
from hub.logs import bind_session, log_limited
from hub.memory import Trimmer
from hub.metrics import Metrics
from hub.positions import ChannelPositions
from hub.registry import Registry
from hub.streams import OpenStreams
from hub.watch import Watch
from hub.wheel import TimerWheel
from hub.wire import CODECS, FEED, JSON_EVENTS, JSON_UNI, PROTOBUF, binary_data, json_view
from hub.writer import Backlog, FlushScheduler, SlotClock, Transport
from presence.presence import PresenceManager, PresenceUnavailable

if TYPE_CHECKING:
    from hub.bots.service import Bots
    from hub.outbound.tap import EventTap

log = logging.getLogger("switchboard.node")

VERSION = "0.1.0"
TICK = 1.0
"""Seconds between two passes of the session clock."""
EPSILON = 0.001
"""Seconds past a strict deadline at which the session clock looks (``now - start > limit`` holds then)."""
POSITION_CHECK_BACKOFF: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8, 1.6)
"""Seconds between the attempts of a position check after a reconnect (then: recover, as if missed)."""


class ChannelTap(Protocol):
    """An observer of one channel's traffic on this node (the console's channel inspector): told of each
    publication, join and leave the broker delivers for the channel, synchronously on the fan-out path.
    It must only queue (within its own bound) and return; it never raises."""

    def publication(self, key: ChannelKey, pub: Publication) -> None: ...

    def join(self, key: ChannelKey, info: ClientInfo) -> None: ...

    def leave(self, key: ChannelKey, info: ClientInfo) -> None: ...


def new_node_id(config: Config) -> str:
    """``node_name``, or the host name and a random suffix: unique among the nodes sharing a Redis."""
    return config.node_name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Node:
    def __init__(
        self,
        config: Config,
        broker: Broker,
        presence: PresenceManager,
        hooks: Hooks,
        *,
        node_id: str | None = None,
    ) -> None:
        self.config = config
        self.namespaces = config.namespace_table()
        self.broker = broker
        self.presence = presence
        self.hooks = hooks
        self.verifier = TokenVerifier(
            hmac_secret=config.token_hmac_secret_key,
            rsa_public_key=config.token_rsa_public_key,
            ecdsa_public_key=config.token_ecdsa_public_key,
            audience=config.token_audience,
            issuer=config.token_issuer,
            require_exp=config.token_require_exp,
            bot_hmac_secret=config.bot_token_hmac_secret_key,
        )
        self.id = node_id or new_node_id(config)
        self.version = VERSION
        self.registry = Registry(len(CODECS))
        self.streams: dict[str, Client] = {}
        """Emulation sessions by session id (their commands arrive on ``/emulation``)."""
        self.trimmer = Trimmer()
        """Gives memory back to the system after slow connections holding much were cut (``hub.memory``)."""
        self.scheduler = FlushScheduler(backlog=Backlog(config.node_queue_max_size, self.trimmer.dropped))
        self.slot_clock = SlotClock(min(config.client_conflation_backlog, config.client_queue_max_size // 2))
        """Flushes the conflation slots of every connection (``hub.writer``)."""
        self.metrics = Metrics(config.namespaces)
        self.feed_metrics = FeedMetrics(self.metrics)
        self.sessions: set[Client] = set()
        self.wheel: TimerWheel[Client] = TimerWheel(time.monotonic())
        """The session clock's buckets: each session at the second it is next due for a look."""
        self.started = False
        self.started_at = 0.0
        self.stopping = False
        self._clock: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        """Set when the node is stopping and its last session has ended."""
        self.positions = ChannelPositions()
        self._broker_keys: set[ChannelKey] = set()
        """Channels the broker delivers to this node."""
        self._channel_locks: dict[ChannelKey, tuple[asyncio.Lock, list[int]]] = {}
        """Per channel while a broker (un)subscription is in flight: the lock and its number of users."""
        self._background: set[asyncio.Task[None]] = set()
        self._presence_refresh: asyncio.Task[None] | None = None
        self._next_presence_refresh = 0.0
        self.taps: dict[ChannelKey, list[ChannelTap]] = {}
        """Observers of single channels (``tap``); the node receives their channels from the broker."""
        self.info_sources: list[Callable[[], dict[str, Any]]] = []
        """More figures for ``info()`` of the whole node (documents, process, Redis), added by the app."""
        self.personal = PersonalChannels(config)
        """Personal channels and the one-connection-per-user rule (``hub.inbox.personal``)."""
        self.builtin_rpc: dict[str, Callable[[RPCContext], Awaitable[Any]]] = {}
        """RPC methods of the hub itself (``inbox.*``); looked up before the application's, never shadowed."""
        self.bots: Bots | None = None
        """Routes calls of ``bot_rpc_prefix`` methods to bot connections (``hub.bots``); set by the app."""
        self.delivered: Callable[[ChannelKey, Publication, int], None] | None = None
        """Told of every publication with tags that reached local subscribers, and how many (the inbox's
        delivery tracking); None: nobody asks."""
        self.control: Control = LocalControl(self)
        """Operations on every node of the hub (``hub.control``): this node alone unless the app sets a
        shared control channel before ``start``."""
        self.events: EventTap | None = None
        """Where the node's events go out (webhooks: ``hub.outbound``); None when nothing wants them."""
        self.watch = Watch(self, config.watch_patterns())
        """Channels found by pattern as they are published to, tapped for the alerts and the MQTT bridge."""
        self.open_streams = OpenStreams(self)
        """The streamed replies published through this node (``hub.streams``)."""
        broker.set_handler(self)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.started_at = time.monotonic()
        self.stopping = False
        self._drained.clear()
        await self.broker.start()
        self.watch.start()
        self.open_streams.start()
        await self.control.start()
        self._clock = asyncio.get_running_loop().create_task(self._run_clock())
        log.info("node %s started", self.id)

    async def drain(self) -> None:
        """The first half of a graceful shutdown: refuse new sessions, and disconnect every session of every
        transport with 3001 (reconnect) in batches, so a whole fleet of clients does not reconnect at once.

        Policy: batches of ``shutdown_batch_size``, ``shutdown_batch_pause`` apart, spread over at most half
        of ``shutdown_timeout``. A session in the middle of a frame finishes the command in progress (its
        reply is written) and is closed right after; every session's buffered writes are flushed before its
        close. Sessions still open at three quarters of ``shutdown_timeout`` are closed at once. Returns
        when every session has ended, or then. Idempotent; ``stop`` runs it if nobody did.
        """
        if not self.started:
            return
        if self.stopping:
            await self._drained.wait()
            return
        self.stopping = True  # from here new sessions are closed with 3001 at once, /ready answers 503
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.shutdown_timeout * 0.75
        sessions = list(self.sessions)
        size = cfg.shutdown_batch_size
        batches = [sessions[i : i + size] for i in range(0, len(sessions), size)]
        pause = cfg.shutdown_batch_pause
        if len(batches) > 1:
            pause = min(pause, cfg.shutdown_timeout / 2 / (len(batches) - 1))
        log.info("shutdown: %d sessions in %d batches, %.3fs apart", len(sessions), len(batches), pause)
        for number, batch in enumerate(batches, 1):
            if number > 1 and pause > 0:
                await asyncio.sleep(pause)
            for client in batch:
                client.disconnect_gracefully(codes.SHUTDOWN.error())
            log.info("shutdown: batch %d of %d: %d sessions disconnected", number, len(batches), len(batch))
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), max(0.0, deadline - loop.time()))
        if self.sessions:
            log.warning("shutdown: %d sessions still open; closing them now", len(self.sessions))
            for client in list(self.sessions):
                client.disconnect(codes.SHUTDOWN.error())
        self._drained.set()

    async def stop(self) -> None:
        """Drain (if nobody did), then close the backends."""
        if not self.started:
            return
        await self.drain()
        if not self.started:
            return  # a concurrent stop finished meanwhile
        self.started = False
        tasks = [t for t in (self._clock, self._presence_refresh) if t is not None]
        for task in tasks + list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.trimmer.cancel()
        await self.open_streams.close()
        await self.watch.close()
        await self.control.close()
        await self.broker.close()
        await self.presence.close()
        log.info("node %s stopped", self.id)

    # ---------------------------------------------------------------- sessions

    def new_session(self, transport: Transport, scope: dict[str, Any]) -> Client:
        remote = scope.get("client")
        headers: dict[str, str] = {}
        if self.hooks.on_connecting is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = Client(self, transport, remote=f"{remote[0]}:{remote[1]}" if remote else "", headers=headers)
        bind_session(client.log_fields)  # the connection's task logs with this session's fields from here on
        self.sessions.add(client)
        self.clock_session(client)
        if client.emulation:
            self.streams[client.session] = client
        if self.stopping:
            client.disconnect(codes.SHUTDOWN.error())
        return client

    async def end_session(self, client: Client) -> None:
        self.sessions.discard(client)
        self.wheel.discard(client)
        self.streams.pop(client.session, None)
        try:
            await client.closed()
        finally:
            if self.stopping and not self.sessions:
                self._drained.set()

    # ---------------------------------------------------------------- broker subscriptions

    @contextlib.asynccontextmanager
    async def _channel_lock(self, key: ChannelKey) -> Any:
        entry = self._channel_locks.get(key)
        if entry is None:
            entry = self._channel_locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._channel_locks[key]

    async def acquire_channel(self, key: ChannelKey) -> None:
        """Make sure the broker delivers ``key`` to this node; return once it does.

        Subscribing and unsubscribing one channel are serialized: a subscriber that arrives while the node's
        broker subscription is being set up (or torn down) waits for it, so it never reads history and
        joins the fan-out before the node receives the channel's publications.
        """
        if key in self._broker_keys and key not in self._channel_locks:
            return  # the common case: already delivered, nothing in flight
        async with self._channel_lock(key):
            if key not in self._broker_keys:
                await self.broker.subscribe(key)
                self._broker_keys.add(key)
                self.positions.begin(key)

    async def occupy(self, key: ChannelKey) -> None:
        """A subscriber of ``key`` is being set up here: channel occupancy across the nodes counts this node
        before the subscriber is answered (``hub.outbound``; nothing when no webhook wants it)."""
        if self.events is not None:
            await self.events.occupy(key)

    async def release_channel(self, key: ChannelKey) -> None:
        """Stop the broker's delivery of ``key`` if no local subscriber (active or being set up) is left."""
        if self.events is not None:
            self.events.channel_changed(key)  # a subscriber set up and rolled back leaves no share behind
        if key not in self._broker_keys:
            return
        async with self._channel_lock(key):
            if key in self._broker_keys and not self.registry.has_local(key) and key not in self.taps:
                self._broker_keys.discard(key)
                self.positions.forget(key)
                await self.broker.unsubscribe(key)

    async def tap(self, key: ChannelKey, tap: ChannelTap) -> None:
        """Tell ``tap`` of ``key``'s traffic from now on (the broker delivers ``key`` once this returns)."""
        self.taps.setdefault(key, []).append(tap)
        try:
            await self.acquire_channel(key)
        except BaseException:
            await self.untap(key, tap)
            raise

    async def untap(self, key: ChannelKey, tap: ChannelTap) -> None:
        taps = self.taps.get(key)
        if taps is None or tap not in taps:
            return
        taps.remove(tap)
        if not taps:
            del self.taps[key]
        await self.release_channel(key)

    def spawn(self, coro: Any, what: str) -> None:
        """Run ``coro`` in the background, kept referenced, its failure logged."""

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- publishing

    async def publish_to(
        self,
        tenant: str,
        channel: ChannelName,
        opts: NamespaceOptions,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        skip_history: bool = False,
        feed_key: str | None = None,
        stream_message: bool = False,
    ) -> PublishResult:
        """Publish ``data`` (the publication's bytes: JSON text, or any bytes in a binary namespace) to
        ``channel`` of ``tenant``. Every way in ends here (client publish, server API, ingest, MQTT, the
        embedding API), so the namespace's ``data_schema`` is enforced here: data it refuses is neither
        delivered nor stored, and the caller gets 107 with the reason (``codes.error_invalid_data``). In a
        keyed namespace the reading's key is read from the data (``key_field``); a key that came with the
        reading (``feed_key``: ingest's, the MQTT bridge's) is its key, and must agree with the data's
        (``channels.feeds.publication_key``); outside a keyed namespace it is ignored. A key that cannot be
        read or disagrees is refused (107), so is a key more than the channel keeps (106, cache
        recovery's ``max_keys``).

        In a ``streams`` namespace each publication goes through ``hub.streams`` (before the first
        suspension, so chunks are checked in the order their publishes start): a refused chunk is answered
        with its error and nothing is delivered or stored; a chunk is delivered and not stored; the final
        chunk is delivered and stored as the whole message. ``stream_message``: ``data`` is a message the
        hub made of a stream (an abandoned one), published as it is, with history."""
        schema = opts.data_schema
        if schema is not None and not stream_message:
            reason = schema.check_json(data)
            if reason is not None:
                self.feed_metrics.refused(channel.raw)
                raise codes.error_invalid_data(reason)
        try:
            key_of_reading = publication_key(opts.key_field, data, feed_key)
        except BadKey as exc:
            refusal = codes.error_bad_request()
            raise codes.ClientError(refusal.code, f"{refusal.message}: {exc}") from None
        key = (tenant, channel.raw)
        held = opts.streams and not stream_message
        if held:
            outcome = self.open_streams.accept(key, opts, data, info, tags)
            data = outcome.deliver.data
            if outcome.keep is None:
                skip_history = True
        if self.watch.patterns:  # alerts or MQTT routes configured: the nodes that watch it must see it
            # A suspension before the broker, but the order of one channel's publishes holds (a pipelined
            # session relies on it): a later publish to this channel waits on the same announcement
            # (``Watch.seen``) and resumes after this one, which hands its publication over first.
            await self.watch.seen(key)
        history = (
            HistoryPolicy(
                opts.history_size,
                opts.history_ttl,
                opts.history_meta_ttl,
                opts.max_keys if opts.force_recovery_mode == "cache" else 0,
            )
            if opts.history_enabled and not skip_history
            else None
        )
        try:
            result = await self._publish_checked(
                key, data, info, tags, history, idempotency_key, key_of_reading, held
            )
        except TooManyKeys as exc:
            log_limited(log, logging.WARNING, "publish refused: %s", exc, extra={"tenant": key[0]})
            raise codes.error_limit_exceeded() from None
        except BrokerUnavailable:
            log_limited(
                log,
                logging.WARNING,
                "publish to %s refused: broker unavailable",
                key[1],
                extra={"tenant": key[0]},
            )
            raise codes.error_internal() from None
        self.metrics.published[channel.namespace] += 1
        if self.events is not None:
            self.events.published(tenant, channel, data, info, tags, result)
        return result

    async def _publish_checked(
        self,
        key: ChannelKey,
        data: bytes,
        info: ClientInfo | None,
        tags: dict[str, str] | None,
        history: HistoryPolicy | None,
        idempotency_key: str | None,
        feed_key: str,
        held: bool,
    ) -> PublishResult:
        """The broker's publish; a publication of a stream it does not take (``held``: accepted by
        ``open_streams``) ends its stream on this node."""
        try:
            return await self.broker.publish(
                key,
                data,
                info=info,
                tags=tags,
                history=history,
                idempotency_key=idempotency_key,
                feed_key=feed_key,
            )
        except BaseException:
            if held:
                self.open_streams.failed(key, data)
            raise

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        tenant: str = "",
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> PublishResult:
        """Publish from the server side (embedding programs). ``data`` is any JSON value; in a binary
        namespace, bytes (or a base64 string). ValueError for a bad channel or data its namespace refuses."""
        try:
            name = parse_channel(channel)
            opts = self.namespaces.options_for(name)
        except (InvalidChannel, UnknownNamespace) as exc:
            raise ValueError(f"bad channel {channel!r}: {exc}") from None
        payload = binary_data(data) if opts.binary else codec.data_bytes(data)
        try:
            return await self.publish_to(
                tenant, name, opts, payload, tags=tags, idempotency_key=idempotency_key
            )
        except codes.ClientError as exc:
            if exc.code == 107:  # data the namespace refuses (data_schema)
                raise ValueError(exc.message) from None
            raise

    # ---------------------------------------------------------------- server-side control of connections

    def _targets(self, tenant: str, user: str, client_id: str | None) -> list[Client]:
        clients = self.registry.user_clients(tenant, user)
        return [c for c in clients if client_id is None or c.id == client_id]

    async def subscribe_user(
        self, user: str, channel: str, *, tenant: str = "", client_id: str | None = None
    ) -> int:
        """Subscribe every connection of ``user`` (or one of them) to ``channel``; return how many."""
        self.namespaces.options_for(parse_channel(channel))  # bad names fail before any connection changes
        done = 0
        for client in self._targets(tenant, user, client_id):
            try:
                done += await client.server_subscribe(channel)
            except Exception:  # one connection's failure must not spare the others
                log.exception("server-side subscribe of %s to %s failed", client.id, channel)
        return done

    async def unsubscribe_user(
        self, user: str, channel: str, *, tenant: str = "", client_id: str | None = None
    ) -> int:
        done = 0
        for client in self._targets(tenant, user, client_id):
            try:
                done += await client.server_unsubscribe(channel)
            except Exception:
                log.exception("server-side unsubscribe of %s from %s failed", client.id, channel)
        return done

    def send_message(self, user: str, data: Any, *, tenant: str = "", client_id: str | None = None) -> int:
        """Send an asynchronous ``message`` push to every connection of ``user``."""
        raw = codec.data_bytes(data)
        targets = self._targets(tenant, user, client_id)
        for client in targets:
            client.push_message(raw)
        return len(targets)

    def disconnect_user(
        self,
        user: str,
        *,
        tenant: str = "",
        client_id: str | None = None,
        code: int = codes.FORCE_NO_RECONNECT.code,
        reason: str = codes.FORCE_NO_RECONNECT.reason,
    ) -> int:
        targets = self._targets(tenant, user, client_id)
        for client in targets:
            client.disconnect(codes.Disconnect(code, reason))
        return len(targets)

    # ---------------------------------------------------------------- BrokerEventHandler (the fan-out)

    def handle_publication(self, key: ChannelKey, pub: Publication, epoch: str = "") -> None:
        if pub.offset and self.positions.observe(key, pub.offset, epoch):
            log.warning("publications of %s were missed (offset %d, epoch %s)", key[1], pub.offset, epoch)
            self.insufficient_state(key)  # before the delivery: a positioned client must not skip
        tables = self.registry.fanout.get(key)
        if tables is not None:
            # Encoded once per format with subscribers; JSON_EVENTS shares JSON_UNI's bytes. A binary
            # namespace's data goes to JSON formats as base64 (one view, made once).
            shown = json_view(pub) if self.namespaces.binary(key[1]) else pub
            run = None
            if self.namespaces.streams(key[1]):
                stream = chunk_run(pub)
                run = None if stream is None else (key, stream)
            delivered = 0
            uni_frame = b""
            for fmt, subs in enumerate(tables):
                if not subs:
                    continue
                delivered += len(subs)
                if fmt == FEED:  # feed subscriptions frame it themselves, from one shared item
                    item = FeedItem(pub)
                    now = self.slot_clock.now()
                    for feed in subs.values():
                        feed.offer(item, now)
                    continue
                if fmt == JSON_EVENTS:
                    frame = uni_frame or CODECS[fmt].encode_publication_push(key[1], shown)
                    for push in subs.values():
                        push(frame, pub)
                    continue
                frame = CODECS[fmt].encode_publication_push(key[1], pub if fmt == PROTOBUF else shown)
                if fmt == JSON_UNI:
                    uni_frame = frame
                if run is not None:  # a stream's chunk: joined per connection with the one queued before
                    encode = partial(CODECS[fmt].encode_publication_push, key[1])
                    for client in subs:
                        client.writer.push_chunk(frame, run, pub, encode)
                    continue
                for push in subs.values():
                    push(frame)
            self.metrics.fanout(key[1], delivered, pub.time)  # once per publication, not per subscriber
            if pub.tags and self.delivered is not None:
                self.delivered(key, pub, delivered)
        pending = self.registry.pending.get(key)
        if pending:
            self.registry.buffer(pending, pub)
        if self.taps:  # one check per publication while nothing is tapped
            for tap in self.taps.get(key, ()):
                tap.publication(key, pub)

    def handle_resubscribed(self, keys: list[ChannelKey]) -> None:
        """The broker's connection came back and ``keys`` are delivered again: whatever was published
        meanwhile was missed, so each channel with positioned subscribers has its stream top checked."""
        for key in keys:
            if self.positions.known(key):
                self.spawn(self._check_position(key), f"position check of {key[1]}")

    async def _check_position(self, key: ChannelKey) -> None:
        """Read the stream's top and compare it with the node's position. Redis may flap again before the
        read succeeds: retried with backoff (POSITION_CHECK_BACKOFF); if every attempt fails the node
        cannot tell what it missed, so its positioned subscribers recover (the safe default)."""
        for delay in (*POSITION_CHECK_BACKOFF, None):
            try:
                top = (await self.broker.history(key, limit=0)).position
                break
            except BrokerUnavailable:
                if delay is None:
                    log.warning("position of %s could not be checked: its subscribers recover", key[1])
                    if self.positions.known(key):
                        self.insufficient_state(key)
                    return
                await asyncio.sleep(delay)  # backoff while Redis settles, not a wait for an effect
        if self.positions.check(key, top):
            log.warning("publications of %s were missed (stream top %d %s)", key[1], top.offset, top.epoch)
            self.insufficient_state(key)

    def insufficient_state(self, key: ChannelKey) -> None:
        """Every positioned subscriber of ``key`` on this node is told to resubscribe and recover (one
        still being set up, as soon as its reply is out)."""
        for client in list(self.registry.pending.get(key, ())):
            client.missed_while_pending(key[1])
        tables = self.registry.fanout.get(key)
        if tables is None:
            return
        for table in tables:
            for client in list(table):
                client.insufficient_state(key[1])

    def handle_join(self, key: ChannelKey, info: ClientInfo) -> None:
        self._push_join_leave(key, "encode_join_push", info)
        for tap in self.taps.get(key, ()):
            tap.join(key, info)

    def handle_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        self._push_join_leave(key, "encode_leave_push", info)
        for tap in self.taps.get(key, ()):
            tap.leave(key, info)

    def _push_join_leave(self, key: ChannelKey, encoder: str, info: ClientInfo) -> None:
        """Push a join or leave to the subscribers of ``key`` that asked for them (and to them only: the
        registry keeps them apart, so a room where nobody asked costs nothing per join, whatever its size)."""
        tables = self.registry.join_leave.get(key)
        if tables is None:
            return
        for fmt, clients in enumerate(tables):
            if clients:
                frame = getattr(CODECS[fmt], encoder)(key[1], info)
                for client in clients:
                    client.writer.push(frame)

    # ---------------------------------------------------------------- session clock

    async def _run_clock(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick(time.monotonic(), time.time())
            except Exception:
                log.exception("session clock failed")

    def tick(self, now: float, wall: float) -> None:
        """One pass of the session clock: the connections due this second (``hub.wheel``) get their pings,
        missing pongs, expired tokens and subscriptions and handshake deadlines looked at; each is put back
        at the second its next one falls due. An idle connection is looked at about once a ping interval."""
        cfg = self.config
        # A refresh due while the last one still runs starts at the first tick after that one ended.
        if now >= self._next_presence_refresh and not self._refreshing():
            # 90-100 % of the interval: nodes started together (a deploy) drift apart instead of sending
            # every node's refresh to Redis in the same second for as long as they run.
            self._next_presence_refresh = now + cfg.presence_update_interval * random.uniform(0.9, 1.0)
            self._refresh_presence()
        for client in self.wheel.take(now):
            due = self._check_session(client, now, wall)
            if due is not None:
                self.wheel.schedule(client, due)

    def clock_session(self, client: Client) -> None:
        """Something about ``client`` may fall due sooner than the clock looks at it next (a new session, a
        connect, a token or subscription expiry set): have it looked at then."""
        if client.state is not State.CLOSED:
            self.wheel.schedule(client, self._due(client, time.monotonic(), time.time()))

    def _check_session(self, client: Client, now: float, wall: float) -> float | None:
        """Act on what is due about ``client`` at ``now`` (``wall`` on the wall clock); the next time to
        look at it (None: it is ending)."""
        cfg = self.config
        if client.state is State.CONNECTING:
            if now - client.created > cfg.client_stale_close_delay:
                client.disconnect(codes.STALE.error())
                return None
            return self._due(client, now, wall)
        if client.state is not State.CONNECTED or client._closing:
            return None
        if client.awaiting_pong:
            if now - client.last_ping > cfg.client_pong_timeout and not client.busy:
                client.disconnect(codes.NO_PONG.error())
                return None
        elif now - client.last_ping >= cfg.client_ping_interval:
            client.send_ping(now)
        grace = cfg.client_expired_close_delay
        if client.expires_at and wall > client.expires_at + grace:
            client.disconnect(codes.EXPIRED.error())
            return None
        for sub in client.subs.values():
            if sub.expires_at and wall > sub.expires_at + grace:
                client.disconnect(codes.SUB_EXPIRED.error())
                return None
        return self._due(client, now, wall)

    def _due(self, client: Client, now: float, wall: float) -> float:
        """When something about ``client`` falls due next (``_check_session`` acts on a strict ``>``: a hair
        past each deadline)."""
        cfg = self.config
        if client.state is State.CONNECTING:
            return client.created + cfg.client_stale_close_delay + EPSILON
        if client.awaiting_pong:
            due = client.last_ping + cfg.client_pong_timeout + EPSILON
            if due <= now:  # past it, but busy: the pong waits behind a command; look again next second
                due = now + TICK
        else:
            due = client.last_ping + cfg.client_ping_interval
        grace = cfg.client_expired_close_delay
        if client.expires_at:
            due = min(due, now + client.expires_at + grace - wall + EPSILON)
        for sub in client.subs.values():
            if sub.expires_at:
                due = min(due, now + sub.expires_at + grace - wall + EPSILON)
        return due

    def _refresh_presence(self) -> None:
        """Re-add every presence entry of this node's connections, so that a shared presence backend keeps
        them past its ttl while they live (and drops them within it when this node dies). Never two at
        once: when a refresh still retries as the next one falls due (Redis slow or away), the session clock
        starts that one at its first tick after this one ended (``tick``).

        A refresh that could not reach Redis for some entries (after its own retries) is a warning, not an
        error: those entries expire after ``presence_ttl`` unless the next refresh gets through, and the
        first refresh that does brings back any that expired meanwhile."""
        if self._refreshing():
            return  # the last refresh is still running: never two at once
        cfg = self.config

        async def refresh() -> None:
            try:
                await self.presence.refresh(self._presence_entries())
            except PresenceUnavailable as exc:
                log_limited(
                    log,
                    logging.WARNING,
                    "%s; they expire %g s (presence_ttl) after their last refresh unless the next refresh"
                    " (every %g s) gets through",
                    exc,
                    cfg.presence_ttl,
                    cfg.presence_update_interval,
                )
            except Exception:
                log.exception("presence refresh failed")

        self._presence_refresh = asyncio.get_running_loop().create_task(refresh())

    def _refreshing(self) -> bool:
        """Whether a presence refresh is still running."""
        return self._presence_refresh is not None and not self._presence_refresh.done()

    def _presence_entries(self) -> Iterator[tuple[ChannelKey, ClientInfo]]:
        """Every presence entry of this node's connections, read lazily: the presence backend reads them
        only once its refresh began (so a removal at any point wins over the re-add, see
        ``PresenceManager.refresh``) and lets the loop go between slices of them. The sessions are those
        of the first read, each one's active subscriptions with presence those of when it is reached."""
        for client in list(self.sessions):
            for sub in list(client.subs.values()):
                if sub.active and sub.options.presence:
                    yield sub.key, sub.info

    # -- server API --

    async def remove_history(self, key: ChannelKey) -> None:
        """Drop a channel's publications; its stream position (offset, epoch) stays, as Centrifugo's
        ``history_remove`` does, so subscribers are not forced to reload."""
        await self.broker.remove_history(key)

    def refresh_user(
        self,
        user: str,
        *,
        tenant: str = "",
        client_id: str | None = None,
        expired: bool = False,
        expire_at: float = 0.0,
    ) -> int:
        """Set when the connections of ``user`` (or one of them) expire: at ``expire_at`` (unix seconds;
        0: never), or now with 3005 when ``expired``. A unidirectional client, which cannot refresh by
        itself, is told with a ``refresh`` push."""
        targets = self._targets(tenant, user, client_id)
        for client in targets:
            if expired:
                client.disconnect(codes.EXPIRED.error())
                continue
            client.expires_at = expire_at
            self.clock_session(client)
            if client.unidirectional:
                body: dict[str, Any] = {"expires": bool(expire_at)}
                if expire_at:
                    body["ttl"] = max(1, int(expire_at - time.time()))
                client.writer.push(client.codec.encode({"push": {"refresh": body}}))
        return len(targets)

    def channel_counts(self, tenant: str, match: Callable[[str], bool] | None = None) -> dict[str, int]:
        """Channels of ``tenant`` with subscribers on this node (those whose name ``match`` accepts), each
        with its number of subscribed connections."""
        registry = self.registry
        return {
            key[1]: registry.subscriber_count(key)
            for key in registry.channel_keys()
            if key[0] == tenant and (match is None or match(key[1]))
        }

    def info(self, tenant: str | None = None) -> dict[str, Any]:
        """This node's figures as Centrifugo's ``info`` reports a node; with ``tenant``, only that
        tenant's connections, users, channels and subscriptions are counted."""
        registry = self.registry
        clients = [c for c in registry.clients.values() if tenant is None or c.tenant == tenant]
        users = [k for k in registry.users if tenant is None or k[0] == tenant]
        channels = [k for k in registry.fanout if tenant is None or k[0] == tenant]
        out = {
            "uid": self.id,
            "name": self.id,
            "version": self.version,
            "num_clients": len(clients),
            "num_users": len(users),
            "num_channels": len(channels),
            "num_subs": sum(registry.subscriber_count(k) for k in channels),
            "uptime": int(time.monotonic() - self.started_at) if self.started else 0,
        }
        if tenant is None:
            for source in self.info_sources:
                out.update(source())
        return out
