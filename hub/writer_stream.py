"""A byte-bounded writer for connections whose messages may be larger than their bound (documents).

A document connection must take messages far larger than what it may hold queued: a document's full state
(sync step 2, up to ``doc_max_document_size``) for a late joiner, a large update relayed to it. Growing the
bound by the largest message would let every slow connection hold that much; instead (policy):

- Messages are queued by reference (a relay's frame is built once and shared by its connections) and
  handed to the transport once per loop tick, only while the socket's unsent bytes stay within ``chunk``;
  the rest waits here until the transport reports that it drained. So a connection that does not read has
  at most about ``chunk`` bytes copied into its socket buffer.
- A message larger than ``chunk`` (``push_large``) is streamed: handed over in parts as the socket drains,
  as WebSocket fragments where the transport can write them (the fast path); the portable transport gets it
  whole (ASGI has no fragments), then waits until the server wrote it.
- The bound: the queued bytes, not counting the first large message (the one being streamed, or the next to
  be), must stay within ``max_bytes``. Past it the connection is a slow consumer: ``on_slow`` (the session
  closes it with 3008) and nothing more is taken. A large message queued behind the first counts in full,
  unless it is ``shared``: one object queued for many connections (a relayed update, the document's full
  state), which costs its memory once however many connections hold it; such a message counts as one
  ``chunk`` (what it will cost in this connection's socket buffer). So a connection holds at most one large
  message of its own plus ``max_bytes``, and references to shared ones.
- ``pushed`` and ``written`` count messages queued and messages handed over whole: a message pushed as the
  n-th has left once ``written >= n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from hub.writer import FlushScheduler, session_over

STREAM_CHUNK = 65536
"""Bytes handed to a socket at a time while it has not drained (and the size of a fragment)."""


class StreamTransport(Protocol):
    """Writes messages, or the parts of one, and closes. It never reads."""

    name: str
    fragments: bool
    """Whether ``write_part`` may be used (else a large message is handed over whole)."""

    def unsent(self) -> int:
        """Bytes handed over and not written to the socket yet."""

    def write_messages(self, messages: list[bytes]) -> None:
        """Send complete messages (each as built by the caller: a frame, or an ASGI message)."""

    def write_part(self, payload: bytes, first: bool, last: bool) -> None:
        """Send one part of a message (``first``: its start; ``last``: its end)."""

    def watch_drain(self, callback: Callable[[], None], high: int) -> None:
        """Call ``callback`` whenever the unsent bytes, having passed ``high``, drop again."""

    def close(self, code: int, reason: str) -> None:
        """Close with a protocol code; idempotent."""


class _Large:
    """A queued message to stream, and the bytes it counts for while it is not the first."""

    __slots__ = ("payload", "counted")

    def __init__(self, payload: bytes, counted: int) -> None:
        self.payload = payload
        self.counted = counted


class StreamingWriter:
    __slots__ = (
        "transport",
        "scheduler",
        "max_bytes",
        "chunk",
        "on_slow",
        "on_write_error",
        "queue",
        "queued",
        "offset",
        "large_at",
        "dirty",
        "closed",
        "pushed",
        "written",
    )

    def __init__(
        self,
        transport: StreamTransport,
        scheduler: FlushScheduler,
        max_bytes: int,
        on_slow: Callable[[], None],
        on_write_error: Callable[[], None] | None = None,
        chunk: int = STREAM_CHUNK,
    ) -> None:
        self.transport = transport
        self.scheduler = scheduler
        self.max_bytes = max_bytes
        self.chunk = max(1, min(chunk, max_bytes // 2))
        self.on_slow = on_slow
        self.on_write_error = on_write_error or on_slow
        self.queue: list[bytes | _Large] = []
        self.queued = 0
        """Bytes queued, not counting the first large message."""
        self.offset = 0
        """Bytes of the message at the head already handed over (while it is being streamed)."""
        self.large_at = -1
        """Where the first large message is in ``queue`` (-1: there is none)."""
        self.dirty = False
        self.closed = False
        self.pushed = 0
        self.written = 0
        transport.watch_drain(self._drained, self.chunk)

    def push(self, message: bytes) -> None:
        """Queue a message to be handed over whole."""
        if self.closed:
            return
        self.queue.append(message)
        self.pushed += 1
        self.queued += len(message)
        if self.queued > self.max_bytes:
            self._stop(self.on_slow)
        elif not self.dirty:
            self.dirty = True
            self.scheduler.mark(self)

    def push_large(self, payload: bytes, shared: bool = False) -> None:
        """Queue a message to stream (one larger than ``chunk``); ``shared``: see the module docstring."""
        if self.closed:
            return
        item = _Large(payload, min(len(payload), self.chunk) if shared else len(payload))
        self.queue.append(item)
        self.pushed += 1
        if self.large_at < 0:
            self.large_at = len(self.queue) - 1
            self._drained()  # nothing more counted: only the flush is due
        else:
            self.queued += item.counted
            if self.queued > self.max_bytes:
                self._stop(self.on_slow)
            else:
                self._drained()

    def _drained(self) -> None:
        """Flush on the next tick, if anything is queued (the transport drained, or a message came)."""
        if self.queue and not self.dirty and not self.closed:
            self.dirty = True
            self.scheduler.mark(self)

    def flush(self) -> None:
        self.dirty = False
        if self.closed or not self.queue:
            return
        if self.large_at < 0 and self.queued <= self.chunk + 1 - self.transport.unsent():
            # The usual case: small messages and a socket that keeps up: one write, as ``Writer`` does.
            messages, self.queue = self.queue, []
            self.queued = 0
            self.written += len(messages)
            self.transport.write_messages(cast(list[bytes], messages))  # no large message among them
            return
        self._flush_within_a_chunk()

    def _flush_within_a_chunk(self) -> None:
        transport = self.transport
        queue = self.queue
        i = 0
        while i < len(queue):
            # Hand over until the transport holds more than a chunk: it then pauses and, once drained, calls
            # ``_drained`` (flow control pauses only past the high-water mark, never at it). The socket
            # takes what it can at once, so ask the transport again after every write.
            room = self.chunk + 1 - transport.unsent()
            if room <= 0:
                break
            item = queue[i]
            if isinstance(item, _Large):
                payload = item.payload
                if not transport.fragments:
                    transport.write_messages([payload])
                    self._large_done(i)
                    i += 1
                    continue
                rest = len(payload) - self.offset
                n = min(room, rest)
                transport.write_part(payload[self.offset : self.offset + n], self.offset == 0, n == rest)
                if n == rest:
                    self._large_done(i)
                    i += 1
                else:
                    self.offset += n
                continue
            j = i
            size = 0
            while j < len(queue) and size < room and not isinstance(item := queue[j], _Large):
                size += len(item)
                j += 1
            batch = cast(list[bytes], queue[i:j])
            self.queued -= size
            self.written += j - i
            i = j
            transport.write_messages(batch)
        del queue[:i]
        if self.large_at >= 0:
            self.large_at -= i

    def _large_done(self, at: int) -> None:
        """The large message at ``at`` was handed over: the next one (if any) is no longer counted."""
        self.offset = 0
        self.written += 1
        self.large_at = -1
        for i in range(at + 1, len(self.queue)):
            item = self.queue[i]
            if isinstance(item, _Large):
                self.large_at = i
                self.queued -= item.counted
                break

    def fail(self) -> None:
        """The transport broke while writing: take no more and end the connection."""
        if not self.closed:
            self._stop(self.on_write_error)

    def _stop(self, reason: Callable[[], None]) -> None:
        """Drop what is queued, take nothing more, and tell the session why."""
        self.closed = True
        self.queue.clear()
        self.queued = 0
        reason()
        self.on_slow = self.on_write_error = session_over

    def close(self) -> None:
        """Hand over what the socket takes now (e.g. a last auth message), drop the rest, take no more."""
        if not self.closed:
            self.flush()
            self.closed = True
            self.queue.clear()
            self.queued = 0
        self.on_slow = self.on_write_error = session_over
