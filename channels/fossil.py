"""The fossil delta encoding, as the Centrifuge SDKs decode it (sans-I/O).

A delta turns a *base* (the data a subscriber already has) into a *target* (the new data). The format is
fossil-scm's (``www/delta_format.wiki``)::

    delta    = size "\\n" segment* checksum ";"
    segment  = count "@" offset ","        copy ``count`` bytes of the base, starting at ``offset``
             | count ":" <count bytes>      insert the next ``count`` bytes of the delta itself
    integers   base-64 digits ``0-9 A-Z _ a-z ~`` (values 0..63), most significant first, "0" for zero
    size       the length of the target in bytes
    checksum   the target read as big-endian 32-bit words (the last one padded with zero bytes), summed
               modulo 2**32

``create_delta`` is our own encoder (after the algorithm fossil describes, not its code): the base is
indexed by its 16-byte blocks at multiples of 16; the target is scanned at every position for a block of
the base; each hit is extended backwards over the pending literal and forwards as far as both agree, and
becomes a copy; what lies between copies is inserted. Runs are compared by slices and integer XOR, so
the Python loop runs once per copy and once per byte that matches nothing (a changed field), not once
per byte of the payload.

Every segment starts and ends on a UTF-8 character boundary of the target, so **the delta is valid
UTF-8 whenever the target is**: one delta serves Protobuf subscribers (as bytes) and JSON subscribers
(as a JSON string, which can only carry Unicode text; a delta that split a character would be mangled
on the way, a failure Centrifuge itself had with non-ASCII text). Copies need no such care: they never
appear in the delta.

How Centrifugo and the SDKs use deltas (what the hub must do; centrifuge ``hub.go``/``client.go``,
centrifuge-js 5.8 and centrifuge-python 0.7 as installed here):

- **Negotiation.** The client subscribes with ``delta: "fossil"``; the server grants it when the
  namespace's ``allowed_delta_types`` holds ``"fossil"`` and answers ``delta: true`` in the subscribe
  result. Centrifugo grants it only to positioned or recovering subscriptions of channels with history,
  without a tags filter. The SDKs decode only when the result said ``delta: true``.
- **Wire.** A publication whose ``data`` is a delta carries ``delta: true``. Protobuf: ``data`` is the
  bytes (delta or full). JSON: once delta is negotiated, *every* publication of that subscription has
  ``data`` as a JSON *string*: the full JSON text escaped as a string, or the delta as a string (the SDK
  encodes the string as UTF-8 and applies it). Non-delta subscribers of the same channel keep getting
  ``data`` embedded as JSON.
- **Which base.** Centrifuge encodes once per publication, not per subscriber: the delta against the
  channel's previous publication (the stream's previous entry, which the broker hands along, or for
  channels without offsets the node's last one), once per (protocol, delta type). Per subscription a flag
  says whether the client has a base: the first publication after subscribing goes full and sets it,
  later ones go as the shared delta. That is sound only because positioning guarantees the subscriber got
  every publication in order: a gap is "insufficient state", the subscription starts over, full again.
  A delta not smaller than the data is not sent: the data goes full with ``delta: false``, and the client
  takes it as its new base (any full publication may be sent at any time).
- **Recovery.** A successful recovery with delta sends the recovered publications as a chain (the first
  full, each next one a delta against the one before; over JSON all as strings) and sets the flag, so
  live deltas continue against the last recovered one; with nothing missed, the client's base is still
  the channel's last publication.
  A failed recovery sends none and leaves the flag unset: the first live publication goes full. In cache
  recovery mode without delta only the newest publication is sent. History calls are never delta-encoded.
- **What clients keep.** The SDKs keep their base across resubscribes and reconnects (centrifuge-js drops
  it only when the server invalidates state, 2502/3014), so a server must never send a delta to a
  subscription that did not continue without a gap from what it had.
- **Keys.** For ordinary (stream) subscriptions the SDKs keep ONE base per subscription, whatever the
  publication's key (centrifuge-js: "a single chain regardless of pub.key"); per-key bases exist only in
  map subscriptions.
- **Conflation.** Centrifugo PRO refuses delta in namespaces that skip publications (``batch_flush_latest``):
  a subscriber that was sent only some publications holds a base the channel-wide delta was not made
  against. A conflating writer must therefore encode against what *that subscriber* last got.

The encoder's cost grows with the payload and is bounded by a work budget (``WORK_BUDGET``): a sensor
reading of ~700 bytes takes ~30 µs; data that shares nothing with its base, or is made to be slow, stops
the scan after a few milliseconds at 64 KiB (``MAX_DELTA_INPUT``, above which ``delta_payload`` sends
data in full without diffing).
"""

