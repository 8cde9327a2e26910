"""Local connections of one node: by client id, by user, and each channel's subscribers (centrifuge's Hub).

The fan-out table maps a channel to ``{client: push}`` where ``push`` is the bound ``Writer.push`` of the
client's connection, so a delivery is one dict iteration and one call. A subscription being set up sits in
``pending`` with a buffer: publications that arrive meanwhile are kept for it and handed over when it
becomes active, so none is lost between reading history and joining the fan-out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.names import ChannelKey
from channels.publication import Publication

if TYPE_CHECKING:
    from hub.client import Client

Push = Callable[[bytes], None]


class Registry:
    __slots__ = ("clients", "users", "channels", "pending")

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.users: dict[tuple[str, str], set[Client]] = {}
        self.channels: dict[ChannelKey, dict[Client, Push]] = {}
        self.pending: dict[ChannelKey, dict[Client, list[Publication]]] = {}

    # connections
    def add_client(self, client: Client) -> None:
        self.clients[client.id] = client
        self.users.setdefault((client.tenant, client.user), set()).add(client)

    def remove_client(self, client: Client) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        key = (client.tenant, client.user)
        users = self.users.get(key)
        if users is not None:
            users.discard(client)
            if not users:
                del self.users[key]

    def user_clients(self, tenant: str, user: str) -> list[Client]:
        return list(self.users.get((tenant, user), ()))

    # subscriptions
    def has_local(self, key: ChannelKey) -> bool:
        return key in self.channels or key in self.pending

    def begin_subscribe(self, key: ChannelKey, client: Client) -> bool:
        """Start buffering ``key``'s publications for ``client``; True if the node had no one on ``key``."""
        first = not self.has_local(key)
        self.pending.setdefault(key, {})[client] = []
        return first

    def finish_subscribe(self, key: ChannelKey, client: Client, push: Push) -> list[Publication]:
        """Move ``client`` into the fan-out of ``key``; return what was buffered meanwhile."""
        buffered = self._drop_pending(key, client)
        self.channels.setdefault(key, {})[client] = push
        return buffered

    def cancel_subscribe(self, key: ChannelKey, client: Client) -> bool:
        """Forget a subscription that failed to set up.

        True if this removed the node's last one on ``key``.
        """
        waiting = self.pending.get(key)
        if waiting is None or client not in waiting:
            return False
        self._drop_pending(key, client)
        return not self.has_local(key)

    def _drop_pending(self, key: ChannelKey, client: Client) -> list[Publication]:
        waiting = self.pending.get(key)
        if waiting is None:
            return []
        buffered = waiting.pop(client, [])
        if not waiting:
            del self.pending[key]
        return buffered

    def remove_subscriber(self, key: ChannelKey, client: Client) -> bool:
        """Take ``client`` off ``key``; True if this removed the node's last one on ``key``."""
        removed = False
        subs = self.channels.get(key)
        if subs is not None and client in subs:
            removed = True
            del subs[client]
            if not subs:
                del self.channels[key]
        waiting = self.pending.get(key)
        if waiting is not None and client in waiting:
            removed = True
            self._drop_pending(key, client)
        return removed and not self.has_local(key)

    def subscriber_count(self, key: ChannelKey) -> int:
        return len(self.channels.get(key, ()))
