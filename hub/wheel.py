"""The session clock's timer wheel: which connections are due for a look this second (sans-I/O).

Policy: each connection is in at most one bucket, the whole second at which something about it falls due
(its next ping, its pong deadline, its token's or a subscription's expiry, the end of its handshake
grace); a pass takes the buckets of the seconds that have gone by, and whoever looks at a connection
puts it back at its next due second. So a pass costs the connections due in it, never all of them: an
idle connection is looked at about once per ping interval, not once a second.

Due times only need to be exact in one direction: a connection looked at too early is put back at its
real due time, but one looked at too late misses its deadline. So ``schedule`` moves a connection to an
earlier second and ignores a later one (the look at the earlier second finds the later time).
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar

NEVER = 1 << 62
"""``clock_due`` of an entry in no bucket."""


class Scheduled(Protocol):
    clock_due: int
    """The second of the bucket the entry is in (``NEVER``: none)."""


T = TypeVar("T", bound=Scheduled)


class TimerWheel(Generic[T]):
    """Entries in buckets of whole seconds (``math.ceil`` of the due time, on the caller's clock)."""

    __slots__ = ("_buckets", "_done")

    def __init__(self, now: float = 0.0) -> None:
        self._buckets: dict[int, list[T]] = {}
        self._done = math.floor(now)
        """The last second whose bucket was taken: nothing is put at or before it."""

    def schedule(self, entry: T, when: float) -> None:
        """Look at ``entry`` at ``when`` (the next second after the last pass at the earliest), or at the
        earlier second it is already due at."""
        second = max(math.ceil(when), self._done + 1)
        if second >= entry.clock_due:
            return
        entry.clock_due = second  # an entry in a later bucket is now stale: ``take`` skips it
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [entry]
        else:
            bucket.append(entry)

    def take(self, now: float) -> list[T]:
        """The entries due at or before ``now``, each once; they are in no bucket any more."""
        end = math.floor(now)
        if end <= self._done:
            return []
        buckets = self._buckets
        if end - self._done <= len(buckets):
            seconds = range(self._done + 1, end + 1)
        else:  # the clock jumped further than there are buckets: visit the buckets instead
            seconds = sorted(s for s in buckets if s <= end)  # type: ignore[assignment]
        self._done = end
        due: list[T] = []
        for second in seconds:
            bucket = buckets.pop(second, None)
            if bucket is None:
                continue
            for entry in bucket:
                if entry.clock_due == second:
                    entry.clock_due = NEVER
                    due.append(entry)
        return due

    def discard(self, entry: T) -> None:
        """Take ``entry`` out of its bucket (it is skipped when the bucket is taken)."""
        entry.clock_due = NEVER

    def __len__(self) -> int:
        """Entries in buckets, stale ones included."""
        return sum(map(len, self._buckets.values()))
