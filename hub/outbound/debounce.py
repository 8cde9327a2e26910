"""A per-key debounce (sans-I/O), as y-websocket's persistence callback has it: a key is due ``wait``
seconds after its last change, and at the latest ``max_wait`` seconds after its first change not yet
reported, so a document edited without pause is still reported every ``max_wait``."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Debouncer(Generic[K]):
    def __init__(self, wait: float, max_wait: float) -> None:
        if not 0 < wait <= max_wait:
            raise ValueError("need 0 < wait <= max_wait")
        self.wait = wait
        self.max_wait = max_wait
        self._first: dict[K, float] = {}
        self._last: dict[K, float] = {}

    def __len__(self) -> int:
        return len(self._first)

    def touch(self, key: K, now: float) -> None:
        """``key`` changed at ``now``."""
        self._first.setdefault(key, now)
        self._last[key] = now

    def _deadline(self, key: K) -> float:
        return min(self._last[key] + self.wait, self._first[key] + self.max_wait)

    def next_due(self) -> float | None:
        """When the earliest key is due (None: nothing pending)."""
        return min((self._deadline(k) for k in self._first), default=None)

    def due(self, now: float) -> list[K]:
        """The keys due at ``now``, forgotten (a later change starts them anew)."""
        ready = [k for k in self._first if self._deadline(k) <= now]
        for key in ready:
            del self._first[key], self._last[key]
        return ready

    def drain(self) -> list[K]:
        """Every pending key, forgotten (at shutdown: report them now)."""
        keys = list(self._first)
        self._first.clear()
        self._last.clear()
        return keys
