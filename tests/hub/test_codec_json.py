"""The JSON codec of the Centrifuge client protocol v2 (sans-I/O: no event loop)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.publication import ClientInfo, Publication
from hub import codec_json as codec

# JSON values orjson round-trips exactly: 64-bit integers, finite floats, strings without lone surrogates.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec="utf-8")),
)
_keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=10)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=30,
)

_ids = st.integers(min_value=0, max_value=2**32)
commands: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda i, d: {"id": i, "publish": {"channel": "chat:room", "data": d}}, _ids, json_values),
    st.builds(
        lambda i, c: {"id": i, "subscribe": {"channel": c, "recover": True, "offset": 3, "epoch": "ab"}},
        _ids,
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1),
    ),
    st.builds(lambda i, d: {"id": i, "rpc": {"method": "m", "data": d}}, _ids, json_values),
    st.builds(lambda d: {"send": {"data": d}}, json_values),
    st.just({}),
)


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_published_data_round_trips_through_the_push(value: Any) -> None:
    pub = Publication(data=codec.data_bytes(value), offset=7)
    frame = codec.encode_publication_push("chat:room", pub)
    decoded = orjson.loads(frame)
    assert decoded == {"push": {"channel": "chat:room", "pub": {"data": value, "offset": 7}}}


@settings(max_examples=200, deadline=None)
@given(json_values, json_values, st.dictionaries(_keys, _keys, max_size=3))
def test_info_and_tags_round_trip(conn_info: Any, chan_info: Any, tags: dict[str, str]) -> None:
    info = ClientInfo("alice", "c1", codec.data_bytes(conn_info), codec.data_bytes(chan_info))
    pub = Publication(data=b"1", info=info, tags=tags)
    decoded = orjson.loads(codec.encode_publication_push("x", pub))["push"]["pub"]
    assert decoded["info"] == {
        "user": "alice",
        "client": "c1",
        "conn_info": conn_info,
        "chan_info": chan_info,
    }
    assert decoded.get("tags", {}) == tags
    assert "offset" not in decoded


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, min_size=1, max_size=8))
def test_decode_commands_inverts_the_join_of_encoded_commands(cmds: list[dict[str, Any]]) -> None:
    # {} alone is a pong; a frame of only pongs is still a frame of commands.
    frame = b"\n".join(orjson.dumps(c) for c in cmds)
    assert codec.decode_commands(frame) == cmds
    assert codec.decode_commands(frame.decode()) == cmds
    assert codec.decode_commands(codec.join_messages([orjson.dumps(c) for c in cmds])) == cmds


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_decode_commands_never_raises_anything_else(data: bytes | str) -> None:
    try:
        cmds = codec.decode_commands(data)
    except codec.DecodeError:
        return
    assert cmds and all(isinstance(c, dict) for c in cmds)


# ---------------------------------------------------------------- examples


def test_decode_commands_skips_blank_lines_and_tolerates_crlf() -> None:
    assert codec.decode_commands(b'\n{"id":1,"connect":{}}\r\n\n  \n{"id":2,"ping":{}}\n') == [
        {"id": 1, "connect": {}},
        {"id": 2, "ping": {}},
    ]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\n\n",
        "   ",
        b"[]",
        b"1",
        b'"s"',
        b"null",
        b"{",
        b'{"id":1}\n[1]',
        b"\xff\xfe",
        b'{"a":1}{"b":2}',
    ],
)
def test_decode_commands_rejects(frame: bytes | str) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode_commands(frame)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(codec.DecodeError, ValueError)


def test_data_bytes() -> None:
    assert codec.data_bytes(None) == b"null"
    assert codec.data_bytes({"a": [1, 2]}) == b'{"a":[1,2]}'


def test_data_is_embedded_unchanged() -> None:
    raw = b'{"z": 1,   "a": [1.50]}'  # not orjson's canonical spelling: must be kept byte for byte
    frame = codec.encode_publication_push("ch", Publication(data=raw))
    assert raw in frame
    assert orjson.loads(frame)["push"]["pub"]["data"] == {"z": 1, "a": [1.5]}


def test_publication_dict_omits_empty_fields() -> None:
    assert orjson.loads(orjson.dumps(codec.publication_dict(Publication(data=b"null")))) == {"data": None}
    full = Publication(data=b"2", offset=3, info=ClientInfo("u", "c"), tags={"k": "v"})
    assert orjson.loads(orjson.dumps(codec.publication_dict(full))) == {
        "data": 2,
        "offset": 3,
        "info": {"user": "u", "client": "c"},
        "tags": {"k": "v"},
    }


def test_replies_and_errors() -> None:
    assert orjson.loads(codec.encode_reply(4, "subscribe", {"recovered": True})) == {
        "id": 4,
        "subscribe": {"recovered": True},
    }
    assert orjson.loads(codec.encode_error(5, 103, "permission denied")) == {
        "id": 5,
        "error": {"code": 103, "message": "permission denied"},
    }
    assert orjson.loads(codec.encode_error(6, 100, "internal", temporary=True)) == {
        "id": 6,
        "error": {"code": 100, "message": "internal", "temporary": True},
    }


def test_pushes() -> None:
    info = ClientInfo("bob", "c2", conn_info=b'{"name":"Bob"}')
    assert orjson.loads(codec.encode_join_push("room", info)) == {
        "push": {
            "channel": "room",
            "join": {"info": {"user": "bob", "client": "c2", "conn_info": {"name": "Bob"}}},
        }
    }
    assert orjson.loads(codec.encode_leave_push("room", info))["push"]["leave"]["info"]["user"] == "bob"
    assert orjson.loads(codec.encode_push("room", "unsubscribe", {"code": 2000})) == {
        "push": {"channel": "room", "unsubscribe": {"code": 2000}}
    }
    assert (
        codec.encode({"push": {"message": {"data": codec.Fragment(b"[1]")}}})
        == b'{"push":{"message":{"data":[1]}}}'
    )


def test_join_messages() -> None:
    one = b'{"id":1}'
    assert codec.join_messages([one]) is one
    assert codec.join_messages([one, b"{}", one]) == b'{"id":1}\n{}\n{"id":1}'
    assert codec.PING == b"{}"


@pytest.mark.parametrize("size", [10, 4000, 40_000])
def test_publication_data_takes_no_more_memory_than_its_length(size: int) -> None:
    """orjson (3.12 on) returns bytes that keep its whole output buffer: 4 KiB for a 50-byte document, 32 KiB
    for a 4 KB one. Publication data is kept (history, buffers of subscriptions being set up): 1,000 small
    publications of history cost 4 MB. ``data_bytes`` gives each its own size."""
    import tracemalloc

    tracemalloc.start()
    try:
        kept = [codec.data_bytes({"pad": "x" * size}) for _ in range(100)]
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept[0]) == size + 10
    assert used < 100 * (size + 10 + 100)


def test_a_delta_subscriptions_data_is_a_json_string_unless_it_cannot_be_one() -> None:
    """(Issue 12.) Once delta is negotiated the SDKs read ``data`` as a string (the JSON text, or a fossil
    delta of it, ``delta: true``); bytes that are not UTF-8 cannot be one and go as they would to anyone."""
    pub = Publication(data=b'{"t":1}', offset=3)
    assert codec.delta_publication_dict(pub, b'{"t":1}', False) == {"data": '{"t":1}', "offset": 3}
    assert codec.delta_publication_dict(pub, b"7\n3@0,2:2}1Xy;", True)["delta"] is True
    raw = orjson.loads(codec.encode_delta_publication_push("c", pub, b"\xff\xfe", True))
    assert "delta" not in raw["push"]["pub"] and raw["push"]["pub"]["data"] == {"t": 1}