from __future__ import annotations

import re

from channels.errors import BadDelta

__all__ = [
    "MAX_DELTA_INPUT",
    "DeltaMemo",
    "apply_delta",
    "checksum",
    "create_delta",
    "delta_payload",
    "output_size",
]

BLOCK = 16
"""Width of the base's index blocks: a copy is found only where the target holds a whole block of the base
(fossil's NHASH)."""

MAX_DELTA_INPUT = 64 * 1024
"""Largest base or target ``delta_payload`` diffs; larger data goes full."""

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""Largest target ``apply_delta`` builds unless told otherwise."""

MAX_INT = 2**32 - 1
"""The SDKs read the delta's integers as unsigned 32-bit numbers: none may be larger."""

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_DIGIT_VALUE = {digit: value for value, digit in enumerate(_DIGITS)}
_INTEGER = re.compile(rb"[0-9A-Z_a-z~]{1,6}")  # 64**6 > 2**32: six digits hold every integer we allow


def _encode_int_slow(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(_DIGITS[value & 63])
        value >>= 6
        if not value:
            break
    out.reverse()
    return bytes(out)


_SMALL = [_encode_int_slow(n) for n in range(4096)]  # two digits: counts and offsets of small payloads


def _encode_int(value: int) -> bytes:
    return _SMALL[value] if value < 4096 else _encode_int_slow(value)


def checksum(data: bytes) -> int:
    """Fossil's checksum: ``data`` as big-endian 32-bit words, the last padded with zero bytes, summed
    modulo 2**32."""
    # Summed lane by lane (byte i goes to bits 24 - 8 * (i % 4)): a short last word falls into the high
    # lanes, as its zero padding would.
    lanes = (sum(data[0::4]) << 24) + (sum(data[1::4]) << 16) + (sum(data[2::4]) << 8) + sum(data[3::4])
    return lanes & 0xFFFFFFFF


def _common_prefix(a: bytes, ai: int, b: bytes, bi: int, limit: int) -> int:
    """How many bytes ``a[ai:]`` and ``b[bi:]`` share from their start, at most ``limit``: slices of
    doubling width compared whole, the first differing one resolved by the XOR of the two as integers (its
    leading zero bytes are the equal ones)."""
    n, width = 0, 32
    while n < limit:
        k = min(width, limit - n)
        x, y = a[ai + n : ai + n + k], b[bi + n : bi + n + k]
        if x != y:
            diff = int.from_bytes(x, "big") ^ int.from_bytes(y, "big")
            return n + k - ((diff.bit_length() + 7) >> 3)
        n += k
        width <<= 1
    return n


def _common_suffix(a: bytes, a_end: int, b: bytes, b_end: int, limit: int) -> int:
    """How many bytes ``a[:a_end]`` and ``b[:b_end]`` share at their end, at most ``limit`` (as
    ``_common_prefix``, read little-endian so that the last byte is the most significant)."""
    n, width = 0, 32
    while n < limit:
        k = min(width, limit - n)
        x, y = a[a_end - n - k : a_end - n], b[b_end - n - k : b_end - n]
        if x != y:
            diff = int.from_bytes(x, "little") ^ int.from_bytes(y, "little")
            return n + k - ((diff.bit_length() + 7) >> 3)
        n += k
        width <<= 1
    return n


WORK_BUDGET = 1024
HIT_COST = 24
"""The scan stops after ``WORK_BUDGET + len(target) // 8`` units of work, a byte that matches nothing
costing 1 and a copy ``HIT_COST`` (about their relative times): a few milliseconds at most, for data
that shares nothing with its base or is made to be slow to diff; a sensor reading uses well under 1%.
What the scan did not reach is inserted (after the common tail), and ``delta_payload`` sends the data
in full when that makes the delta no smaller."""

RESYNC_WINDOW = 64
"""How far past an edit ``_resync`` looks for the base to go on (a longer edit is found byte by byte)."""


def _resync(base: bytes, base_end: int, target: bytes, i: int) -> tuple[int, int | None]:
    """Where the target goes on with the base after an edit: the first of the next two aligned blocks of the
    base after ``base_end`` found in ``target[i:]`` within ``RESYNC_WINDOW`` bytes of where it would be with
    no change of length, as ``(position, offset)``; ``(i, None)`` when neither is. Edits are mostly local
    (a changed value), so this replaces a byte-by-byte scan with two searches that run in C; the scan is
    still the fallback, and a hit is extended backwards over the edit's unchanged bytes as any other."""
    first = -(-base_end // BLOCK) * BLOCK
    for offset in (first, first + BLOCK):
        if offset + BLOCK > len(base):
            break
        found = target.find(base[offset : offset + BLOCK], i, i + offset - base_end + RESYNC_WINDOW + BLOCK)
        if found >= 0:
            return found, offset
    return i, None


def create_delta(base: bytes, target: bytes) -> bytes:
    """A fossil delta that turns ``base`` into ``target``.

    Always valid, not always worth sending: unrelated data gives a delta larger than the target (see
    ``delta_payload``). Each segment starts and ends on a UTF-8 character boundary of the target, so the
    delta is valid UTF-8 whenever the target is. Time grows about linearly with the sizes, fastest where the
    two share long runs; callers bound the sizes (``MAX_DELTA_INPUT``).
    """
    size = len(target)
    if size > MAX_INT:
        raise ValueError("target larger than a delta can describe")
    parts: list[bytes] = [_encode_int(size), b"\n"]
    pending = 0  # start of the target bytes no segment covers yet
    base_size = len(base)
    if base_size >= BLOCK and size >= BLOCK:
        # Earliest offset of each distinct block (reversed, so the earliest assignment is the last).
        index = {base[o : o + BLOCK]: o for o in range(base_size - BLOCK - (base_size % BLOCK), -1, -BLOCK)}
        i, last = 0, size - BLOCK
        resync_from = -1  # where in the base the last copy stopped, until the next miss has used it
        budget = WORK_BUDGET + size // 8
        while i <= last:
            offset = index.get(target[i : i + BLOCK])
            if offset is None and resync_from >= 0:
                i, offset = _resync(base, resync_from, target, i)
                resync_from = -1
            if offset is None:
                budget -= 1
                if budget <= 0:
                    break  # unrelated data, or made to be slow: the rest goes as an insert
                i += 1
                continue
            budget -= HIT_COST
            start, end, source = i, i + BLOCK, offset
            if i > pending and offset:
                back = _common_suffix(base, offset, target, i, min(offset, i - pending))
                start -= back
                source -= back
            room = min(base_size - offset, size - i)
            if room > BLOCK:
                end += _common_prefix(base, offset + BLOCK, target, end, room - BLOCK)
            # Segment bounds on character boundaries (not on a UTF-8 continuation byte): the inserts between
            # copies stay whole characters.
            while start < end and target[start] & 0xC0 == 0x80:
                start += 1
                source += 1
            while end < size and target[end] & 0xC0 == 0x80 and end > start:
                end -= 1
            count = end - start
            copy = b"%b@%b," % (_encode_int(count), _encode_int(source))
            if count <= len(copy) + 2:  # a copy this short would cost more than inserting the bytes
                i += 1
                continue
            if start > pending:
                parts += (_encode_int(start - pending), b":", target[pending:start])
            parts.append(copy)
            pending = i = end
            resync_from = source + count
    # What the scan left: the two may still end alike (a change in the middle, or a tail shorter than a
    # block); one comparison in C finds it.
    tail = _common_suffix(base, base_size, target, size, min(base_size, size - pending))
    while tail and target[size - tail] & 0xC0 == 0x80:
        tail -= 1
    copy = b"%b@%b," % (_encode_int(tail), _encode_int(base_size - tail))
    if tail <= len(copy) + 2:
        tail, copy = 0, b""
    if pending < size - tail:
        parts += (_encode_int(size - tail - pending), b":", target[pending : size - tail])
    parts += (copy, _encode_int(checksum(target)), b";")
    return b"".join(parts)


def delta_payload(base: bytes | None, target: bytes) -> tuple[bytes, bool]:
    """What to send a subscriber that holds ``base`` (None: nothing yet): ``(delta, True)`` when a delta
    is smaller than ``target``, else ``(target, False)`` (Centrifuge's rule: a delta not smaller than the
    data is sent as the data). Data past ``MAX_DELTA_INPUT`` goes full without being diffed."""
    if base is None or len(base) > MAX_DELTA_INPUT or len(target) > MAX_DELTA_INPUT:
        return target, False
    delta = create_delta(base, target)
    if len(delta) >= len(target):
        return target, False
    return delta, True


class DeltaMemo:
    """Payloads by (base, target) publication ids, so that subscribers holding the same base share one
    encode: in a channel whose subscribers all got every publication there is one pair per publication;
    with conflation, subscribers flushed at the same tick mostly hold the same base. Ids are whatever names
    a publication on this node (its offset, or a node-local sequence); the memo keeps the newest
    ``max_entries`` pairs (a plain dict in insertion order), so it never grows with the subscribers."""

    __slots__ = ("max_entries", "_entries", "encodes")

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[object, object], tuple[bytes, bool]] = {}
        self.encodes = 0
        """How many times ``payload`` had to diff (the rest were memo hits)."""

    def payload(
        self, base_id: object, base: bytes | None, target_id: object, target: bytes
    ) -> tuple[bytes, bool]:
        """``delta_payload(base, target)``, computed once per pair of ids."""
        if base is None:
            return target, False
        key = (base_id, target_id)
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = delta_payload(base, target)
            self.encodes += 1
            if len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]
        return found


