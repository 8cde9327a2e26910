"""Conflation slots (``hub.writer.KeyedSlots``) and their clock (``SlotClock``), without an event loop: a
fake loop runs the clock's timer and the writer's per-tick flush, in simulated time.

The properties that matter, stated for any sequence of publications, rates and reader speeds: a subscriber
sees, per key, a subsequence of the published values in order (never a stale value after a newer one),
ending with the last one once publishing stops and the reader catches up; a key never goes out twice
within its period; what is held never exceeds the keys; a backed-up connection is never queued past the
threshold."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.writer import FlushScheduler, KeyedSlots, SlotClock, Writer

FRAME = 100
"""Bytes of every emitted frame in these tests."""


class Timer:
    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimLoop:
    """``call_soon``, ``call_at`` and ``time`` in simulated time."""

    def __init__(self) -> None:
        self.t = 0.0
        self.soon: list[Callable[[], Any]] = []
        self.timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.t

    def call_soon(self, callback: Callable[[], Any]) -> None:
        self.soon.append(callback)

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self.timers, (when, next(self._seq), timer))
        return timer

    def run_soon(self) -> None:
        while self.soon:
            callbacks, self.soon = self.soon, []
            for cb in callbacks:
                cb()

    def advance(self, dt: float) -> None:
        target = self.t + dt
        for _ in itertools.count():
            if not self.timers or self.timers[0][0] > target:
                break
            assert _ < 100_000, "the timer keeps firing at the same time (a busy loop)"
            when, _, timer = heapq.heappop(self.timers)
            if timer.cancelled:
                continue
            self.t = max(self.t, when)
            timer.callback()
            self.run_soon()
        self.t = target


class Sink:
    """A transport whose backlog (unsent bytes) the test sets: a reader that keeps up (0) or not."""

    name = "sink"

    def __init__(self) -> None:
        self.unsent = 0
        self.written: list[bytes] = []
        self.writes: list[list[bytes]] = []
        """The messages of each write (one frame each)."""

    def write_messages(self, messages: list[bytes]) -> int:
        self.written += messages
        self.writes.append(messages)
        return self.unsent

    def close(self, code: int, reason: str) -> None:
        pass

    def unsent_bytes(self) -> int:
        return self.unsent


class Feed:
    """One conflated subscription on one connection."""

    def __init__(self, rate: float = 10.0, max_keys: int = 100, threshold: int = 1000) -> None:
        self.loop = SimLoop()
        self.clock = SlotClock(threshold, loop=self.loop)  # type: ignore[arg-type]
        self.sink = Sink()
        self.writer = Writer(self.sink, FlushScheduler(self.loop), 10_000_000, self._slow)  # type: ignore[arg-type]
        self.period = 1.0 / rate
        self.slots: KeyedSlots = self.writer.open_slots("ch", self._emit, self.period, max_keys, self.clock)
        self.sent: list[tuple[float, str, int]] = []
        """(time, key, value) of every publication emitted."""
        self.slow = False

    def _slow(self) -> None:
        self.slow = True

    def _emit(self, item: Any) -> int:
        key, value = item
        self.sent.append((self.loop.t, key, value))
        self.writer.push(b"%s=%d" % (key.encode(), value) + b" " * FRAME)
        return FRAME + len(key) + 12

    def publish(self, key: str, value: int) -> bool:
        ok = self.slots.offer(key, (key, value), self.loop.time())
        self.loop.run_soon()
        return ok

    def received(self) -> list[tuple[str, int]]:
        """What reached the transport, in order."""
        out = []
        for frame in self.sink.written:
            key, _, value = frame.strip().partition(b"=")
            out.append((key.decode(), int(value)))
        return out


events = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(0, 7)),
        st.tuples(st.just("wait"), st.floats(0.0, 0.35)),
        st.tuples(st.just("backlog"), st.sampled_from([0, 500, 5000])),
    ),
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(events=events, rate=st.sampled_from([2.0, 10.0, 50.0]), threshold=st.sampled_from([300, 1000, 4000]))
def test_a_conflated_subscriber_sees_a_subsequence_of_each_key_ending_with_the_last(
    events: list[tuple[str, Any]], rate: float, threshold: int
) -> None:
    feed = Feed(rate=rate, threshold=threshold)
    published: dict[str, list[int]] = {}
    value = 0
    for kind, arg in events:
        if kind == "pub":
            value += 1
            key = f"k{arg}"
            published.setdefault(key, []).append(value)
            assert feed.publish(key, value)
        elif kind == "wait":
            feed.loop.advance(arg)
        else:
            feed.sink.unsent = arg
        assert len(feed.slots.held) + len(feed.slots.carry) <= 8  # one entry per key
        # Never queued behind a backlog past the threshold (plus the one frame that crossed it).
        assert feed.writer.pending_bytes <= threshold + 2 * FRAME
    # Publishing stops, the reader catches up: every key ends with its last value.
    feed.sink.unsent = 0
    for _ in range(200):
        feed.loop.advance(feed.period)
        if not (feed.slots.held or feed.slots.carry):
            break
    assert not (feed.slots.held or feed.slots.carry)
    assert not feed.slow  # never a slow consumer for conflated deliveries

    received: dict[str, list[int]] = {}
    for key, v in feed.received():
        received.setdefault(key, []).append(v)
    assert set(received) == set(published)
    for key, values in published.items():
        got = received[key]
        assert got == sorted(set(got)), f"{key}: out of order or repeated: {got}"  # never stale after newer
        assert set(got) <= set(values), f"{key}: a value never published: {got}"
        assert got[-1] == values[-1], f"{key}: ends with {got[-1]}, the last published was {values[-1]}"
    # At most one publication per key per period.
    last_sent: dict[str, float] = {}
    for t, key, _ in feed.sent:
        if key in last_sent:
            assert t - last_sent[key] >= feed.period - 1e-6, (key, t, last_sent[key])
        last_sent[key] = t


def test_a_quiet_subscription_gets_a_reading_at_once_a_busy_one_gets_batches() -> None:
    feed = Feed(rate=10.0)
    assert feed.publish("s0", 0)  # quiet: at once
    assert feed.received() == [("s0", 0)]
    for i in range(1, 5):
        assert feed.publish(f"s{i}", i)  # within the period: held for the next batch
    assert feed.publish("s1", 11)  # the newest replaces what s1 held
    assert feed.received() == [("s0", 0)]
    feed.loop.advance(0.1)  # the period has passed: the batch, in one write (one frame)
    assert feed.received() == [("s0", 0), ("s1", 11), ("s2", 2), ("s3", 3), ("s4", 4)]
    assert [len(write) for write in feed.sink.writes] == [1, 4]
    feed.loop.advance(1.0)
    assert feed.publish("s0", 20)  # quiet again: at once
    assert feed.received()[-1] == ("s0", 20)


def test_a_backed_up_connection_skips_flushes_and_gets_only_the_newest() -> None:
    feed = Feed(rate=10.0, threshold=1000)
    feed.sink.unsent = 5000  # the reader is behind
    feed.writer.unsent = 5000
    for value in range(1000):
        assert feed.publish("s", value)
        feed.loop.advance(0.001)
    assert feed.received() == []  # nothing queued behind the backlog
    assert feed.slots.held == {"s": ("s", 999)}
    feed.sink.unsent = 0  # it caught up
    feed.loop.advance(0.2)
    assert feed.received() == [("s", 999)]


def test_memory_is_bounded_by_the_keys_not_the_rate() -> None:
    feed = Feed(rate=1.0, max_keys=50)
    feed.sink.unsent = feed.writer.unsent = 10**6
    for value in range(20_000):
        assert feed.publish(f"k{value % 50}", value)
    assert len(feed.slots.held) == 50
    assert feed.writer.pending_bytes == 0


def test_a_key_past_max_keys_is_refused_until_a_flush_makes_room() -> None:
    feed = Feed(rate=10.0, max_keys=3)
    assert feed.publish("k0", 0)  # at once: nothing waits
    assert all(feed.publish(f"k{i}", i) for i in range(1, 4))  # three wait
    assert not feed.publish("k4", 4)
    assert feed.publish("k1", 10)  # a waiting key is fine
    feed.loop.advance(0.2)  # the batch went
    assert feed.publish("k4", 5)


def test_a_batch_larger_than_the_room_goes_in_parts() -> None:
    feed = Feed(rate=1.0, threshold=1000)
    feed.sink.unsent = feed.writer.unsent = 2000
    for i in range(100):
        feed.publish(f"k{i}", i)
    assert feed.received() == []
    feed.sink.unsent = 0
    feed.loop.advance(1.5)  # the batch: about threshold bytes per write, a grain apart
    assert sorted(v for _, v in feed.received()) == list(range(100))
    assert len(feed.sink.writes) > 5
    assert all(sum(map(len, write)) <= 1000 + 2 * FRAME for write in feed.sink.writes)


def test_closed_slots_send_nothing_and_hold_nothing() -> None:
    feed = Feed(rate=1.0)
    feed.publish("a", 1)
    feed.publish("a", 2)
    feed.writer.close_slots("ch")
    feed.loop.advance(2.0)
    assert feed.received() == [("a", 1)]
    assert feed.slots.held == {} and feed.slots.closed


def test_the_clock_flushes_many_subscriptions_due_together_in_one_callback() -> None:
    loop = SimLoop()
    clock = SlotClock(1000, grain=0.01, loop=loop)  # type: ignore[arg-type]
    fired: list[float] = []

    class Probe:
        due = float("inf")

        def flush(self, now: float) -> None:
            fired.append(now)

    probes = [Probe() for _ in range(50)]
    for i, probe in enumerate(probes):
        clock.schedule(probe, 0.101 + i * 0.0001)  # type: ignore[arg-type]
    assert len(loop.timers) == 1  # one timer for the one grain they fall in
    loop.advance(0.2)
    assert len(fired) == 50 and set(fired) == {fired[0]}
    assert abs(fired[0] - 0.11) < 1e-9
    clock.schedule(probes[0], 0.5)  # type: ignore[arg-type]
    clock.schedule(probes[0], 0.3)  # sooner wins; the later entry goes stale
    loop.advance(1.0)
    assert len(fired) == 51 and abs(fired[50] - 0.3) < 1e-9
