"""Page cursors (sans-I/O): opaque, tamper-evident positions in one user's inbox.

A cursor names a position (the item's ``seq``, the store's ordering key) and is signed with the store's
key (HMAC-SHA256, cut to ``MAC_BYTES``) over the position, the tenant and the user. A client may keep and
pass it back, but not forge one, move it, or use another user's: each of those fails ``decode`` with
``InvalidCursor``. The key lives in the database (created with the schema), so every node sharing a
database accepts the others' cursors and a restart does not invalidate them.

Form: URL-safe base64 without padding of ``version (1 byte) | seq (8 bytes, big endian) | mac``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from inbox.errors import InvalidCursor

VERSION = 1
MAC_BYTES = 12
_LENGTH = 1 + 8 + MAC_BYTES
MAX_CURSOR_LENGTH = 64
"""Longer strings are refused before decoding."""


def _mac(key: bytes, body: bytes, tenant: str, user: str) -> bytes:
    scope = tenant.encode() + b"\x00" + user.encode()
    return hmac.new(key, body + scope, hashlib.sha256).digest()[:MAC_BYTES]


def encode(key: bytes, tenant: str, user: str, seq: int) -> str:
    body = bytes([VERSION]) + seq.to_bytes(8, "big")
    return base64.urlsafe_b64encode(body + _mac(key, body, tenant, user)).rstrip(b"=").decode()


def decode(key: bytes, tenant: str, user: str, cursor: object) -> int:
    """The position ``cursor`` names, if this store issued it for this tenant and user."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not a cursor") from None
    if len(raw) != _LENGTH or raw[0] != VERSION:
        raise InvalidCursor("cursor is not a cursor of this version")
    body, mac = raw[:9], raw[9:]
    if not hmac.compare_digest(mac, _mac(key, body, tenant, user)):
        raise InvalidCursor("cursor was altered or belongs to another user")
    return int.from_bytes(body[1:], "big")
