"""Namespace options and duration parsing (sans-I/O: no event loop)."""

from __future__ import annotations

import dataclasses
import math
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.errors import UnknownNamespace
from channels.names import parse_channel
from channels.options import NamespaceOptions, Namespaces, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
        ("", 0.0),
        ("0", 0.0),
        ("  0  ", 0.0),
        ("10", 10.0),
        ("1.5", 1.5),
        ("300s", 300.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("1.5h", 5400.0),
        (" 300s ", 300.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-5",
        "-5s",
        "abc",
        "5x",
        "s",
        "5 s",
        "1h 30m",
        "5s5",
        "1.5.5s",
        "h1",
        True,
        False,
        None,
        [],
        {},
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", ["nan", "NaN", float("nan")])
def test_parse_duration_rejects_nan(value: object) -> None:
    # NaN compares false with everything: a NaN ping interval would silently never ping.
    with pytest.raises(ValueError):
        parse_duration(value)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d"])), min_size=1, max_size=5
    )
)
def test_parse_duration_sums_components(parts: list[tuple[int, str]]) -> None:
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert math.isclose(parse_duration(text), sum(n * unit[u] for n, u in parts), rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_parse_duration_numbers_are_seconds(value: float) -> None:
    assert parse_duration(value) == value
    assert parse_duration(repr(value)) == value


FEED_DEFAULTS = {"force_recovery_mode": "stream", "max_keys": 1000}
"""Options whose defaults are a mode or a bound, not something opened."""
STREAM_DEFAULTS = {
    "stream_max_open": 8,
    "stream_max_chunk_bytes": 16 * 1024,
    "stream_max_message_bytes": 256 * 1024,
    "stream_idle_timeout": 120.0,
}
"""The bounds of streamed replies (used only with ``streams``, off by default)."""


def test_defaults_are_closed() -> None:
    opts = NamespaceOptions()
    assert not opts.history_enabled
    assert opts.data_format == "json" and not opts.binary
    assert {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if getattr(opts, f.name)} == {
        **FEED_DEFAULTS,
        **STREAM_DEFAULTS,
        "data_format": "json",
    }


def test_from_mapping() -> None:
    opts = NamespaceOptions.from_mapping(
        {
            "name": "chat",
            "presence": True,
            "history_size": 10,
            "history_ttl": "300s",
            "history_meta_ttl": "1h",
            "allow_subscribe_for_client": True,
        }
    )
    assert opts.presence and opts.allow_subscribe_for_client
    assert (opts.history_size, opts.history_ttl, opts.history_meta_ttl) == (10, 300.0, 3600.0)
    assert opts.history_enabled
    assert NamespaceOptions.from_mapping({"history_size": 1, "history_ttl": 60}).history_ttl == 60.0


@pytest.mark.parametrize(
    "table",
    [
        {"presense": True},
        {"presence": "yes"},
        {"presence": 1},
        {"history_size": -1},
        {"history_size": 1.5},
        {"history_size": True, "history_ttl": 10},
        {"history_size": "10", "history_ttl": 10},
        {"history_size": 10},
        {"history_ttl": "10s"},
        {"history_size": 10, "history_ttl": "ten seconds"},
        {"history_meta_ttl": -5},
    ],
)
def test_from_mapping_rejects(table: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NamespaceOptions.from_mapping(table)


def test_namespaces_lookup() -> None:
    default = NamespaceOptions(presence=True)
    chat = NamespaceOptions(join_leave=True)
    table = Namespaces(default, {"chat": chat, "alpha": NamespaceOptions()})
    assert table.options_for(parse_channel("news")) is default
    assert table.options_for(parse_channel("$private")) is default
    assert table.options_for(parse_channel("chat:room")) is chat
    assert table.options_for(parse_channel("$chat:room#bob")) is chat
    with pytest.raises(UnknownNamespace):
        table.options_for(parse_channel("nope:room"))
    assert table.names() == ["alpha", "chat"]
    assert Namespaces(default).names() == []


def test_namespaces_copies_its_input() -> None:
    named = {"chat": NamespaceOptions()}
    table = Namespaces(NamespaceOptions(), named)
    named["other"] = NamespaceOptions()
    with pytest.raises(UnknownNamespace):
        table.options_for(parse_channel("other:x"))


SCHEMA = {"type": "object", "properties": {"t": {"type": "number", "maximum": 500}}, "required": ["t"]}


def test_data_schema_is_compiled_once_from_a_table_or_json_text() -> None:
    for given_as in (SCHEMA, orjson.dumps(SCHEMA).decode()):
        opts = NamespaceOptions.from_mapping({"data_schema": given_as})
        assert opts.data_schema is not None
        assert opts.data_schema.check({"t": 20}) is None
        assert opts.data_schema.check_json(b'{"t": 900}') == "data/t: 900 is greater than the maximum of 500"
    # merged again (environment overrides over a file): the compiled schema is kept as it is
    again = NamespaceOptions.from_mapping({"data_schema": opts.data_schema})
    assert again.data_schema is opts.data_schema


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"data_format": "text"}, "data_format must be one of json, binary"),
        ({"data_format": True}, "data_format must be one of"),
        ({"data_schema": 5}, "data_schema must be a table"),
        ({"data_schema": "{not json"}, "data_schema is not JSON"),
        ({"data_schema": {"type": "nope"}}, "invalid data schema"),
        ({"data_schema": {"$ref": "https://example.com/s.json"}}, "invalid data schema"),
        ({"data_format": "binary", "data_schema": SCHEMA}, "cannot be set with data_format"),
        ({"data_format": "binary", "conflation": "latest", "max_rate": 5}, 'need data_format = "json"'),
        ({"data_format": "binary", "allowed_delta_types": ["fossil"]}, 'need data_format = "json"'),
    ],
)
def test_bad_data_options_are_refused_with_the_reason(table: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        NamespaceOptions.from_mapping(table)


def test_binary_namespaces_are_found_from_the_name_alone() -> None:
    binary = NamespaceOptions(data_format="binary")
    table = Namespaces(NamespaceOptions(), {"cam": binary, "chat": NamespaceOptions()})
    assert table.binary("cam:front") and table.binary("$cam:front") and table.binary("cam:x#alice")
    assert not table.binary("chat:room") and not table.binary("camera") and not table.binary("nope:x")
    assert Namespaces(binary).binary("anything") and not Namespaces(binary).binary("cam:x")
    assert not Namespaces(NamespaceOptions()).binary("cam:front")


# ---------------------------------------------------------------- live-feed options (issue 12)

FEED = {
    "conflation": "latest",
    "max_rate": 10,
    "key_field": "/sensor/id",
    "history_size": 1,
    "history_ttl": "1h",
    "force_recovery_mode": "cache",
    "allowed_delta_types": ["fossil"],
    "max_keys": 5000,
}


def test_feed_options() -> None:
    opts = NamespaceOptions.from_mapping(FEED)
    assert (opts.conflation, opts.max_rate, opts.key_field) == ("latest", 10.0, "/sensor/id")
    assert (opts.force_recovery_mode, opts.allowed_delta_types, opts.max_keys) == ("cache", ("fossil",), 5000)
    # From the environment everything is a string.
    env = NamespaceOptions.from_mapping({**FEED, "max_rate": "2.5", "allowed_delta_types": "fossil"})
    assert (env.max_rate, env.allowed_delta_types) == (2.5, ("fossil",))
    assert NamespaceOptions.from_mapping({"allowed_delta_types": []}).allowed_delta_types == ()


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"conflation": "newest"}, "conflation must be one of"),
        ({"conflation": True}, "conflation must be one of"),
        ({"conflation": "latest"}, "needs max_rate"),
        ({"max_rate": 5}, "set conflation"),
        ({"conflation": "latest", "max_rate": -1}, "max_rate must be from 0"),
        ({"conflation": "latest", "max_rate": 1e9}, "max_rate must be from 0"),
        ({"conflation": "latest", "max_rate": float("nan")}, "max_rate must be a number"),
        ({"conflation": "latest", "max_rate": "fast"}, "max_rate must be a number"),
        ({"conflation": "latest", "max_rate": True}, "max_rate must be a number"),
        ({"conflation": "latest", "max_rate": 5, "key_field": "sensor"}, "must be empty or start with '/'"),
        ({"conflation": "latest", "max_rate": 5, "key_field": "/a~2"}, "'~' must be followed"),
        ({"conflation": "latest", "max_rate": 5, "key_field": 5}, "key_field must be a JSON pointer"),
        ({"key_field": "/sensor"}, "key_field is used by conflation"),
        ({"force_recovery_mode": "cache"}, "needs history"),
        (
            {"force_recovery_mode": "latest", "history_size": 1, "history_ttl": 60},
            "force_recovery_mode must be",
        ),
        (
            {"conflation": "latest", "max_rate": 5, "history_size": 1, "history_ttl": 60},
            'needs force_recovery_mode = "cache"',
        ),
        ({"allowed_delta_types": ["zstd"]}, "unknown delta type"),
        ({"allowed_delta_types": "fossil,zstd"}, "unknown delta type"),
        ({"allowed_delta_types": [1]}, "must be a list of strings"),
        ({"allowed_delta_types": {"fossil": 1}}, "must be a list of strings"),
        ({"max_keys": 0}, "max_keys must be an integer from 1"),
        ({"max_keys": 10**7}, "max_keys must be an integer from 1"),
        ({"max_keys": "10"}, "max_keys must be an integer from 1"),
    ],
)
def test_bad_feed_options_are_refused_with_a_reason(table: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        NamespaceOptions.from_mapping(table)


def test_stream_options_map_onto_stream_limits_and_refuse_what_cannot_work() -> None:
    opts = NamespaceOptions.from_mapping(
        {
            "streams": True,
            "stream_max_open": "3",
            "stream_max_message_bytes": 4096,
            "stream_idle_timeout": "30s",
        }
    )
    limits = opts.stream_limits
    assert (limits.max_open, limits.max_chunk_bytes, limits.max_message_bytes, limits.idle_timeout) == (
        3,
        16 * 1024,
        4096,
        30.0,
    )
    namespaces = Namespaces(NamespaceOptions(), {"agent": opts})
    assert namespaces.streams("agent:room") and namespaces.streams("$agent:room")
    assert not namespaces.streams("room") and not namespaces.streams("chat:room")
    for bad, message in [
        ({"stream_max_open": 0}, "stream_max_open"),
        ({"stream_max_open": True}, "stream_max_open"),
        ({"stream_max_chunk_bytes": 10**9}, "stream_max_chunk_bytes"),
        ({"stream_max_message_bytes": "lots"}, "stream_max_message_bytes"),
        ({"stream_idle_timeout": "soon"}, "duration"),
        ({"streams": True, "stream_idle_timeout": 0}, "stream_idle_timeout"),
        ({"streams": True, "data_format": "binary"}, "binary"),
        ({"streams": True, "allowed_delta_types": ["fossil"]}, "streams"),
        ({"streams": "yes"}, "true or false"),
    ]:
        with pytest.raises(ValueError, match=message):
            NamespaceOptions.from_mapping(bad)
