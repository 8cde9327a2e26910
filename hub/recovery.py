"""Recovery decisions (sans-I/O): what a resubscribing client gets, given what the stream holds.

The rule (Centrifugo's, made strict): a client that asks to recover from (offset, epoch) gets exactly the
publications after ``offset`` with ``recovered: true``, or none with ``recovered: false``. Never a partial
set: a gap would be a silent loss.
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
