"""The PresenceManager interface. Implementations: ``presence_memory`` (one process), ``presence_redis``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from channels.names import ChannelKey
from channels.publication import ClientInfo


class PresenceError(Exception):
    """Base of the presence errors."""


class PresenceUnavailable(PresenceError):
    """The presence backend cannot answer now."""


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


class PresenceManager(Protocol):
    async def add(self, key: ChannelKey, info: ClientInfo) -> None:
        """Record (or refresh) ``info.client`` as present in ``key``."""

    async def remove(self, key: ChannelKey, client_id: str) -> None: ...

    async def get(self, key: ChannelKey) -> dict[str, ClientInfo]:
        """Every present client of ``key``, by client id."""

    async def stats(self, key: ChannelKey) -> PresenceStats: ...

    async def refresh(self, entries: Sequence[tuple[ChannelKey, ClientInfo]]) -> None:
        """Re-add many entries at once: the owning node calls it every ``presence_update_interval`` so
        that live entries never expire, while a dead node's entries do."""

    async def close(self) -> None: ...
