"""Awareness bookkeeping, without an event loop: the y-protocols acceptance rule, ownership by
connection, removals on close and on timeout."""

from __future__ import annotations

import orjson
import pycrdt
from hypothesis import given
from hypothesis import strategies as st

from sync import protocol as p
from sync.awareness import OUTDATED_TIMEOUT, AwarenessStates
from sync.protocol import NULL_STATE, AwarenessEntry

A, B = object(), object()  # two connections


def entry(cid: int, clock: int, state: bytes = b'{"u":1}') -> AwarenessEntry:
    return AwarenessEntry(cid, clock, state)


def test_newer_clock_is_accepted_older_and_equal_are_stale() -> None:
    aw = AwarenessStates()
    assert aw.apply([entry(1, 1)], A, 0.0) == [entry(1, 1)]
    assert aw.apply([entry(1, 1, b'{"u":2}')], A, 0.0) == []
    assert aw.apply([entry(1, 0)], A, 0.0) == []
    assert aw.apply([entry(1, 2, b'{"u":3}')], A, 0.0) == [entry(1, 2, b'{"u":3}')]
    assert aw.state(1) == b'{"u":3}'


def test_leaving_with_the_current_clock_removes() -> None:
    """The provider's disconnect sends its current clock with null."""
    aw = AwarenessStates()
    aw.apply([entry(1, 4)], A, 0.0)
    assert aw.apply([entry(1, 4, NULL_STATE)], A, 0.0) == [entry(1, 4, NULL_STATE)]
    assert len(aw) == 0
    assert aw.apply([entry(1, 4, NULL_STATE)], A, 0.0) == []  # already gone: stale
    assert aw.apply([entry(1, 4)], A, 0.0) == []  # a late copy of the old state stays stale


def test_closing_a_connection_removes_what_it_announced_with_clock_plus_one() -> None:
    aw = AwarenessStates()
    aw.apply([entry(1, 3), entry(2, 1)], A, 0.0)
    aw.apply([entry(9, 1)], B, 0.0)
    removed = aw.remove_owner(A, 1.0)
    assert removed == [entry(1, 4, NULL_STATE), entry(2, 2, NULL_STATE)]
    assert [e.client_id for e in aw.snapshot()] == [9]
    assert aw.remove_owner(A, 1.0) == []


def test_an_id_announced_again_over_a_new_connection_survives_the_old_close() -> None:
    aw = AwarenessStates()
    aw.apply([entry(1, 1)], A, 0.0)
    aw.apply([entry(1, 2)], B, 0.0)  # reconnected before the old socket's close was seen
    assert aw.remove_owner(A, 1.0) == []
    assert aw.state(1) is not None
    assert aw.owned_by(B) == {1}


def test_expiry_removes_only_states_not_renewed() -> None:
    aw = AwarenessStates()
    aw.apply([entry(1, 1)], A, 0.0)
    aw.apply([entry(2, 1)], A, 20.0)
    assert aw.expire(OUTDATED_TIMEOUT + 1.0) == [entry(1, 2, NULL_STATE)]
    assert aw.owned_by(A) == {2}


def test_matches_pycrdt_awareness_on_the_same_updates() -> None:
    """Our bookkeeping and pycrdt's port of awareness.js hold the same states after the same updates."""
    ours = AwarenessStates()
    theirs = pycrdt.Awareness(pycrdt.Doc())
    steps = [
        [entry(5, 1), entry(6, 1)],
        [entry(5, 1, b'{"x":1}')],
        [entry(5, 2, b'{"x":2}'), entry(6, 1, NULL_STATE)],
        [entry(6, 1)],
        [entry(7, 3, NULL_STATE)],
    ]
    for update in steps:
        ours.apply(update, A, 0.0)
        theirs.apply_awareness_update(p.encode_awareness(update), "test")
    mine = {e.client_id: orjson.loads(e.state) for e in ours.snapshot()}
    assert mine == {k: v for k, v in theirs.states.items() if k != theirs.client_id}


