"""The per-connection outbound buffer and the per-loop-tick flush (the hot path's last step).

Policy: a push is appended to its connection's Writer (no task, future or lock per delivery); once per loop
tick the FlushScheduler hands each dirty Writer's messages to its Transport in one call, so several pushes
to one connection go out as one frame. A Writer whose backlog (its own plus the transport's unsent bytes,
plus what is held for it elsewhere: publications buffered while a subscription is being set up) passes
``max_bytes`` is a slow consumer: it calls ``on_slow`` (the session then closes with 3008) and takes no more
messages. Others are never held up by it.

A Writer also holds the conflation slots of its connection's conflated subscriptions (``KeyedSlots``,
one per subscription, beside the queued messages): one publication per key at most, the newest, flushed
together at most at the rate the subscription was granted, by the node's ``SlotClock``. A connection whose
transport is backed up skips those flushes instead of queueing: it gets fewer, fresher publications, and
is never a slow consumer for them.

Chunks of a streamed reply (``channels.streams``) are pushed with ``push_chunk``: a chunk of the same
stream as the message queued last joins it, and at the flush each such run goes out as one publication
(``channels.streams.coalesce``), encoded for this connection alone. Only runs cost an encoding here; a
chunk alone goes out as the frame the fan-out encoded once for every subscriber.

Node-wide, the ``Backlog`` of the scheduler adds up what every writer's transport holds unsent. Each
connection's bound alone lets N slow connections hold N x ``max_bytes``; past the node's ``limit``
(``node_queue_max_size``) the connections holding the most are cut as slow consumers, largest first, until
the total is back under it. What a cut connection leaves unsent is reported (``on_released``) so that the
node can give the freed memory back to the system (``hub.memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import socket
from collections.abc import Callable
from typing import Any, Protocol

from channels.streams import coalesce
from hub import sse
from hub.logs import log_limited

log = logging.getLogger("switchboard.writer")


class Transport(Protocol):
    """Writes encoded protocol messages and closes. It never reads (reading is the connection handler's)."""

    name: str

    def write_messages(self, messages: list[bytes]) -> int:
        """Send ``messages`` (framed as the transport frames a batch); return the bytes still unsent."""

    def close(self, code: int, reason: str) -> None:
        """Close with a protocol code; idempotent."""

    def unsent_bytes(self) -> int:
        """The bytes written that have not gone out yet (what ``write_messages`` returned, as of now)."""


def limit_send_buffer(socket_transport: Any, size: int) -> None:
    """Let the kernel hold about ``size`` bytes unsent for this connection (SO_SNDBUF; Linux doubles the
    value it is given, hence half). Left to itself it grows the buffer to megabytes on a fast link, where a
    reader that stops reading leaves stale frames the hub cannot see (they are not in the transport's
    backlog any more) and cannot replace with newer ones. Best effort: a transport without a socket, or a
    socket that refuses, keeps its buffer."""
    sock = socket_transport.get_extra_info("socket") if socket_transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(size // 2, 4096))


class Backlog:
    """The unsent bytes of every writer of a node, and the node-wide bound on them (0: none).

    A writer's share is what its transport reported unsent at its last flush; when the total passes the
    bound, every share is measured again (a connection may have caught up since) and the largest are cut
    until the total is back under it. Costs one comparison per flush while under the bound."""

    __slots__ = ("limit", "total", "writers", "on_released")

    def __init__(self, limit: int = 0, on_released: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.writers: set[Writer] = set()
        """Writers with a share (unsent bytes) in ``total``."""
        self.on_released = on_released

    def change(self, writer: Writer, unsent: int) -> None:
        """``writer``'s transport holds ``unsent`` bytes now."""
        self._set(writer, unsent)
        if self.limit and self.total > self.limit:
            self.shed()

    def _set(self, writer: Writer, unsent: int) -> None:
        self.total += unsent - writer.unsent
        writer.unsent = unsent
        if unsent:
            self.writers.add(writer)
        else:
            self.writers.discard(writer)

    def leave(self, writer: Writer, *, dropped: bool) -> None:
        """``writer`` takes nothing more: its share leaves the total. ``dropped``: what it left unsent will
        never go out (a cut connection), so its memory comes free."""
        released = writer.unsent
        if released:
            self._set(writer, 0)
            if dropped and self.on_released is not None:
                self.on_released(released)

    def shed(self) -> None:
        """Measure every share again; cut the largest until the total is within the limit."""
        for writer in list(self.writers):
            self._set(writer, writer.transport.unsent_bytes())
        if self.total <= self.limit:
            return
        over, cut = self.total, 0
        for writer in sorted(self.writers, key=lambda w: w.unsent, reverse=True):
            if self.total <= self.limit:
                break
            writer.shed()  # its share leaves the total
            cut += 1
        log_limited(
            log,
            logging.WARNING,
            "node backlog of %d bytes over node_queue_max_size %d: %d connections holding most cut (3008)",
            over,
            self.limit,
            cut,
        )


class Flushable(Protocol):
    """What the scheduler flushes: a ``Writer``, or another writer with the same duties."""

    def flush(self) -> None:
        """Hand what is queued to the transport."""

    def fail(self) -> None:
        """The transport broke while writing: take no more and end the connection."""


class FlushScheduler:
    """Collects dirty writers and flushes them once per loop tick; holds the node's ``Backlog``."""

    __slots__ = ("_dirty", "_scheduled", "_loop", "backlog")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, backlog: Backlog | None = None) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._loop = loop
        self.backlog = backlog if backlog is not None else Backlog()

    def mark(self, writer: Flushable) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        self._scheduled = False
        for writer in dirty:
            try:
                writer.flush()
            except Exception:  # one broken transport must not silence the writers after it
                log.exception("flush failed; closing that connection")
                try:
                    writer.fail()
                except Exception:
                    log.exception("closing a failed connection failed too")


def session_over() -> None:
    """What a closed writer holds instead of its session's callbacks (``on_slow``, ``on_write_error``): they
    are bound methods of the session, which holds the writer, a cycle that only the cycle collector would
    free once the connection is gone. A closed writer never calls them."""


class Writer:
    __slots__ = (
        "transport",
        "pending",
        "pending_bytes",
        "held_bytes",
        "unsent",
        "max_bytes",
        "dirty",
        "closed",
        "scheduler",
        "on_slow",
        "on_write_error",
        "slots",
        "run_stream",
        "run_index",
        "run_pubs",
        "run_encode",
    )

    def __init__(
        self,
        transport: Transport,
        scheduler: FlushScheduler,
        max_bytes: int,
        on_slow: Callable[[], None],
        on_write_error: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.scheduler = scheduler
        self.max_bytes = max_bytes
        self.on_slow = on_slow
        self.on_write_error = on_write_error or on_slow
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.held_bytes = 0
        """Bytes this connection will be sent that wait outside the writer (``hold``/``release``)."""
        self.unsent = 0
        """What the transport held unsent at the last flush (this writer's share of the node's Backlog)."""
        self.dirty = False
        self.closed = False
        self.slots: dict[str, KeyedSlots] | None = None
        """The conflation slots of each conflated subscription, by channel (None until the first)."""
        self.run_stream: tuple[Any, str] | None = None
        """The stream whose chunks were queued last (``push_chunk``), at ``run_index`` of ``pending``:
        ``run_pubs`` is its chunk, or its chunks (a list) to be joined at the flush by ``run_encode``."""
        self.run_index = -1
        self.run_pubs: Any = None
        self.run_encode: Callable[[Any], bytes] | None = None

    def push(self, message: bytes) -> None:
        if self.closed:
            return
        self.pending.append(message)
        self.pending_bytes += len(message)
        if self.pending_bytes + self.held_bytes > self.max_bytes:
            self._slow()
        elif not self.dirty:
            self.dirty = True
            self.scheduler.mark(self)

    def push_chunk(
        self, frame: bytes, stream: tuple[Any, str], pub: Any, encode: Callable[[Any], bytes]
    ) -> None:
        """A chunk of ``stream`` (channel and stream id), ``frame`` being it encoded: joined with the
        chunks of the same stream queued right before it (``encode`` makes the joined publication's
        frame at the flush), else queued as ``frame``. Counted against the bound at its frame's size.
        Costs a few attribute writes when it is not joined (no object per delivery)."""
        if stream == self.run_stream and self.run_index == len(self.pending) - 1 and not self.closed:
            pubs = self.run_pubs
            if isinstance(pubs, list):
                pubs.append(pub)
            else:
                self.run_pubs = [pubs, pub]
            self.pending_bytes += len(frame)
            if self.pending_bytes + self.held_bytes > self.max_bytes:
                self._slow()
            return
        if self.run_stream is not None:
            self._end_run()
        self.push(frame)
        if not self.closed:
            self.run_stream = stream
            self.run_index = len(self.pending) - 1
            self.run_pubs = pub
            self.run_encode = encode

    def _end_run(self) -> None:
        """The run queued last is complete: its chunks, if several, become one frame in its place."""
        pubs, encode = self.run_pubs, self.run_encode
        self.run_stream = self.run_pubs = self.run_encode = None
        if isinstance(pubs, list) and encode is not None and not self.closed:
            (joined,) = coalesce(pubs)
            self.pending[self.run_index] = encode(joined)

    def flush(self) -> None:
        self.dirty = False
        if self.run_stream is not None:
            self._end_run()
        if self.closed or not self.pending:
            return
        messages = self.pending
        self.pending = []
        self.pending_bytes = 0
        unsent = self.transport.write_messages(messages)
        if unsent != self.unsent:
            self.scheduler.backlog.change(self, unsent)
        if unsent + self.held_bytes > self.max_bytes and not self.closed:
            self._slow()

    def hold(self, size: int) -> None:
        """Count ``size`` more bytes kept for this connection outside the writer (a publication buffered for
        a subscription being set up) against the bound: they are its backlog all the same."""
        if self.closed:
            return
        self.held_bytes += size
        if self.pending_bytes + self.held_bytes > self.max_bytes:
            self._slow()

    def release(self, size: int) -> None:
        """``size`` bytes held (``hold``) are no longer kept: handed over (then pushed) or dropped."""
        self.held_bytes = max(0, self.held_bytes - size)

    def fail(self) -> None:
        """The transport broke while writing: take no more and end the connection (3009 write error)."""
        if not self.closed:
            self._stop(self.on_write_error)

    def _slow(self) -> None:
        self._stop(self.on_slow)

    def shed(self) -> None:
        """The node's backlog is over its bound and this connection holds the most: a slow consumer."""
        if not self.closed:
            self._slow()

    def _stop(self, reason: Callable[[], None]) -> None:
        """Drop what is pending, take nothing more, and tell the session why."""
        self.discard()
        reason()

    def discard(self) -> None:
        """Take nothing more, drop what is pending; what the transport holds unsent is dropped with it."""
        self.closed = True
        self.pending = []
        self.pending_bytes = 0
        self.slots = None
        self.run_stream = self.run_pubs = self.run_encode = None
        self.scheduler.backlog.leave(self, dropped=True)
        self.on_slow = self.on_write_error = session_over

    def backlog(self) -> int:
        """What this connection has waiting, as last measured: unsent by the transport at the last flush,
        pending in the writer and held for it elsewhere (cheap: no call into the transport)."""
        return self.unsent + self.pending_bytes + self.held_bytes

    def measure_backlog(self) -> int:
        """``backlog`` with the transport asked afresh (it may have caught up since the last flush)."""
        unsent = self.transport.unsent_bytes()
        if unsent != self.unsent:
            self.scheduler.backlog.change(self, unsent)
        return unsent + self.pending_bytes + self.held_bytes

    def open_slots(
        self, channel: str, emit: Callable[[Any], int], period: float, max_keys: int, clock: SlotClock
    ) -> KeyedSlots:
        """Conflation slots for the subscription to ``channel`` (see ``KeyedSlots``)."""
        slots = KeyedSlots(self, clock, emit, period, max_keys)
        if self.slots is None:
            self.slots = {}
            # The kernel's share of the backlog must be small too, or skipping flushes comes too late.
            limit = getattr(self.transport, "limit_send_buffer", None)
            if limit is not None:
                limit(clock.threshold)
        self.slots[channel] = slots
        return slots

    def close_slots(self, channel: str) -> None:
        """The subscription to ``channel`` ended: what its slots hold is dropped."""
        if self.slots is not None:
            slots = self.slots.pop(channel, None)
            if slots is not None:
                slots.close()

    def close(self) -> None:
        """Flush what is pending now and take no more (what the transport holds still goes out)."""
        if not self.closed:
            self.flush()
            self.closed = True
            self.scheduler.backlog.leave(self, dropped=False)


INF = math.inf
EPSILON = 1e-6
"""Seconds of slack in "has the period passed": a flush at ``last + period`` must find it passed whatever
the rounding of the two sums (a batch may go out a microsecond early, never be rescheduled forever)."""


class KeyedSlots:
    """The conflation slots of one subscription on one connection: the newest publication of each key not
    yet sent. The policy, with ``period`` = 1 / rate:

    - the subscription is flushed at most once per period: a flush sends the newest publication of every
      key that changed since the last one, as one batch (one frame, as the writer joins one tick's
      pushes), oldest key first;
    - a publication to a quiet subscription (nothing held, the last flush a period ago or more) goes out
      at once, and starts a period;
    - a publication of a key already held replaces it (the newest wins);
    - a connection whose backlog (``Writer.measure_backlog``) is over the clock's ``threshold`` skips the
      flush (one period later it is looked at again): a slow reader is sent fewer, fresher batches, never
      queued behind; a batch larger than the room under the threshold is sent in parts, each as soon as
      the backlog allows, and the next period starts when its last part has gone.

    So a subscriber gets at most one batch (frame) per period and each key at most once per period; each
    key's publications reach it as a subsequence of those published, in order, the last one always among
    them once publishing stops (and the reader keeps up); and nothing here grows with the publication
    rate: memory is one entry per key with a publication waiting, at most ``max_keys``. A key past that is
    refused (``offer`` returns False) and the caller sends its publication another way.
    """

    __slots__ = ("writer", "clock", "emit", "period", "max_keys", "held", "carry", "last", "due", "closed")

    def __init__(
        self, writer: Writer, clock: SlotClock, emit: Callable[[Any], int], period: float, max_keys: int
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.emit = emit
        """Send one item now (push its frame into the writer); returns the bytes pushed."""
        self.period = period
        self.max_keys = max_keys
        self.held: dict[str, Any] = {}
        """Key -> the newest item not yet sent, for the next batch (in the order the keys started waiting)."""
        self.carry: dict[str, Any] = {}
        """What is left of the batch being sent (keys not sent yet in this period)."""
        self.last = -INF
        """When the last batch (or the last part of it) went out: the next one goes a period later."""
        self.due = INF
        """When the clock flushes these slots next (INF: not scheduled)."""
        self.closed = False

    def offer(self, key: str, item: Any, now: float) -> bool:
        """A publication of ``key`` (``item``, as ``emit`` takes it) at clock time ``now``: sent, held, or
        False when ``max_keys`` keys are waiting already."""
        if key in self.carry:
            self.carry[key] = item  # not sent yet in this period: the newest goes
            return True
        held = self.held
        if key in held:
            held[key] = item  # newest wins; the flush already scheduled sends it
            return True
        if len(held) + len(self.carry) >= self.max_keys:
            return False
        if not held and not self.carry and now - self.last >= self.period - EPSILON:
            if self.writer.backlog() <= self.clock.threshold:
                self.last = now  # a quiet subscription: at once, and a period starts
                self.emit(item)
                return True
            held[key] = item
            self._schedule(now + self.period)
            return True
        held[key] = item
        self._schedule(max(self.last + self.period, now))
        return True

    def _schedule(self, when: float) -> None:
        if when < self.due:
            self.clock.schedule(self, when)

    def flush(self, now: float) -> None:
        """Send the next batch, or the rest of this one (the clock calls this when due)."""
        if self.closed or self.writer.closed or not (self.held or self.carry):
            return
        # What the writer last saw unsent can only have shrunk since: ask the transport only when over.
        room = self.clock.threshold - self.writer.backlog()
        if room <= 0:
            room = self.clock.threshold - self.writer.measure_backlog()
        if room <= 0:
            self._schedule(now + self.period)  # backed up: skip this flush, not queue behind the backlog
            return
        if not self.carry:
            if now - self.last < self.period - EPSILON:
                self._schedule(self.last + self.period)
                return
            self.carry, self.held = self.held, {}
        carry = self.carry
        for key in list(carry):
            room -= self.emit(carry.pop(key))
            if room <= 0:
                break
        self.last = now
        if carry:
            self._schedule(now + self.clock.grain)  # the rest of the batch as soon as the backlog allows
        elif self.held:
            self._schedule(now + self.period)

    def close(self) -> None:
        self.closed = True
        self.held = {}
        self.carry = {}


class SlotClock:
    """The node's clock of conflation slots: calls each ``KeyedSlots.flush`` when it is due, from one timer.

    Due times are rounded up to ``grain`` seconds, so slots due about the same time flush in one callback
    (subscribers flushed together mostly hold the same delta base: their encodes are shared) and the
    timer fires at most 1 / ``grain`` times a second however many subscriptions wait. ``threshold`` is
    the backlog (bytes) over which a connection skips flushes (``client_conflation_backlog``)."""

    __slots__ = ("threshold", "grain", "_loop", "_buckets", "_heap", "_timer", "_timer_at")

    def __init__(self, threshold: int, grain: float = 0.01, loop: asyncio.AbstractEventLoop | None = None):
        self.threshold = threshold
        self.grain = grain
        self._loop = loop
        self._buckets: dict[float, list[KeyedSlots]] = {}
        self._heap: list[float] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF

    def now(self) -> float:
        """The clock's time (the event loop's)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def schedule(self, slots: KeyedSlots, when: float) -> None:
        """Flush ``slots`` at ``when`` (rounded up to the grain), or at the time already set if sooner."""
        when = math.ceil(when / self.grain) * self.grain
        if when >= slots.due:
            return
        slots.due = when  # an entry in a later bucket is now stale: ``fire`` skips it
        bucket = self._buckets.get(when)
        if bucket is None:
            bucket = self._buckets[when] = []
            heapq.heappush(self._heap, when)
            if when < self._timer_at:
                self._arm(when)
        bucket.append(slots)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self.fire)

    def fire(self) -> None:
        """Flush every bucket that is due; arm the timer for the next."""
        self._timer, self._timer_at = None, INF
        now = self.now()
        heap = self._heap
        while heap and heap[0] <= now + 1e-9:
            when = heapq.heappop(heap)
            for slots in self._buckets.pop(when):
                if slots.due != when:
                    continue
                slots.due = INF
                try:
                    slots.flush(max(now, when))
                except Exception:  # one broken subscription must not stop the flushes after it
                    log.exception("conflation flush failed")
        if heap:
            self._arm(heap[0])

    def pending(self) -> int:
        """Subscriptions waiting for a flush (entries in the buckets, stale ones included)."""
        return sum(map(len, self._buckets.values()))


class EventWriter(Writer):
    """A Writer for Server-Sent Events: it frames every message as an event whose id is the connection's
    resume point after it (``hub.sse``), so a dropped ``EventSource`` resumes exactly where it stopped."""

    __slots__ = ("positions", "entries", "event_id")

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.positions: dict[str, tuple[int, str]] = {}
        self.entries: dict[str, bytes | None] = {}
        """Each position as the id holds it (``sse.position_entry``), in subscription order."""
        self.event_id = sse.encode_entries(())

    def push(self, message: bytes) -> None:
        Writer.push(self, sse.event(message, self.event_id))

    def push_event(self, name: bytes, message: bytes) -> None:
        """A named event (``EventSource.onmessage`` does not see it; ``addEventListener(name)`` does)."""
        Writer.push(self, sse.event(message, self.event_id, name))

    def set_position(self, channel: str, offset: int, epoch: str) -> None:
        self.positions[channel] = (offset, epoch)
        self.entries[channel] = sse.position_entry(channel, offset, epoch)
        self.event_id = sse.encode_entries(self.entries.values())

    def advance(self, channel: str, offset: int) -> None:
        position = self.positions.get(channel)
        if position is not None and offset > position[0]:
            self.set_position(channel, offset, position[1])

    def forget(self, channel: str) -> None:
        if self.positions.pop(channel, None) is not None:
            del self.entries[channel]
            self.event_id = sse.encode_entries(self.entries.values())
