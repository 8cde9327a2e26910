"""An ingest request's body: bounded as sent, inflated (gzip) within a bound of its own, a step at a time.

``inflate`` decompresses at most ``STEP`` bytes per step and yields to the event loop between steps, so a
16 MiB body does not hold the loop for the ~50 ms zlib takes for it; it stops as soon as the output passes
the bound, so a zip bomb costs no more than the bound (zlib never produces more than asked for:
``decompress(data, max_length)``). Concatenated gzip members (RFC 1952 2.2) are one body.
"""

from __future__ import annotations

import asyncio
import zlib

STEP = 1 << 20
"""Bytes of output per step (~3 ms of zlib on this machine)."""
GZIP = 16 + zlib.MAX_WBITS
"""wbits for a gzip header and trailer (not zlib's, not raw deflate)."""


class BodyRefused(Exception):
    """The body cannot be taken; ``status`` is the HTTP status to answer, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encoding_of(header: str) -> str:
    """``gzip`` or ``identity`` from a Content-Encoding header; BodyRefused (415) for anything else."""
    value = header.strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    raise BodyRefused(415, f"Content-Encoding {header.strip()[:40]!r} is not supported (gzip or identity)")


async def inflate(body: bytes, limit: int, step: int = STEP) -> bytes:
    """The gzip ``body`` decompressed; BodyRefused: 413 past ``limit`` bytes, 400 when it is not gzip or
    is cut short."""
    out = bytearray()
    data = body
    while data:
        inflater = zlib.decompressobj(GZIP)
        while True:
            try:
                piece = inflater.decompress(data, step)
            except zlib.error as exc:
                raise BodyRefused(400, f"the body is not gzip: {exc}") from None
            out += piece
            if len(out) > limit:
                raise BodyRefused(413, f"the body inflates to more than {limit} bytes")
            data = inflater.unconsumed_tail
            if not piece and not data:
                break
            await asyncio.sleep(0)  # the loop serves others between two steps
        if not inflater.eof:
            raise BodyRefused(400, "the gzip body is cut short")
        data = inflater.unused_data  # another member, or nothing
    return bytes(out)