@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, B]),
            st.integers(1, 4),
            st.integers(0, 5),
            st.sampled_from([b'{"a":1}', b'{"a":2}', NULL_STATE]),
        ),
        max_size=30,
    )
)
def test_a_follower_of_the_relays_holds_our_states(
    ops: list[tuple[object, int, int, bytes]],
) -> None:
    """A client that applies only what we relay ends with exactly our states (awareness.js rule)."""
    server = AwarenessStates()
    follower = AwarenessStates()

    def same() -> bool:
        return sorted(server.snapshot(), key=str) == sorted(follower.snapshot(), key=str)

    for owner, cid, clock, state in ops:
        relayed = server.apply([AwarenessEntry(cid, clock, state)], owner, 0.0)
        follower.apply(relayed, A, 0.0)
        assert same()
    follower.apply(server.remove_owner(A, 1.0), A, 1.0)
    assert same()
    follower.apply(server.remove_owner(B, 1.0), A, 1.0)
    assert same() and server.snapshot() == []


def test_one_connection_cannot_grow_the_bookkeeping_without_bound() -> None:
    """From review: a peer announcing 100,000 fresh ids and 200,000 removals of unknown ids."""
    from sync.awareness import OUTDATED_TIMEOUT, AwarenessLimits, AwarenessStates
    from sync.protocol import NULL_STATE, AwarenessEntry

    states = AwarenessStates()
    flood = [AwarenessEntry(i, 1, b'{"x":1}') for i in range(100_000)]
    flood += [AwarenessEntry(i, 1, NULL_STATE) for i in range(100_000, 300_000)]
    accepted = states.apply(flood, owner="peer", now=0.0)
    cap = AwarenessLimits().max_ids_per_owner
    assert len(accepted) == cap and len(states) == cap
    states.remove_owner("peer", now=1.0)
    states.expire(now=1.0 + OUTDATED_TIMEOUT)
    assert states.clock(5) == 0 and len(states) == 0  # removed long ago: forgotten


def test_announcing_and_removing_ids_in_turn_keeps_a_bounded_number_of_clocks() -> None:
    """A connection that sets and removes fresh ids, again and again (one message can hold 100,000 pairs):
    the clocks of removed ids are remembered for at most MAX_REMOVED_CLOCKS of them, the newest."""
    from sync.awareness import MAX_REMOVED_CLOCKS, AwarenessStates
    from sync.protocol import NULL_STATE, AwarenessEntry

    states = AwarenessStates()
    for round_ in range(3):
        flood = []
        for i in range(round_ * 50_000, (round_ + 1) * 50_000):
            flood += [AwarenessEntry(i, 1, b"1"), AwarenessEntry(i, 2, NULL_STATE)]
        states.apply(flood, owner="peer", now=0.0)
        assert len(states) == 0 and states.size == 0
        assert len(states._clocks) <= MAX_REMOVED_CLOCKS
    assert states.clock(149_999) == 2  # the newest removals are the ones remembered
    assert states.apply([AwarenessEntry(149_999, 1, b"1")], "peer", 0.0) == []  # a late copy: stale


def test_the_size_of_the_states_is_kept_through_updates_removals_and_expiry() -> None:
    from sync.awareness import AwarenessStates
    from sync.protocol import NULL_STATE, AwarenessEntry

    states = AwarenessStates()
    states.apply([AwarenessEntry(1, 1, b"1234"), AwarenessEntry(2, 1, b"12")], "a", 0.0)
    assert states.size == 6
    states.apply([AwarenessEntry(1, 2, b"1")], "a", 0.0)
    assert states.size == 3
    states.apply([AwarenessEntry(2, 2, NULL_STATE)], "a", 0.0)
    assert states.size == 1
    states.remove_owner("a", 1.0)
    assert states.size == 0
    states.apply([AwarenessEntry(3, 1, b"123")], "b", 0.0)
    states.expire(100.0)
    assert states.size == 0 and len(states) == 0
