"""The Influx line protocol (sans-I/O): a batch into points, a point into a line, a point into a reading.

Syntax (InfluxDB v2 reference, "Line protocol"; what Telegraf's HTTP output sends)::

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]

- escapes: in the measurement ``\\,`` and ``\\ ``; in tag keys, tag values and field keys ``\\,`` ``\\=``
  ``\\ ``; everywhere ``\\\\`` is one backslash and a backslash before any other character stays as it is;
- field values: float (``1``, ``-1.5``, ``1.2e+78``; no inf or NaN), integer ``12i`` (signed 64-bit),
  unsigned ``12u`` (64-bit), string ``"..."`` (``\\"`` and ``\\\\`` escaped), boolean ``t T true True TRUE
  f F false False FALSE``;
- timestamp: an integer in the request's precision (``ns`` by default; ``us``, ``ms``, ``s``, and InfluxDB
  1.x's ``n``, ``u``, ``m``, ``h``), signed 64-bit once in nanoseconds;
- a line starting with ``#`` is a comment; newlines never occur inside a line.

Where the spec leaves room, this parser: skips leading spaces and tabs, takes runs of spaces between the
sections and ignores trailing ones; refuses a tag or field key that occurs twice in one line (InfluxDB keeps
the last: a sender's bug more likely than intent); refuses control characters in the measurement, keys and
tag values (they end up in channel names and log lines); accepts ``_``-prefixed names (InfluxDB reserves
them for its storage, which is not ours); accepts a lone CR before the LF.

Hot path: a line without backslashes or double quotes (almost every line Telegraf writes) is split with
``str.split``; any other line goes through a regex tokenizer, which also words every error. Both give the
same points (a property test holds them to it).

**Point to reading** (``LineMapping``, a pure function of the point, the mapping and the receive time):

- channel: a template over ``{measurement}`` and ``{tag:NAME}`` (``{{``/``}}`` for literal braces), e.g.
  ``"telegraf:{measurement}.{tag:host}"``; a tag it names must be present. A substituted value can never
  change what the template's literal parts decide: it may not hold ``#`` (user-limited channels) or
  whitespace, may not start with ``$`` where it starts the name (private channels), and may not hold ``:``
  before the template's first literal ``:`` (the namespace). The result must be a valid channel name.
- key (optional): a template of the same form (for keyed feeds, e.g. ``"{tag:sensor}"``); no restriction on
  values beyond length.
- data: the fields as a JSON object, plus the time in milliseconds under ``time_field`` (``"time"`` by
  default; None leaves it out) and, if ``tags_field`` is set, the tags as an object under that name; a field
  of the same name as either is an error, not overwritten.
- time: the point's timestamp in milliseconds, or the receive time when the line had none (as InfluxDB
  does).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

from channels.errors import InvalidChannel, InvalidFeedConfig
from channels.ingest import IngestLimits, Parsed, Reading, split_lines
from channels.names import parse_channel, parse_template, render_template

__all__ = [
    "ChannelTemplate",
    "FieldValue",
    "LineMapping",
    "Point",
    "format_point",
    "map_point",
    "parse_line_protocol",
    "parse_precision",
    "readings_from_line_protocol",
]

FieldValue: TypeAlias = float | int | bool | str

PRECISIONS = {"ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
PRECISIONS |= {"m": 60 * PRECISIONS["s"], "h": 3600 * PRECISIONS["s"]}

TIME_MIN, TIME_MAX = -9_223_372_036_854_775_806, 9_223_372_036_854_775_806
"""Timestamps InfluxDB accepts, in nanoseconds."""
INT_MIN, INT_MAX, UINT_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def parse_precision(text: str) -> int:
    """Nanoseconds per unit of a ``precision`` parameter; ValueError naming the accepted ones."""
    try:
        return PRECISIONS[text]
    except KeyError:
        raise ValueError(f"unknown precision {text!r} (one of {', '.join(PRECISIONS)})") from None


@dataclass(frozen=True, slots=True)
class Point:
    """One line's point: tags sorted by key, fields in the order sent, time in nanoseconds (None when the
    line had no timestamp)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, FieldValue]
    time_ns: int | None = None
    line: int = field(default=0, compare=False)


