"""The per-document debounce of ``document.changed`` (sans-I/O): due ``wait`` after the last change, never
later than ``max_wait`` after the first one not yet reported, each key once per report."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.outbound.debounce import Debouncer


def test_a_burst_is_reported_once_after_the_wait() -> None:
    d: Debouncer[str] = Debouncer(2.0, 10.0)
    for t in (0.0, 0.5, 1.0):
        d.touch("a", t)
    assert d.due(2.9) == [] and d.next_due() == 3.0
    assert d.due(3.0) == ["a"] and d.due(100.0) == [] and d.next_due() is None


def test_changes_without_a_pause_are_reported_every_max_wait() -> None:
    d: Debouncer[str] = Debouncer(2.0, 10.0)
    reported = []
    for step in range(100):  # a change every 0.5 s for 50 s
        t = step * 0.5
        reported += [t for _ in d.due(t)]
        d.touch("a", t)
    assert reported == [10.0, 20.0, 30.0, 40.0]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.9)), max_size=60))
def test_every_changed_key_is_reported_within_max_wait_and_none_is_lost(
    changes: list[tuple[str, float]],
) -> None:
    d: Debouncer[str] = Debouncer(1.0, 3.0)
    now, pending_since = 0.0, {}
    for key, gap in changes:
        now += gap
        for k in d.due(now):
            assert now - pending_since.pop(k) <= 3.0 + 0.9  # reported within max_wait (plus the step)
        d.touch(key, now)
        pending_since.setdefault(key, now)
    assert sorted(d.drain()) == sorted(pending_since)


def test_wait_must_not_exceed_max_wait() -> None:
    with pytest.raises(ValueError):
        Debouncer(5.0, 1.0)
