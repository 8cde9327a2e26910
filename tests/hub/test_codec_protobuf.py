"""hub.codec_protobuf against an independent oracle: the classes centrifuge-python generated from client.proto
(``centrifuge.protocol.client_pb2``, parsed and serialized by Google's protobuf runtime).

Commands are built with the oracle and decoded with ours; replies are encoded with ours and parsed with the
oracle. Hypothesis draws messages of every type from the oracle's descriptors. At the end a real session
(Node + MemoryBroker + MemoryPresence, a fake transport speaking Protobuf) produces every reply and push it
knows, and the oracle reads each of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from centrifuge.protocol import client_pb2 as pb
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as OracleDecodeError
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from channels.publication import ClientInfo, Publication
from hub import codec_json, codes, wire
from hub import codec_protobuf as codec
from hub.auth import mint_token
from hub.codec_protobuf import DecodeError, EncodeError
from hub.config import DEV_CHANNEL_OPTIONS, Config
from hub.hooks import ConnectingResult, Hooks, SubscribeResult
from hub.node import Node
from presence.presence_memory import MemoryPresence

# ================================================================ oracle helpers


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def frame(*messages: Message | bytes) -> bytes:
    """Length-delimited messages, as a client SDK frames its commands."""
    out = b""
    for m in messages:
        body = m if isinstance(m, bytes) else m.SerializeToString()
        out += uvarint(len(body)) + body
    return out


def split(data: bytes) -> list[bytes]:
    """The messages of a server frame (the SDK's framing: varint length, then the message)."""
    out = []
    pos = 0
    while pos < len(data):
        size = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(data[pos : pos + size])
        pos += size
        assert pos <= len(data), "length past the end of the frame"
    return out


def replies(data: bytes) -> list[pb.Reply]:
    return [pb.Reply.FromString(body) for body in split(data)]


def reply(data: bytes) -> pb.Reply:
    (only,) = replies(data)
    return only


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def to_dict(msg: Message) -> dict[str, Any]:
    """An oracle message in the codec's dict shape: set fields only, bytes as bytes, maps as dicts."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                out[field.name] = {k: to_dict(v) for k, v in value.items()}
            else:
                out[field.name] = dict(value)
        elif field.message_type is not None:
            out[field.name] = [to_dict(v) for v in value] if field.is_repeated else to_dict(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def fill(msg: Message, values: dict[str, Any]) -> Message:
    """Set an oracle message's fields from a dict in the codec's shape."""
    for name, value in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        if _is_map(field):
            value_is_message = field.message_type.fields_by_name["value"].message_type is not None
            for k, v in value.items():
                if value_is_message:
                    fill(target[k], v)
                else:
                    target[k] = v
        elif field.message_type is not None and field.is_repeated:
            for item in value:
                fill(target.add(), item)
        elif field.message_type is not None:
            target.SetInParent()
            fill(target, value)
        elif field.is_repeated:
            target.extend(value)
        else:
            setattr(msg, name, value)
    return msg


def strip(values: dict[str, Any], desc: Descriptor) -> dict[str, Any]:
    """What a proto3 round trip keeps of a dict: scalars equal to their default disappear."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        field = desc.fields_by_name[name]
        if _is_map(field):
            value_desc = field.message_type.fields_by_name["value"].message_type
            out[name] = {k: strip(v, value_desc) if value_desc else v for k, v in value.items()}
            if not out[name]:
                del out[name]
        elif field.message_type is not None and field.is_repeated:
            if value:
                out[name] = [strip(v, field.message_type) for v in value]
        elif field.message_type is not None:
            out[name] = strip(value, field.message_type)
        elif field.is_repeated:
            if value:
                out[name] = list(value)
        elif value:  # 0, False, "" and b"" are the defaults
            out[name] = value
    return out


# ================================================================ strategies from the oracle's descriptors

_SCALARS = {
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: st.text(max_size=12),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=24),
}
_ints = st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 127, 128, 2**31 - 1, 2**32 - 1, 2**63 - 1]))


