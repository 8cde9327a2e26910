"""The Protobuf variant of the Centrifuge client protocol v2 (sans-I/O).

The contract is centrifugal/protocol ``definitions/client.proto``; this module describes its messages as
tables and reads and writes the protobuf wire format itself (no generated code), with the same names and
dict shapes as ``hub.codec_json``, so a session works with either module:

- a client frame (a binary WebSocket message, an emulation request's ``data``) is a sequence of ``Command``
  messages, each preceded by its length as a varint; ``decode_commands`` turns it into the dicts the JSON
  codec would have produced (only fields present with a non-default value, as JSON clients omit them;
  ``bytes`` fields such as ``data`` stay raw bytes). An empty ``Command`` (the byte 0x00) is the pong, ``{}``.
- a server frame is a sequence of length-delimited ``Reply`` messages; every ``encode*`` function returns one
  such ``Reply`` with its length prefix, so a batch is plain concatenation. ``PING`` is the empty ``Reply``.
  A push is the ``Reply`` field ``push``.

Data is never parsed here: a ``bytes`` field is written as given (``Fragment(b)`` marks bytes that were
encoded before, as ``orjson.Fragment`` does for the JSON codec), so a publication is encoded once per format.

Policies:

- Decoding skips unknown fields of any proto3 wire type (forward compatibility, as protobuf requires) and
  raises ``DecodeError`` for malformed input: a truncated varint, a varint over 10 bytes, a length past the
  end of its message, a known field with the wrong wire type, a string that is not UTF-8, a group or a
  reserved wire type, field number 0, messages nested over 100 deep. Integers narrower than 64 bits are
  truncated as protobuf parsers do.
- Encoding is strict: a key the schema does not know, a value of the wrong type or out of range raises
  ``EncodeError`` (a bug in the caller, never silently dropped). Scalars equal to their proto3 default (0,
  False, "", b"") are left out, as every proto3 encoder does; a message value is always written, even empty.

Errors::

    ValueError
     +-- DecodeError   bad client bytes (the session answers with the protocol's bad-request close)
     +-- EncodeError   a dict the schema does not describe (a bug on our side)
"""

from __future__ import annotations

from typing import Any

from channels.publication import ClientInfo, Publication
from sync.protocol import var_uint

__all__ = [
    "PING",
    "DecodeError",
    "EncodeError",
    "Fragment",
    "data_bytes",
    "decode_commands",
    "decode_emulation_request",
    "delta_publication_dict",
    "encode",
    "encode_delta_publication_push",
    "encode_error",
    "encode_join_push",
    "encode_leave_push",
    "encode_publication_push",
    "encode_push",
    "encode_reply",
    "info_dict",
    "join_messages",
    "publication_dict",
]

PING = b"\x00"
"""The empty ``Reply``, length-prefixed: the server's ping."""


class DecodeError(ValueError):
    """A frame is not a sequence of length-delimited protobuf ``Command`` messages."""


class EncodeError(ValueError):
    """A dict to encode does not fit the message schema (a bug in the caller)."""


class Fragment(bytes):
    """Bytes encoded before (a publication's or a reply's JSON data), written as a ``bytes`` field unchanged.

    The Protobuf counterpart of ``orjson.Fragment``: ``codec.Fragment(orjson.dumps(x))`` puts the JSON text of
    ``x`` into the ``data`` field. Any ``bytes`` value is accepted for a ``bytes`` field; this name only keeps
    the session's code the same for both codecs."""

    __slots__ = ()


# ---------------------------------------------------------------- the schema (client.proto as tables)

# Field kinds. The varint kinds come first: ``kind <= _BOOL`` means wire type 0, the rest are wire type 2.
_U32, _U64, _I32, _I64, _S64, _BOOL = 0, 1, 2, 3, 4, 5
_STR, _BYTES, _MSG, _REP_MSG, _REP_STR, _MAP_STR, _MAP_MSG = 6, 7, 8, 9, 10, 11, 12

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_RANGES = {
    _U32: (0, _MASK32),
    _U64: (0, _MASK64),
    _I32: (-(2**31), 2**31 - 1),
    _I64: (-(2**63), 2**63 - 1),
    _S64: (-(2**63), 2**63 - 1),
}
_DEFAULTS: dict[int, Any] = {_U32: 0, _U64: 0, _I32: 0, _I64: 0, _S64: 0, _BOOL: False, _STR: "", _BYTES: b""}

