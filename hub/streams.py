"""Streamed replies on a node: the channels of a ``streams`` namespace take chunks through
``channels.streams.ChannelStreams`` on every way in, and a subscriber that joins mid-stream is sent the
text so far first.

Where an open stream's state lives: **on the node its chunks are published through**. A stream has one
writer (an agent's connection, an embedding program, a backend calling the server API), so the node that
takes its chunks checks them (order, bounds, after final), keeps its text so far, abandons it when idle,
and publishes its finished message. It is the one holder of the stream; every other node only relays it.
A node whose client subscribes to a streams channel asks the nodes for the text so far of the channel's
open streams (a survey of the control channel, ``SNAPSHOT``: one round trip, answered from memory; in one
process it costs nothing) and merges the answers (``merge_snapshots``). Chosen over keeping the text in
Redis beside the channel's stream because it costs a chunk nothing more than an ordinary publication (no
second write, no text rewritten per token), adds no Redis state to bound or expire, and needs no second
implementation of the checks in Lua: ``ChannelStreams`` stays the one place that decides.

Order (why the subscriber gets no gap and no duplicate): the subscription is registered, and the node
receives the channel from the broker, before the survey is sent; a holder's snapshot covers every chunk it
accepted before it answered, and a chunk accepted after it answers is published after the subscriber's
node receives the channel, so it reaches the subscription's buffer. The buffer goes out after the
snapshot, without the chunks the snapshot covers (``after_snapshot``).

Policies:

- a refused chunk (``StreamRejected``) is answered with a Centrifuge error (``REFUSALS``): 107 bad request
  for a malformed chunk, one out of order or after its final, 106 limit exceeded for one too large or a
  channel with too many streams open; nothing is delivered or stored;
- chunks are delivered live and never stored; the final chunk goes out (and into history) as the whole
  message, once;
- a stream idle for ``stream_idle_timeout`` is finished as it is (marked abandoned) by its holder: one
  timer per channel with open streams, set to its next expiry (``ChannelStreams.next_expiry``), never a
  walk over channels; a channel's state goes ``stream_idle_timeout`` after its last chunk (and with it the
  memory of which of its streams finished);
- a node that stops finishes its open streams as they are (abandoned) before it closes its broker;
- a chunk the broker could not take ends its stream on this node (``ChannelStreams.drop``): its publisher
  was told, and a later chunk of it is refused as out of order;
- at most ``MAX_CHANNELS`` channels hold streams on one node: a new stream past it is refused (106);
- a stream's chunks must go through one node. A client connection's do; a backend using the HTTP server
  API behind a load balancer must keep a stream on one node (one keep-alive connection), or a chunk that
  reaches another node is refused as out of order (never delivered out of place);
- when the survey fails (a node does not answer in ``survey_timeout``, Redis down), the subscriber gets
  this node's snapshot alone: it may miss the start of a stream held elsewhere, and still gets the whole
  text when that stream finishes (the final publication is the whole message).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.names import ChannelKey, parse_channel
from channels.options import NamespaceOptions
from channels.publication import ClientInfo, Publication
from channels.streams import (
    ChannelStreams,
    ChunkAfterFinal,
    ChunkOutOfOrder,
    MalformedChunk,
    Outcome,
    StreamRejected,
    StreamTooLarge,
    TooManyStreams,
    merge_snapshots,
    stream_of,
)
from hub import codes
from hub.control import ControlUnavailable, LocalControl
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.streams")

SNAPSHOT = "streams.snapshot"
"""The control survey that asks every node for the text so far of one channel's open streams."""
MAX_CHANNELS = 10_000
"""Channels with stream state (open streams, or finished ones remembered) on one node at most."""

REFUSALS: dict[type[StreamRejected], Callable[[], codes.ClientError]] = {
    MalformedChunk: codes.error_bad_request,
    ChunkOutOfOrder: codes.error_bad_request,
    ChunkAfterFinal: codes.error_bad_request,
    StreamTooLarge: codes.error_limit_exceeded,
    TooManyStreams: codes.error_limit_exceeded,
}
"""The Centrifuge error each refusal is answered with; its message is the code's, then the reason."""


def refusal(exc: StreamRejected) -> codes.ClientError:
    base = REFUSALS[type(exc)]()
    return codes.ClientError(base.code, f"{base.message}: {exc.reason}")


def encode_snapshot(pubs: list[Publication]) -> list[list[Any]]:
    """Publications as msgpack-able rows (a survey's answer)."""
    rows: list[list[Any]] = []
    for pub in pubs:
        info = pub.info
        who = None if info is None else [info.user, info.client, info.conn_info, info.chan_info]
        rows.append([pub.data, who, pub.tags, pub.time])
    return rows


def decode_snapshot(rows: Any) -> list[Publication]:
    """``encode_snapshot``'s rows back; anything malformed (another version's answer) is skipped."""
    out: list[Publication] = []
    if not isinstance(rows, list):
        return out
    for row in rows:
        try:
            data, who, tags, at = row
            info = None if who is None else ClientInfo(*who)
            out.append(Publication(bytes(data), info=info, tags=tags, time=int(at)))
        except (TypeError, ValueError):
            continue
    return out


