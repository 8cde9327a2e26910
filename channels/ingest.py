"""Readings in from collectors, in batches (sans-I/O): the vocabulary, the bounds, and JSON lines.

A batch is bytes (already gunzipped by the endpoint) holding one reading per line. Parsing never raises
for anything in the bytes: every line becomes either a reading or a ``LineError`` (1-based line number
and a reason for the sender), so a partly bad batch yields its good readings and names the refused lines.

Two formats (the endpoint picks one per request):

- **JSON lines** (this module): each non-blank line is one JSON object::

      {"channel": "sensors:boiler-7", "data": {"temperature": 71.5}, "key": "t1", "time": 1700000000000}

  ``channel`` (string) and ``data`` (any JSON value) are required; ``key`` (string: the reading's key in a
  keyed feed) and ``time`` (integer milliseconds since the epoch: when it was measured) are optional; any
  other member is an error (a typo must not pass unnoticed). The reading is published to ``channel`` with
  ``data`` as its data, as it came.
- **Influx line protocol** (``channels.lineprotocol``): what Telegraf's HTTP output sends; its points are
  mapped to channels by a configured template.

Bounds (``IngestLimits``): lines per batch, bytes per line, fields and tags per line, nesting depth of JSON
data, and how many line errors a result lists (the count goes on past that). Lines past ``max_lines``
are refused together with one error; nothing a sender puts in a batch makes the result grow beyond
``max_lines`` readings and ``max_errors`` errors.

What a reading may be published to (namespaces, permissions, the tenant), whether its data passes the
namespace's schema, and how its key and time reach subscribers is the endpoint's business: this module
only turns bytes into readings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

__all__ = [
    "CUT_OFF",
    "IngestLimits",
    "LineError",
    "Parsed",
    "Reading",
    "json_depth",
    "parse_json_lines",
    "split_lines",
]

T = TypeVar("T")

DEFAULT_MAX_ERRORS = 100
CUT_OFF = "the batch holds more than {} lines: this and the rest refused"
"""The reason of the one error that refuses the lines past ``max_lines``."""


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds on one batch. The defaults suit a collector's batch of some thousands of points."""

    max_lines: int = 100_000
    max_line_bytes: int = 64 * 1024
    """Influx's own bound on a string field is 64 KiB; a longer line is refused whole."""
    max_fields: int = 256
    """Fields per line-protocol point."""
    max_tags: int = 64
    """Tags per line-protocol point."""
    max_depth: int = 32
    """Nesting of arrays and objects in a JSON line's ``data``."""
    max_errors: int = DEFAULT_MAX_ERRORS
    """LineErrors a result lists; ``Parsed.refused`` counts them all."""
    max_name_length: int = 255
    """Measurement names, tag and field keys, channel names and keys."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class LineError:
    """A refused line: its 1-based number in the batch and why, in words for the sender."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading to publish: where, under which key, what, and when it was measured."""

    line: int
    channel: str
    data: Any
    """A JSON value (the publication's data, encoded by the caller)."""
    key: str | None = None
    time_ms: int | None = None
    """Milliseconds since the epoch when it was measured; None when the sender did not say."""


@dataclass(slots=True)
class Parsed(Generic[T]):
    """The outcome of a batch: what was accepted, the first ``max_errors`` refusals (and one more for the
    lines past ``max_lines``, if any), and how many lines were refused in all."""

    items: list[T] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    refused: int = 0
    max_errors: int = DEFAULT_MAX_ERRORS

    def refuse(self, line: int, reason: str) -> None:
        self.refused += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(LineError(line, reason))


def split_lines(
    body: bytes, limits: IngestLimits, parsed: Parsed[Any], first_line: int = 1
) -> Iterator[tuple[int, bytes]]:
    """The batch's lines as ``(number, bytes)``, numbered from ``first_line`` (1: a whole batch; a later
    number: a chunk of one, cut at a line end) and without their line ending (``\\n``; a ``\\r`` before it
    is dropped too). Blank lines are skipped but counted. A line longer than ``max_line_bytes`` is refused
    here; past line ``max_lines`` the rest of ``body`` is refused with one error."""
    start, number, end = 0, first_line - 1, len(body)
    while start < end:
        stop = body.find(b"\n", start)
        if stop < 0:
            stop = end
        number += 1
        if number > limits.max_lines:
            rest = body.count(b"\n", start) + (0 if body.endswith(b"\n") else 1)
            # Listed even past max_errors: the sender must learn that the rest was cut off.
            reason = CUT_OFF.format(limits.max_lines)
            parsed.errors.append(LineError(number, reason))
            parsed.refused += rest
            return
        line = body[start:stop]
        start = stop + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limits.max_line_bytes:
            parsed.refuse(number, f"line longer than {limits.max_line_bytes} bytes")
            continue
        if line and not line.isspace():
            yield number, line


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of arrays and objects in ``value`` (a scalar is 0), counted up to ``limit`` + 1."""
    if not isinstance(value, (dict, list)):
        return 0
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        nested: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            nested += [c for c in children if isinstance(c, (dict, list))]
        level = nested
    return depth


_READING_MEMBERS = frozenset({"channel", "data", "key", "time"})
_INT64 = 2**63


def _reading(number: int, obj: Any, limits: IngestLimits) -> Reading | str:
    """The reading a JSON line's object describes, or why it does not describe one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    unknown = obj.keys() - _READING_MEMBERS
    if unknown:
        return f"unknown member {sorted(unknown)[0]!r} (allowed: channel, data, key, time)"
    channel = obj.get("channel")
    if not isinstance(channel, str) or not channel:
        return "'channel' must be a non-empty string"
    if len(channel) > limits.max_name_length:
        return f"'channel' longer than {limits.max_name_length} characters"
    if "data" not in obj:
        return "'data' is missing"
    key = obj.get("key")
    if key is not None and (not isinstance(key, str) or len(key) > limits.max_name_length):
        return f"'key' must be a string of at most {limits.max_name_length} characters"
    time_ms = obj.get("time")
    if time_ms is not None and (
        isinstance(time_ms, bool) or not isinstance(time_ms, int) or abs(time_ms) >= _INT64
    ):
        return "'time' must be an integer (milliseconds since the epoch)"
    data = obj["data"]
    if json_depth(data, limits.max_depth) > limits.max_depth:
        return f"'data' nests deeper than {limits.max_depth} levels"
    return Reading(number, channel, data, key, time_ms)


def parse_json_lines(body: bytes, limits: IngestLimits | None = None, first_line: int = 1) -> Parsed[Reading]:
    """Readings from a JSON lines batch (format in the module docstring), or from a chunk of one whose first
    line is number ``first_line``; never raises for the content."""
    limits = limits or IngestLimits()
    parsed: Parsed[Reading] = Parsed(max_errors=limits.max_errors)
    for number, line in split_lines(body, limits, parsed, first_line):
        # orjson's own nesting limit (1024) stops a deep line before our depth check walks it.
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            parsed.refuse(number, f"not JSON: {exc}")
            continue
        result = _reading(number, obj, limits)
        if isinstance(result, str):
            parsed.refuse(number, result)
        else:
            parsed.items.append(result)
    return parsed
