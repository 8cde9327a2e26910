"""Live feeds on the fan-out path: conflated and delta-encoded subscriptions.

A subscription is a *feed subscription* when its namespace conflates (``conflation = "latest"``) or when it
negotiated delta compression (``delta: "fossil"``). Such a subscription sits in the registry's ``FEED``
table (``hub.wire``), not in a format's table: the fan-out wraps each publication once into a ``FeedItem``
and offers it to every feed subscription of the channel, which frames it as its own state requires.

Encodes are shared, never made per subscriber:

- a ``FeedItem`` keeps every frame made of its publication, by variant and format: the plain push, the
  full data as a JSON string (the first publication of a delta subscription), and the delta against each
  base some subscriber held; every subscriber that needs the same variant gets the same bytes;
- the delta payloads come from the channel's ``DeltaMemo`` (``channels.fossil``) by (base, target) item,
  so JSON and Protobuf subscribers holding the same base share one diff.

Delta (the design of ``channels.fossil``'s notes): each subscription keeps ``base``, the item it was last
sent (a reference, not a copy), and only ever gets a delta against that: the first publication, and any
after a recovery that failed, goes full. In a channel whose subscribers get every publication they all
hold the previous item, so a publication is diffed once. A conflated subscriber is sent some publications
only: its base is whatever it got last (the SDKs keep one base per subscription, across keys), and
subscribers flushed together mostly share it.

Conflation: the subscription's ``KeyedSlots`` (``hub.writer``) decide when a publication goes out; this
module only frames what they emit. A key past the namespace's ``max_keys`` is not conflated: its
publication goes into the writer's queue like any other (bounded by ``client_queue_max_size``), with one
rate-limited warning.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from channels.fossil import DeltaMemo, delta_payload
from channels.publication import Publication
from hub import codec_json, codec_protobuf
from hub.logs import log_limited
from hub.wire import CODECS, JSON, JSON_EVENTS, PROTOBUF
from hub.writer import KeyedSlots, SlotClock

if TYPE_CHECKING:
    from hub.client import Client

log = logging.getLogger("switchboard.feeds")

DELTA_FORMATS = (JSON, PROTOBUF)
"""The formats in which a subscriber can ask for delta compression (the bidirectional ones)."""

_DELTA_CODECS: dict[int, Any] = {JSON: codec_json, PROTOBUF: codec_protobuf}

_PLAIN = -1
_FULL = 0
"""Frame variants besides deltas (which are keyed by their base item's ``seq``, from 1 on)."""
_FORMATS = 8
"""More than there are formats: a frame's key in ``FeedItem.frames`` is ``variant * _FORMATS + format``."""

_sequence = itertools.count(1)


class FeedItem:
    """One publication on its way to the feed subscriptions of a channel on this node, with the frames made
    of it so far. ``seq`` names it among every item of the node (delta memo keys)."""

    __slots__ = ("seq", "pub", "frames")

    def __init__(self, pub: Publication) -> None:
        self.seq = next(_sequence)
        self.pub = pub
        self.frames: dict[int, bytes] = {}
        """Frames made of it: by ``variant * _FORMATS + format`` (variant: plain, full, or a base's seq)."""


class FeedSubscription:
    """The delivery state of one feed subscription: its delta base, its conflation slots."""

    __slots__ = ("client", "channel", "fmt", "delta", "base", "memo", "slots", "_push")

    def __init__(self, client: Client, channel: str, *, delta: bool, memo: DeltaMemo | None) -> None:
        self.client = client
        self.channel = channel
        self.fmt = client.fmt
        self.delta = delta
        self.base: FeedItem | None = None
        """The item this subscriber was sent last (delta subscriptions): its next delta is against it."""
        self.memo = memo
        self.slots: KeyedSlots | None = None
        self._push: Callable[[bytes], None] = client.writer.push

    def conflate(self, rate: float, max_keys: int, clock: SlotClock) -> None:
        """Deliver through conflation slots at ``rate`` publications a second per key."""
        self.slots = self.client.writer.open_slots(self.channel, self.emit, 1.0 / rate, max_keys, clock)

    def offer(self, item: FeedItem, now: float) -> None:
        """The fan-out's delivery: send ``item`` now or leave it to the slots."""
        slots = self.slots
        if slots is None:
            self.emit(item)
        elif not slots.offer(item.pub.key, item, now):
            log_limited(
                log,
                logging.WARNING,
                "%s carries more than max_keys %d keys: a publication went unconflated",
                self.channel,
                slots.max_keys,
                extra=self.client.log_fields(),
            )
            self.emit(item)

    def emit(self, item: FeedItem) -> int:
        """Frame ``item`` for this subscriber (a shared frame when another needed the same) and push it; a
        delta subscription's base becomes ``item``. Returns the bytes pushed."""
        fmt = self.fmt
        base = None
        if not self.delta:
            variant = _PLAIN
        else:
            base = self.base
            self.base = item
            variant = _FULL if base is None else base.seq
        frames = item.frames
        frame = frames.get(variant * _FORMATS + fmt)
        if frame is None:
            frame = frames[variant * _FORMATS + fmt] = self._encode(item, variant, base)
        if fmt == JSON_EVENTS:
            self.client.deliver_event(self.channel, frame, item.pub)
        else:
            self._push(frame)
        return len(frame)

    def _encode(self, item: FeedItem, variant: int, base: FeedItem | None) -> bytes:
        """The frame of ``item`` in this subscriber's format: plain, full for delta (the data as the SDKs
        expect it once delta is negotiated), or as a delta against ``base`` (full when a delta would be no
        smaller)."""
        pub = item.pub
        if variant == _PLAIN:
            return CODECS[self.fmt].encode_publication_push(self.channel, pub)
        codec = _DELTA_CODECS[self.fmt]
        if variant == _FULL:
            return codec.encode_delta_publication_push(self.channel, pub, pub.data, False)  # type: ignore[no-any-return]
        assert base is not None and self.memo is not None
        payload, is_delta = self.memo.payload(base.seq, base.pub.data, item.seq, pub.data)
        return codec.encode_delta_publication_push(self.channel, pub, payload, is_delta)  # type: ignore[no-any-return]

    def close(self) -> None:
        """The subscription ended: its slots (and what they hold) go."""
        if self.slots is not None:
            self.client.writer.close_slots(self.channel)
            self.slots = None
        self.base = None


def delta_chain(fmt: int, pubs: Iterable[Publication]) -> tuple[list[dict[str, Any]], FeedItem | None]:
    """Recovered publications for a delta subscription's subscribe result: the first full, each next one a
    delta against the one before (as the SDKs apply them), as ``publication_dict``s of ``fmt``; and the item
    of the last, the subscription's base once the result is sent (None when there are none)."""
    codec = _DELTA_CODECS[fmt]
    out: list[dict[str, Any]] = []
    base: Publication | None = None
    last: FeedItem | None = None
    for pub in pubs:
        payload, is_delta = delta_payload(None if base is None else base.data, pub.data)
        out.append(codec.delta_publication_dict(pub, payload, is_delta))
        base = pub
    if base is not None:
        last = FeedItem(base)
    return out, last
