"""Fuzzing ``hub.codec_json``: a frame of JSON commands decodes to command objects or raises DecodeError,
whatever the bytes; a command's data is written back or refused with DecodeError (orjson writes at most
254 levels, reads 1024)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import codec_json
from hub.codec_json import DecodeError
from tests.fuzz.strategies import (
    bad_utf8,
    bounded_time,
    deep_values,
    examples,
    json_object_text,
    json_texts,
    mutated,
)

METHODS = ["connect", "subscribe", "unsubscribe", "publish", "presence", "history", "rpc", "send", "refresh"]

commands = (
    st.fixed_dictionaries({}, optional={"id": json_texts, **{m: json_texts for m in METHODS}})
    .map(json_object_text)
    .map(str.encode)
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One to four commands joined by line breaks, some of them JSON only in appearance, then damaged."""
    lines = draw(st.lists(commands | json_texts.map(str.encode) | bad_utf8, min_size=1, max_size=4))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n", b" \n"]))
    return draw(mutated(sep.join(lines)))


def check(data: str | bytes) -> None:
    try:
        with bounded_time():
            decoded = codec_json.decode_commands(data)
    except DecodeError:
        return
    assert decoded and all(isinstance(c, dict) for c in decoded)
    for command in decoded:
        for value in command.values():
            try:
                assert isinstance(codec_json.data_bytes(value), bytes)
            except DecodeError:
                pass


@settings(max_examples=examples(400))
@given(frames())
def test_any_frame_decodes_to_commands_or_raises_decode_error(frame: bytes) -> None:
    check(frame)


@settings(max_examples=examples(200))
@given(frames())
def test_text_frames_too(frame: bytes) -> None:
    check(frame.decode(errors="surrogateescape"))  # a str with lone surrogates: what no UTF-8 text holds


@settings(max_examples=examples(100))
@given(st.binary(max_size=200))
def test_random_bytes(frame: bytes) -> None:
    check(frame)


@settings(max_examples=examples(100))
@given(deep_values)
def test_data_of_any_depth_is_written_or_refused(value: Any) -> None:
    try:
        assert orjson.loads(codec_json.data_bytes(value)) == value
    except DecodeError:
        pass
