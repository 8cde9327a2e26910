"""Fuzzing ``hub.sse.decode_resume_id`` (an EventSource's ``Last-Event-ID``): any header value gives a resume
point (positions by channel key, each a 64-bit offset and an epoch) or raises BadResumeId, in bounded time;
positions the hub encodes decode back to themselves. (That every id the hub gives out is one it takes back is
tests/hub/test_sse_resume.py's property.)"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from hub import sse
from tests.fuzz.strategies import bounded_time, examples, huge_ints, json_texts, json_values, mutated

positions = st.dictionaries(st.text(max_size=10), st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=6)))
json_ids = st.one_of(
    json_texts,
    st.lists(st.tuples(json_values, huge_ints | json_values, json_values)).map(lambda v: str(v)),
).map(lambda text: base64.urlsafe_b64encode(text.encode()).rstrip(b"="))
ids = st.one_of(positions.map(sse.encode_resume_id), json_ids).flatmap(mutated)


def check(value: str) -> None:
    try:
        with bounded_time():
            point = sse.decode_resume_id(value)
    except sse.BadResumeId:
        return
    assert isinstance(point, sse.ResumePoint)
    for key, (offset, epoch) in point.positions.items():
        assert isinstance(key, bytes) and isinstance(epoch, str)
        assert 0 <= offset < 2**64


@settings(max_examples=examples(150))
@given(ids)
def test_any_last_event_id_gives_positions_or_bad_resume_id(value: bytes) -> None:
    check(value.decode("latin-1"))  # the ASGI server hands header values over as latin-1


@settings(max_examples=examples(100))
@given(st.text(max_size=60))
def test_any_text(value: str) -> None:
    check(value)


@settings(max_examples=examples(100))
@given(positions)
def test_positions_round_trip(value: dict[str, tuple[int, str]]) -> None:
    point = sse.decode_resume_id(sse.encode_resume_id(value).decode())
    assert point.complete
    assert {channel: point.position(channel) for channel in value} == value
