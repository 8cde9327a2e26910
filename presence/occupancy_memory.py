"""Occupancy in one process: this node's share is the hub's."""

from __future__ import annotations

import time
from collections.abc import Sequence

from channels.names import ChannelKey
from presence.occupancy import Transition


class MemoryOccupancy:
    owner = ""

    def __init__(self) -> None:
        self.occupied: set[ChannelKey] = set()

    async def update(self, changes: Sequence[tuple[ChannelKey, bool]]) -> list[Transition]:
        out: list[Transition] = []
        now = time.time()
        for key, has in changes:
            if has != (key in self.occupied):
                (self.occupied.add if has else self.occupied.discard)(key)
                out.append(Transition(key, has, now))
        return out

    async def purge(self, owner: str) -> list[Transition]:
        return []

    async def close(self) -> None:
        """Nothing to release."""