class _Refused(Exception):
    """A line is refused; the message is the reason (never leaves this module)."""


_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_FLOAT_CHARACTERS = "0123456789.eE+-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Tokenizer: a run up to an unescaped separator; a backslash takes the next character with it.
_MEASUREMENT = re.compile(r"(?:[^\\ ,]|\\.|\\$)+")
_KEY = re.compile(r"(?:[^\\ ,=]|\\.|\\$)+")
_STRING = re.compile(r'"((?:[^"\\]|\\.|\\$)*)"')
_BARE_VALUE = re.compile(r"[^ ,]+")
_SPACES = re.compile(r" +")
_TIMESTAMP = re.compile(r"-?[0-9]+ *$")
_UNESCAPE_MEASUREMENT = re.compile(r"\\([, \\])")
_UNESCAPE_KEY = re.compile(r"\\([,= \\])")
_UNESCAPE_STRING = re.compile(r'\\(["\\])')


def _is_integer(text: str) -> bool:
    """ASCII digits, optionally after a minus (``str.isdigit`` alone would take other scripts' digits)."""
    digits = text[1:] if text[:1] == "-" else text
    return digits.isdigit() and digits.isascii()


def _field_value(text: str) -> FieldValue:
    """A field value other than a string."""
    last = text[-1]
    if last == "i" and _is_integer(text[:-1]):
        value = int(text[:-1])
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused(f"integer {text} out of the signed 64-bit range")
        return value
    if last == "u" and text[:-1].isdigit() and text.isascii():
        value = int(text[:-1])
        if value > UINT_MAX:
            raise _Refused(f"unsigned integer {text} out of the 64-bit range")
        return value
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    # float() alone would also take "inf", "nan", "1_000" and other scripts' digits: only these characters.
    if not text.strip(_FLOAT_CHARACTERS):
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isinf(number):
                raise _Refused(f"float {text} out of range")
            return number
    raise _Refused(f"invalid field value {text[:40]!r}")


def _timestamp(text: str, multiplier: int) -> int:
    value = int(text) * multiplier
    if not TIME_MIN <= value <= TIME_MAX:
        raise _Refused(f"timestamp {text} out of range")
    return value


def _point(
    number: int,
    measurement: str,
    tags: list[tuple[str, str]],
    fields: dict[str, FieldValue],
    time_ns: int | None,
    limits: IngestLimits,
) -> Point:
    """The point, once the checks both paths share have passed."""
    if len(tags) > limits.max_tags:
        raise _Refused(f"more than {limits.max_tags} tags")
    names = [measurement, *fields]
    for key, value in tags:
        names += (key, value)
    if max(map(len, names)) > limits.max_name_length:
        raise _Refused(f"a measurement, key or tag value longer than {limits.max_name_length} characters")
    if _CONTROL.search("".join(names)):
        raise _Refused("a control character in the measurement, a key or a tag value")
    if len(tags) > 1:
        tags.sort()
        if any(tags[j][0] == tags[j - 1][0] for j in range(1, len(tags))):
            raise _Refused("a tag key occurs twice")
    return Point(measurement, tuple(tags), fields, time_ns, number)


def _fast(number: int, text: str, multiplier: int, limits: IngestLimits) -> Point | None:
    """The point of a line with no backslash and no double quote, split on spaces, commas and equals; None
    when the line is not of the plain form (the tokenizer then parses it and words any error)."""
    parts = text.split(" ")
    if len(parts) == 2:
        head, field_set, stamp = parts[0], parts[1], None
    elif len(parts) == 3 and parts[2]:
        head, field_set, stamp = parts
    else:
        return None
    names = head.split(",")
    measurement = names[0]
    if not measurement:
        return None
    tags: list[tuple[str, str]] = []
    for item in names[1:]:
        key, _, value = item.partition("=")
        if not key or not value or "=" in value:
            return None
        tags.append((key, value))
    items = field_set.split(",")
    if len(items) > limits.max_fields:
        return None
    fields: dict[str, FieldValue] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value or "=" in value or key in fields:
            return None
        fields[key] = _field_value(value)
    if stamp is not None and not _is_integer(stamp):
        return None
    time_ns = None if stamp is None else _timestamp(stamp, multiplier)
    return _point(number, measurement, tags, fields, time_ns, limits)