def messages(desc: Descriptor, depth: int = 0, maps: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts in the codec's shape for message ``desc``: any subset of its fields, nested up to 3 deep."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and depth >= 3:
            continue
        if _is_map(field):
            if not maps:
                continue
            value_field = field.message_type.fields_by_name["value"]
            values = (
                messages(value_field.message_type, depth + 1, maps)
                if value_field.message_type is not None
                else _SCALARS[value_field.type]
            )
            fields[field.name] = st.dictionaries(st.text(max_size=8), values, max_size=3)
        elif field.message_type is not None:
            sub = messages(field.message_type, depth + 1, maps)
            fields[field.name] = st.lists(sub, max_size=3) if field.is_repeated else sub
        elif field.is_repeated:
            fields[field.name] = st.lists(_SCALARS[field.type], max_size=3)
        else:
            scalar = _SCALARS[field.type]
            if field.type == FieldDescriptor.TYPE_UINT32:
                scalar = st.one_of(_ints.filter(lambda n: n < 2**32), scalar)
            elif field.type == FieldDescriptor.TYPE_UINT64:
                scalar = st.one_of(_ints, scalar)
            fields[field.name] = scalar
    return st.fixed_dictionaries({}, optional=fields)


COMMANDS = messages(pb.Command.DESCRIPTOR)
REPLIES = messages(pb.Reply.DESCRIPTOR)

# ================================================================ properties


@given(st.lists(COMMANDS, min_size=1, max_size=4))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_decoded_commands_are_what_the_oracle_encoded(commands: list[dict[str, Any]]) -> None:
    data = frame(*(fill(pb.Command(), c) for c in commands))
    assert codec.decode_commands(data) == [strip(c, pb.Command.DESCRIPTOR) for c in commands]


@given(REPLIES)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_encoded_replies_are_what_the_oracle_reads(message: dict[str, Any]) -> None:
    data = codec.encode(message)
    assert to_dict(reply(data)) == strip(message, pb.Reply.DESCRIPTOR)
    # ... and the oracle writes the same fields (its serialization differs only in order, if at all)
    assert pb.Reply.FromString(split(data)[0]) == fill(pb.Reply(), message)


def _unknown_fields() -> st.SearchStrategy[bytes]:
    """Fields of numbers the schema does not use, of every proto3 wire type."""
    number = st.integers(1000, 2**29 - 1)
    varint = st.builds(lambda n, v: uvarint(n << 3) + uvarint(v), number, st.integers(0, 2**64 - 1))
    fixed64 = st.builds(lambda n, v: uvarint(n << 3 | 1) + v, number, st.binary(min_size=8, max_size=8))
    delimited = st.builds(lambda n, v: uvarint(n << 3 | 2) + uvarint(len(v)) + v, number, st.binary())
    fixed32 = st.builds(lambda n, v: uvarint(n << 3 | 5) + v, number, st.binary(min_size=4, max_size=4))
    return st.lists(st.one_of(varint, fixed64, delimited, fixed32), max_size=3).map(b"".join)


@given(COMMANDS, _unknown_fields(), _unknown_fields())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_unknown_fields_are_skipped(command: dict[str, Any], before: bytes, after: bytes) -> None:
    body = before + fill(pb.Command(), command).SerializeToString() + after
    assert to_dict(pb.Command.FromString(body)) == strip(command, pb.Command.DESCRIPTOR)  # the oracle too
    assert codec.decode_commands(frame(body)) == [strip(command, pb.Command.DESCRIPTOR)]


@given(messages(pb.Command.DESCRIPTOR, maps=False), st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_damaged_commands_are_decoded_as_the_oracle_does_or_refused(
    command: dict[str, Any], data: Any
) -> None:
    """A valid command with a byte changed, cut short or extended: ours yields the oracle's reading or a
    DecodeError, never another exception; whatever the oracle refuses, ours refuses too.

    Without maps: a map entry holding an unknown field is kept by ours (as Go's protobuf does, the
    reference server's) but set aside whole as an unknown field by the oracle's upb runtime."""
    body = bytearray(fill(pb.Command(), command).SerializeToString())
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip" and body:
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    elif how == "cut" and body:
        del body[data.draw(st.integers(0, len(body) - 1)) :]
    else:
        at = data.draw(st.integers(0, len(body)))
        body[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        expected: dict[str, Any] | None = to_dict(pb.Command.FromString(bytes(body)))
    except OracleDecodeError:
        expected = None
    try:
        got = codec.decode_commands(frame(bytes(body)))[0]
    except DecodeError as exc:
        # Stricter than the oracle on purpose: it keeps a known field of the wrong wire type, and a group
        # (proto2's wire types 3 and 4), as unknown fields; ours refuses both.
        assert expected is None or any(
            why in str(exc)
            for why in ("expected a varint", "expected length-delimited", "wire type 3", "wire type 4")
        ), exc
    else:
        assert oracle_fields(got, pb.Command.DESCRIPTOR) == expected


def oracle_fields(values: dict[str, Any], desc: Descriptor) -> dict[str, Any]:
    """``values`` without the fields the oracle's older schema lacks: our tables follow the current
    client.proto (ConnectRequest's ``dict`` = 8 and ``profile`` = 9 are newer than centrifuge-python's
    copy), so a damaged byte that turns into such a field is a known field to ours and an unknown one,
    skipped, to the oracle."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        field = desc.fields_by_name.get(name)
        if field is None:
            continue
        if field.message_type is not None and not _is_map(field):
            if field.is_repeated:
                value = [oracle_fields(v, field.message_type) for v in value]
            else:
                value = oracle_fields(value, field.message_type)
        out[name] = value
    return out


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        commands = codec.decode_commands(data)
    except DecodeError:
        return
    assert all(isinstance(c, dict) for c in commands)


_names = st.text(min_size=1, max_size=20)
_infos = st.builds(
    ClientInfo,
    st.text(max_size=10),
    st.text(max_size=10),
    st.none() | st.binary(max_size=20),
    st.none() | st.binary(max_size=20),
)
_publications = st.builds(
    Publication,
    st.binary(max_size=300),
    st.integers(0, 2**64 - 1),
    st.none() | _infos,
    st.none() | st.dictionaries(st.text(max_size=70), st.text(max_size=70), max_size=3),
)


@given(_names, _publications)
def test_publication_push_fast_path_writes_what_the_schema_writes(channel: str, pub: Publication) -> None:
    data = codec.encode_publication_push(channel, pub)
    assert data == codec.encode({"push": {"channel": channel, "pub": codec.publication_dict(pub)}})
    push = reply(data).push
    assert push.channel == channel
    assert push.pub.data == pub.data and push.pub.offset == pub.offset
    assert dict(push.pub.tags) == (pub.tags or {})
    assert push.pub.HasField("info") == (pub.info is not None)
    if pub.info is not None:
        assert to_dict(push.pub.info) == strip(codec.info_dict(pub.info), pb.ClientInfo.DESCRIPTOR)


@given(_names, _infos)
def test_join_and_leave_pushes(channel: str, info: ClientInfo) -> None:
    for kind in ("join", "leave"):
        data = getattr(codec, f"encode_{kind}_push")(channel, info)
        assert data == codec.encode_push(channel, kind, {"info": codec.info_dict(info)})
        push = reply(data).push
        assert push.channel == channel and push.HasField(kind)
        got = getattr(push, kind).info
        assert (got.user, got.client) == (info.user, info.client)
        assert (got.conn_info, got.chan_info) == (info.conn_info or b"", info.chan_info or b"")


# ================================================================ examples: commands


def decode_one(command: pb.Command) -> dict[str, Any]:
    (decoded,) = codec.decode_commands(frame(command))
    return decoded


def test_every_method_decodes_to_the_json_shape() -> None:
    C = pb.Command  # noqa: N806
    subs = {"news": pb.SubscribeRequest(recover=True, offset=5, epoch="e")}
    cases: list[tuple[pb.Command, dict[str, Any]]] = [
        (
            C(
                id=1,
                connect=pb.ConnectRequest(token="t", data=b'{"a":1}', subs=subs, name="swift", version="1"),
            ),
            {
                "id": 1,
                "connect": {
                    "token": "t",
                    "data": b'{"a":1}',
                    "subs": {"news": {"recover": True, "offset": 5, "epoch": "e"}},
                    "name": "swift",
                    "version": "1",
                },
            },
        ),
        (
            C(
                id=2,
                subscribe=pb.SubscribeRequest(
                    channel="c", recover=True, offset=5, epoch="x", join_leave=True
                ),
            ),
            {
                "id": 2,
                "subscribe": {"channel": "c", "recover": True, "offset": 5, "epoch": "x", "join_leave": True},
            },
        ),
        (
            C(id=3, publish=pb.PublishRequest(channel="c", data=b"1")),
            {"id": 3, "publish": {"channel": "c", "data": b"1"}},
        ),
        (C(id=4, unsubscribe=pb.UnsubscribeRequest(channel="c")), {"id": 4, "unsubscribe": {"channel": "c"}}),
        (C(id=5, presence=pb.PresenceRequest(channel="c")), {"id": 5, "presence": {"channel": "c"}}),
        (
            C(id=6, presence_stats=pb.PresenceStatsRequest(channel="c")),
            {"id": 6, "presence_stats": {"channel": "c"}},
        ),
        (
            C(
                id=7,
                history=pb.HistoryRequest(
                    channel="c", limit=-1, since=pb.StreamPosition(offset=3, epoch="e")
                ),
            ),
            {"id": 7, "history": {"channel": "c", "limit": -1, "since": {"offset": 3, "epoch": "e"}}},
        ),
        (C(id=8, ping=pb.PingRequest()), {"id": 8, "ping": {}}),
        (C(send=pb.SendRequest(data=b"{}")), {"send": {"data": b"{}"}}),
        (
            C(id=9, rpc=pb.RPCRequest(method="m", data=b"[1]")),
            {"id": 9, "rpc": {"method": "m", "data": b"[1]"}},
        ),
        (C(id=10, refresh=pb.RefreshRequest(token="t")), {"id": 10, "refresh": {"token": "t"}}),
        (
            C(id=11, sub_refresh=pb.SubRefreshRequest(channel="c", token="t")),
            {"id": 11, "sub_refresh": {"channel": "c", "token": "t"}},
        ),
        (C(id=12, unsubscribe=pb.UnsubscribeRequest()), {"id": 12, "unsubscribe": {}}),  # present, if empty
        (C(id=13), {"id": 13}),  # no method: the session answers 104
        (C(), {}),  # the pong
    ]
    for command, expected in cases:
        assert decode_one(command) == expected
    assert codec.decode_commands(frame(*(c for c, _ in cases))) == [e for _, e in cases]


def test_the_empty_command_is_a_pong() -> None:
    assert codec.decode_commands(b"\x00") == [{}]
    assert codec.decode_commands(b"\x00\x00") == [{}, {}]


def test_defaults_are_left_out_as_json_clients_omit_them() -> None:
    # An encoder may write a default explicitly (proto2-style); the field is still absent.
    body = (
        b"\x08\x00" + b"\x3a\x06" + b"\x0a\x00" + b"\x12\x00" + b"\x28\x00"
    )  # id=0, publish{channel="",data=b""}
    assert codec.decode_commands(frame(body)) == [{"publish": {}}]
    # ... and the last occurrence of a scalar wins, even a default one
    assert codec.decode_commands(frame(b"\x08\x05\x08\x00")) == [{}]


def test_a_message_given_twice_is_merged() -> None:
    first = pb.Command(subscribe=pb.SubscribeRequest(channel="a", offset=1)).SerializeToString()
    second = pb.Command(subscribe=pb.SubscribeRequest(epoch="e", offset=2)).SerializeToString()
    assert pb.Command.FromString(first + second) == pb.Command(
        subscribe=pb.SubscribeRequest(channel="a", epoch="e", offset=2)
    )
    assert codec.decode_commands(frame(first + second)) == [
        {"subscribe": {"channel": "a", "epoch": "e", "offset": 2}}
    ]


def test_integers_are_truncated_to_their_width_as_protobuf_does() -> None:
    body = b"\x08" + uvarint(2**32 + 7)  # uint32 id given 33 bits
    assert pb.Command.FromString(body).id == 7
    assert codec.decode_commands(frame(body)) == [{"id": 7}]
    history = pb.Command(id=1, history=pb.HistoryRequest(channel="c", limit=-5))
    assert len(history.SerializeToString()) > 12  # a negative int32 is a 10-byte varint
    assert decode_one(history)["history"]["limit"] == -5
    subscribe = pb.Command(id=1, subscribe=pb.SubscribeRequest(offset=2**64 - 1, flag=-1))
    assert decode_one(subscribe)["subscribe"] == {"offset": 2**64 - 1, "flag": -1}


def test_connect_maps_with_missing_keys_and_values() -> None:
    # map entries written without key or value (allowed: both default)
    entry_without_value = b"\x0a\x01a"
    entry_without_key = b"\x12\x02\x18\x01"  # value SubscribeRequest{recover=true}
    connect = b"\x1a" + uvarint(len(entry_without_value)) + entry_without_value
    connect += b"\x1a" + uvarint(len(entry_without_key)) + entry_without_key
    body = b"\x22" + uvarint(len(connect)) + connect
    assert to_dict(pb.Command.FromString(body)) == {"connect": {"subs": {"a": {}, "": {"recover": True}}}}
    assert codec.decode_commands(frame(body)) == [{"connect": {"subs": {"a": {}, "": {"recover": True}}}}]
    # an entry holding an unknown field keeps its key and value, as Go's protobuf reads it
    entry = b"\x0a\x01a" + b"\x38\x07" + b"\x12\x02\x18\x01"
    connect = b"\x1a" + uvarint(len(entry)) + entry
    body = b"\x22" + uvarint(len(connect)) + connect
    assert codec.decode_commands(frame(body)) == [{"connect": {"subs": {"a": {"recover": True}}}}]
    headers = pb.Command(connect=pb.ConnectRequest(headers={"x": "", "y": "z"}))
    assert decode_one(headers) == {"connect": {"headers": {"x": "", "y": "z"}}}


def test_emulation_request() -> None:
    commands = frame(pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=b"1")))
    body = pb.EmulationRequest(node="n1", session="s1", data=commands).SerializeToString()
    assert codec.decode_emulation_request(body) == ("n1", "s1", commands)
    assert codec.decode_emulation_request(b"") == ("", "", b"")
    with pytest.raises(DecodeError):
        codec.decode_emulation_request(b"\x0a\x05n1")
    assert issubclass(DecodeError, ValueError)  # what the emulation endpoint catches


def test_data_bytes() -> None:
    assert codec.data_bytes(b'{"a":1}') == b'{"a":1}'
    for bad in ("text", None, 1, {"a": 1}):
        with pytest.raises(DecodeError):
            codec.data_bytes(bad)


# ================================================================ examples: malformed input


def _deep_filter(depth: int) -> bytes:
    node = b""
    for _ in range(depth):
        node = b"\x32" + uvarint(len(node)) + node  # FilterNode.nodes = 6
    sub = b"\x6a" + uvarint(len(node)) + node  # SubscribeRequest.tf = 13
    return b"\x2a" + uvarint(len(sub)) + sub  # Command.subscribe = 5


MALFORMED = {
    "empty frame": b"",
    "truncated length prefix": b"\x80",
    "length past the end": b"\x05\x08\x01",
    "truncated varint in a field": frame(b"\x08\x80"),
    "truncated key": frame(b"\x80"),
    "varint of 11 bytes": frame(b"\x08" + b"\xff" * 10 + b"\x01"),
    "length prefix of 11 bytes": b"\xff" * 10 + b"\x01",
    "id as length-delimited": frame(b"\x0a\x01x"),
    "method as a varint": frame(b"\x28\x01"),
    "sub-message past its parent": frame(b"\x2a\x02\x0a\x05abcde"),
    "string past the end": frame(b"\x2a\x07\x0a\x09abcdefg"),
    "string not UTF-8": frame(pb.Command(id=1).SerializeToString() + b"\x2a\x03\x0a\x01\xff"),
    "map key not UTF-8": frame(b"\x22\x05\x1a\x03\x0a\x01\xc3"),
    "map string value not UTF-8": frame(b"\x22\x07\x32\x05\x0a\x00\x12\x01\xff"),
    "group": frame(uvarint(100 << 3 | 3) + uvarint(100 << 3 | 4)),
    "wire type 7": frame(uvarint(100 << 3 | 7)),
    "field number 0": frame(b"\x00\x01"),
    "unknown fixed64 past the end": frame(b"\xc1\x3e\x01\x02"),
    "unknown fixed32 past the end": frame(b"\xc5\x3e\x01"),
    "unknown bytes past the end": frame(b"\xc2\x3e\x09abc"),
    "second command truncated": frame(pb.Command(id=1)) + b"\x03\x08",
    "nested 200 deep": frame(_deep_filter(200)),
    "text frame": "\x00",  # a str is never a protobuf frame
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode_commands(data)


def test_nesting_within_the_limit_decodes() -> None:
    (cmd,) = codec.decode_commands(frame(_deep_filter(90)))
    depth, node = 0, cmd["subscribe"]["tf"]
    while node:
        depth, node = depth + 1, node["nodes"][0]
    assert depth == 90


async def test_a_bad_frame_closes_the_session_with_3501_and_the_node_stays_up() -> None:
    node = make_node()
    conn = ProtobufConn(node)
    await conn.client.handle_frame(b"\x05\x08")
    assert conn.transport.closed == (codes.BAD_REQUEST.code, codes.BAD_REQUEST.reason)
    other = ProtobufConn(node)
    assert (await other.call(1, connect=pb.ConnectRequest())).HasField("connect")
    await node.end_session(other.client)


# ================================================================ examples: replies and pushes


def test_ping_is_the_empty_reply() -> None:
    assert codec.PING == b"\x00"
    assert replies(codec.PING) == [pb.Reply()]


def test_join_messages_concatenates_length_delimited_replies() -> None:
    parts = [
        codec.PING,
        codec.encode_reply(1, "publish", {}),
        codec.encode_error(2, 103, "permission denied"),
    ]
    assert codec.join_messages(parts[:1]) == codec.PING
    assert replies(codec.join_messages(parts)) == [
        pb.Reply(),
        pb.Reply(id=1, publish=pb.PublishResult()),
        pb.Reply(id=2, error=pb.Error(code=103, message="permission denied")),
    ]


def test_error_reply() -> None:
    assert reply(codec.encode_error(7, 100, "internal server error", True)) == pb.Reply(
        id=7, error=pb.Error(code=100, message="internal server error", temporary=True)
    )


def test_fragment_carries_pre_encoded_json_as_the_data_bytes() -> None:
    data = orjson.dumps({"answer": 42})
    fragment = codec.Fragment(data)
    assert isinstance(fragment, bytes) and fragment == data
    got = reply(codec.encode_reply(3, "rpc", {"data": fragment}))
    assert got == pb.Reply(id=3, rpc=pb.RPCResult(data=data))
    message = reply(codec.encode({"push": {"message": {"data": codec.Fragment(b'"hi"')}}}))
    assert message.push.message.data == b'"hi"'


def test_large_values_and_long_lengths() -> None:
    data = b"x" * 70_000  # a 3-byte length
    pub = Publication(data, offset=2**63, info=ClientInfo("u" * 200, "c"), tags={"k" * 300: "v"})
    got = reply(codec.encode_publication_push("ch", pub)).push.pub
    assert (
        got.data == data and got.offset == 2**63 and got.info.user == "u" * 200 and got.tags["k" * 300] == "v"
    )


BAD_SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("unknown key", {"id": 1, "publish": {"bogus": 1}}),
    ("unknown method", {"id": 1, "bogus": {}}),
    ("None", {"id": 1, "connect": {"data": None}}),
    ("str for int", {"id": "1"}),
    ("bool for int", {"id": True}),
    ("int for bool", {"id": 1, "connect": {"pong": 1}}),
    ("negative uint", {"id": -1}),
    ("uint32 overflow", {"id": 2**32}),
    ("uint64 overflow", {"push": {"pub": {"offset": 2**64}}}),
    ("str for bytes", {"id": 1, "rpc": {"data": "text"}}),
    ("orjson.Fragment for bytes", {"id": 1, "rpc": {"data": codec_json.Fragment(b"1")}}),
    ("bytes for str", {"id": 1, "connect": {"client": b"c"}}),
    ("list for message", {"id": 1, "rpc": []}),
    ("dict for repeated", {"id": 1, "history": {"publications": {}}}),
    ("non-str map value", {"push": {"pub": {"tags": {"a": 1}}}}),
    ("non-str map key", {"id": 1, "presence": {"presence": {1: {}}}}),
    ("unknown key in a map value", {"id": 1, "presence": {"presence": {"c": {"user": "u", "x": 1}}}}),
    ("unknown key in a list item", {"id": 1, "history": {"publications": [{"data": b"", "x": 1}]}}),
]


@pytest.mark.parametrize("message", [m for _, m in BAD_SHAPES], ids=[n for n, _ in BAD_SHAPES])
def test_a_shape_the_schema_does_not_describe_raises(message: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        codec.encode(message)


def test_encode_reply_and_push_check_their_keys_too() -> None:
    with pytest.raises(EncodeError):
        codec.encode_reply(1, "connect", {"clientt": "x"})
    with pytest.raises(EncodeError):
        codec.encode_push("ch", "publication", {})


# ================================================================ every shape a real session produces

SECRET = "test-secret-of-at-least-32-bytes-length!"
OPTIONS = dataclasses.replace(DEV_CHANNEL_OPTIONS, history_size=10, history_ttl=300.0)


def make_node(hooks: Hooks | None = None) -> Node:
    cfg = Config(
        token_hmac_secret_key=SECRET,
        allow_anonymous_connect_without_token=True,
        channel=OPTIONS,
        namespaces={},
        node_name="test-node",
    )
    return Node(cfg, MemoryBroker(), MemoryPresence(), hooks or Hooks())


class FakeProtobufTransport:
    """A transport that speaks Protobuf: collects what the session writes, records the close."""

    name = "fake"
    fmt = wire.PROTOBUF

    def __init__(self, emulation: bool = False) -> None:
        self.emulation = emulation
        self.written: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        self.written.append(codec.join_messages(messages))
        return 0

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)


class ProtobufConn:
    def __init__(self, node: Node, emulation: bool = False) -> None:
        self.node = node
        self.transport = FakeProtobufTransport(emulation)
        self.client = node.new_session(self.transport, scope={})
        self._read = 0

    def take(self) -> list[pb.Reply]:
        """Every Reply written since the last take, read by the oracle."""
        self.node.scheduler.flush()
        out = [r for data in self.transport.written[self._read :] for r in replies(data)]
        self._read = len(self.transport.written)
        return out

    async def call(self, cmd_id: int, **method: Any) -> pb.Reply:
        await self.client.handle_frame(frame(pb.Command(id=cmd_id, **method)))
        for r in self.take():
            if r.id == cmd_id:
                return r
        raise AssertionError(f"no reply to {cmd_id}")


def js(data: bytes) -> Any:
    return orjson.loads(data)


async def test_every_reply_and_push_of_a_session_is_read_by_the_oracle() -> None:
    async def on_connecting(ctx: Any) -> ConnectingResult:
        assert ctx.data == {"hello": 1}  # the session parsed the JSON inside the bytes
        return ConnectingResult(data={"welcome": True})

    async def on_subscribe(ctx: Any) -> SubscribeResult:
        return SubscribeResult(info={"role": "x"}, data={"sub": ctx.channel})

    sent: list[Any] = []

    async def on_message(ctx: Any) -> None:
        sent.append(ctx.data)

    async def echo(ctx: Any) -> Any:
        return {"echo": ctx.data}

    async def nothing(ctx: Any) -> Any:
        return None

    hooks = Hooks(on_connecting=on_connecting, on_subscribe=on_subscribe, on_message=on_message)
    hooks.rpc = {"echo": echo, "nothing": nothing}
    node = make_node(hooks)
    for n in range(3):
        await node.publish("server", {"n": n})
    epoch = (await node.broker.history(("", "server"), limit=0)).position.epoch

    # connect with server-side subscriptions (the token's channels), one of them recovering publications
    token = mint_token(SECRET, "alice", ttl=600, info={"name": "Alice"}, channels=["server", "server2"])
    conn = ProtobufConn(node)
    connect = pb.ConnectRequest(
        token=token,
        data=b'{"hello":1}',
        name="swift",
        subs={"server": pb.SubscribeRequest(recover=True, offset=1, epoch=epoch)},
    )
    r = await conn.call(1, connect=connect)
    assert r.HasField("connect"), r
    result = r.connect
    assert result.client == conn.client.id and result.expires and result.ttl > 0 and result.pong
    assert js(result.data) == {"welcome": True}
    server = result.subs["server"]
    assert server.recovered and server.was_recovering and server.epoch == epoch and server.offset == 3
    assert [js(p.data) for p in server.publications] == [{"n": 1}, {"n": 2}]
    assert [p.offset for p in server.publications] == [2, 3]
    assert result.subs["server2"].recoverable and result.subs["server2"].positioned

    # subscribe (with hook data), then the join push of a second subscriber
    r = await conn.call(2, subscribe=pb.SubscribeRequest(channel="room", data=b'{"please":1}'))
    assert r.subscribe.recoverable and js(r.subscribe.data) == {"sub": "room"}
    other = ProtobufConn(node)
    assert (await other.call(1, connect=pb.ConnectRequest(data=b'{"hello":1}'))).HasField("connect")
    assert (await other.call(2, subscribe=pb.SubscribeRequest(channel="room"))).HasField("subscribe")
    pushes = [x.push for x in conn.take()]
    joins = [p for p in pushes if p.HasField("join")]
    assert joins and joins[-1].channel == "room" and joins[-1].join.info.client == other.client.id
    assert js(joins[-1].join.info.chan_info) == {"role": "x"}

    # publish: an empty reply to the publisher, a publication push to the subscribers
    r = await conn.call(3, publish=pb.PublishRequest(channel="room", data=b'{"text":"hi"}'))
    assert r == pb.Reply(id=3, publish=pb.PublishResult())
    (pub,) = [x.push for x in other.take() if x.push.HasField("pub")]
    assert pub.channel == "room" and js(pub.pub.data) == {"text": "hi"} and pub.pub.offset == 1
    assert pub.pub.info.user == "alice" and js(pub.pub.info.conn_info) == {"name": "Alice"}

    # presence, presence stats, history
    r = await conn.call(4, presence=pb.PresenceRequest(channel="room"))
    assert set(r.presence.presence) == {conn.client.id, other.client.id}
    assert r.presence.presence[conn.client.id].user == "alice"
    r = await conn.call(5, presence_stats=pb.PresenceStatsRequest(channel="room"))
    assert r.presence_stats.num_clients == 2 and r.presence_stats.num_users >= 1
    r = await conn.call(6, history=pb.HistoryRequest(channel="room", limit=-1))
    assert (
        r.history.offset == 1
        and r.history.epoch
        and [js(p.data) for p in r.history.publications] == [{"text": "hi"}]
    )
    r = await conn.call(
        7, history=pb.HistoryRequest(channel="room", since=pb.StreamPosition(offset=9, epoch="x"))
    )
    assert r.error.code == 112  # unrecoverable position

    # rpc with and without data, send, refresh, sub_refresh, unsubscribe
    r = await conn.call(8, rpc=pb.RPCRequest(method="echo", data=b"[1,2]"))
    assert js(r.rpc.data) == {"echo": [1, 2]}
    r = await conn.call(9, rpc=pb.RPCRequest(method="nothing"))
    assert r == pb.Reply(id=9, rpc=pb.RPCResult())
    await conn.client.handle_frame(frame(pb.Command(send=pb.SendRequest(data=b'"note"'))))
    assert sent == ["note"]
    r = await conn.call(10, refresh=pb.RefreshRequest(token=mint_token(SECRET, "alice", ttl=900)))
    assert r.refresh.client == conn.client.id and r.refresh.expires and r.refresh.ttl > 600
    sub_token = mint_token(SECRET, "alice", ttl=900, channel="room")
    r = await conn.call(11, sub_refresh=pb.SubRefreshRequest(channel="room", token=sub_token))
    assert r.sub_refresh.expires and r.sub_refresh.ttl > 600
    r = await conn.call(12, unsubscribe=pb.UnsubscribeRequest(channel="room"))
    assert r == pb.Reply(id=12, unsubscribe=pb.UnsubscribeResult())
    leaves = [x.push for x in other.take() if x.push.HasField("leave")]
    assert leaves and leaves[-1].leave.info.client == conn.client.id

    # an error reply, and a command with no method
    r = await conn.call(13, subscribe=pb.SubscribeRequest(channel="server"))
    assert r.error.code == 105  # already subscribed
    r = await conn.call(14)
    assert r.error.code == 104

    # server-side pushes: message, subscribe, unsubscribe, and the ping
    assert node.send_message("alice", {"m": 1}, client_id=conn.client.id) == 1
    assert await node.subscribe_user("alice", "pushed", client_id=conn.client.id) == 1
    assert await node.unsubscribe_user("alice", "pushed", client_id=conn.client.id) == 1
    conn.client.send_ping(0.0)
    out = conn.take()
    kinds = [_push_kind(x) for x in out]
    assert [k for k in kinds if k != "join"] == ["message", "subscribe", "unsubscribe", "ping"], kinds
    by_kind = dict(zip(kinds, out, strict=True))
    assert js(by_kind["message"].push.message.data) == {"m": 1}
    subscribe = by_kind["subscribe"].push
    assert subscribe.channel == "pushed" and subscribe.subscribe.recoverable and subscribe.subscribe.epoch
    unsubscribe = by_kind["unsubscribe"].push
    assert unsubscribe.channel == "pushed"
    assert unsubscribe.unsubscribe == pb.Unsubscribe(code=2000, reason="server unsubscribe")
    assert by_kind["ping"] == pb.Reply()
    await conn.client.handle_frame(b"\x00")  # the pong
    assert conn.transport.closed is None

    # a stream (emulation) session ends with a disconnect push
    stream = ProtobufConn(node, emulation=True)
    r = await stream.call(1, connect=pb.ConnectRequest(data=b'{"hello":1}'))
    assert r.connect.session == stream.client.session
    node.disconnect_user("", client_id=stream.client.id)
    (last,) = stream.take()
    assert last.push.disconnect == pb.Disconnect(
        code=codes.FORCE_NO_RECONNECT.code, reason=codes.FORCE_NO_RECONNECT.reason
    )

    for c in (conn, other, stream):
        await node.end_session(c.client)


def _push_kind(r: pb.Reply) -> str:
    if not r.HasField("push"):
        return "ping" if r == pb.Reply() else "reply"
    fields = [f.name for f, _ in r.push.ListFields() if f.message_type is not None]
    (kind,) = fields
    return kind
