"""The Influx line protocol: the spec's examples parse as the spec says, every bad line is refused with a
reason while the good lines of its batch survive, formatted points parse back to themselves, the split fast
path agrees with the tokenizer, garbage never raises, and the point-to-channel mapping cannot be steered
by tag values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from channels.errors import InvalidFeedConfig
from channels.ingest import IngestLimits, Reading
from channels.lineprotocol import (
    ChannelTemplate,
    LineMapping,
    Point,
    _fast,
    _parse_line,
    _Refused,
    _tokenized,
    format_point,
    map_point,
    parse_line_protocol,
    parse_precision,
    readings_from_line_protocol,
)


def one(line: str | bytes, precision: int = 1) -> Point:
    raw = line.encode() if isinstance(line, str) else line
    parsed = parse_line_protocol(raw, precision)
    assert not parsed.errors, parsed.errors
    assert len(parsed.items) == 1
    return parsed.items[0]


def refused(line: str | bytes, limits: IngestLimits | None = None) -> str:
    raw = line.encode() if isinstance(line, str) else line
    parsed = parse_line_protocol(raw, limits=limits)
    assert not parsed.items and len(parsed.errors) == 1 and parsed.refused == 1, parsed
    assert parsed.errors[0].line == 1
    return parsed.errors[0].reason


# -- the spec's examples (InfluxDB v2 reference, "Line protocol") ---------------------------------------


def test_syntax_example() -> None:
    point = one('myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000')
    assert point == Point(
        "myMeasurement",
        (("tag1", "value1"), ("tag2", "value2")),
        {"fieldKey": "fieldValue"},
        1556813561098000000,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.0", 1.0),
        ("1", 1.0),
        ("-1.234456e+78", -1.234456e78),
        ("1i", 1),
        ("12485903i", 12485903),
        ("-12485903i", -12485903),
        ("-9223372036854775808i", -(2**63)),
        ("9223372036854775807i", 2**63 - 1),
        ("1u", 1),
        ("0u", 0),
        ("18446744073709551615u", 2**64 - 1),
        *((b, True) for b in ("t", "T", "true", "True", "TRUE")),
        *((b, False) for b in ("f", "F", "false", "False", "FALSE")),
        ('"this is a string"', "this is a string"),
        ('"\\"string\\" within a string"', '"string" within a string'),
        ('"Launch 🚀"', "Launch 🚀"),
        ('"true"', "true"),  # quoted: a string, not a boolean
    ],
)
def test_field_values(text: str, value: Any) -> None:
    fields = one(f"myMeasurement fieldKey={text}").fields
    assert fields == {"fieldKey": value}
    assert type(fields["fieldKey"]) is type(value)


def test_special_characters() -> None:
    assert one('my\\ Measurement fieldKey="string value"').measurement == "my Measurement"
    point = one("myMeasurement,tag\\ Key1=tag\\ Value1,tag\\ Key2=tag\\ Value2 fieldKey=100")
    assert point.tags == (("tag Key1", "tag Value1"), ("tag Key2", "tag Value2"))
    point = one('myMeasurement,tagKey=🍭 fieldKey="Launch 🚀" 1556813561098000000')
    assert point.tags == (("tagKey", "🍭"),) and point.fields == {"fieldKey": "Launch 🚀"}
    point = one("a\\,b,k\\=ey=v\\,al\\=ue f\\ i\\=eld=1i")
    assert (point.measurement, point.tags, point.fields) == ("a,b", (("k=ey", "v,al=ue"),), {"f i=eld": 1})
    assert one("a=b f=1i").measurement == "a=b"  # '=' needs no escape in a measurement


@pytest.mark.parametrize(
    ("written", "read"),
    [("\\", "\\"), ("\\\\", "\\"), ("\\\\\\", "\\\\"), ("\\\\\\\\", "\\\\"), ("\\\\\\\\\\", "\\\\\\")],
)
def test_backslashes_table(written: str, read: str) -> None:
    point = one(f'm,t=x{written}y f="a{written}b"')
    assert point.tags == (("t", f"x{read}y"),)
    assert point.fields == {"f": f"a{read}b"}


def test_comments_blank_lines_and_crlf() -> None:
    parsed = parse_line_protocol(b"# This is a comment\n\n   \ncpu v=1 1\r\n  mem v=2i 2\n# x y z\n")
    assert [(p.measurement, p.line) for p in parsed.items] == [("cpu", 4), ("mem", 5)]
    assert not parsed.errors


def test_timestamp_bounds_and_precision() -> None:
    assert one("m f=1 -9223372036854775806").time_ns == -9223372036854775806
    assert one("m f=1 9223372036854775806").time_ns == 9223372036854775806
    assert one("m f=1 1700000000", parse_precision("s")).time_ns == 1_700_000_000 * 10**9
    assert one("m f=1 1700000000000", parse_precision("ms")).time_ns == 1_700_000_000_000 * 10**6
    assert one("m f=1 5", parse_precision("us")).time_ns == 5000
    assert one("m f=1 2", parse_precision("h")).time_ns == 7200 * 10**9
    assert one("m f=1").time_ns is None
    with pytest.raises(ValueError, match="unknown precision 'sec'"):
        parse_precision("sec")


def test_telegraf_batch() -> None:
    body = (
        b"cpu,cpu=cpu-total,host=web-1 usage_idle=97.48,usage_system=0.6,usage_user=1.91 "
        b"1700000000000000000\n"
        b"disk,device=sda1,fstype=ext4,host=web-1,mode=rw,path=/ free=40719466496i,total=62725623808i,"
        b"used_percent=32.71 1700000000000000000\n"
        b"mem,host=web-1 available=6219739136i,used_percent=22.6,active=1421611008i 1700000000000000000\n"
        b'procstat,host=web-1,process_name=nginx cmdline="nginx: master process",pid=812i '
        b"1700000000000000000\n"
        b"system,host=web-1 uptime=86400u,load1=0.25 1700000000000000000\n"
    )
    parsed = parse_line_protocol(body)
    assert not parsed.errors
    assert [p.measurement for p in parsed.items] == ["cpu", "disk", "mem", "procstat", "system"]
    assert dict(parsed.items[1].tags)["path"] == "/"
    assert parsed.items[3].fields["cmdline"] == "nginx: master process"


# -- refused lines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("cpu", "line ends where a space before the fields should be"),
        ("cpu ", "line ends where a field key should be"),
        ("cpu,host= v=1", "expected a tag value"),
        ("cpu,=x v=1", "expected a tag key"),
        ("cpu,host v=1", "expected '=' after a tag key"),
        ("cpu,a=b=c v=1", "unescaped '=' in a tag value"),
        ("cpu v", "'=' after a field key"),
        ("cpu v=", "line ends where a field value should be"),
        ("cpu v= 1", "expected a field value"),
        ("cpu v=abc", "invalid field value 'abc'"),
        ("cpu v=1x", "invalid field value '1x'"),
        ("cpu v=inf", "invalid field value 'inf'"),
        ("cpu v=NaN", "invalid field value 'NaN'"),
        ("cpu v=1_000", "invalid field value"),
        ("cpu v=1e999", "float 1e999 out of range"),
        ("cpu v=9223372036854775808i", "out of the signed 64-bit range"),
        ("cpu v=18446744073709551616u", "out of the 64-bit range"),
        ("cpu v=-1u", "invalid field value '-1u'"),
        ('cpu v="open', "unterminated string"),
        ('cpu v="a"b', "expected ',' or a space after a field"),
        ("cpu v=1,", "line ends where a field key should be"),
        ("cpu v=1 12x", "invalid timestamp"),
        ("cpu v=1 1 2", "invalid timestamp"),
        ("cpu v=1 9223372036854775807", "timestamp 9223372036854775807 out of range"),
        ("cpu v=1,v=2", "field 'v' occurs twice"),
        ("cpu,a=1,a=2 v=1", "a tag key occurs twice"),
        ("cpu,t=a\tb v=1", "a control character"),
        (",t=a v=1", "expected a measurement"),
    ],
)
def test_each_bad_line_is_refused_with_its_reason(line: str, reason: str) -> None:
    assert reason in refused(line)


def test_bounds() -> None:
    limits = IngestLimits(max_fields=3, max_tags=2, max_name_length=8, max_line_bytes=64)
    assert "more than 3 fields" in refused("m a=1,b=2,c=3,d=4", limits)
    assert "more than 3 fields" in refused('m a=1,b=2,c="3",d=4', limits)  # the tokenizer's path too
    assert "more than 2 tags" in refused("m,a=1,b=2,c=3 f=1", limits)
    assert "longer than 8" in refused("measurement f=1", limits)
    assert "longer than 8" in refused("m,t=valuevalue f=1", limits)
    assert "longer than 8" in refused("m fieldfield=1", limits)
    assert "longer than 64 bytes" in refused("m f=" + "1" * 80, limits)
    assert "not UTF-8" in refused(b'm f="\xff"')


def test_a_partly_bad_batch_keeps_the_good_points_and_names_the_bad_lines() -> None:
    body = b"ok v=1\nbad\nok v=2\nok v=oops\nok v=3\n"
    parsed = parse_line_protocol(body)
    assert [p.fields["v"] for p in parsed.items] == [1.0, 2.0, 3.0]
    assert [e.line for e in parsed.errors] == [2, 4]
    assert parsed.refused == 2


def test_errors_listed_are_bounded_and_lines_past_the_limit_are_refused_together() -> None:
    limits = IngestLimits(max_lines=1000, max_errors=5)
    parsed = parse_line_protocol(b"bad\n" * 900 + b"ok v=1\n" * 100 + b"late v=1\n" * 50, limits=limits)
    assert len(parsed.items) == 100
    assert len(parsed.errors) == 6  # the first five bad lines, then the one for the lines past the limit
    assert parsed.errors[-1].line == 1001 and "more than 1000 lines" in parsed.errors[-1].reason
    assert parsed.refused == 900 + 50


@given(st.binary(max_size=300))
def test_garbage_never_raises(body: bytes) -> None:
    parsed = parse_line_protocol(body)
    assert parsed.refused == len(parsed.errors)
    mapping = LineMapping.from_mapping({"channel": "m:{measurement}", "key": "{tag:k}"})
    readings_from_line_protocol(body, mapping, 0)


@given(st.text(alphabet='ab=, 1i.-"\\#tu\t', max_size=40))
def test_garbage_text_never_raises(text: str) -> None:
    parse_line_protocol(text.encode())


# -- round trip and the fast path ------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=12)
field_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r", exclude_categories=["Cs"]), max_size=20),
)
points = st.builds(
    Point,
    measurement=names.filter(lambda m: m[0] not in "# \t"),
    tags=st.dictionaries(names, names, max_size=4).map(lambda d: tuple(sorted(d.items()))),
    fields=st.dictionaries(names, field_values, min_size=1, max_size=6),
    time_ns=st.one_of(st.none(), st.integers(-9223372036854775806, 9223372036854775806)),
)


def typed(point: Point) -> tuple[Any, ...]:
    """A point with its field values' types, so 1 and 1.0 and True do not compare equal."""
    return (point.measurement, point.tags, [(k, type(v), v) for k, v in point.fields.items()], point.time_ns)


