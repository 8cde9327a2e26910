"""The key of a reading and the rate a subscriber asks for (sans-I/O): every input is either read or
refused with a reason, never an exception of another kind."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.feeds import (
    MAX_KEY_LENGTH,
    MIN_RATE,
    BadKey,
    BadRate,
    granted_rate,
    key_pointer,
    publication_key,
    reading_key,
)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sensor": "t1", "v": 1}, "t1"),
        ({"sensor": 7}, "7"),
        ({"sensor": -7}, "-7"),
        ({"sensor": ""}, ""),
        ({"v": 1}, ""),
        ([1, 2], ""),
        ("text", ""),
        ({"sensor": "é" * MAX_KEY_LENGTH}, "é" * MAX_KEY_LENGTH),
    ],
)
def test_reading_key(data: Any, key: str) -> None:
    assert reading_key("/sensor", orjson.dumps(data)) == key


def test_a_nested_key() -> None:
    assert reading_key("/meta/ids/1", b'{"meta": {"ids": ["a", "b"]}}') == "b"
    assert reading_key("/a~1b", b'{"a/b": "x"}') == "x"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"sensor": 1.5}', "string or an integer, got float"),
        (b'{"sensor": true}', "string or an integer, got bool"),
        (b'{"sensor": null}', "string or an integer, got NoneType"),
        (b'{"sensor": {}}', "string or an integer, got dict"),
        (b'{"sensor": "' + b"k" * (MAX_KEY_LENGTH + 1) + b'"}', "longer than"),
        (b"\xff\x00binary", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_a_key_that_cannot_be_read(raw: bytes, says: str) -> None:
    with pytest.raises(BadKey, match=says):
        reading_key("/sensor", raw)


@pytest.mark.parametrize(
    ("key_field", "data", "given", "key"),
    [
        ("/sensor", {"sensor": "t1"}, None, "t1"),  # as a client publish
        ("/sensor", {"v": 1}, "t1", "t1"),  # the data names none: the given key
        ("/sensor", {"sensor": "t1"}, "t1", "t1"),  # both agree
        ("/sensor", {"sensor": 7}, "7", "7"),
        ("/sensor", {"sensor": ""}, "t1", "t1"),  # "" is no key
        ("", {"sensor": "t1"}, "t1", ""),  # an unkeyed namespace: one value per channel
        ("", b"\xff not json", "t1", ""),
    ],
)
def test_the_key_a_reading_is_published_under(key_field: str, data: Any, given: str | None, key: str) -> None:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    assert publication_key(key_field, raw, given) == key


@pytest.mark.parametrize(
    ("data", "given", "says"),
    [
        ({"sensor": "t2"}, "t1", "'t1' is not the data's /sensor \\('t2'\\)"),
        ({"sensor": 1.5}, "t1", "got float"),
        ({"v": 1}, "k" * (MAX_KEY_LENGTH + 1), "at most 255"),
        ({"v": 1}, 7, "a key is a string"),
    ],
)
def test_a_given_key_that_disagrees_or_is_garbage_is_refused(data: Any, given: Any, says: str) -> None:
    with pytest.raises(BadKey, match=says):
        publication_key("/sensor", orjson.dumps(data), given)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: orjson.dumps({"sensor": v})))
def test_any_bytes_give_a_key_or_bad_key(raw: bytes) -> None:
    try:
        key = reading_key("/sensor", raw)
    except BadKey:
        return
    assert isinstance(key, str) and len(key) <= MAX_KEY_LENGTH


def test_key_pointer_refuses_the_whole_document() -> None:
    with pytest.raises(ValueError, match="not the whole data"):
        key_pointer("")
    assert key_pointer("/a").tokens == ("a",)


@pytest.mark.parametrize(
    ("data", "rate"),
    [
        (None, 10.0),
        ("max_rate 2", 10.0),
        ([2], 10.0),
        ({"other": 1}, 10.0),
        ({"max_rate": 2}, 2.0),
        ({"max_rate": 2.5, "app": "x"}, 2.5),
        ({"max_rate": 50}, 10.0),
        ({"max_rate": MIN_RATE}, MIN_RATE),
    ],
)
def test_granted_rate(data: Any, rate: float) -> None:
    assert granted_rate(data, 10.0) == rate


@pytest.mark.parametrize(
    "asked", [0, -1, MIN_RATE / 2, "2", True, None, [1], {"a": 1}, float("inf"), float("nan")]
)
def test_a_bad_rate_is_refused(asked: Any) -> None:
    with pytest.raises(BadRate):
        granted_rate({"max_rate": asked}, 10.0)
