"""Stream positions a node has seen, per channel: how it notices that it missed publications.

With several nodes a publication reaches a node over Redis pub/sub, which delivers at most once: a
dropped pub/sub connection, or Redis restarted with its history gone, silently skips publications.
A subscriber that is *positioned* (Centrifuge's term: it tracks offsets and can recover) must never see
such a gap unannounced, so the node tracks, for each channel the broker delivers to it, the offset of
the last publication it received and the stream's epoch, and declares the channel's state
*insufficient* when

- a publication's offset is not the one after the last, or its epoch is not the last one's (the stream
  was lost and started over: even offsets that look consecutive belong to another stream), or
- a check of the stream's top, made after the pub/sub connection came back, finds another epoch or
  publications the node never received.

The node then tells each positioned subscriber to resubscribe (Centrifuge's unsubscribe code 2500;
3010 disconnects a client that cannot resubscribe), and the client recovers from history, or learns
``recovered: false``. Plain (unpositioned) subscribers get no guarantee, as in Centrifugo.

Sans-I/O: the node feeds it and acts on the answers.
"""

from __future__ import annotations

from channels.names import ChannelKey
from channels.publication import StreamPosition


class _Top:
    __slots__ = ("offset", "epoch")

    def __init__(self, offset: int, epoch: str | None) -> None:
        self.offset = offset
        self.epoch = epoch
        """None until the node knows where the stream is (the first publication or read tells); a known
        position always has both: offsets alone cannot tell a stream that Redis lost and started over
        (and that reached the same offsets meanwhile) from the one before it."""


class ChannelPositions:
    __slots__ = ("_tops",)

    def __init__(self) -> None:
        self._tops: dict[ChannelKey, _Top] = {}

    def __contains__(self, key: ChannelKey) -> bool:
        return key in self._tops

    def known(self, key: ChannelKey) -> bool:
        """The node knows a position of ``key`` to check (it saw a publication with history, or a read)."""
        seen = self._tops.get(key)
        return seen is not None and seen.epoch is not None

    def begin(self, key: ChannelKey) -> None:
        """The broker delivers ``key`` to the node from now on: follow its offsets from the first one."""
        self._tops.setdefault(key, _Top(0, None))

    def track(self, key: ChannelKey, top: StreamPosition) -> bool:
        """A subscriber read ``top`` from the broker, and a broker barrier since then delivered everything
        published up to it. True if the node missed publications (its last offset is below ``top``, or
        the stream has another epoch); the position is ``top`` then. Offsets past ``top`` (published
        after the read) are kept."""
        seen = self._tops.get(key)
        if seen is None:
            self._tops[key] = _Top(top.offset, top.epoch)
            return False
        if seen.epoch is None:
            seen.offset, seen.epoch = top.offset, top.epoch
            return False
        missed = seen.epoch != top.epoch or seen.offset < top.offset
        if missed:
            seen.offset, seen.epoch = top.offset, top.epoch
        return missed

    def forget(self, key: ChannelKey) -> None:
        self._tops.pop(key, None)

    def observe(self, key: ChannelKey, offset: int, epoch: str) -> bool:
        """A publication at (``offset``, ``epoch``) arrived; True if the channel's state is now insufficient
        (the node skipped offsets, or the stream is another one: a new epoch, whatever its offsets). The
        position becomes the publication's.

        Called once per publication on the hot path: one dict lookup, two comparisons when all is well.
        """
        seen = self._tops.get(key)
        if seen is None:
            return False
        last = seen.offset
        seen.offset = offset
        if offset == last + 1 and epoch == seen.epoch:
            return False
        known, seen.epoch = seen.epoch, epoch
        return known is not None  # the first publication the node sees only starts its position

    def check(self, key: ChannelKey, top: StreamPosition) -> bool:
        """The broker reports ``top`` as the stream's top; True if the node missed something (another
        epoch, or a top past the last offset it received), and the tracked position becomes ``top``."""
        seen = self._tops.get(key)
        if seen is None:
            return False
        if seen.epoch is None:
            seen.offset, seen.epoch = top.offset, top.epoch
            return False
        missed = seen.epoch != top.epoch or top.offset > seen.offset
        if missed:
            seen.offset, seen.epoch = top.offset, top.epoch
        return missed
