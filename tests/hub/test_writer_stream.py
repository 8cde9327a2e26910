"""The streaming writer of document connections (hub.writer_stream), against a fake socket whose peer reads
only when the test says so (the worst case: the kernel takes nothing by itself). No event loop."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.writer import FlushScheduler
from hub.writer_stream import StreamingWriter
from tests.hub.test_writer import FakeLoop


class FakeSocket:
    """Records what is handed over; holds it as unsent until ``read``; flow control as asyncio's (pause
    past ``high``, resume at a quarter of it, then ``on_drain``)."""

    name = "fake"

    def __init__(self, fragments: bool = True) -> None:
        self.fragments = fragments
        self.unsent_bytes = 0
        self.written: list[tuple[bytes, bool, bool]] = []
        """(payload, starts a message, ends it)"""
        self.high = 0
        self.paused = False
        self.on_drain: Callable[[], None] | None = None
        self.closed: tuple[int, str] | None = None
        self.most_unsent = 0

    def unsent(self) -> int:
        return self.unsent_bytes

    def _wrote(self, n: int) -> None:
        self.unsent_bytes += n
        self.most_unsent = max(self.most_unsent, self.unsent_bytes)
        if self.unsent_bytes > self.high:
            self.paused = True

    def write_messages(self, messages: list[bytes]) -> None:
        for message in messages:
            self.written.append((message, True, True))
            self._wrote(len(message))

    def write_part(self, payload: bytes, first: bool, last: bool) -> None:
        assert self.fragments
        self.written.append((payload, first, last))
        self._wrote(len(payload))

    def watch_drain(self, callback: Callable[[], None], high: int) -> None:
        self.on_drain, self.high = callback, high

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)

    def read(self, n: int) -> None:
        """The peer reads ``n`` bytes."""
        self.unsent_bytes -= min(n, self.unsent_bytes)
        if self.paused and self.unsent_bytes <= self.high // 4:
            self.paused = False
            assert self.on_drain is not None
            self.on_drain()

    def messages(self) -> list[bytes]:
        """What the peer receives, reassembled; every message starts with a first part and ends with a
        last."""
        out: list[bytes] = []
        current: list[bytes] | None = None
        for payload, first, last in self.written:
            assert first == (current is None), "a message started inside another"
            current = [payload] if first else [*(current or []), payload]
            if last:
                out.append(b"".join(current))
                current = None
        return out


def make(
    max_bytes: int = 1000, chunk: int = 100, fragments: bool = True
) -> tuple[FakeLoop, FakeSocket, StreamingWriter, list[str]]:
    loop = FakeLoop()
    sock = FakeSocket(fragments)
    events: list[str] = []
    writer = StreamingWriter(
        sock,
        FlushScheduler(loop),
        max_bytes,
        lambda: events.append("slow"),
        chunk=chunk,  # type: ignore[arg-type]
    )
    return loop, sock, writer, events


def drain(loop: FakeLoop, sock: FakeSocket, step: int = 37) -> None:
    """The peer reads everything, ``step`` bytes at a time, the loop running between."""
    loop.run_once()
    while sock.unsent_bytes or loop.callbacks:
        sock.read(step)
        loop.run_once()


def test_small_messages_go_out_together_once_per_tick() -> None:
    loop, sock, writer, _ = make()
    writer.push(b"a" * 10)
    writer.push(b"b" * 10)
    assert sock.written == []
    loop.run_once()
    assert sock.messages() == [b"a" * 10, b"b" * 10]
    assert (writer.pushed, writer.written) == (2, 2)


def test_a_large_message_is_streamed_as_the_socket_drains() -> None:
    loop, sock, writer, events = make(max_bytes=1000, chunk=100)
    big = bytes(range(256)) * 20  # 5,120 bytes: five times the bound
    writer.push(b"before")
    writer.push_large(big)
    writer.push(b"after")
    loop.run_once()
    assert sock.unsent_bytes <= 101 + len(b"before")  # a chunk, not the message
    assert writer.written == 1
    drain(loop, sock)
    assert sock.messages() == [b"before", big, b"after"]
    assert events == [] and writer.written == writer.pushed == 3
    assert sock.most_unsent <= 101 + len(b"before")
    parts = [p for p, first, last in sock.written if not (first and last)]
    assert len(parts) > 10 and all(len(p) <= 101 for p in parts)


def test_the_bound_leaves_out_only_the_first_large_message() -> None:
    _, _, writer, events = make(max_bytes=1000, chunk=100)
    writer.push_large(b"L" * 50_000)  # streamed: not counted
    writer.push(b"s" * 900)
    writer.push_large(b"S" * 50_000, shared=True)  # another connection's too: counts as one chunk
    assert events == []
    writer.push(b"s" * 50)  # 900 + 100 + 50 > 1000
    assert events == ["slow"] and writer.closed


def test_a_second_large_message_of_its_own_counts_in_full() -> None:
    _, _, writer, events = make(max_bytes=1000, chunk=100)
    writer.push_large(b"L" * 50_000)
    writer.push_large(b"M" * 1001)
    assert events == ["slow"]


def test_once_the_first_large_message_left_the_next_one_is_streamed_uncounted() -> None:
    loop, sock, writer, events = make(max_bytes=1000, chunk=100)
    first, second = b"F" * 3000, b"G" * 900
    writer.push_large(first)
    writer.push_large(second)  # counted (900 <= 1000) while the first goes out
    drain(loop, sock)
    assert writer.queued == 0 and events == []
    writer.push(b"x" * 1000)  # the whole bound is free again
    assert events == []


def test_without_fragments_a_large_message_goes_whole_and_the_next_waits_for_the_drain() -> None:
    loop, sock, writer, events = make(max_bytes=1000, chunk=100, fragments=False)
    writer.push_large(b"W" * 5000)
    writer.push(b"next")
    loop.run_once()
    assert sock.messages() == [b"W" * 5000]
    sock.read(5000)
    loop.run_once()
    assert sock.messages() == [b"W" * 5000, b"next"] and events == []


def test_close_hands_over_what_the_socket_takes_and_drops_the_rest() -> None:
    loop, sock, writer, _ = make(max_bytes=1000, chunk=100)
    writer.push(b"last words")
    writer.push_large(b"Z" * 5000)
    writer.close()
    writer.push(b"too late")
    drain(loop, sock)
    assert sock.messages()[0] == b"last words"
    assert b"too late" not in sock.messages()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(1, 150), st.booleans()),
            st.tuples(st.just("read"), st.integers(1, 500), st.booleans()),
        ),
        max_size=60,
    )
)
def test_messages_arrive_whole_and_in_order_and_the_socket_holds_about_a_chunk(
    ops: list[tuple[str, int, bool]],
) -> None:
    loop, sock, writer, events = make(max_bytes=2000, chunk=100)
    sent: list[bytes] = []
    for i, (op, n, flag) in enumerate(ops):
        if op == "read":
            sock.read(n)
        else:
            message = bytes([i % 256]) * (n * 10 if flag else n)
            if len(message) > writer.chunk:
                writer.push_large(message, shared=flag and n % 2 == 0)
            else:
                writer.push(message)
            if not events:
                sent.append(message)
        loop.run_once()
        assert writer.closed or writer.queued <= writer.max_bytes
    if not events:
        drain(loop, sock)
        assert sock.messages() == sent
    # Never more than a chunk past the high-water mark, plus the small messages of one batch.
    assert sock.most_unsent <= 101 + 150
