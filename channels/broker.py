"""The Broker interface: how publications, joins and leaves travel between nodes, and where history lives.

A Broker delivers back into the node through a BrokerEventHandler that the node implements; it never
imports the node. Implementations: ``broker_memory`` (one process), ``broker_redis`` (many nodes).

Obligations of every implementation:

- offsets of one channel's stream grow by exactly one per publication with history, never skip or repeat;
- a stream gets a new epoch whenever its history is lost, so a stale position is never taken for a live one;
- ``publish`` returns only after the publication is accepted (its history appended): an acknowledged
  publication is never lost while the stream's epoch lasts;
- a publish that cannot be accepted raises BrokerUnavailable, never returns a false success;
- only a publication creates a stream's state: reading history (or a position) of a channel that has no
  stream keeps nothing, since anyone may read any name. Such a read still answers with an epoch, and the
  first publication keeps it, so a reader of the empty stream recovers exactly from (0, that epoch): the
  epoch of a stream that does not exist is *derived* (``derived_epoch``) from the broker's instance
  (a memory broker's process, a Redis server's run), the channel, the meta ttl and the meta-ttl window
  the read falls in. A stream only disappears after meta ttl without publications, so a stream created
  after that never falls in the window of the one before: its epoch differs, and a reader who held a
  position of the old stream (or of the empty one, across a window boundary, a Redis restart or a
  failover) is told it cannot recover rather than being handed a gap;
- with ``HistoryPolicy.latest_keys``, the stream also keeps the latest publication of each key
  (``Publication.key``; ``""`` when the namespace has none) for cache recovery (``latest``): written in
  the same step as the history, dropped with the stream (idle past its meta ttl, or a new epoch) and by
  ``remove_history``. A publication that would add a key past ``latest_keys`` raises TooManyKeys and is
  not published.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from channels.names import ChannelKey
from channels.publication import ClientInfo, HistoryResult, Publication, PublishResult, StreamPosition

IDEMPOTENCY_TTL = 300.0
"""Seconds during which a publish with the same idempotency key is suppressed (Centrifugo: 5 minutes)."""


def derived_epoch(instance: str, stream: str, meta_ttl_ms: int, now_ms: int) -> str:
    """The epoch of a stream that does not exist yet (see the module docstring): 8 hex digits of a hash of
    the broker ``instance``, the ``stream``'s identity, its meta ttl and the meta-ttl window of ``now_ms``.
    ``broker_redis`` computes the same in Lua (with SHA-1, from the server's run id and clock)."""
    window = now_ms // max(1, meta_ttl_ms)
    text = f"{instance}|{stream}|{meta_ttl_ms}|{window}".encode()
    return hashlib.sha1(text, usedforsecurity=False).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    size: int
    ttl: float
    meta_ttl: float = 0.0
    latest_keys: int = 0
    """Keep the latest publication of each key, for at most this many keys (0: keep none)."""


class BrokerEventHandler(Protocol):
    def handle_publication(self, key: ChannelKey, pub: Publication, epoch: str) -> None:
        """``pub`` was published on ``key``; ``epoch`` is its stream's epoch ('' when ``pub.offset`` is 0, no
        history). A position is (offset, epoch): offsets alone cannot tell a stream that was lost and
        started over from the one before it."""

    def handle_join(self, key: ChannelKey, info: ClientInfo) -> None: ...

    def handle_leave(self, key: ChannelKey, info: ClientInfo) -> None: ...

    def handle_resubscribed(self, keys: list[ChannelKey]) -> None:
        """The broker lost its subscriptions of ``keys`` for a while and has them again (a Redis shard
        reconnected): anything published meanwhile was missed. The node re-checks each channel's position
        and makes subscribers that missed something recover. ``broker_memory`` never calls it."""


class Broker(Protocol):
    pipelined: bool
    """True when a publish waits for a round trip and publishes *started* one after another (each call run
    up to its first suspension, e.g. as tasks created in order) are accepted in that order, per channel,
    or fail: a session may then have several publishes in flight (``hub.client``). False where that order
    would not hold, or where nothing is gained (a memory broker's publish never suspends)."""

    def set_handler(self, handler: BrokerEventHandler) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, key: ChannelKey) -> None:
        """The node has its first local subscriber of ``key``: start receiving its publications."""

    async def unsubscribe(self, key: ChannelKey) -> None:
        """The node has no local subscriber of ``key`` any more."""

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
        """Publish ``data`` on the channel ``key``. ``feed_key`` is the reading's key in a keyed feed
        (``Publication.key`` on every node; kept as that key's latest with ``history.latest_keys``)."""

    async def publish_join(self, key: ChannelKey, info: ClientInfo) -> None: ...

    async def publish_leave(self, key: ChannelKey, info: ClientInfo) -> None: ...

    async def history(
        self,
        key: ChannelKey,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
        meta_ttl: float = 0.0,
    ) -> HistoryResult:
        """Publications of ``key`` (``limit`` < 0: all, 0: none, only the position).

        With ``since``: only those after it (before it when ``reverse``); UnrecoverablePosition when
        ``since`` is from another epoch.
        """

    async def latest(self, key: ChannelKey, *, meta_ttl: float = 0.0) -> HistoryResult:
        """The latest publication of each key of ``key`` (a channel published with
        ``HistoryPolicy.latest_keys``), in offset order, and the stream's position, read together. Like
        ``history``, a read keeps nothing: a channel without a stream has none, at its derived epoch."""

    async def remove_history(self, key: ChannelKey) -> None:
        """Drop the publications (and the latest of each key); keep the position."""

    async def barrier(self, key: ChannelKey) -> None:
        """Return once every publication of ``key`` accepted before this call has been handed to the
        handler (for a channel this node receives). A read of the stream's top followed by a barrier
        leaves nothing at or below that top still in flight: what the node has not received by then, it
        missed."""
