"""The Occupancy interface: whether a channel has subscribers anywhere in the hub, and the moments that
changes (a channel ``occupied``: its first subscriber arrived on any node; ``vacated``: its last one left
every node). Implementations: ``occupancy_memory`` (one process), ``occupancy_redis`` (many nodes).

A node reports its own share only (``update``: it has, or no longer has, subscribers of a channel); the
backend combines the nodes' shares and tells the one call whose change made the hub-wide transition, so
each transition is reported once in the whole hub, by one node. Per-node counts alone cannot tell that:
the first subscriber on node A is not the first in the hub when node B has some.

Error tree: ``presence.presence.PresenceUnavailable`` when the backend cannot be reached (nothing was
changed that the caller can rely on; it tries again later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from channels.names import ChannelKey


@dataclass(frozen=True, slots=True)
class Transition:
    key: ChannelKey
    occupied: bool
    """True: the channel's first subscriber in the hub arrived; False: its last one left."""
    at: float
    """Epoch seconds, on the backend's clock (one clock per channel: transitions of one channel are in
    order by it)."""


class Occupancy(Protocol):
    @property
    def owner(self) -> str:
        """Whose shares this instance reports (announced to the other nodes, which ``purge`` it once
        this node is gone); empty when there are no other nodes."""

    async def update(self, changes: Sequence[tuple[ChannelKey, bool]]) -> list[Transition]:
        """Record this node's share of each channel (True: it has subscribers); the hub-wide transitions
        these changes made. Reporting the share a channel already has changes nothing (and renews it)."""

    async def purge(self, owner: str) -> list[Transition]:
        """Remove every share of the instance ``owner`` (a node that died); the channels that it left
        vacated. Done once across the hub when several nodes ask."""

    async def close(self) -> None: ...