def _expect(text: str, i: int, what: str) -> NoReturn:
    if i >= len(text):
        raise _Refused(f"line ends where {what} should be")
    raise _Refused(f"unexpected {text[i]!r} at column {i + 1}, expected {what}")


def _tokenized(number: int, text: str, multiplier: int, limits: IngestLimits) -> Point:
    """The point of any line, by the tokenizer; raises _Refused with the reason."""
    match = _MEASUREMENT.match(text)
    if match is None:
        _expect(text, 0, "a measurement")
    measurement = _UNESCAPE_MEASUREMENT.sub(r"\1", match.group())
    i = match.end()
    tags: list[tuple[str, str]] = []
    while i < len(text) and text[i] == ",":
        key = _KEY.match(text, i + 1)
        if key is None:
            _expect(text, i + 1, "a tag key")
        i = key.end()
        if i >= len(text) or text[i] != "=":
            _expect(text, i, "'=' after a tag key")
        tag_value = _KEY.match(text, i + 1)
        if tag_value is None:
            _expect(text, i + 1, "a tag value")
        i = tag_value.end()
        if i < len(text) and text[i] == "=":
            raise _Refused(f"unescaped '=' in a tag value at column {i + 1}")
        tags.append((_UNESCAPE_KEY.sub(r"\1", key.group()), _UNESCAPE_KEY.sub(r"\1", tag_value.group())))
    spaces = _SPACES.match(text, i)
    if spaces is None:
        _expect(text, i, "a space before the fields")
    i = spaces.end()
    fields: dict[str, FieldValue] = {}
    while True:
        key = _KEY.match(text, i)
        if key is None:
            _expect(text, i, "a field key")
        name = _UNESCAPE_KEY.sub(r"\1", key.group())
        i = key.end()
        if i >= len(text) or text[i] != "=":
            _expect(text, i, "'=' after a field key")
        i += 1
        if text.startswith('"', i):
            string = _STRING.match(text, i)
            if string is None:
                raise _Refused(f"unterminated string at column {i + 1}")
            value: FieldValue = _UNESCAPE_STRING.sub(r"\1", string.group(1))
            i = string.end()
        else:
            bare = _BARE_VALUE.match(text, i)
            if bare is None:
                _expect(text, i, "a field value")
            value = _field_value(bare.group())
            i = bare.end()
        if name in fields:
            raise _Refused(f"field {name[:40]!r} occurs twice")
        fields[name] = value
        if len(fields) > limits.max_fields:
            raise _Refused(f"more than {limits.max_fields} fields")
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        break
    time_ns = None
    spaces = _SPACES.match(text, i)
    if spaces is not None and spaces.end() < len(text):
        stamp = _TIMESTAMP.match(text, spaces.end())
        if stamp is None:
            raise _Refused(f"invalid timestamp at column {spaces.end() + 1}")
        time_ns = _timestamp(stamp.group().rstrip(" "), multiplier)
    elif spaces is None and i < len(text):
        _expect(text, i, "',' or a space after a field")
    return _point(number, measurement, tags, fields, time_ns, limits)