# message name -> [(field name, number, kind, message type of a message/map value)]
_SPEC: dict[str, list[tuple[str, int, int, str]]] = {
    "Error": [("code", 1, _U32, ""), ("message", 2, _STR, ""), ("temporary", 3, _BOOL, "")],
    "EmulationRequest": [("node", 1, _STR, ""), ("session", 2, _STR, ""), ("data", 3, _BYTES, "")],
    "Command": [
        ("id", 1, _U32, ""),
        ("connect", 4, _MSG, "ConnectRequest"),
        ("subscribe", 5, _MSG, "SubscribeRequest"),
        ("unsubscribe", 6, _MSG, "UnsubscribeRequest"),
        ("publish", 7, _MSG, "PublishRequest"),
        ("presence", 8, _MSG, "PresenceRequest"),
        ("presence_stats", 9, _MSG, "PresenceStatsRequest"),
        ("history", 10, _MSG, "HistoryRequest"),
        ("ping", 11, _MSG, "PingRequest"),
        ("send", 12, _MSG, "SendRequest"),
        ("rpc", 13, _MSG, "RPCRequest"),
        ("refresh", 14, _MSG, "RefreshRequest"),
        ("sub_refresh", 15, _MSG, "SubRefreshRequest"),
    ],
    "Reply": [
        ("id", 1, _U32, ""),
        ("error", 2, _MSG, "Error"),
        ("push", 4, _MSG, "Push"),
        ("connect", 5, _MSG, "ConnectResult"),
        ("subscribe", 6, _MSG, "SubscribeResult"),
        ("unsubscribe", 7, _MSG, "UnsubscribeResult"),
        ("publish", 8, _MSG, "PublishResult"),
        ("presence", 9, _MSG, "PresenceResult"),
        ("presence_stats", 10, _MSG, "PresenceStatsResult"),
        ("history", 11, _MSG, "HistoryResult"),
        ("ping", 12, _MSG, "PingResult"),
        ("rpc", 13, _MSG, "RPCResult"),
        ("refresh", 14, _MSG, "RefreshResult"),
        ("sub_refresh", 15, _MSG, "SubRefreshResult"),
    ],
    "Push": [
        ("id", 1, _I64, ""),
        ("channel", 2, _STR, ""),
        ("pub", 4, _MSG, "Publication"),
        ("join", 5, _MSG, "Join"),
        ("leave", 6, _MSG, "Leave"),
        ("unsubscribe", 7, _MSG, "Unsubscribe"),
        ("message", 8, _MSG, "Message"),
        ("subscribe", 9, _MSG, "Subscribe"),
        ("connect", 10, _MSG, "Connect"),
        ("disconnect", 11, _MSG, "Disconnect"),
        ("refresh", 12, _MSG, "Refresh"),
    ],
    "Dictionary": [("id", 1, _STR, ""), ("data", 2, _BYTES, ""), ("data_b64", 3, _STR, "")],
    "ClientInfo": [
        ("user", 1, _STR, ""),
        ("client", 2, _STR, ""),
        ("conn_info", 3, _BYTES, ""),
        ("chan_info", 4, _BYTES, ""),
    ],
    "Publication": [
        ("data", 4, _BYTES, ""),
        ("info", 5, _MSG, "ClientInfo"),
        ("offset", 6, _U64, ""),
        ("tags", 7, _MAP_STR, ""),
        ("delta", 8, _BOOL, ""),
        ("time", 9, _I64, ""),
        ("channel", 10, _STR, ""),
        ("key", 11, _STR, ""),
        ("removed", 12, _BOOL, ""),
        ("score", 13, _S64, ""),
        ("epoch", 14, _STR, ""),
        ("prev_data", 15, _BYTES, ""),
        ("version", 16, _U64, ""),
    ],
    "Join": [("info", 1, _MSG, "ClientInfo")],
    "Leave": [("info", 1, _MSG, "ClientInfo")],
    "Unsubscribe": [("code", 2, _U32, ""), ("reason", 3, _STR, "")],
    "Subscribe": [
        ("recoverable", 1, _BOOL, ""),
        ("epoch", 4, _STR, ""),
        ("offset", 5, _U64, ""),
        ("positioned", 6, _BOOL, ""),
        ("data", 7, _BYTES, ""),
    ],
    "Message": [("data", 1, _BYTES, "")],
    "Connect": [
        ("client", 1, _STR, ""),
        ("version", 2, _STR, ""),
        ("data", 3, _BYTES, ""),
        ("subs", 4, _MAP_MSG, "SubscribeResult"),
        ("expires", 5, _BOOL, ""),
        ("ttl", 6, _U32, ""),
        ("ping", 7, _U32, ""),
        ("pong", 8, _BOOL, ""),
        ("session", 9, _STR, ""),
        ("node", 10, _STR, ""),
        ("time", 11, _I64, ""),
    ],
    "Disconnect": [("code", 1, _U32, ""), ("reason", 2, _STR, ""), ("reconnect", 3, _BOOL, "")],
    "Refresh": [("expires", 1, _BOOL, ""), ("ttl", 2, _U32, "")],
    "ConnectRequest": [
        ("token", 1, _STR, ""),
        ("data", 2, _BYTES, ""),
        ("subs", 3, _MAP_MSG, "SubscribeRequest"),
        ("name", 4, _STR, ""),
        ("version", 5, _STR, ""),
        ("headers", 6, _MAP_STR, ""),
        ("flag", 7, _I64, ""),
        ("dict", 8, _STR, ""),
        ("profile", 9, _STR, ""),
    ],
    "ConnectResult": [
        ("client", 1, _STR, ""),
        ("version", 2, _STR, ""),
        ("expires", 3, _BOOL, ""),
        ("ttl", 4, _U32, ""),
        ("data", 5, _BYTES, ""),
        ("subs", 6, _MAP_MSG, "SubscribeResult"),
        ("ping", 7, _U32, ""),
        ("pong", 8, _BOOL, ""),
        ("session", 9, _STR, ""),
        ("node", 10, _STR, ""),
        ("time", 11, _I64, ""),
        ("flag", 12, _I64, ""),
        ("dict", 13, _MSG, "Dictionary"),
    ],
    "RefreshRequest": [("token", 1, _STR, "")],
    "RefreshResult": [
        ("client", 1, _STR, ""),
        ("version", 2, _STR, ""),
        ("expires", 3, _BOOL, ""),
        ("ttl", 4, _U32, ""),
    ],
    "SubscribeRequest": [
        ("channel", 1, _STR, ""),
        ("token", 2, _STR, ""),
        ("recover", 3, _BOOL, ""),
        ("epoch", 6, _STR, ""),
        ("offset", 7, _U64, ""),
        ("data", 8, _BYTES, ""),
        ("positioned", 9, _BOOL, ""),
        ("recoverable", 10, _BOOL, ""),
        ("join_leave", 11, _BOOL, ""),
        ("delta", 12, _STR, ""),
        ("tf", 13, _MSG, "FilterNode"),
        ("flag", 14, _I64, ""),
        ("type", 15, _I32, ""),
        ("phase", 16, _I32, ""),
        ("cursor", 17, _STR, ""),
        ("limit", 18, _I32, ""),
        ("asc", 19, _BOOL, ""),
    ],
    "SubscribeResult": [
        ("expires", 1, _BOOL, ""),
        ("ttl", 2, _U32, ""),
        ("recoverable", 3, _BOOL, ""),
        ("epoch", 6, _STR, ""),
        ("publications", 7, _REP_MSG, "Publication"),
        ("recovered", 8, _BOOL, ""),
        ("offset", 9, _U64, ""),
        ("positioned", 10, _BOOL, ""),
        ("data", 11, _BYTES, ""),
        ("was_recovering", 12, _BOOL, ""),
        ("delta", 13, _BOOL, ""),
        ("id", 14, _I64, ""),
        ("type", 15, _I32, ""),
        ("phase", 16, _I32, ""),
        ("cursor", 17, _STR, ""),
        ("state", 18, _REP_MSG, "Publication"),
        ("publish_debounce", 19, _U32, ""),
    ],
    "KeyedItem": [("key", 1, _STR, ""), ("version", 2, _U64, "")],
    "TrackBatch": [("signature", 1, _STR, ""), ("items", 2, _REP_MSG, "KeyedItem")],
    "SubRefreshRequest": [
        ("channel", 1, _STR, ""),
        ("token", 2, _STR, ""),
        ("type", 3, _I32, ""),
        ("track", 4, _REP_MSG, "TrackBatch"),
        ("untrack", 5, _REP_STR, ""),
    ],
    "SubRefreshResult": [
        ("expires", 1, _BOOL, ""),
        ("ttl", 2, _U32, ""),
        ("items", 3, _REP_MSG, "Publication"),
    ],
    "UnsubscribeRequest": [("channel", 1, _STR, "")],
    "UnsubscribeResult": [],
    "PublishRequest": [
        ("channel", 1, _STR, ""),
        ("data", 2, _BYTES, ""),
        ("type", 3, _I32, ""),
        ("key", 4, _STR, ""),
        ("removed", 5, _BOOL, ""),
    ],
    "PublishResult": [],
    "PresenceRequest": [("channel", 1, _STR, "")],
    "PresenceResult": [("presence", 1, _MAP_MSG, "ClientInfo")],
    "PresenceStatsRequest": [("channel", 1, _STR, "")],
    "PresenceStatsResult": [("num_clients", 1, _U32, ""), ("num_users", 2, _U32, "")],
    "StreamPosition": [("offset", 1, _U64, ""), ("epoch", 2, _STR, "")],
    "HistoryRequest": [
        ("channel", 1, _STR, ""),
        ("limit", 7, _I32, ""),
        ("since", 8, _MSG, "StreamPosition"),
        ("reverse", 9, _BOOL, ""),
    ],
    "HistoryResult": [
        ("publications", 1, _REP_MSG, "Publication"),
        ("epoch", 2, _STR, ""),
        ("offset", 3, _U64, ""),
    ],
    "PingRequest": [],
    "PingResult": [],
    "RPCRequest": [("data", 1, _BYTES, ""), ("method", 2, _STR, "")],
    "RPCResult": [("data", 1, _BYTES, "")],
    "SendRequest": [("data", 1, _BYTES, "")],
    "FilterNode": [
        ("op", 1, _STR, ""),
        ("key", 2, _STR, ""),
        ("cmp", 3, _STR, ""),
        ("val", 4, _STR, ""),
        ("vals", 5, _REP_STR, ""),
        ("nodes", 6, _REP_MSG, "FilterNode"),
    ],
}