@given(points)
def test_formatted_points_parse_back_to_themselves(point: Point) -> None:
    line = format_point(point)
    assert typed(one(line)) == typed(point)


@given(points, st.sampled_from(["s", "ms", "us", "ns"]))
def test_round_trip_in_any_precision(point: Point, unit: str) -> None:
    precision = parse_precision(unit)
    if point.time_ns is not None:  # a whole number of units, rounded toward zero to stay in range
        whole = abs(point.time_ns) // precision * precision
        point = Point(point.measurement, point.tags, point.fields, whole if point.time_ns >= 0 else -whole)
    assert typed(one(format_point(point, precision), precision)) == typed(point)


_names = st.sampled_from(["a", "b", "ab", "a1", "a=", "=b", "a,b", "a b", "#a", "a#", ""])
_values = st.sampled_from(
    ["1", "1.5", "-2", "3i", "-4i", "5u", "-6u", "t", "FALSE", "x", "1e5", "1e999", "", "="]
)


@st.composite
def plain_lines(draw: st.DrawFn) -> str:
    """Lines of the plain form (no backslash, no quote), mostly well formed, with separators in odd places."""
    line = "m" + draw(st.sampled_from(["", "x", "=", "#"]))
    for _ in range(draw(st.integers(0, 3))):
        line += f",{draw(_names)}={draw(_names)}"
    line += draw(st.sampled_from([" ", " ", "  ", ""]))
    line += ",".join(f"{draw(_names)}={draw(_values)}" for _ in range(draw(st.integers(1, 3))))
    return line + draw(st.sampled_from(["", " 1", " -5", " x", "  2", " 1 ", " 99999999999999999999"]))


