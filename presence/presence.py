"""The PresenceManager interface. Implementations: ``presence_memory`` (one process), ``presence_redis``."""

from __future__ import annotations

from collections.abc import Iterable
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
    @property
    def owner(self) -> str:
        """Whose entries this instance adds: a name unique to this process (a node's id and a random
        incarnation), announced to the other nodes so that one of them can ``purge`` them once it is gone.
        Empty when there are no other nodes (one process: nothing to purge)."""

    async def add(self, key: ChannelKey, info: ClientInfo) -> None:
        """Record (or refresh) ``info.client`` as present in ``key``."""

    async def remove(self, key: ChannelKey, client_id: str) -> None: ...

    async def get(self, key: ChannelKey) -> dict[str, ClientInfo]:
        """Every present client of ``key``, by client id."""

    async def stats(self, key: ChannelKey) -> PresenceStats: ...

    async def refresh(self, entries: Iterable[tuple[ChannelKey, ClientInfo]]) -> None:
        """Re-add many entries at once: the owning node calls it every ``presence_update_interval`` so
        that live entries never expire, while a dead node's entries do. ``entries`` may be read lazily,
        a slice at a time with the loop let go between (a generator over the node's sessions), and only
        after the call began: a removal at any point of the reading wins over the re-add (see
        ``presence_redis.RedisPresence.refresh``). Raises PresenceUnavailable when some entries could not
        be refreshed (those expire by themselves unless a later refresh reaches them)."""

    async def purge(self, owner: str) -> int:
        """Remove every entry the instance ``owner`` added (a node that died without removing its own):
        at once, instead of when their ttl runs out. Idempotent, and done once across the hub when several
        nodes ask at the same time; returns how many entries this call removed."""

    async def close(self) -> None: ...