def _uvarint(n: int) -> bytes:
    """An unsigned integer (below 2**64) as a protobuf varint: the same base-128 encoding as lib0's
    ``writeVarUint``, so larger values go through ``sync.protocol.var_uint``."""
    if n < _NV:
        return _VARINTS[n]
    return var_uint(n)


# Every varint of one or two bytes, looked up rather than computed on the fan-out path (about 600 KB).
_NV = 0x4000
_VARINTS = [bytes((i,)) for i in range(0x80)] + [bytes((i & 0x7F | 0x80, i >> 7)) for i in range(0x80, _NV)]


class _Message:
    """One message type: its fields by number (for reading) and by name (for writing)."""

    __slots__ = ("name", "by_number", "numbered", "by_name")

    def __init__(self, name: str) -> None:
        self.name = name
        # number -> (name, kind, value message)
        self.by_number: dict[int, tuple[str, int, _Message | None]] = {}
        self.numbered: tuple[tuple[str, int, _Message | None] | None, ...] = ()
        """``by_number`` as a tuple indexed by number (None for the numbers not used)."""
        # name -> (key bytes, kind, value message)
        self.by_name: dict[str, tuple[bytes, int, _Message | None]] = {}

    def index(self) -> None:
        top = max(self.by_number, default=0)
        self.numbered = tuple(self.by_number.get(n) for n in range(top + 1))