def _parse_line(number: int, raw: bytes, multiplier: int, limits: IngestLimits) -> Point | None:
    """The point of one line, None for a comment; raises _Refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("not UTF-8") from None
    text = text.lstrip(" \t")
    if text.startswith("#"):
        return None
    if "\\" not in text and '"' not in text:
        point = _fast(number, text, multiplier, limits)
        if point is not None:
            return point
    return _tokenized(number, text, multiplier, limits)


def _points(
    body: bytes, precision: int, limits: IngestLimits, parsed: Parsed[Any], first_line: int = 1
) -> Iterator[Point]:
    """The batch's points, in line order; each refused line goes to ``parsed``."""
    for number, raw in split_lines(body, limits, parsed, first_line):
        try:
            point = _parse_line(number, raw, precision, limits)
        except _Refused as exc:
            parsed.refuse(number, str(exc))
            continue
        if point is not None:
            yield point


def parse_line_protocol(
    body: bytes, precision: int = 1, limits: IngestLimits | None = None, first_line: int = 1
) -> Parsed[Point]:
    """Points from a line protocol batch (or a chunk of one whose first line is number ``first_line``);
    ``precision`` is nanoseconds per timestamp unit (``parse_precision``). Never raises for the content:
    each bad line is a LineError."""
    limits = limits or IngestLimits()
    parsed: Parsed[Point] = Parsed(max_errors=limits.max_errors)
    parsed.items.extend(_points(body, precision, limits, parsed, first_line))
    return parsed


# -- formatting -----------------------------------------------------------------------------------------


