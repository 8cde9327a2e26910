"""Stream positions a node has seen, per channel: how it notices that it missed publications.

With several nodes a publication reaches a node over Redis pub/sub, which delivers at most once: a
dropped pub/sub connection, or Redis restarted with its history gone, silently skips publications.
A subscriber that is *positioned* (Centrifuge's term: it tracks offsets and can recover) must never see
such a gap unannounced, so the node tracks, for each channel the broker delivers to it, the offset of
the last publication it received and the stream's epoch, and declares the channel's state
*insufficient* when

- a publication's offset is not the one after the last (a skip, or offsets restarting: a new epoch), or
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

    def __init__(self, offset: int | None, epoch: str | None) -> None:
        self.offset = offset
        """None until the node knows where the stream is (the first publication or read tells)."""
        self.epoch = epoch
        """None until a read names it, and again when offsets restart (a new epoch)."""


class ChannelPositions:
    __slots__ = ("_tops",)

    def __init__(self) -> None:
        self._tops: dict[ChannelKey, _Top] = {}

    def __contains__(self, key: ChannelKey) -> bool:
        return key in self._tops

    def known(self, key: ChannelKey) -> bool:
        """The node knows a position of ``key`` to check (it saw a publication with history, or a read)."""
        seen = self._tops.get(key)
        return seen is not None and seen.offset is not None

    def begin(self, key: ChannelKey) -> None:
        """The broker delivers ``key`` to the node from now on: follow its offsets from the first one."""
        self._tops.setdefault(key, _Top(None, None))

    def track(self, key: ChannelKey, top: StreamPosition) -> bool:
        """A subscriber read ``top`` from the broker, and a broker barrier since then delivered everything
        published up to it. True if the node missed publications (its last offset is below ``top``, or
        the stream has another epoch); the position is ``top`` then. Offsets past ``top`` (published
        after the read) are kept."""
        seen = self._tops.get(key)
        if seen is None:
            self._tops[key] = _Top(top.offset, top.epoch)
            return False
        if seen.offset is None:
            seen.offset, seen.epoch = top.offset, top.epoch
            return False
        if seen.epoch is None:
            missed = seen.offset < top.offset
        else:
            missed = seen.epoch != top.epoch or seen.offset < top.offset
        if missed or seen.epoch is None:
            seen.offset, seen.epoch = max(seen.offset, top.offset) if not missed else top.offset, top.epoch
        return missed

    def forget(self, key: ChannelKey) -> None:
        self._tops.pop(key, None)

    def observe(self, key: ChannelKey, offset: int) -> bool:
        """A publication with history ``offset`` arrived; True if the channel's state is now insufficient.

        Called once per publication on the hot path: one dict lookup.
        """
        seen = self._tops.get(key)
        if seen is None:
            return False
        last = seen.offset
        seen.offset = offset
        if last is None or offset == last + 1:
            return False
        if offset <= last:
            seen.epoch = None  # offsets restarted: a new stream
        return True

    def check(self, key: ChannelKey, top: StreamPosition) -> bool:
        """The broker reports ``top`` as the stream's top; True if the node missed something (another
        epoch, or a top past the last offset it received), and the tracked position becomes ``top``."""
        seen = self._tops.get(key)
        if seen is None:
            return False
        if seen.offset is None:
            seen.offset, seen.epoch = top.offset, top.epoch
            return False
        if seen.epoch is None:
            seen.epoch = top.epoch  # the new epoch the offsets restarted in
            missed = top.offset > seen.offset
        else:
            missed = seen.epoch != top.epoch or top.offset > seen.offset
        if missed:
            seen.offset, seen.epoch = top.offset, top.epoch
        return missed
