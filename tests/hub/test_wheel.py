"""The session clock's timer wheel (``hub.wheel``), without a loop: every entry is taken once, at its
second or the first pass after it, never before; moving an entry earlier wins, later is ignored."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hub.wheel import NEVER, TimerWheel


class Entry:
    __slots__ = ("clock_due", "name")

    def __init__(self, name: int) -> None:
        self.name = name
        self.clock_due = NEVER


def test_an_entry_is_taken_at_its_second_and_only_once() -> None:
    wheel: TimerWheel[Entry] = TimerWheel(100.0)
    a, b = Entry(1), Entry(2)
    wheel.schedule(a, 102.5)
    wheel.schedule(b, 125.0)
    assert wheel.take(102.9) == []  # due at 103: not yet
    assert wheel.take(103.0) == [a]
    assert wheel.take(110.0) == []
    assert wheel.take(130.0) == [b]
    assert wheel.take(200.0) == []
    assert len(wheel) == 0


def test_earlier_moves_later_is_ignored_and_a_stale_entry_is_skipped() -> None:
    wheel: TimerWheel[Entry] = TimerWheel(0.0)
    a = Entry(1)
    wheel.schedule(a, 25.0)
    wheel.schedule(a, 40.0)  # later: the look at 25 will find it
    wheel.schedule(a, 8.0)  # earlier: moved
    assert wheel.take(24.0) == [a]
    wheel.schedule(a, 25.0)  # back into the bucket that still holds its stale entry
    assert wheel.take(30.0) == [a]  # once, not twice


def test_nothing_is_put_at_or_before_the_last_pass() -> None:
    wheel: TimerWheel[Entry] = TimerWheel(0.0)
    wheel.take(10.0)
    a = Entry(1)
    wheel.schedule(a, 3.0)  # overdue: the next pass takes it
    assert wheel.take(10.5) == []
    assert wheel.take(11.0) == [a]


def test_a_discarded_entry_is_not_taken() -> None:
    wheel: TimerWheel[Entry] = TimerWheel(0.0)
    a = Entry(1)
    wheel.schedule(a, 5.0)
    wheel.discard(a)
    assert wheel.take(100.0) == []


@given(
    st.lists(st.tuples(st.integers(0, 19), st.floats(0, 200, allow_nan=False)), max_size=60),
    st.lists(st.floats(0, 250, allow_nan=False), max_size=20),
)
def test_each_entry_is_taken_once_at_its_earliest_due_second_never_before(
    schedules: list[tuple[int, float]], passes: list[float]
) -> None:
    wheel: TimerWheel[Entry] = TimerWheel(0.0)
    entries = [Entry(i) for i in range(20)]
    earliest: dict[int, int] = {}
    for i, when in schedules:
        wheel.schedule(entries[i], when)
        earliest[i] = min(earliest.get(i, NEVER), max(math.ceil(when), 1))
    taken: dict[int, float] = {}
    for now in sorted(passes) + [300.0]:
        for e in wheel.take(now):
            assert e.name not in taken  # once
            assert math.floor(now) >= earliest[e.name]  # never before its second
            taken[e.name] = now
    assert set(taken) == set(earliest)  # every scheduled entry, by the last pass
