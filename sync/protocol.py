"""The y-websocket framing of y-protocols, sans-I/O: bytes in, message objects out, and back.

One WebSocket message carries one y message (y-websocket ``messageHandlers``)::

    message   = varUint(type) body
    type 0    sync:            varUint(0 step1) varUint8Array(state vector)
                               varUint(1 step2) varUint8Array(update)
                               varUint(2 update) varUint8Array(update)
    type 1    awareness:       varUint8Array(awareness update)
    type 2    auth:            varUint(0 permission denied) varString(reason)
    type 3    query-awareness: (empty)

    awareness update = varUint(n) n * (varUint(client id) varUint(clock) varString(JSON state))
                       (a state "null" means the client left)

lib0 encoding: a varUint is little-endian base-128 (7 bits a byte, high bit = more follows); a varUint8Array
is a varUint length then that many bytes; a varString is a varUint8Array of UTF-8. lib0 reads integers up
to 2**53 - 1 (JavaScript's safe range); so do we.

Policy: decoding is strict. A truncated varint, a length past the end, an unknown message type, bad UTF-8,
JSON that is not JSON, or bytes after the message raise ``ProtocolError``; the caller closes the
connection with its reason. Nothing is decoded lazily, so a message either decodes whole or not at all.

Error tree of the sync package::

    SyncError
     +-- ProtocolError     a message cannot be decoded (the peer speaks something else, or garbage)
     +-- UpdateRejected    the CRDT refused an update (pycrdt could not decode or integrate it)
     +-- LimitExceeded     an update, a document or a count is over its configured bound
     +-- StoreError        (sync.store) the document store failed; nothing after the failure was relayed
     +-- EditRejected      (sync.edit) an agent's edit was refused whole; nothing was applied
          +-- InvalidEdit      malformed, or does not fit the document (``op``: the offending op's index)
          +-- EditTooLarge     over an edit bound (also a LimitExceeded)
          +-- StaleVersion     the document is not at the edit's ``if_version``
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

MAX_SAFE_INTEGER = 2**53 - 1
"""lib0 ``decoding.readVarUint`` refuses anything larger (``number.MAX_SAFE_INTEGER``)."""


class SyncError(Exception):
    """Base of the sync package's errors. ``reason`` is short and safe to send to the peer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(SyncError):
    """The bytes are not a well-formed y-websocket message."""


class UpdateRejected(SyncError):
    """The CRDT refused the update; the document is unchanged."""


class LimitExceeded(SyncError):
    """A configured bound would be passed; nothing was applied."""


# ---------------------------------------------------------------- lib0 primitives


def var_uint(value: int) -> bytes:
    """lib0 ``writeVarUint``."""
    if value < 0x80:
        if value < 0:
            raise ValueError("varUint must not be negative")
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    """lib0 ``writeVarUint8Array``."""
    return var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    """lib0 ``writeVarString``."""
    return var_bytes(text.encode())


class Reader:
    """A cursor over one message. Every read checks the bounds and raises ``ProtocolError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def var_uint(self) -> int:
        data = self.data
        pos = self.pos
        if pos >= len(data):
            raise ProtocolError("truncated varint")
        byte = data[pos]
        if byte < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return byte
        value = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise ProtocolError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if value > MAX_SAFE_INTEGER:
                raise ProtocolError("varint out of range")
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 49:  # an 8th continuation byte: past 53 bits whatever follows
                raise ProtocolError("varint out of range")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        start = self.pos
        end = start + length
        if end > len(self.data):
            raise ProtocolError("length past the end of the message")
        self.pos = end
        return self.data[start:end]

    def var_string(self) -> str:
        raw = self.var_bytes()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError("string is not UTF-8") from None

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("trailing bytes after the message")


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    update: bytes
    """The encoded awareness update (decode it with ``decode_awareness``)."""


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | PermissionDenied | QueryAwareness


def decode(data: bytes) -> Message:
    """One y-websocket message. Raises ``ProtocolError`` for anything else."""
    reader = Reader(data)
    kind = reader.var_uint()
    message: Message
    if kind == MSG_SYNC:
        sync_kind = reader.var_uint()
        payload = reader.var_bytes()
        if sync_kind == SYNC_UPDATE:
            message = SyncUpdate(payload)
        elif sync_kind == SYNC_STEP2:
            message = SyncStep2(payload)
        elif sync_kind == SYNC_STEP1:
            message = SyncStep1(payload)
        else:
            raise ProtocolError(f"unknown sync message type {sync_kind}")
    elif kind == MSG_AWARENESS:
        message = AwarenessMessage(reader.var_bytes())
    elif kind == MSG_QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MSG_AUTH:
        auth_kind = reader.var_uint()
        if auth_kind != AUTH_PERMISSION_DENIED:
            raise ProtocolError(f"unknown auth message type {auth_kind}")
        message = PermissionDenied(reader.var_string())
    else:
        raise ProtocolError(f"unknown message type {kind}")
    reader.expect_end()
    return message


def encode(message: Message) -> bytes:
    if isinstance(message, SyncUpdate):
        return update(message.update)
    if isinstance(message, SyncStep2):
        return sync_step2(message.update)
    if isinstance(message, SyncStep1):
        return sync_step1(message.state_vector)
    if isinstance(message, AwarenessMessage):
        return awareness(message.update)
    if isinstance(message, PermissionDenied):
        return permission_denied(message.reason)
    return query_awareness()


def sync_step1(state_vector: bytes) -> bytes:
    return b"\x00\x00" + var_bytes(state_vector)


def sync_step2(update_: bytes) -> bytes:
    return b"\x00\x01" + var_bytes(update_)


def update(update_: bytes) -> bytes:
    return b"\x00\x02" + var_bytes(update_)


def awareness(awareness_update: bytes) -> bytes:
    return b"\x01" + var_bytes(awareness_update)


def permission_denied(reason: str) -> bytes:
    return b"\x02\x00" + var_string(reason)


def query_awareness() -> bytes:
    return b"\x03"


# ---------------------------------------------------------------- awareness updates

NULL_STATE = b"null"


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state: ``state`` is its JSON text (UTF-8), ``b"null"`` when it left."""

    client_id: int
    clock: int
    state: bytes

    @property
    def removed(self) -> bool:
        return self.state == NULL_STATE


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """An awareness update; every state must be JSON (other peers ``JSON.parse`` it)."""
    reader = Reader(payload)
    count = reader.var_uint()
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state = reader.var_bytes()
        if state != NULL_STATE:
            try:
                parsed = orjson.loads(state)
            except orjson.JSONDecodeError:
                raise ProtocolError("awareness state is not JSON") from None
            if parsed is None:
                state = NULL_STATE  # "null" spelled with whitespace: still a removal
        entries.append(AwarenessEntry(client_id, clock, state))
    reader.expect_end()
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [var_uint(len(entries))]
    for entry in entries:
        parts.append(var_uint(entry.client_id))
        parts.append(var_uint(entry.clock))
        parts.append(var_bytes(entry.state))
    return b"".join(parts)
