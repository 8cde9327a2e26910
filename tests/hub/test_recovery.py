"""Recovery decisions (sans-I/O: no event loop)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.publication import Publication, StreamPosition
from hub.recovery import after_position, recover


def pubs(*offsets: int) -> list[Publication]:
    return [Publication(data=b"%d" % o, offset=o) for o in offsets]


TOP = StreamPosition(5, "e1")


def test_exact_recovery() -> None:
    rec = recover(StreamPosition(2, "e1"), pubs(3, 4, 5), TOP)
    assert rec.recovered and [p.offset for p in rec.publications] == [3, 4, 5]
    assert rec.position == TOP


def test_history_before_the_position_is_ignored() -> None:
    rec = recover(StreamPosition(2, "e1"), pubs(1, 2, 3, 4, 5), TOP)
    assert rec.recovered and [p.offset for p in rec.publications] == [3, 4, 5]


def test_at_top_is_recovered_without_publications() -> None:
    rec = recover(StreamPosition(5, "e1"), [], TOP)
    assert rec.recovered and rec.publications == []


def test_trimmed_history_is_not_recovered() -> None:
    rec = recover(StreamPosition(1, "e1"), pubs(3, 4, 5), TOP)
    assert not rec.recovered and rec.publications == []


def test_hole_in_the_middle_is_not_recovered() -> None:
    assert not recover(StreamPosition(2, "e1"), pubs(3, 5), TOP).recovered


def test_history_short_of_the_top_is_not_recovered() -> None:
    assert not recover(StreamPosition(2, "e1"), pubs(3, 4), TOP).recovered


def test_other_epoch_is_not_recovered() -> None:
    rec = recover(StreamPosition(5, "e0"), pubs(3, 4, 5), TOP)
    assert not rec.recovered and rec.publications == [] and rec.position == TOP


def test_unservable_position_is_not_recovered() -> None:
    assert not recover(StreamPosition(2, "e1"), None, TOP).recovered


def test_position_past_the_top_is_not_recovered() -> None:
    assert not recover(StreamPosition(9, "e1"), [], TOP).recovered


def test_empty_stream() -> None:
    top = StreamPosition(0, "e1")
    assert recover(StreamPosition(0, "e1"), [], top).recovered
    assert not recover(StreamPosition(0, ""), [], top).recovered


def test_after_position() -> None:
    buffered = pubs(0, 3, 4, 0, 6)
    assert [p.offset for p in after_position(buffered, 4)] == [0, 0, 6]
    assert [p.offset for p in after_position(buffered, 0)] == [0, 3, 4, 0, 6]
    assert after_position([], 3) == []


# ---------------------------------------------------------------- the property


@st.composite
def streams(draw: st.DrawFn) -> tuple[StreamPosition, list[Publication] | None, StreamPosition]:
    """A stream (epoch, top, retained history: a suffix, maybe with holes or out of order) and a request."""
    top = draw(st.integers(0, 30))
    first = draw(st.integers(1, top + 1))
    offsets: list[int] = list(range(first, top + 1))
    damaged: bool = bool(offsets) and draw(st.booleans())
    if damaged:  # drop, duplicate or shuffle some
        offsets = draw(st.lists(st.sampled_from(offsets), max_size=len(offsets) + 2))
    epoch = draw(st.sampled_from(["e1", "e2"]))
    requested = StreamPosition(draw(st.integers(0, top + 3)), draw(st.sampled_from(["e1", "e2", ""])))
    history: list[Publication] | None = pubs(*offsets)
    if draw(st.integers(0, 9)) == 0:
        history = None
    return requested, history, StreamPosition(top, epoch)


@settings(max_examples=500, deadline=None)
@given(streams())
def test_recovery_is_all_or_nothing(
    case: tuple[StreamPosition, list[Publication] | None, StreamPosition],
) -> None:
    requested, history, top = case
    rec = recover(requested, history, top)
    assert rec.position == top
    wanted = list(range(requested.offset + 1, top.offset + 1))
    if rec.recovered:
        # exactly the publications after the position, contiguous and in order, ending at the top
        assert [p.offset for p in rec.publications] == wanted
        assert requested.epoch == top.epoch
        assert history is not None
        assert all(any(p is h for h in history) for p in rec.publications)
    else:
        assert rec.publications == []
    # and never a needless failure: a stream holding the whole range recovers
    holds_all = (
        history is not None
        and requested.epoch == top.epoch
        and requested.offset <= top.offset
        and [p.offset for p in history if p.offset > requested.offset] == wanted
    )
    if holds_all:
        assert rec.recovered
