"""The y-websocket framing without an event loop: round trips, lib0 compatibility, and every malformed
input raising ProtocolError (never anything else)."""

from __future__ import annotations

import orjson
import pycrdt
import pycrdt._sync
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import protocol as p
from sync.protocol import AwarenessEntry, ProtocolError

uints = st.integers(min_value=0, max_value=p.MAX_SAFE_INTEGER)
blobs = st.binary(max_size=300)
json_states = st.one_of(
    st.just(b"null"),
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(-1000, 1000), st.text(max_size=12)), max_size=4
    ).map(orjson.dumps),
)
entries = st.builds(AwarenessEntry, uints, uints, json_states)
messages = st.one_of(
    st.builds(p.SyncStep1, blobs),
    st.builds(p.SyncStep2, blobs),
    st.builds(p.SyncUpdate, blobs),
    st.builds(p.AwarenessMessage, blobs),
    st.builds(p.PermissionDenied, st.text(max_size=50)),
    st.just(p.QueryAwareness()),
)


@given(uints)
def test_var_uint_round_trip_and_matches_pycrdt(n: int) -> None:
    raw = p.var_uint(n)
    assert raw == pycrdt.write_var_uint(n)
    reader = p.Reader(raw)
    assert reader.var_uint() == n
    assert reader.at_end()


@given(messages)
def test_message_round_trip(message: p.Message) -> None:
    assert p.decode(p.encode(message)) == message


@given(blobs)
def test_sync_messages_match_pycrdt(update: bytes) -> None:
    assert p.update(update) == pycrdt.create_update_message(update)
    assert p.sync_step1(update) == pycrdt._sync.create_sync_step1_message(update)
    assert p.sync_step2(update) == pycrdt._sync.create_sync_step2_message(update)
    assert p.awareness(update) == pycrdt.create_awareness_message(update)


@given(st.lists(entries, max_size=6))
def test_awareness_round_trip(items: list[AwarenessEntry]) -> None:
    assert p.decode_awareness(p.encode_awareness(items)) == items


@given(messages, st.data())
def test_every_truncation_is_a_protocol_error(message: p.Message, data: st.DataObject) -> None:
    raw = p.encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if isinstance(message, p.QueryAwareness):
        cut = 0
    with pytest.raises(ProtocolError):
        p.decode(raw[:cut])


@given(messages, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(message: p.Message, extra: bytes) -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        p.decode(p.encode(message) + extra)


@given(st.binary(max_size=64))
def test_garbage_raises_only_protocol_error(raw: bytes) -> None:
    try:
        p.decode(raw)
    except ProtocolError:
        pass


@given(st.binary(max_size=64))
def test_garbage_awareness_raises_only_protocol_error(raw: bytes) -> None:
    try:
        p.decode_awareness(raw)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated varint"),
        (b"\x80", "truncated varint"),
        (b"\x00\x02\xff", "truncated varint"),
        (b"\x00\x02\x05ab", "length past the end"),
        (b"\x07", "unknown message type 7"),
        (b"\x00\x09\x00", "unknown sync message type 9"),
        (b"\x02\x01\x00", "unknown auth message type 1"),
        (b"\x02\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x01", "out of range"),
        (b"\xff\xff\xff\xff\xff\xff\xff\x7f", "out of range"),
        (b"\x03\x00", "trailing"),
    ],
)
def test_named_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        p.decode(raw)


def test_largest_safe_integer_is_accepted() -> None:
    assert p.Reader(p.var_uint(p.MAX_SAFE_INTEGER)).var_uint() == p.MAX_SAFE_INTEGER


def test_awareness_state_must_be_json() -> None:
    bad = p.var_uint(1) + p.var_uint(7) + p.var_uint(1) + p.var_bytes(b"{nope")
    with pytest.raises(ProtocolError, match="not JSON"):
        p.decode_awareness(bad)


def test_awareness_null_with_whitespace_is_a_removal() -> None:
    raw = p.var_uint(1) + p.var_uint(7) + p.var_uint(1) + p.var_bytes(b" null ")
    (entry,) = p.decode_awareness(raw)
    assert entry.removed


def test_awareness_update_matches_pycrdt_awareness() -> None:
    """pycrdt's Awareness (a port of y-protocols awareness.js) reads what we encode."""
    doc = pycrdt.Doc()
    awareness = pycrdt.Awareness(doc)
    raw = p.encode_awareness([AwarenessEntry(42, 3, b'{"user":"ann"}'), AwarenessEntry(43, 1, b"null")])
    awareness.apply_awareness_update(raw, "test")
    assert awareness.states[42] == {"user": "ann"}
    assert 43 not in awareness.states
