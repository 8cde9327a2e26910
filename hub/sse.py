"""Server-Sent Events framing and resume points (sans-I/O).

An event is ``id: <resume>\ndata: <message>\n\n``. The id is the resume point after the event: the stream
positions (offset, epoch) of the connection's recoverable subscriptions, in URL-safe base64 (an SSE id may
not hold a line break, a carriage return or NUL). A reconnecting ``EventSource`` sends the last id it saw
as ``Last-Event-ID``; the hub recovers every channel from there. A comment line (``:``) is a heartbeat
that keeps proxies from closing an idle stream.

Size policy: an id is sent with every event and comes back as a request header, so it is bounded by
``MAX_RESUME_ID`` (8000 bytes: what a proxy's default buffer for one header line takes, nginx's 8 KB) and
the hub accepts back every id it gives out. A channel is named by an 8-byte hash of its name, so a position
costs ~20 bytes whatever the name (some 290 channels fit). Positions that do not fit are left out and the
id says it is *partial*: on resume, a channel it does not name is then reported unrecovered, never
subscribed afresh as if nothing was missed. A complete id that does not name a channel means the stream
was not subscribed to it.

Binary layout (before base64): a version byte (1), a flags byte (bit 0: partial), then per position the
channel hash (8 bytes), the offset (unsigned LEB128 varint) and the epoch (one length byte, UTF-8). Ids of
the previous layout (base64 of a JSON list ``[[channel, offset, epoch], ...]``) are still read, so streams
resume across an upgrade.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from sync.protocol import var_uint

HEARTBEAT = b":\n\n"
MAX_RESUME_ID = 8000
"""Longest Last-Event-ID accepted, and longest id given out (bytes)."""
_MAX_RAW = MAX_RESUME_ID * 3 // 4
"""Bytes before base64 (4 characters per 3 bytes, no padding) that an id of MAX_RESUME_ID holds."""
_VERSION = 1
_PARTIAL = 1
_HEADER = 2
_KEY = 8


class BadResumeId(ValueError):
    """A Last-Event-ID that is not one of ours."""


def channel_key(channel: str) -> bytes:
    """How an id names a channel: 8 bytes of a hash of its name (collisions within one connection's
    channels are as unlikely as guessing a 64-bit value)."""
    return hashlib.blake2b(channel.encode(), digest_size=_KEY).digest()


def position_entry(channel: str, offset: int, epoch: str) -> bytes | None:
    """One position as the id holds it; None when it cannot be held (an epoch over 255 bytes, an offset
    over 64 bits): the id is then partial."""
    raw_epoch = epoch.encode()
    if len(raw_epoch) > 255 or not 0 <= offset < 2**64:
        return None
    return channel_key(channel) + var_uint(offset) + bytes((len(raw_epoch),)) + raw_epoch


def encode_entries(entries: Iterable[bytes | None]) -> bytes:
    """The id of these positions (``position_entry``), in order, as many as fit in MAX_RESUME_ID."""
    body = bytearray()
    partial = False
    for entry in entries:
        if entry is None or _HEADER + len(body) + len(entry) > _MAX_RAW:
            partial = True
            continue
        body += entry
    if not body and not partial:
        return b"0"
    raw = bytes((_VERSION, _PARTIAL if partial else 0)) + body
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def encode_resume_id(positions: dict[str, tuple[int, str]]) -> bytes:
    return encode_entries(position_entry(ch, off, epoch) for ch, (off, epoch) in positions.items())


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """What a Last-Event-ID says: positions by ``channel_key``, and whether it names every recoverable
    channel the stream had (``complete``)."""

    positions: dict[bytes, tuple[int, str]]
    complete: bool = True

    def position(self, channel: str) -> tuple[int, str] | None:
        """Where ``channel`` resumes from: its position; for a channel the id does not name, None when the
        id is complete (the stream was not subscribed to it) and a position no stream has when it is not
        (the channel is reported unrecovered)."""
        found = self.positions.get(channel_key(channel))
        if found is None and not self.complete:
            return (0, "")
        return found


LOST = ResumePoint({}, complete=False)
"""The resume point of an id the hub cannot read: every recoverable channel is reported unrecovered."""


def decode_resume_id(value: str) -> ResumePoint:
    if value == "0":
        return ResumePoint({})
    if len(value) > MAX_RESUME_ID:
        raise BadResumeId("too long")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadResumeId(str(exc)) from None
    if raw[:1] == b"[":
        return _decode_json_id(raw)
    if len(raw) < _HEADER or raw[0] != _VERSION or raw[1] & ~_PARTIAL:
        raise BadResumeId("unknown layout")
    positions: dict[bytes, tuple[int, str]] = {}
    pos, end = _HEADER, len(raw)
    while pos < end:
        key = raw[pos : pos + _KEY]
        pos += _KEY
        offset = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise BadResumeId("bad offset")
            byte = raw[pos]
            pos += 1
            offset |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if pos >= end or offset >= 2**64:
            raise BadResumeId("bad position")
        size = raw[pos]
        epoch = raw[pos + 1 : pos + 1 + size]
        pos += 1 + size
        if len(key) != _KEY or len(epoch) != size:
            raise BadResumeId("truncated")
        try:
            positions[key] = (offset, epoch.decode())
        except UnicodeDecodeError:
            raise BadResumeId("bad epoch") from None
    return ResumePoint(positions, complete=not raw[1] & _PARTIAL)


def _decode_json_id(raw: bytes) -> ResumePoint:
    """An id of the previous layout: a JSON list of ``[channel, offset, epoch]``."""
    try:
        items = orjson.loads(raw)
    except ValueError as exc:
        raise BadResumeId(str(exc)) from None
    if not isinstance(items, list):
        raise BadResumeId("not a list")
    positions: dict[bytes, tuple[int, str]] = {}
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
            or item[1] < 0
            or not isinstance(item[2], str)
        ):
            raise BadResumeId("bad position")
        positions[channel_key(item[0])] = (item[1], item[2])
    return ResumePoint(positions)


def event(message: bytes, event_id: bytes = b"", name: bytes = b"") -> bytes:
    """One event. ``message`` is one line (JSON never holds a raw line break)."""
    head = b"id: " + event_id + b"\n" if event_id else b""
    if name:
        head += b"event: " + name + b"\n"
    return head + b"data: " + message + b"\n\n"


def retry(milliseconds: int) -> bytes:
    """The reconnection delay an EventSource should use."""
    return b"retry: %d\n\n" % milliseconds