def _escape(text: str, special: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError("line protocol cannot carry a newline in a name, key or value")
    text = text.replace("\\", "\\\\")
    for ch in special:
        text = text.replace(ch, "\\" + ch)
    return text


def _format_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return f"{value}i"
        if 0 <= value <= UINT_MAX:
            return f"{value}u"
        raise ValueError(f"integer {value} does not fit 64 bits")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("line protocol has no inf or NaN")
        return repr(value)
    return '"' + _escape(value, '"') + '"'


def format_point(point: Point, precision: int = 1) -> str:
    """The line (without its newline) that ``parse_line_protocol`` reads back as ``point``; integers go as
    ``i`` (``u`` above the signed range). ValueError for a point the protocol cannot carry (no fields, an
    empty name, a newline, a measurement starting with ``#`` or whitespace, a time not a whole number of
    ``precision`` units)."""
    if not point.measurement or not point.fields:
        raise ValueError("a point needs a measurement and at least one field")
    if point.measurement[0] in "# \t":
        raise ValueError("a measurement cannot start with '#' or whitespace")
    head = [_escape(point.measurement, ", ")]
    head += [f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in point.tags]
    fields = ",".join(f"{_escape(k, ',= ')}={_format_value(v)}" for k, v in point.fields.items())
    line = f"{''.join(head)} {fields}"
    if point.time_ns is not None:
        units, rest = divmod(point.time_ns, precision)
        if rest:
            raise ValueError("time is not a whole number of precision units")
        line += f" {units}"
    return line


# -- mapping a point to a reading ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(measurement|tag:[^{}]+)\}|[{}]")


@dataclass(frozen=True, slots=True)
class ChannelTemplate:
    """A name made of literal text and ``{measurement}`` / ``{tag:NAME}`` placeholders (parsed once)."""

    text: str
    parts: tuple[str | tuple[str], ...]
    """Literal text, or a 1-tuple: ``("",)`` the measurement, ``(NAME,)`` a tag."""
    namespace_fixed_at: int
    """Index of the first part holding a literal ``:``; placeholders before it may not hold one."""

    @classmethod
    def parse(cls, text: str) -> ChannelTemplate:
        if not isinstance(text, str) or not text:
            raise InvalidFeedConfig(f"a template must be a non-empty string, got {text!r}")
        parts, fixed = parse_template(text, _PLACEHOLDER, "placeholders are {measurement} and {tag:NAME}")
        named = tuple(
            p if isinstance(p, str) else ("",) if p[0] == "measurement" else (p[0][4:],) for p in parts
        )
        return cls(text, named, fixed)

    def render(self, point: Point, *, channel: bool) -> str:
        """The name for ``point``; raises _Refused (a tag missing, or for a channel a value that would change
        what the literal parts decide)."""
        tags = dict(point.tags)

        def value_of(name: str) -> tuple[str, str]:
            if not name:
                return point.measurement, "the measurement"
            value = tags.get(name)
            if value is None:
                raise _Refused(f"tag {name!r} is missing (the template {self.text!r} needs it)")
            return value, f"tag {name!r}"

        try:
            return render_template(self.parts, self.namespace_fixed_at, value_of, channel=channel)
        except ValueError as exc:
            raise _Refused(str(exc)) from None


@dataclass(frozen=True, slots=True)
class LineMapping:
    """How line-protocol points become readings (module docstring, "Point to reading")."""

    channel: ChannelTemplate
    key: ChannelTemplate | None = None
    time_field: str | None = "time"
    tags_field: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LineMapping:
        """From a config table: ``channel`` (required), ``key``, ``time_field``, ``tags_field``; unknown keys
        and bad values are InvalidFeedConfig, naming the key."""
        unknown = set(data) - {"channel", "key", "time_field", "tags_field"}
        if unknown:
            raise InvalidFeedConfig(f"unknown line protocol mapping option {sorted(unknown)[0]!r}")
        if "channel" not in data:
            raise InvalidFeedConfig("a line protocol mapping needs 'channel' (a template)")
        names: dict[str, str | None] = {}
        for option in ("time_field", "tags_field"):
            value = data.get(option, "time" if option == "time_field" else None)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidFeedConfig(f"{option} must be a non-empty string, got {value!r}")
            names[option] = value
        if names["time_field"] is not None and names["time_field"] == names["tags_field"]:
            raise InvalidFeedConfig("time_field and tags_field must differ")
        key = data.get("key")
        return cls(
            ChannelTemplate.parse(data["channel"]),
            None if key is None else ChannelTemplate.parse(key),
            names["time_field"],
            names["tags_field"],
        )


def _reading(point: Point, mapping: LineMapping, received_ms: int, limits: IngestLimits) -> Reading:
    channel = mapping.channel.render(point, channel=True)
    try:
        parse_channel(channel, limits.max_name_length)
    except InvalidChannel as exc:
        raise _Refused(f"channel {channel[:80]!r}: {exc}") from None
    key = None
    if mapping.key is not None:
        key = mapping.key.render(point, channel=False)
        if len(key) > limits.max_name_length:
            raise _Refused(f"key longer than {limits.max_name_length} characters")
    time_ms = received_ms if point.time_ns is None else point.time_ns // 1_000_000
    data: dict[str, Any] = dict(point.fields)
    for name, value in ((mapping.time_field, time_ms), (mapping.tags_field, dict(point.tags))):
        if name is None:
            continue
        if name in data:
            raise _Refused(f"field {name!r} collides with the mapping's {name!r} member")
        data[name] = value
    return Reading(point.line, channel, data, key, time_ms)


def map_point(
    point: Point, mapping: LineMapping, received_ms: int, limits: IngestLimits | None = None
) -> Reading | str:
    """The reading ``point`` becomes under ``mapping`` (a pure function), or why it cannot become one.
    ``received_ms`` is the time for a point without a timestamp."""
    try:
        return _reading(point, mapping, received_ms, limits or IngestLimits())
    except _Refused as exc:
        return str(exc)


def readings_from_line_protocol(
    body: bytes,
    mapping: LineMapping,
    received_ms: int,
    precision: int = 1,
    limits: IngestLimits | None = None,
) -> Parsed[Reading]:
    """Parse a batch and map its points in one pass: readings, and LineErrors (in line order) for lines that
    failed either step."""
    limits = limits or IngestLimits()
    parsed: Parsed[Reading] = Parsed(max_errors=limits.max_errors)
    for point in _points(body, precision, limits, parsed):
        try:
            parsed.items.append(_reading(point, mapping, received_ms, limits))
        except _Refused as exc:
            parsed.refuse(point.line, str(exc))
    return parsed
