"""Data schemas: compiled once, the first error comes back as one short line with a JSON pointer, a bad
schema is refused with the library's reason, and nothing from the untrusted side can make the validator
fetch a reference or backtrack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.errors import InvalidFeedConfig
from channels.schema import MAX_MESSAGE, DataSchema
from tests.channels.strategies import json_values

READING = {
    "type": "object",
    "required": ["device", "temperature"],
    "additionalProperties": False,
    "properties": {
        "device": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "temperature": {"type": "number", "minimum": -50, "maximum": 500},
        "a/b~c": {"type": "integer"},
        "alarms": {"type": "array", "items": {"enum": ["hot", "cold"]}},
    },
}


def test_valid_data_passes() -> None:
    schema = DataSchema(READING)
    assert schema.check({"device": "boiler-7", "temperature": 71.5, "alarms": ["hot"]}) is None
    assert schema.check_json(b'{"device": "boiler-7", "temperature": 71}') is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"device": "boiler-7", "temperature": 900.5},
            "data/temperature: 900.5 is greater than the maximum of 500",
        ),
        ({"device": "Boiler 7", "temperature": 1}, 'data/device: "Boiler 7" does not match "^[a-z0-9-]+$"'),
        ({"device": "b", "temperature": 1, "a/b~c": 1.5}, 'data/a~1b~0c: 1.5 is not of type "integer"'),
        ({"device": "b", "temperature": 1, "alarms": ["hot", "wet"]}, "data/alarms/1: "),
        ({"device": "b"}, 'data: "temperature" is a required property'),
        ([1, 2], 'data: [1,2] is not of type "object"'),
        ({"device": "b", "temperature": 1, "extra": 1}, "data: Additional properties are not allowed"),
    ],
)
def test_the_first_error_names_where_and_why(data: Any, message: str) -> None:
    result = DataSchema(READING).check(data)
    assert result is not None and result.startswith(message), result


def test_messages_are_one_short_line() -> None:
    schema = DataSchema({"type": "object", "properties": {"name": {"maxLength": 3}}})
    message = schema.check({"name": "x" * 10_000})
    assert message is not None and len(message) == MAX_MESSAGE and message.endswith("...")
    assert "\n" not in (DataSchema({"type": "integer"}).check({"a\nb": "c\nd"}) or "\n")


def test_check_json() -> None:
    schema = DataSchema({"type": "integer"})
    assert schema.check_json(b"5") is None
    assert schema.check_json(b'"5"') == 'data: "5" is not of type "integer"'
    assert (schema.check_json(b"{nope") or "").startswith("data is not JSON")


def test_boolean_schemas() -> None:
    assert DataSchema(True).check({"anything": 1}) is None
    assert DataSchema(False).check(1) is not None


def test_the_draft_comes_from_dollar_schema() -> None:
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 5, "exclusiveMaximum": True}
    assert DataSchema(draft4).check(5) is not None and DataSchema(draft4).check(4) is None
    with pytest.raises(InvalidFeedConfig, match="invalid data schema"):
        DataSchema({"maximum": 5, "exclusiveMaximum": True})  # 2020-12: exclusiveMaximum is a number


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "nonsense"}, "invalid data schema"),
        ({"minimum": "five"}, "invalid data schema"),
        ({"pattern": "(?=a)b"}, "invalid data schema"),  # lookahead: needs a backtracking engine
        ({"pattern": "(a)\\1"}, "invalid data schema"),  # backreference: likewise
        ("object", "must be a JSON object"),
        (["type", "object"], "must be a JSON object"),
        ({"const": {1, 2}}, "invalid data schema"),
    ],
)
def test_bad_schemas_are_refused_with_a_reason(schema: Any, message: str) -> None:
    with pytest.raises(InvalidFeedConfig, match=message):
        DataSchema(schema)


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that would serve a schema, and the paths it was asked for."""
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_no_reference_is_fetched_over_the_network(schema_server: tuple[str, list[str]]) -> None:
    url, requested = schema_server
    with pytest.raises(InvalidFeedConfig, match="invalid data schema"):
        DataSchema({"$ref": url + "/reading.json"})
    with pytest.raises(InvalidFeedConfig):
        DataSchema({"properties": {"a": {"$ref": url + "/a.json"}}})
    assert requested == []


def test_no_reference_is_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "reading.json"
    path.write_text(json.dumps({"type": "integer"}))
    with pytest.raises(InvalidFeedConfig, match="invalid data schema"):
        DataSchema({"$ref": path.as_uri()})


def test_local_references_work() -> None:
    schema = DataSchema(
        {"$defs": {"t": {"type": "number", "maximum": 10}}, "properties": {"t": {"$ref": "#/$defs/t"}}}
    )
    assert (
        schema.check({"t": 5}) is None
        and schema.check({"t": 50}) == "data/t: 50 is greater than the maximum of 10"
    )


def test_a_pattern_cannot_be_made_to_backtrack() -> None:
    schema = DataSchema({"type": "string", "pattern": "^(a+)+$"})  # exponential on a backtracking engine
    started = time.perf_counter()
    assert schema.check("a" * 100_000 + "!") is not None
    assert time.perf_counter() - started < 1.0


@given(json_values)
def test_any_json_gets_none_or_one_line(data: Any) -> None:
    result = DataSchema(READING).check(data)
    assert result is None or ("\n" not in result and len(result) <= MAX_MESSAGE)
    assert DataSchema(READING).check_json(orjson.dumps(data)) == result


@given(st.binary(max_size=100))
def test_garbage_bytes_get_a_message(raw: bytes) -> None:
    result = DataSchema({"type": "object"}).check_json(raw)
    assert result is None or len(result) <= MAX_MESSAGE
