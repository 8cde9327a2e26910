"""Fuzzing ``hub.codec_protobuf``'s readers: any frame decodes to command dicts or raises DecodeError.

Messages are built from the codec's own schema tables (``_SPEC``), so they reach deep into it: known
fields with the wrong wire type, varints of every length up to 10 bytes and past it, lengths past the end
of their message, strings that are not UTF-8, FilterNode trees past the nesting limit, maps whose entries
hold anything, unknown fields of every wire type (groups and the reserved 6 and 7 included); then
``mutated`` damages them further. ``tests/hub/test_codec_protobuf.py`` checks the readings against
Google's protobuf runtime; here only the contract is checked, on input that runtime would never write.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hub import codec_protobuf as codec
from hub.codec_protobuf import _SPEC, DecodeError  # the schema tables drive the generator
from sync.protocol import var_uint
from tests.fuzz.strategies import bad_utf8, bounded_time, examples, json_texts, mutated

_VARINT_KINDS = 5  # kinds 0-5 are varints (see the codec's field kinds)

varint_values = st.one_of(
    st.integers(0, 300), st.integers(0, 2**64 - 1), st.sampled_from([2**32 - 1, 2**63, 2**64 - 1, 2**70 - 1])
)


def key(number: int, wire_type: int) -> bytes:
    return var_uint(number << 3 | wire_type)


def delimited(number: int, body: bytes) -> bytes:
    return key(number, 2) + var_uint(len(body)) + body


def overlong(value: int, extra: int) -> bytes:
    """``value`` as a varint padded with ``extra`` continuation bytes (11 or more bytes is malformed)."""
    raw = bytearray(var_uint(value))
    if extra:
        raw[-1] |= 0x80
        raw += b"\x80" * (extra - 1) + b"\x00"
    return bytes(raw)


strings = st.one_of(
    st.text(max_size=12).map(str.encode),
    json_texts.map(str.encode),
    st.tuples(st.text(max_size=4), bad_utf8).map(lambda t: t[0].encode() + t[1]),
)


@st.composite
def message(draw: st.DrawFn, name: str, depth: int = 0) -> bytes:
    """One message of type ``name`` from the schema, fields in any order, some of them wrong."""
    spec = _SPEC[name]
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 5 if depth < 3 else 1))):
        choice = draw(st.integers(0, 9))
        if choice == 0 or not spec:  # an unknown field, of any wire type
            number = draw(st.integers(1, 2**29 - 1))
            wire_type = draw(st.integers(0, 7))
            body = draw(st.binary(max_size=9))
            parts.append(key(number, wire_type) + body)
            continue
        field, number, kind, sub = draw(st.sampled_from(spec))
        if choice == 1:  # a known field with any wire type, then whatever bytes
            parts.append(key(number, draw(st.integers(0, 7))) + draw(st.binary(max_size=6)))
        elif kind <= _VARINT_KINDS:
            parts.append(key(number, 0) + overlong(draw(varint_values), draw(st.sampled_from([0, 0, 1, 11]))))
        elif sub and draw(st.booleans()):
            if kind == 12:  # map<string, message>: entry {1: key, 2: message}
                entry = delimited(1, draw(strings)) + delimited(2, draw(message(sub, depth + 1)))
                parts.append(delimited(number, entry))
            else:
                parts.append(delimited(number, draw(message(sub, depth + 1))))
        elif kind == 11:  # map<string, string>
            parts.append(delimited(number, delimited(1, draw(strings)) + delimited(2, draw(strings))))
        else:
            body = draw(strings)
            if draw(st.integers(0, 4)) == 0:  # a length past the end of the message
                parts.append(key(number, 2) + var_uint(len(body) + draw(st.integers(1, 2**32))) + body)
            else:
                parts.append(delimited(number, body))
    return b"".join(parts)


def frame(commands: list[bytes]) -> bytes:
    return b"".join(var_uint(len(c)) + c for c in commands)


frames = st.lists(message("Command"), min_size=1, max_size=3).map(frame).flatmap(mutated)


def filter_tree(depth: int) -> bytes:
    """A FilterNode nested ``depth`` deep (``nodes`` = 6), inside a subscribe command."""
    node = b""
    for _ in range(depth):
        node = delimited(6, node)
    return delimited(5, delimited(13, node))


def check(data: bytes) -> list[dict[str, Any]] | None:
    try:
        with bounded_time():
            commands = codec.decode_commands(data)
    except DecodeError:
        return None
    assert commands and all(isinstance(c, dict) for c in commands)
    return commands


@settings(max_examples=examples(100))
@given(frames)
def test_any_frame_decodes_to_commands_or_raises_decode_error(data: bytes) -> None:
    check(data)


@settings(max_examples=examples(200))
@given(message("EmulationRequest").flatmap(mutated))
def test_any_emulation_request_decodes_or_raises_decode_error(body: bytes) -> None:
    try:
        node, session, data = codec.decode_emulation_request(body)
    except DecodeError:
        return
    assert isinstance(node, str) and isinstance(session, str) and isinstance(data, bytes)
    check(data) if data else None


@settings(max_examples=examples(50))
@given(st.integers(0, 20_000))
@example(98)
@example(99)
def test_nesting_of_any_depth_is_read_or_refused_never_recursed_out(depth: int) -> None:
    commands = check(frame([key(1, 0) + b"\x01" + filter_tree(depth)]))
    # Command (level 0) > SubscribeRequest (1) > tf (2) > ``depth`` nodes: protobuf's limit is 100 levels.
    assert (commands is not None) == (depth + 2 <= 100)


@settings(max_examples=examples(30))
@given(frames)
def test_memory_of_a_decode_is_bounded_by_its_input(data: bytes) -> None:
    """A length field or a count can never make the reader reserve more than the input justifies."""
    tracemalloc.start()
    try:
        check(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 400 * len(data), (peak, len(data))


def test_a_length_past_the_end_is_refused_without_reading_it() -> None:
    for size in (2**32 - 1, 2**63, 2**64 - 1):
        for data in (
            var_uint(size) + b"\x08\x01",  # the command's own length
            frame([key(7, 2) + var_uint(size) + b"x"]),  # a field's length
            frame([key(9999, 2) + var_uint(size) + b"x"]),  # an unknown field's length
        ):
            assert check(data) is None