@settings(max_examples=400)
@given(plain_lines() | st.text(alphabet="ab=, 1i.-#tu", max_size=40) | points.map(format_point))
def test_the_split_fast_path_agrees_with_the_tokenizer(text: str) -> None:
    assume("\\" not in text and '"' not in text)
    limits = IngestLimits()
    outcomes = []
    for parse in (_fast, _tokenized):
        try:
            outcomes.append(parse(1, text, 1, limits))
        except _Refused:
            outcomes.append("refused")
    fast, tokenized = outcomes
    if fast is not None:
        assert fast == tokenized
        if isinstance(fast, Point) and isinstance(tokenized, Point):
            assert typed(fast) == typed(tokenized)


def test_format_refuses_what_the_protocol_cannot_carry() -> None:
    for point in (
        Point("m", (), {}),
        Point("#m", (), {"f": 1}),
        Point("m", (("t", "a\nb"),), {"f": 1}),
        Point("m", (), {"f": float("nan")}),
        Point("m", (), {"f": 2**64}),
    ):
        with pytest.raises(ValueError):
            format_point(point)
    with pytest.raises(ValueError, match="whole number"):
        format_point(Point("m", (), {"f": 1}, 1500), parse_precision("us"))
    assert _parse_line(1, b"# just a comment", 1, IngestLimits()) is None