def _build_schema() -> dict[str, _Message]:
    messages = {name: _Message(name) for name in _SPEC}
    for name, fields in _SPEC.items():
        msg = messages[name]
        for field, number, kind, value_type in fields:
            sub = messages[value_type] if value_type else None
            wire_type = 0 if kind <= _BOOL else 2
            msg.by_number[number] = (field, kind, sub)
            msg.by_name[field] = (_uvarint(number << 3 | wire_type), kind, sub)
        msg.index()
    return messages


_SCHEMA = _build_schema()
_COMMAND = _SCHEMA["Command"]
_REPLY = _SCHEMA["Reply"]
_EMULATION_REQUEST = _SCHEMA["EmulationRequest"]


# ---------------------------------------------------------------- reading


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (not reading past ``end``) and the position after it."""
    result = 0
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift == 70:
            raise DecodeError("varint longer than 10 bytes")
    raise DecodeError("truncated varint")


def _skip(buf: bytes, pos: int, end: int, wire_type: int, number: int) -> int:
    """Step over an unknown field's value."""
    if wire_type == 0:
        return _varint(buf, pos, end)[1]
    if wire_type == 2:
        size, pos = _varint(buf, pos, end)
        pos += size
    elif wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    else:  # 3/4 are proto2 groups, which proto3 has no use for; 6/7 are not wire types
        raise DecodeError(f"field {number}: unsupported wire type {wire_type}")
    if pos > end:
        raise DecodeError(f"field {number}: value runs past the end")
    return pos


