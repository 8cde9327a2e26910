"""Fuzzing the y-websocket framing (``sync.protocol``): any message decodes (and encodes back to a message
equal to it) or raises ProtocolError; so do awareness updates and state vectors, whatever their counts and
lengths say. Messages are built field by field as lib0 writes them, then damaged."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync import protocol
from sync.protocol import ProtocolError, var_bytes, var_string, var_uint
from sync.room import decode_state_vector
from tests.fuzz.strategies import bad_utf8, bounded_time, examples, json_texts, mutated

varints = st.one_of(st.integers(0, 300), st.integers(0, 2**53 - 1), st.integers(2**53, 2**70)).map(var_uint)
lengths_past_the_end = st.tuples(st.integers(1, 2**53 - 1), st.binary(max_size=8)).map(
    lambda t: var_uint(len(t[1]) + t[0]) + t[1]
)
payloads = st.one_of(st.binary(max_size=40).map(var_bytes), lengths_past_the_end, st.just(b""))
states = st.one_of(
    json_texts.map(lambda t: var_string(t)), st.just(var_string("null")), bad_utf8.map(var_bytes), payloads
)


@st.composite
def awareness_updates(draw: st.DrawFn) -> bytes:
    entries = draw(st.lists(st.tuples(varints, varints, states).map(b"".join), max_size=4))
    count = draw(st.one_of(st.just(len(entries)), st.integers(0, 2**53 - 1)))
    return var_uint(count) + b"".join(entries)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return (
            b"\x00" + draw(st.sampled_from([b"\x00", b"\x01", b"\x02", b"\x03"]) | varints) + draw(payloads)
        )
    if kind == 1:
        return (
            b"\x01" + var_bytes(draw(awareness_updates()))
            if draw(st.booleans())
            else b"\x01" + draw(payloads)
        )
    if kind == 2:
        return b"\x02" + draw(st.sampled_from([b"\x00", b"\x01"])) + draw(st.one_of(payloads, states))
    if kind == 3:
        return b"\x03" + draw(st.binary(max_size=2))
    return draw(varints) + draw(st.binary(max_size=10))


@settings(max_examples=examples(100))
@given(messages().flatmap(mutated))
def test_any_message_decodes_or_raises_protocol_error(data: bytes) -> None:
    try:
        with bounded_time():
            message = protocol.decode(data)
    except ProtocolError:
        return
    assert protocol.decode(protocol.encode(message)) == message
    try:
        if isinstance(message, protocol.AwarenessMessage):
            protocol.decode_awareness(message.update)
        elif isinstance(message, protocol.SyncStep1):
            decode_state_vector(message.state_vector)
    except ProtocolError:
        pass


@settings(max_examples=examples(150))
@given(awareness_updates().flatmap(mutated))
@example(var_uint(2**53 - 1))  # a count of 2**53 - 1 entries, and nothing after it
def test_any_awareness_update_decodes_or_raises_protocol_error(data: bytes) -> None:
    try:
        with bounded_time():
            entries = protocol.decode_awareness(data)
    except ProtocolError:
        return
    assert protocol.decode_awareness(protocol.encode_awareness(entries)) == entries


@settings(max_examples=examples(200))
@given(st.lists(varints, max_size=8).map(b"".join).flatmap(mutated))
@example(var_uint(2**53 - 1) + b"\x01\x01")
def test_any_state_vector_decodes_or_raises_protocol_error(data: bytes) -> None:
    try:
        with bounded_time():
            decode_state_vector(data)
    except ProtocolError:
        pass