class OpenStreams:
    """The streams this node holds (those published through it), by channel, with their expiry timers."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.channels: dict[ChannelKey, ChannelStreams] = {}
        self._timers: dict[ChannelKey, asyncio.TimerHandle] = {}
        self._last: dict[ChannelKey, float] = {}
        """When each channel last took a chunk (its state goes ``idle_timeout`` later)."""

    def start(self) -> None:
        """Answer other nodes' snapshot surveys (on the node's control channel, as set when it starts)."""
        self.node.control.answer(SNAPSHOT, self._answer)

    async def close(self) -> None:
        """The node is stopping: every open stream is finished as it is (abandoned), so history keeps
        what people saw; a message the broker cannot take any more is logged and lost with the node."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        channels, self.channels = self.channels, {}
        for key, streams in channels.items():
            for message in streams.expire(math.inf):
                try:
                    await self._publish_abandoned(key, message)
                except Exception as exc:
                    log.warning("open stream of %s not finished at shutdown: %r", key[1], exc)

    def open_count(self) -> int:
        return sum(map(len, self.channels.values()))

    # ------------------------------------------------------------ publishing side

    def accept(
        self,
        key: ChannelKey,
        opts: NamespaceOptions,
        data: bytes,
        info: ClientInfo | None,
        tags: dict[str, str] | None,
    ) -> Outcome:
        """Take a publication of a streams channel (synchronously: chunks are checked in the order their
        publishes start). Raises ``codes.ClientError`` for a refused chunk; nothing changed then."""
        streams = self.channels.get(key)
        fresh = streams is None
        if streams is None:
            streams = ChannelStreams(opts.stream_limits)
        pub = Publication(data, info=info, tags=tags)
        now = time.monotonic()
        try:
            if fresh and len(self.channels) >= MAX_CHANNELS and stream_of(pub) is not None:
                raise TooManyStreams(f"{MAX_CHANNELS} channels hold streams on this node")
            outcome = streams.accept(pub, now)
        except StreamRejected as exc:
            log_limited(log, logging.INFO, "chunk refused in %s: %s", key[1], exc, extra={"tenant": key[0]})
            raise refusal(exc) from None
        if fresh and outcome.deliver is pub and stream_of(pub) is None:
            return outcome  # an ordinary publication: the channel keeps no state for it
        self.channels[key] = streams
        self._last[key] = now
        if key not in self._timers:
            due = streams.next_expiry()
            self._arm(key, now + opts.stream_idle_timeout if due is None else due)
        return outcome

    def failed(self, key: ChannelKey, data: bytes) -> None:
        """The broker did not take a publication accepted here: its stream ends on this node."""
        streams = self.channels.get(key)
        stream = stream_of(Publication(data))
        if streams is not None and stream is not None:
            streams.drop(stream)

    def _arm(self, key: ChannelKey, when: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - time.monotonic())
        self._timers[key] = loop.call_at(loop.time() + delay, self._due, key)

    def _due(self, key: ChannelKey) -> None:
        """A channel's timer: abandon its idle streams; forget the channel once nothing has come for a
        whole ``idle_timeout``; else wait for the next expiry."""
        self._timers.pop(key, None)
        streams = self.channels.get(key)
        if streams is None:
            return
        now = time.monotonic()
        for message in streams.expire(now):
            self.node.spawn(self._publish_abandoned(key, message), f"abandoned stream of {key[1]}")
        due = streams.next_expiry()
        if due is None:
            quiet_until = self._last.get(key, now) + streams.limits.idle_timeout
            if now >= quiet_until:
                del self.channels[key]
                self._last.pop(key, None)
                return
            due = quiet_until
        self._arm(key, due)

    async def _publish_abandoned(self, key: ChannelKey, message: Publication) -> None:
        channel = parse_channel(key[1])
        opts = self.node.namespaces.options_for(channel)
        await self.node.publish_to(
            key[0], channel, opts, message.data, info=message.info, tags=message.tags, stream_message=True
        )

    # ------------------------------------------------------------ subscribing side

    async def snapshot(self, key: ChannelKey) -> list[Publication]:
        """The text so far of each open stream of ``key``, from whichever node holds it."""
        if isinstance(self.node.control, LocalControl):
            return self.local_snapshot(key)  # one process: this node holds every stream
        try:
            answers = await self.node.control.survey(SNAPSHOT, [key[0], key[1]])
        except ControlUnavailable as exc:
            log_limited(
                log,
                logging.WARNING,
                "stream snapshot of %s from this node only: %s",
                key[1],
                exc,
                extra={"tenant": key[0]},
            )
            return self.local_snapshot(key)
        return merge_snapshots([decode_snapshot(rows) for rows in answers.values()])

    def local_snapshot(self, key: ChannelKey) -> list[Publication]:
        streams = self.channels.get(key)
        return streams.snapshot() if streams is not None else []

    async def _answer(self, args: list[Any]) -> list[list[Any]]:
        tenant, channel = args
        return encode_snapshot(self.local_snapshot((str(tenant), str(channel))))