_MAX_DEPTH = 100
"""Protobuf's default recursion limit: deeper input (a FilterNode tree) is refused, not a RecursionError."""


def _string(buf: bytes, start: int, stop: int, name: str) -> str:
    try:
        return buf[start:stop].decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{name}: string is not UTF-8") from None


def _parse(buf: bytes, pos: int, end: int, msg: _Message, out: dict[str, Any], depth: int = 0) -> None:
    """Merge the fields of one ``msg`` in ``buf[pos:end]`` into ``out`` (protobuf merge semantics: the last
    scalar wins, repeated fields and map entries accumulate, a message given twice is merged)."""
    if depth > _MAX_DEPTH:
        raise DecodeError(f"{msg.name}: messages nested deeper than {_MAX_DEPTH}")
    fields = msg.numbered
    known = len(fields)
    while pos < end:
        key = buf[pos]
        if 8 <= key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
            if key < 8 or key > _MASK32:
                raise DecodeError(f"{msg.name}: invalid field number")
        number = key >> 3
        wire_type = key & 7
        field = fields[number] if number < known else None
        if field is None:
            pos = _skip(buf, pos, end, wire_type, number)
            continue
        name, kind, sub = field
        if kind <= _BOOL:
            if wire_type != 0:
                raise DecodeError(f"{msg.name}.{name}: wire type {wire_type}, expected a varint")
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = _varint(buf, pos, end)
            if value:
                if kind == _BOOL:
                    out[name] = True
                    continue
                if kind == _U32:
                    value &= _MASK32
                elif kind == _S64:
                    value &= _MASK64
                    value = (value >> 1) ^ -(value & 1)
                elif kind == _I32:
                    value &= _MASK32
                    if value > 0x7FFFFFFF:
                        value -= 1 << 32
                else:  # 64 bits (a 10-byte varint can carry up to 70)
                    value &= _MASK64
                    if kind == _I64 and value > 0x7FFFFFFFFFFFFFFF:
                        value -= 1 << 64
            if value:
                out[name] = value
            else:
                out.pop(name, None)
            continue
        if wire_type != 2:
            raise DecodeError(f"{msg.name}.{name}: wire type {wire_type}, expected length-delimited")
        if pos < end and buf[pos] < 0x80:
            size = buf[pos]
            pos += 1
        else:
            size, pos = _varint(buf, pos, end)
        stop = pos + size
        if stop > end:
            raise DecodeError(f"{msg.name}.{name}: length past the end")
        if kind == _STR:
            if size:
                try:
                    out[name] = buf[pos:stop].decode()
                except UnicodeDecodeError:
                    raise DecodeError(f"{msg.name}.{name}: string is not UTF-8") from None
            else:
                out.pop(name, None)
        elif kind == _BYTES:
            if size:
                out[name] = buf[pos:stop]
            else:
                out.pop(name, None)
        elif kind == _MSG:
            assert sub is not None
            child = out.get(name)
            if child is None:
                child = out[name] = {}
            _parse(buf, pos, stop, sub, child, depth + 1)
        elif kind == _REP_MSG:
            assert sub is not None
            item: dict[str, Any] = {}
            _parse(buf, pos, stop, sub, item, depth + 1)
            out.setdefault(name, []).append(item)
        elif kind == _REP_STR:
            out.setdefault(name, []).append(_string(buf, pos, stop, name))
        else:  # a map entry: key = 1 (string), value = 2
            entry: dict[str, Any] = {}
            _parse(buf, pos, stop, _MAP_ENTRY, entry)
            raw: bytes = entry.get("value", b"")
            item_value: Any
            if kind == _MAP_MSG:
                assert sub is not None
                item_value = {}
                _parse(raw, 0, len(raw), sub, item_value, depth + 1)
            else:
                item_value = _string(raw, 0, len(raw), name)
            out.setdefault(name, {})[entry.get("key", "")] = item_value
        pos = stop


