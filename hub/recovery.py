"""Recovery decisions (sans-I/O): what a resubscribing client gets, given what the stream holds.

The rule (Centrifugo's, made strict): a client that asks to recover from (offset, epoch) gets exactly the
publications after ``offset`` with ``recovered: true``, or none with ``recovered: false``. Never a partial
set: a gap would be a silent loss.

Recovery is bounded by count (``client_recovery_max_publication_limit``, the history read's limit) and by
bytes (``publications_size`` within ``recovery_room``, the room under the connection's write bound): a
reply the writer would refuse would close the client with 3008, and the client would reconnect and ask
for the same recovery again, forever. Past either bound it is ``recovered: false`` (the client reloads
its state).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from channels.publication import Publication, StreamPosition


@dataclass(frozen=True, slots=True)
class Recovery:
    publications: list[Publication]
    recovered: bool
    position: StreamPosition
    """The position the client is at once it has applied ``publications``."""


PUBLICATION_OVERHEAD = 128
"""Bytes counted for a recovered publication besides its data, info and tags (its offset, field names,
the framing): an estimate on the safe side, so the estimate of a reply is never much under its size."""


def publications_size(publications: Iterable[Publication]) -> int:
    """About the bytes ``publications`` take in a reply (``PUBLICATION_OVERHEAD`` each besides what they
    carry); cheap, no encoding."""
    total = 0
    for pub in publications:
        total += PUBLICATION_OVERHEAD + len(pub.data) + len(pub.key)
        info = pub.info
        if info is not None:
            total += len(info.user) + len(info.client)
            total += len(info.conn_info or b"") + len(info.chan_info or b"")
        if pub.tags:
            total += sum(len(k) + len(v) for k, v in pub.tags.items())
    return total


def recovery_room(max_bytes: int, backlog: int) -> int:
    """The bytes one recovery may return to a connection whose write bound is ``max_bytes`` and which has
    ``backlog`` bytes waiting already: half the bound (the inbox page's rule; the reply's framing and what
    arrives meanwhile take the rest), less the backlog. Never negative."""
    return max(0, max_bytes // 2 - backlog)


def recover(
    requested: StreamPosition, publications: Iterable[Publication] | None, top: StreamPosition
) -> Recovery:
    """Decide recovery from ``requested``.

    ``publications`` is the stream's retained history after ``requested.offset`` in ascending order, or
    None when the stream could not serve that position (another epoch). ``top`` is the stream's position
    when the history was read.
    """
    if publications is None or requested.epoch != top.epoch or requested.offset > top.offset:
        return Recovery([], False, top)
    if requested.offset == top.offset:
        return Recovery([], True, top)
    pubs = [p for p in publications if p.offset > requested.offset]
    expected = requested.offset + 1
    for pub in pubs:
        if pub.offset != expected:
            return Recovery([], False, top)
        expected += 1
    if expected - 1 != top.offset:
        return Recovery([], False, top)
    return Recovery(pubs, True, top)


def after_position(buffered: Iterable[Publication], offset: int) -> list[Publication]:
    """Publications that arrived while a subscription was being set up and that the client has not yet got
    (those with history offsets past ``offset``; every one, in a channel without history)."""
    return [p for p in buffered if p.offset == 0 or p.offset > offset]
