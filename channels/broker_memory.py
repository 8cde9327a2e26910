"""In-process Broker: fan-out by direct call, history in bounded deques. The embedded default.

A stream exists from its first publication until it has been idle for its meta ttl; a read of a channel
without a stream creates nothing and answers with the derived epoch (``channels.broker``), which the first
publication then takes. The instance salt is new in every process, so a restart (which loses every stream)
changes every epoch, derived ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from channels.broker import IDEMPOTENCY_TTL, BrokerEventHandler, HistoryPolicy, derived_epoch
from channels.errors import TooManyKeys, UnrecoverablePosition
from channels.names import ChannelKey
from channels.publication import ClientInfo, HistoryResult, Publication, PublishResult, StreamPosition

DEFAULT_META_TTL = 90 * 86400.0
"""How long an idle stream keeps its epoch and top offset when the namespace sets no history_meta_ttl."""


class _Stream:
    __slots__ = ("epoch", "top", "pubs", "touched", "latest")

    def __init__(self, epoch: str, now: float) -> None:
        self.epoch = epoch
        self.top = 0
        self.pubs: deque[Publication] = deque()
        self.touched = now
        self.latest: dict[str, Publication] = {}
        """The latest publication of each key (``HistoryPolicy.latest_keys``), oldest first."""

    def drop_expired(self, now: float) -> None:
        pubs = self.pubs
        while pubs and pubs[0].expires_at <= now:
            pubs.popleft()


class MemoryBroker:
    """Broker for one process. ``publish`` calls the handler synchronously: fan-out is done on return."""

    pipelined = False
    """A publish never suspends: nothing to gain from having several in flight."""

    def __init__(self, *, clock: Callable[[], float] | None = None, sweep_interval: float = 30.0) -> None:
        self._handler: BrokerEventHandler | None = None
        self._streams: dict[ChannelKey, _Stream] = {}
        self._meta_ttl: dict[ChannelKey, float] = {}
        self._idempotent: OrderedDict[tuple[ChannelKey, str], tuple[float, PublishResult]] = OrderedDict()
        self._clock = clock or time.monotonic
        self._instance = secrets.token_hex(8)
        """Salt of derived epochs: this broker's streams die with it, and so do their epochs."""
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None

    def set_handler(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def subscribe(self, key: ChannelKey) -> None:
        return None

    async def unsubscribe(self, key: ChannelKey) -> None:
        return None

    def _stream(self, key: ChannelKey, now: float, meta_ttl: float, create: bool) -> _Stream | None:
        """The live stream of ``key`` (dropped first if its meta expired); with ``create``, one is started
        with the derived epoch when there is none. Only a publication creates."""
        stream = self._streams.get(key)
        ttl = meta_ttl or self._meta_ttl.get(key) or DEFAULT_META_TTL
        if stream is not None and now - stream.touched > ttl:
            del self._streams[key]  # the stream's meta expired: its epoch and offsets are gone
            self._meta_ttl.pop(key, None)
            stream = None
        if stream is None and create:
            stream = self._streams[key] = _Stream(self._derived_epoch(key, now, meta_ttl), now)
            if meta_ttl:
                self._meta_ttl[key] = meta_ttl
        return stream

    def _derived_epoch(self, key: ChannelKey, now: float, meta_ttl: float) -> str:
        """The epoch ``key``'s stream has if it is created now (what a read of the absent stream tells)."""
        ttl_ms = int((meta_ttl or DEFAULT_META_TTL) * 1000)
        return derived_epoch(self._instance, f"{key[0]}\x00{key[1]}", ttl_ms, int(now * 1000))

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
        now = self._clock()
        if idempotency_key:
            self._expire_idempotency(now)
            seen = self._idempotent.get((key, idempotency_key))
            if seen is not None:
                return PublishResult(seen[1].position, suppressed=True)
        pub = Publication(data=data, info=info, tags=tags, time=int(time.time() * 1000), key=feed_key)
        if history is not None and history.size > 0 and history.ttl > 0:
            stream = self._stream(key, now, history.meta_ttl, create=True)
            assert stream is not None
            if history.latest_keys:
                latest = stream.latest
                if feed_key in latest:
                    del latest[feed_key]  # re-inserted below: the dict stays in offset order
                elif len(latest) >= history.latest_keys:
                    raise TooManyKeys(f"{key[1]} keeps the latest of {history.latest_keys} keys already")
                latest[feed_key] = pub
            stream.top += 1
            stream.touched = now
            pub.offset = stream.top
            pub.expires_at = now + history.ttl
            stream.pubs.append(pub)
            while len(stream.pubs) > history.size:
                stream.pubs.popleft()
            result = PublishResult(StreamPosition(stream.top, stream.epoch))
        else:
            result = PublishResult(StreamPosition())
        if idempotency_key:
            self._idempotent[(key, idempotency_key)] = (now + IDEMPOTENCY_TTL, result)
        if self._handler is not None:
            self._handler.handle_publication(key, pub, result.position.epoch)
        return result

    def _expire_idempotency(self, now: float) -> None:
        seen = self._idempotent
        while seen:
            first = next(iter(seen.values()))
            if first[0] > now:
                break
            seen.popitem(last=False)

    async def publish_join(self, key: ChannelKey, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_join(key, info)

    async def publish_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_leave(key, info)

    async def history(
        self,
        key: ChannelKey,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
        meta_ttl: float = 0.0,
    ) -> HistoryResult:
        now = self._clock()
        stream = self._stream(key, now, meta_ttl, create=False)
        if stream is None:  # nothing published (or idle past its meta ttl): reading keeps nothing
            position = StreamPosition(0, self._derived_epoch(key, now, meta_ttl))
            if since is not None and since.epoch != position.epoch:
                raise UnrecoverablePosition(f"epoch {since.epoch!r} is not the stream's {position.epoch!r}")
            return HistoryResult([], position)
        stream.drop_expired(now)
        position = StreamPosition(stream.top, stream.epoch)
        if since is not None and since.epoch != stream.epoch:
            raise UnrecoverablePosition(f"epoch {since.epoch!r} is not the stream's {stream.epoch!r}")
        pubs = list(stream.pubs)
        if since is not None:
            if reverse:
                pubs = [p for p in pubs if p.offset < since.offset]
            else:
                pubs = [p for p in pubs if p.offset > since.offset]
        if reverse:
            pubs.reverse()
        if limit >= 0:
            pubs = pubs[:limit]
        return HistoryResult(pubs, position)

    async def latest(self, key: ChannelKey, *, meta_ttl: float = 0.0) -> HistoryResult:
        now = self._clock()
        stream = self._stream(key, now, meta_ttl, create=False)
        if stream is None:
            return HistoryResult([], StreamPosition(0, self._derived_epoch(key, now, meta_ttl)))
        return HistoryResult(list(stream.latest.values()), StreamPosition(stream.top, stream.epoch))

    async def barrier(self, key: ChannelKey) -> None:
        """Nothing is ever in flight: ``publish`` hands the publication over before it returns."""

    async def remove_history(self, key: ChannelKey) -> None:
        stream = self._streams.get(key)
        if stream is not None:
            stream.pubs.clear()
            stream.latest.clear()

    def sweep(self) -> None:
        """Drop expired publications, idle streams and old idempotency keys."""
        now = self._clock()
        self._expire_idempotency(now)
        for key in list(self._streams):
            stream = self._stream(key, now, 0.0, create=False)
            if stream is None:
                self._meta_ttl.pop(key, None)
            else:
                stream.drop_expired(now)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep()
