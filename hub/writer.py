"""The per-connection outbound buffer and the per-loop-tick flush (the hot path's last step).

Policy: a push is appended to its connection's Writer (no task, future or lock per delivery); once per loop
tick the FlushScheduler hands each dirty Writer's messages to its Transport in one call, so several pushes
to one connection go out as one frame. A Writer whose backlog (its own plus the transport's unsent bytes,
plus what is held for it elsewhere: publications buffered while a subscription is being set up) passes
``max_bytes`` is a slow consumer: it calls ``on_slow`` (the session then closes with 3008) and takes no more
messages. Others are never held up by it.

Node-wide, the ``Backlog`` of the scheduler adds up what every writer's transport holds unsent. Each
connection's bound alone lets N slow connections hold N x ``max_bytes``; past the node's ``limit``
(``node_queue_max_size``) the connections holding the most are cut as slow consumers, largest first, until
the total is back under it. What a cut connection leaves unsent is reported (``on_released``) so that the
node can give the freed memory back to the system (``hub.memory``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

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

    def flush(self) -> None:
        self.dirty = False
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
        self.scheduler.backlog.leave(self, dropped=True)

    def close(self) -> None:
        """Flush what is pending now and take no more (what the transport holds still goes out)."""
        if not self.closed:
            self.flush()
            self.closed = True
            self.scheduler.backlog.leave(self, dropped=False)


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
