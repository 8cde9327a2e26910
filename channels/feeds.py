"""Live feeds as subscribers see them (sans-I/O): the key of a reading, and what a subscriber may ask for.

A namespace may carry many sensors in one channel: its ``key_field`` (a JSON pointer, RFC 6901) names the
member of a publication's data that holds the reading's key. Conflation (one newest value per key, at most
``max_rate`` a second) and the latest value per key (cache recovery) go by that key. The rules:

- the key is the member's value when it is a string, or an integer written in decimal (``7`` and ``"7"``
  are the same key); at most ``MAX_KEY_LENGTH`` characters;
- data without the member has the key ``""`` (one value per channel, as in a namespace without a key);
- data that is not JSON, or a member of another type (a float, a boolean, null, an array, an object), is
  refused: ``BadKey``, with a reason for the sender. Nothing is published.

A reading that comes in with a key of its own (HTTP ingest's ``key``, a line protocol route's or an MQTT
route's ``key`` template: ``feed_key``) is keyed as a client publish would be, so conflation and the latest
value per key treat it alike: in a keyed namespace its key is that key, and the data's member, when it has
one, must say the same (else ``BadKey``: a dashboard reads the sensor from the data, the hub conflates by
the key, and the two must never disagree); in a namespace without ``key_field`` a given key is ignored (one
value per channel, as a client publish there).

A conflated subscriber may ask for a lower rate than its namespace grants in its subscribe request's
``data``, a JSON object (over Protobuf: the bytes of one): ``{"max_rate": 2}`` (publications a second, at
least ``MIN_RATE``). Other members are the application's (the subscribe hook sees them all). A higher rate
than granted is cut to the grant; a malformed one is refused (``BadRate``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import orjson

from channels.alerts import MISSING, JsonPointer
from channels.errors import ChannelError
from channels.options import DELTA_TYPES, MAX_KEYS_LIMIT, MAX_RATE_LIMIT

__all__ = [
    "DELTA_TYPES",
    "MAX_KEYS_LIMIT",
    "MAX_KEY_LENGTH",
    "MAX_RATE_LIMIT",
    "MIN_RATE",
    "BadKey",
    "BadRate",
    "granted_rate",
    "key_pointer",
    "publication_key",
    "reading_key",
]

MIN_RATE = 0.01
"""The lowest rate a subscriber may ask for (one publication per key every 100 s)."""

MAX_KEY_LENGTH = 255
"""Characters of a key, at most."""


class BadKey(ChannelError, ValueError):
    """A publication's key cannot be read (see the module docstring); the message says why."""


class BadRate(ChannelError, ValueError):
    """A subscriber asked for a rate that is not a number of publications a second from ``MIN_RATE`` on."""


@functools.lru_cache(maxsize=256)
def key_pointer(text: str) -> JsonPointer:
    """``text`` parsed (once: namespaces are few); ValueError unless it points at a member (not ``""``)."""
    pointer = JsonPointer.parse(text)
    if not pointer.tokens:
        raise ValueError('key_field must point at a member of the data ("/sensor"), not the whole data')
    return pointer


def reading_key(key_field: str, data: bytes) -> str:
    """The key of a publication whose data (JSON bytes) is ``data`` in a namespace keyed by ``key_field``."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadKey(f"data is not JSON, so its key ({key_field}) cannot be read") from None
    value = key_pointer(key_field).resolve(document)
    if value is MISSING:
        return ""
    if isinstance(value, str):
        key = value
    elif isinstance(value, int) and not isinstance(value, bool):
        key = str(value)
    else:
        raise BadKey(f"the key at {key_field} must be a string or an integer, got {type(value).__name__}")
    if len(key) > MAX_KEY_LENGTH:
        raise BadKey(f"the key at {key_field} is longer than {MAX_KEY_LENGTH} characters")
    return key


def publication_key(key_field: str, data: bytes, given: str | None) -> str:
    """The key a reading is published under (module docstring): ``given`` (a key that came with it, or
    None) checked against ``data``'s ``key_field`` member; ``""`` in a namespace without ``key_field``."""
    if not key_field:
        return ""
    found = reading_key(key_field, data)
    if given is None:
        return found
    if not isinstance(given, str) or len(given) > MAX_KEY_LENGTH:
        raise BadKey(f"a key is a string of at most {MAX_KEY_LENGTH} characters")
    if found and found != given:
        raise BadKey(f"the key {given[:80]!r} is not the data's {key_field} ({found[:80]!r})")
    return given


def granted_rate(data: Any, namespace_rate: float) -> float:
    """The rate a conflated subscription gets: ``namespace_rate``, or the lower one its subscribe data asks
    for (``{"max_rate": n}``); BadRate for a ``max_rate`` that is not a number from ``MIN_RATE`` on.
    Data that is not an object, or has no ``max_rate``, asks for nothing."""
    if not isinstance(data, dict) or "max_rate" not in data:
        return namespace_rate
    asked = data["max_rate"]
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not math.isfinite(asked):
        raise BadRate(f"max_rate must be a number, got {type(asked).__name__}")
    if asked < MIN_RATE:
        raise BadRate(f"max_rate must be at least {MIN_RATE} a second")
    return min(float(asked), namespace_rate)
