"""In-process presence: exact, no expiry needed (a connection's removal is certain on one node)."""

from __future__ import annotations

from collections.abc import Iterable

from channels.names import ChannelKey
from channels.publication import ClientInfo
from presence.presence import PresenceStats


class MemoryPresence:
    owner = ""
    """One process: no other node ever purges this one's entries."""

    def __init__(self) -> None:
        self._channels: dict[ChannelKey, dict[str, ClientInfo]] = {}

    async def add(self, key: ChannelKey, info: ClientInfo) -> None:
        self._channels.setdefault(key, {})[info.client] = info

    async def remove(self, key: ChannelKey, client_id: str) -> None:
        members = self._channels.get(key)
        if members is not None:
            members.pop(client_id, None)
            if not members:
                del self._channels[key]

    async def get(self, key: ChannelKey) -> dict[str, ClientInfo]:
        return dict(self._channels.get(key, {}))

    async def stats(self, key: ChannelKey) -> PresenceStats:
        members = self._channels.get(key, {})
        return PresenceStats(len(members), len({info.user for info in members.values()}))

    async def refresh(self, entries: Iterable[tuple[ChannelKey, ClientInfo]]) -> None:
        """Nothing to do: entries of one process never expire, its removals are certain."""

    async def purge(self, owner: str) -> int:
        """Nothing to do: no other process adds entries here."""
        return 0

    async def close(self) -> None:
        self._channels.clear()