# A map entry is read as a message of a string key and a value kept as raw bytes until its type is known.
_MAP_ENTRY = _Message("MapEntry")
_MAP_ENTRY.by_number = {1: ("key", _STR, None), 2: ("value", _BYTES, None)}
_MAP_ENTRY.index()


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise DecodeError("a Protobuf frame must be binary")


def decode_commands(data: str | bytes) -> list[dict[str, Any]]:
    """Split a frame into length-delimited ``Command`` messages, each as a dict shaped as the JSON codec's.

    Raises DecodeError on an empty frame and on anything malformed (see the module docstring)."""
    buf = _as_bytes(data)
    end = len(buf)
    if not end:
        raise DecodeError("empty frame")
    commands: list[dict[str, Any]] = []
    pos = 0
    while pos < end:
        size, pos = _varint(buf, pos, end)
        stop = pos + size
        if stop > end:
            raise DecodeError("command length past the end of the frame")
        cmd: dict[str, Any] = {}
        _parse(buf, pos, stop, _COMMAND, cmd)
        commands.append(cmd)
        pos = stop
    return commands


def decode_emulation_request(body: bytes) -> tuple[str, str, bytes]:
    """The ``EmulationRequest`` a bidirectional-emulation client POSTs (not length-delimited): the node and
    session it is for and its ``data``, a frame of commands for ``decode_commands``."""
    buf = _as_bytes(body)
    req: dict[str, Any] = {}
    _parse(buf, 0, len(buf), _EMULATION_REQUEST, req)
    return req.get("node", ""), req.get("session", ""), req.get("data", b"")


def data_bytes(value: Any) -> bytes:
    """A command's data field: Protobuf carries it as bytes already."""
    if isinstance(value, bytes):
        return value
    raise DecodeError(f"data must be bytes, not {type(value).__name__}")


# ---------------------------------------------------------------- writing


def _delimited(key: bytes, body: bytes) -> bytes:
    size = len(body)
    return key + (_VARINTS[size] if size < _NV else _uvarint(size)) + body


