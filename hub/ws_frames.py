"""Server-to-client WebSocket frames, built once and shared (sans-I/O).

RFC 6455 5.1: "A server MUST NOT mask any frames that it sends to the client." An unmasked frame depends
only on its payload, so without compression one frame's bytes serve every subscriber.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A complete, unfragmented, unmasked frame (RFC 6455 5.2: 7-bit, 16-bit or 64-bit length)."""
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, n)
    return header + payload


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