def _read_int(delta: bytes, pos: int) -> tuple[int, int]:
    match = _INTEGER.match(delta, pos)
    if match is None:
        raise BadDelta(f"expected an integer at byte {pos}")
    value = 0
    for digit in match.group():
        value = (value << 6) | _DIGIT_VALUE[digit]
    if value > MAX_INT:
        raise BadDelta(f"integer at byte {pos} is larger than 2**32-1")
    return value, match.end()


def output_size(delta: bytes) -> int:
    """The target size a delta declares (its header), without applying it; BadDelta if it has none."""
    size, pos = _read_int(delta, 0)
    if delta[pos : pos + 1] != b"\n":
        raise BadDelta("size not terminated by a newline")
    return size


def apply_delta(base: bytes, delta: bytes, *, max_size: int = DEFAULT_MAX_OUTPUT) -> bytes:
    """The target that ``delta`` builds from ``base``.

    Strict: BadDelta (never another exception) for a delta that is malformed, declares a target larger
    than ``max_size``, copies outside the base, inserts past its own end, builds a different size than it
    declared, fails its checksum, or has bytes after its checksum. Memory is bounded by ``max_size``.
    """
    size = output_size(delta)
    if size > max_size:
        raise BadDelta(f"declared size {size} is larger than {max_size}")
    pos = delta.index(b"\n") + 1
    out = bytearray()
    end = len(delta)
    while pos < end:
        count, pos = _read_int(delta, pos)
        op = delta[pos : pos + 1]
        pos += 1
        if op == b"@":
            offset, pos = _read_int(delta, pos)
            if delta[pos : pos + 1] != b",":
                raise BadDelta(f"copy command not terminated by ',' at byte {pos}")
            pos += 1
            if offset + count > len(base):
                raise BadDelta("copy extends past the end of the base")
            if len(out) + count > size:
                raise BadDelta("copy exceeds the declared size")
            out += base[offset : offset + count]
        elif op == b":":
            if pos + count > end:
                raise BadDelta("insert extends past the end of the delta")
            if len(out) + count > size:
                raise BadDelta("insert exceeds the declared size")
            out += delta[pos : pos + count]
            pos += count
        elif op == b";":
            if pos != end:
                raise BadDelta("bytes after the checksum")
            if len(out) != size:
                raise BadDelta(f"built {len(out)} bytes, declared {size}")
            if checksum(bytes(out)) != count:
                raise BadDelta("bad checksum")
            return bytes(out)
        else:
            raise BadDelta(f"unknown command {op!r} at byte {pos - 1}")
    raise BadDelta("delta ends without a checksum")