def _encode(msg: _Message, values: dict[str, Any]) -> bytes:
    """The fields of one ``msg`` (without a length prefix)."""
    if type(values) is not dict:
        raise EncodeError(f"{msg.name} must be a dict, not {type(values).__name__}")
    fields = msg.by_name
    parts: list[bytes] = []
    for name, value in values.items():
        field = fields.get(name)
        if field is None:
            raise EncodeError(f"{msg.name} has no field {name!r}")
        key, kind, sub = field
        if kind <= _BOOL:
            if kind == _BOOL:
                if type(value) is not bool:
                    raise EncodeError(f"{msg.name}.{name} must be a bool, not {type(value).__name__}")
                if value:
                    parts.append(key + b"\x01")
                continue
            if type(value) is not int:
                raise EncodeError(f"{msg.name}.{name} must be an int, not {type(value).__name__}")
            low, high = _RANGES[kind]
            if not low <= value <= high:
                raise EncodeError(f"{msg.name}.{name}: {value} out of range")
            if value:
                if kind == _S64:
                    value = (value << 1) ^ (value >> 63)
                parts.append(key + _uvarint(value & _MASK64))
        elif kind == _STR:
            if type(value) is not str:
                raise EncodeError(f"{msg.name}.{name} must be a str, not {type(value).__name__}")
            if value:
                parts.append(_delimited(key, value.encode()))
        elif kind == _BYTES:
            if not isinstance(value, bytes):
                raise EncodeError(f"{msg.name}.{name} must be bytes, not {type(value).__name__}")
            if value:
                parts.append(_delimited(key, value))
        elif kind == _MSG:
            assert sub is not None
            parts.append(_delimited(key, _encode(sub, value)))
        elif kind == _REP_MSG:
            assert sub is not None
            if type(value) is not list and type(value) is not tuple:
                raise EncodeError(f"{msg.name}.{name} must be a list, not {type(value).__name__}")
            for item in value:
                parts.append(_delimited(key, _encode(sub, item)))
        elif kind == _REP_STR:
            if type(value) is not list and type(value) is not tuple:
                raise EncodeError(f"{msg.name}.{name} must be a list, not {type(value).__name__}")
            for item in value:
                if type(item) is not str:
                    raise EncodeError(f"{msg.name}.{name} items must be str, not {type(item).__name__}")
                parts.append(_delimited(key, item.encode()))
        else:
            if type(value) is not dict:
                raise EncodeError(f"{msg.name}.{name} must be a dict, not {type(value).__name__}")
            for map_key, map_value in value.items():
                if type(map_key) is not str:
                    raise EncodeError(f"{msg.name}.{name} keys must be str, not {type(map_key).__name__}")
                if kind == _MAP_MSG:
                    assert sub is not None
                    encoded = _encode(sub, map_value)
                elif type(map_value) is str:
                    encoded = map_value.encode()
                else:
                    raise EncodeError(f"{msg.name}.{name} values must be str, not {type(map_value).__name__}")
                entry = _delimited(b"\x0a", map_key.encode()) + _delimited(b"\x12", encoded)
                parts.append(_delimited(key, entry))
    return b"".join(parts)


def _frame(body: bytes) -> bytes:
    """One ``Reply`` as it goes into a frame: its length, then its bytes."""
    return _uvarint(len(body)) + body