# -- mapping points to readings ----------------------------------------------------------------------------

CPU = Point(
    "cpu", (("cpu", "cpu0"), ("host", "web-1")), {"usage": 1.5, "n": 3}, 1_700_000_000_123_456_789, line=7
)


def mapping(**options: Any) -> LineMapping:
    return LineMapping.from_mapping({"channel": "metrics:{measurement}.{tag:host}", **options})


def test_default_mapping_fields_to_data_with_the_time() -> None:
    reading = map_point(CPU, mapping(), received_ms=5)
    assert reading == Reading(
        7, "metrics:cpu.web-1", {"usage": 1.5, "n": 3, "time": 1_700_000_000_123}, None, 1_700_000_000_123
    )


def test_key_tags_and_no_time() -> None:
    reading = map_point(CPU, mapping(key="{tag:cpu}", time_field=None, tags_field="tags"), received_ms=5)
    assert isinstance(reading, Reading)
    assert reading.key == "cpu0"
    assert reading.data == {"usage": 1.5, "n": 3, "tags": {"cpu": "cpu0", "host": "web-1"}}


def test_a_point_without_time_gets_the_receive_time() -> None:
    reading = map_point(Point("cpu", (("host", "h"),), {"v": 1.0}), mapping(), received_ms=42)
    assert isinstance(reading, Reading) and reading.time_ms == 42 and reading.data["time"] == 42


def test_literal_braces_and_templates_without_placeholders() -> None:
    assert ChannelTemplate.parse("a{{b}}:{measurement}").render(CPU, channel=False) == "a{b}:cpu"
    reading = map_point(CPU, LineMapping.from_mapping({"channel": "all:metrics"}), 0)
    assert isinstance(reading, Reading) and reading.channel == "all:metrics"


@pytest.mark.parametrize(
    ("point", "template", "reason"),
    [
        (Point("cpu", (), {"v": 1}), "m:{tag:host}", "tag 'host' is missing"),
        (Point("cpu", (("host", "a#alice"),), {"v": 1}), "m:{tag:host}", "holds '#'"),
        (Point("cpu", (("host", "a b"),), {"v": 1}), "m:{tag:host}", "whitespace"),
        (Point("ns:cpu", (), {"v": 1}), "{measurement}", "holds ':'"),
        (Point("ns:cpu", (), {"v": 1}), "{measurement}:x", "holds ':'"),
        (Point("$cpu", (), {"v": 1}), "{measurement}", "starts with '$'"),
        (Point("c" * 300, (), {"v": 1}), "m:{measurement}", "longer than"),
        (Point("cpu", (), {"time": 1}), "m:{measurement}", "collides"),
    ],
)
def test_a_value_cannot_steer_the_channel(point: Point, template: str, reason: str) -> None:
    result = map_point(point, LineMapping.from_mapping({"channel": template}), 0)
    assert isinstance(result, str) and reason in result


def test_values_may_hold_what_cannot_change_the_namespace() -> None:
    point = Point("cpu", (("url", "http://x:80/$a"),), {"v": 1})
    reading = map_point(point, LineMapping.from_mapping({"channel": "probes:{tag:url}"}), 0)
    assert isinstance(reading, Reading) and reading.channel == "probes:http://x:80/$a"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs 'channel'"),
        ({"channel": "m:{host}"}, "unmatched '{'"),
        ({"channel": "m:{measurement"}, "unmatched '{'"),
        ({"channel": "m:}"}, "unmatched '}'"),
        ({"channel": ""}, "non-empty string"),
        ({"channel": 3}, "non-empty string"),
        ({"channel": "m", "chanel": "x"}, "unknown line protocol mapping option 'chanel'"),
        ({"channel": "m", "time_field": ""}, "time_field must be"),
        ({"channel": "m", "time_field": "t", "tags_field": "t"}, "must differ"),
    ],
)
def test_mapping_config_errors_name_the_problem(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFeedConfig, match=message):
        LineMapping.from_mapping(config)


def test_batch_to_readings_keeps_line_order_of_errors() -> None:
    body = b"cpu,host=a v=1 1000000\ncpu v=2\nbroken\ncpu,host=b v=3\n"
    parsed = readings_from_line_protocol(body, mapping(), received_ms=9)
    assert [(r.channel, r.line) for r in parsed.items] == [("metrics:cpu.a", 1), ("metrics:cpu.b", 4)]
    assert [e.line for e in parsed.errors] == [2, 3]
    assert parsed.items[0].time_ms == 1 and parsed.items[1].time_ms == 9
