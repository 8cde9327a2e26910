"""Server-Sent Events framing and resume points (sans-I/O).

An event is ``id: <resume>\\ndata: <message>\\n\\n``. The id is the resume point after the event: the stream
positions ``{channel: (offset, epoch)}`` of the connection's recoverable subscriptions, as compact JSON in
URL-safe base64 (an SSE id may not hold a line break, a carriage return or NUL). A reconnecting
``EventSource`` sends the last id it saw as ``Last-Event-ID``; the hub recovers every channel from there.
A comment line (``:``) is a heartbeat that keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import base64
import binascii

import orjson

HEARTBEAT = b":\n\n"
MAX_RESUME_ID = 131_072
"""Longest Last-Event-ID accepted (bytes). Ids grow with the channels of a stream (each: its name, offset
and epoch); this bound holds the longest the hub emits (128 channels of 255-character names), so the hub
never gives out an id it would refuse."""


class BadResumeId(ValueError):
    """A Last-Event-ID that is not one of ours."""


def encode_resume_id(positions: dict[str, tuple[int, str]]) -> bytes:
    if not positions:
        return b"0"
    body = orjson.dumps([[ch, off, epoch] for ch, (off, epoch) in positions.items()])
    return base64.urlsafe_b64encode(body).rstrip(b"=")


def decode_resume_id(value: str) -> dict[str, tuple[int, str]]:
    if value == "0":
        return {}
    if len(value) > MAX_RESUME_ID:
        raise BadResumeId("too long")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        items = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadResumeId(str(exc)) from None
    if not isinstance(items, list):
        raise BadResumeId("not a list")
    out: dict[str, tuple[int, str]] = {}
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
        out[item[0]] = (item[1], item[2])
    return out


def event(message: bytes, event_id: bytes = b"", name: bytes = b"") -> bytes:
    """One event. ``message`` is one line (JSON never holds a raw line break)."""
    head = b"id: " + event_id + b"\n" if event_id else b""
    if name:
        head += b"event: " + name + b"\n"
    return head + b"data: " + message + b"\n\n"


def retry(milliseconds: int) -> bytes:
    """The reconnection delay an EventSource should use."""
    return b"retry: %d\n\n" % milliseconds
