"""Server-to-client WebSocket frames, built once and shared (sans-I/O).

RFC 6455 5.1: "A server MUST NOT mask any frames that it sends to the client." An unmasked frame depends
only on its payload, so without compression one frame's bytes serve every subscriber.
"""

from __future__ import annotations

import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80


def frame(payload: bytes, opcode: int = OP_TEXT, fin: bool = True) -> bytes:
    """An unmasked frame (RFC 6455 5.2: 7-bit, 16-bit or 64-bit length); complete unless ``fin`` is false."""
    n = len(payload)
    first = (_FIN if fin else 0) | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def fragment(payload: bytes, opcode: int, first: bool, last: bool) -> bytes:
    """One frame of a fragmented message (RFC 6455 5.4): the first carries the message's opcode, the others
    are continuations, the last has FIN set. Control frames (pings) may come between them; data frames of
    another message may not."""
    return frame(payload, opcode if first else OP_CONTINUATION, last)


class FrameCache:
    """Remembers the last frame built: a fan-out loop frames the same payload object for every subscriber."""

    __slots__ = ("_payload", "_opcode", "_frame")

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._opcode = 0
        self._frame = b""

    def frame(self, payload: bytes, opcode: int) -> bytes:
        if payload is self._payload and opcode == self._opcode:
            return self._frame
        built = frame(payload, opcode)
        self._payload, self._opcode, self._frame = payload, opcode, built
        return built