def info_dict(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info is not None:
        out["conn_info"] = info.conn_info
    if info.chan_info is not None:
        out["chan_info"] = info.chan_info
    return out


def publication_dict(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {
        "data": pub.data
    }  # in field order, so encode() writes encode_publication_push's bytes
    if pub.info is not None:
        out["info"] = info_dict(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = pub.tags
    return out


def encode(message: dict[str, Any]) -> bytes:
    """A ``Reply`` given as a dict shaped as the JSON one (``{"push": {"message": {"data": ...}}}``)."""
    return _frame(_encode(_REPLY, message))


def encode_reply(cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
    return _frame(_encode(_REPLY, {"id": cmd_id, method: result}))


def encode_error(cmd_id: int, code: int, message: str, temporary: bool = False) -> bytes:
    return _frame(
        _encode(_REPLY, {"id": cmd_id, "error": {"code": code, "message": message, "temporary": temporary}})
    )


def encode_push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    return _frame(_encode(_REPLY, {"push": {"channel": channel, kind: body}}))


# The fan-out path: a publication, join or leave push is written directly, without the tables (same bytes).
# Reply.push = 4, Push.channel = 2, Push.pub = 4, Push.join = 5, Push.leave = 6, Join/Leave.info = 1,
# Publication.data = 4, .info = 5, .offset = 6, .tags = 7, ClientInfo fields 1-4, map entry key 1, value 2.


_last_info: tuple[ClientInfo | None, bytes] = (None, b"")
"""The last ClientInfo encoded and its bytes: a publisher's every publication carries the same object."""


def _client_info(info: ClientInfo) -> bytes:
    # Inlined field by field: this runs once per publication with publisher info and per join/leave.
    global _last_info
    last = _last_info
    if last[0] is info:
        return last[1]
    out = b""
    value = info.user.encode()
    size = len(value)
    if size:
        out = b"\x0a" + (_VARINTS[size] if size < _NV else _uvarint(size)) + value
    value = info.client.encode()
    size = len(value)
    if size:
        out += b"\x12" + (_VARINTS[size] if size < _NV else _uvarint(size)) + value
    raw = info.conn_info
    if raw:
        size = len(raw)
        out += b"\x1a" + (_VARINTS[size] if size < _NV else _uvarint(size)) + raw
    raw = info.chan_info
    if raw:
        size = len(raw)
        out += b"\x22" + (_VARINTS[size] if size < _NV else _uvarint(size)) + raw
    _last_info = (info, out)
    return out


def _tags(tags: dict[str, str]) -> bytes:
    """``Publication.tags`` (7), a ``map<string, string>``: one entry (key 1, value 2) per tag."""
    out = b""
    for tag, value in tags.items():
        key = tag.encode()
        val = value.encode()
        k = len(key)
        v = len(val)
        if k < 0x80 and v < 0x80:  # key and value lengths of one byte each: the usual short tag
            out += b"".join(
                (b"\x3a", _VARINTS[k + v + 4], b"\x0a", _VARINTS[k], key, b"\x12", _VARINTS[v], val)
            )
        else:
            entry = b"\x0a" + _uvarint(k) + key + b"\x12" + _uvarint(v) + val
            out += b"\x3a" + _uvarint(len(entry)) + entry
    return out


def _push(channel: str, kind_key: bytes, body: bytes, data: bytes = b"", tail: bytes = b"") -> bytes:
    """A length-prefixed ``Reply{push: Push{channel, <kind>: body + data + tail}}``, joined in one copy
    (``data`` is the publication's payload, the part that may be large)."""
    name = channel.encode()
    size = len(name)
    head = b"\x12" + (_VARINTS[size] if size < _NV else _uvarint(size)) + name if size else b""
    size = len(body) + len(data) + len(tail)
    head += kind_key + (_VARINTS[size] if size < _NV else _uvarint(size))
    size += len(head)  # the Push
    push_size = _VARINTS[size] if size < _NV else _uvarint(size)
    size += 1 + len(push_size)  # the Reply
    return b"".join(
        (_VARINTS[size] if size < _NV else _uvarint(size), b"\x22", push_size, head, body, data, tail)
    )


def encode_publication_push(
    channel: str, pub: Publication, data: bytes | None = None, delta: bool = False
) -> bytes:
    """``pub`` as a push; ``data`` (default: ``pub.data``) and ``delta`` for a delta subscription."""
    if data is None:
        data = pub.data
    size = len(data)
    head = b"\x22" + (_VARINTS[size] if size < _NV else _uvarint(size)) if size else b""
    tail = b""
    if pub.info is not None:
        info = _client_info(pub.info)
        size = len(info)
        tail = b"\x2a" + (_VARINTS[size] if size < _NV else _uvarint(size)) + info
    offset = pub.offset
    if offset:
        tail += b"\x30" + (_VARINTS[offset] if offset < _NV else _uvarint(offset))
    if pub.tags:
        tail += _tags(pub.tags)
    if delta:
        tail += b"\x40\x01"  # Publication.delta = 8, true
    return _push(channel, b"\x22", head, data, tail)


def encode_delta_publication_push(channel: str, pub: Publication, payload: bytes, delta: bool) -> bytes:
    """``pub`` for a subscription that negotiated delta compression: ``data`` is ``payload`` (the data, or a
    fossil delta against what the subscriber holds) and ``Publication.delta`` (8) says which."""
    return encode_publication_push(channel, pub, payload, delta)


def delta_publication_dict(pub: Publication, payload: bytes, delta: bool) -> dict[str, Any]:
    """``publication_dict`` for a delta subscription."""
    out = publication_dict(pub)
    out["data"] = payload
    if delta:
        out["delta"] = True
    return out


def encode_join_push(channel: str, info: ClientInfo) -> bytes:
    return _push(channel, b"\x2a", _delimited(b"\x0a", _client_info(info)))


def encode_leave_push(channel: str, info: ClientInfo) -> bytes:
    return _push(channel, b"\x32", _delimited(b"\x0a", _client_info(info)))


def join_messages(messages: list[bytes]) -> bytes:
    """Several replies/pushes as one frame's payload: each carries its own length prefix."""
    return messages[0] if len(messages) == 1 else b"".join(messages)
