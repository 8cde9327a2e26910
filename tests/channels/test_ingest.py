"""JSON lines batches: good lines become readings, each bad one a numbered reason, the batch bounds hold,
readings written as lines parse back to themselves, and garbage never raises."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.ingest import IngestLimits, LineError, Reading, json_depth, parse_json_lines
from tests.channels.strategies import json_values


def test_readings_with_and_without_key_and_time() -> None:
    body = (
        b'{"channel": "sensors:boiler-7", "data": {"temperature": 71.5}, "key": "t1", '
        b'"time": 1700000000000}\n'
        b'{"channel": "sensors:boiler-7", "data": [1, 2, null]}\n'
    )
    parsed = parse_json_lines(body)
    assert parsed.items == [
        Reading(1, "sensors:boiler-7", {"temperature": 71.5}, "t1", 1700000000000),
        Reading(2, "sensors:boiler-7", [1, 2, None]),
    ]
    assert not parsed.errors and parsed.refused == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"nope", "not JSON"),
        (b'{"channel": "a", "data": 1', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"data": 1}', "'channel' must be a non-empty string"),
        (b'{"channel": "", "data": 1}', "'channel' must be a non-empty string"),
        (b'{"channel": 5, "data": 1}', "'channel' must be a non-empty string"),
        (b'{"channel": "a"}', "'data' is missing"),
        (b'{"channel": "a", "data": 1, "key": 5}', "'key' must be a string"),
        (b'{"channel": "a", "data": 1, "time": "now"}', "'time' must be an integer"),
        (b'{"channel": "a", "data": 1, "time": 1.5}', "'time' must be an integer"),
        (b'{"channel": "a", "data": 1, "time": true}', "'time' must be an integer"),
        (b'{"channel": "a", "data": 1, "time": 99999999999999999999}', "'time' must be an integer"),
        (b'{"channel": "a", "data": 1, "tme": 5}', "unknown member 'tme'"),
        (b'{"channel": "' + b"c" * 300 + b'", "data": 1}', "'channel' longer than 255"),
        (b'{"channel": "a", "data": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper than 32"),
        (b'{"channel": "a", "data": "\xff"}', "not JSON"),
        (b'{"channel": "a", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not JSON"),
    ],
)
def test_each_bad_line_is_refused_with_its_reason(line: bytes, reason: str) -> None:
    parsed = parse_json_lines(b'{"channel": "ok", "data": 1}\n' + line + b"\n")
    assert [r.channel for r in parsed.items] == ["ok"]
    assert len(parsed.errors) == 1 and parsed.errors[0].line == 2 and reason in parsed.errors[0].reason
    assert len(parsed.errors[0].reason) < 200


def test_blank_lines_are_skipped_but_counted_and_crlf_is_accepted() -> None:
    body = b'\n  \n{"channel": "a", "data": 1}\r\n\n{"channel": "b", "data": 2}'
    assert [(r.line, r.channel) for r in parse_json_lines(body).items] == [(3, "a"), (5, "b")]


def test_bounds() -> None:
    limits = IngestLimits(max_lines=3, max_line_bytes=40, max_errors=1, max_depth=2)
    line = b'{"channel": "a", "data": 1}\n'
    parsed = parse_json_lines(
        b'{"channel": "a", "data": "' + b"x" * 40 + b'"}\nbad\n' + line + line * 5, limits
    )
    assert [r.line for r in parsed.items] == [3]
    assert parsed.errors == [
        LineError(1, "line longer than 40 bytes"),  # the next bad line is counted, not listed (max_errors=1)
        LineError(4, "the batch holds more than 3 lines: this and the rest refused"),
    ]
    assert parsed.refused == 2 + 5
    deep = parse_json_lines(b'{"channel": "a", "data": [[[1]]]}\n{"channel": "a", "data": [[1]]}', limits)
    assert [r.line for r in deep.items] == [2] and "deeper than 2" in deep.errors[0].reason


@pytest.mark.parametrize("field", ["max_lines", "max_depth", "max_errors"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_limits_must_be_positive_integers(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        IngestLimits(**{field: value})


readings = st.builds(
    Reading,
    line=st.just(0),
    channel=st.text(min_size=1, max_size=30),
    data=json_values,
    key=st.none() | st.text(max_size=10),
    time_ms=st.none() | st.integers(-(2**62), 2**62),
)


@given(st.lists(readings, max_size=5))
def test_readings_written_as_lines_parse_back(items: list[Reading]) -> None:
    lines = []
    for r in items:
        obj: dict[str, Any] = {"channel": r.channel, "data": r.data}
        if r.key is not None:
            obj["key"] = r.key
        if r.time_ms is not None:
            obj["time"] = r.time_ms
        lines.append(orjson.dumps(obj))
    parsed = parse_json_lines(b"\n".join(lines))
    assert not parsed.errors
    assert [(r.channel, r.data, r.key, r.time_ms) for r in parsed.items] == [
        (r.channel, r.data, r.key, r.time_ms) for r in items
    ]
    assert [r.line for r in parsed.items] == list(range(1, len(items) + 1))


@given(st.binary(max_size=300))
def test_garbage_never_raises(body: bytes) -> None:
    parsed = parse_json_lines(body)
    assert parsed.refused == len(parsed.errors)


@given(json_values, st.integers(0, 6))
def test_json_depth(value: Any, limit: int) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(c) for c in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(c) for c in v), default=0)
        return 0

    assert json_depth(value, limit) == min(depth(value), limit + 1)


def _chunks(body: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """``body`` cut after the line ends nearest ``cuts``: (number of the chunk's first line, chunk)."""
    ends = sorted({body.find(b"\n", min(c, len(body))) + 1 for c in cuts} - {0})
    out, start, line = [], 0, 1
    for end in [*ends, len(body)]:
        if end > start:
            out.append((line, body[start:end]))
            line += body.count(b"\n", start, end)
            start = end
    return out


_lines = st.sampled_from(
    [
        b'{"channel": "a", "data": 1}',
        b"",
        b"not json",
        b'{"channel": "b", "data": {"x": [1]}, "key": "k"}',
        b"[1]",
    ]
)


@given(st.lists(_lines, max_size=30), st.lists(st.integers(0, 2000), max_size=5))
def test_a_batch_parsed_in_chunks_is_the_batch_parsed_whole(lines: list[bytes], cuts: list[int]) -> None:
    """The endpoint parses a big batch a chunk at a time (each cut at a line end, numbered from its first
    line): the readings and refusals are those of the whole batch, line numbers included."""
    body = b"\n".join(lines)
    whole = parse_json_lines(body)
    items: list[Reading] = []
    errors: list[LineError] = []
    for first, chunk in _chunks(body, cuts):
        part = parse_json_lines(chunk, first_line=first)
        items += part.items
        errors += part.errors
    assert items == whole.items and errors == whole.errors
