"""Local connections of one node: by client id, by user, and each channel's subscribers (centrifuge's Hub).

The fan-out table maps a channel to one ``{client: push}`` per wire format (``hub.wire``): a publication is
encoded once per format that has subscribers, and a delivery is one dict iteration and one call of the
client's ``push`` (its bound ``Writer.push``; for the streaming formats, a method that also takes the
publication, to track resume positions). After the formats' tables comes the ``FEED`` table (``hub.wire``):
the feed subscriptions (conflated or delta-encoded, ``hub.feeds``) by client, which frame each publication
themselves; each channel with some has a ``DeltaMemo`` here, shared by them. A subscription being set up
sits in ``pending`` with a buffer: publications that arrive meanwhile are kept for it and handed over when it
becomes active, so none is lost between reading history and joining the fan-out.

Beside the fan-out, each channel's subscribers that asked for join/leave pushes have tables of their own
(``join_leave``, one per format): a join or leave is pushed to them alone, so its cost is that of its
deliveries, never a walk over the whole room (a room of 18,000 where nobody asked costs what a room of one
does). What a buffer holds
counts against its connection's write bound (``Writer.hold``): a client subscribing to a busy channel while
the history read is slow is a slow consumer (3008) once that passes ``client_queue_max_size``, and its
buffer takes nothing more, rather than growing for as long as the read takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.fossil import DeltaMemo
from channels.names import ChannelKey
from channels.publication import Publication

if TYPE_CHECKING:
    from hub.client import Client

HELD_OVERHEAD = 64
"""Bytes a buffered publication is taken to cost beyond its data (what its push adds: channel, offset, info
framing); the data is what matters for the bound."""


def held_size(pub: Publication) -> int:
    """What a publication buffered for a connection counts against its write bound."""
    info = pub.info
    extra = 0 if info is None else len(info.conn_info or b"") + len(info.chan_info or b"") + len(info.user)
    return len(pub.data) + extra + HELD_OVERHEAD


Push = Callable[..., None]
"""``push(frame)``; in the streaming format's table ``push(frame, publication_or_None)``."""


class Registry:
    __slots__ = ("clients", "users", "fanout", "join_leave", "pending", "formats", "memos", "watch")

    def __init__(self, formats: int = 1) -> None:
        self.formats = formats
        """Tables per channel: one per wire format, and the FEED table after them (its index)."""
        self.clients: dict[str, Client] = {}
        self.users: dict[tuple[str, str], set[Client]] = {}
        self.fanout: dict[ChannelKey, list[dict[Client, Any]]] = {}
        """Each channel's subscribers, one table per wire format (index: ``Client.fmt``), then the feed
        subscriptions (index ``formats``: ``FeedSubscription`` by client)."""
        self.pending: dict[ChannelKey, dict[Client, list[Publication]]] = {}
        self.memos: dict[ChannelKey, DeltaMemo] = {}
        """The delta memo of each channel with feed subscriptions."""
        self.join_leave: dict[ChannelKey, list[dict[Client, None]]] = {}
        """Each channel's subscribers that asked for join/leave pushes (a subset of ``fanout``), by format."""
        self.watch: Callable[[ChannelKey], None] | None = None
        """Called when a channel gains its first active subscriber here, or loses its last (channel
        occupancy, ``hub.outbound``); None: nobody watches."""

    @property
    def channels(self) -> dict[ChannelKey, dict[Client, Push]]:
        """Each channel's subscribers of every format (a copy: for inspection, not the hot path)."""
        out: dict[ChannelKey, dict[Client, Push]] = {}
        for key, tables in self.fanout.items():
            merged: dict[Client, Push] = {}
            for table in tables:
                merged.update(table)
            out[key] = merged
        return out

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
        return key in self.fanout or key in self.pending

    def begin_subscribe(self, key: ChannelKey, client: Client) -> None:
        """Start buffering ``key``'s publications for ``client``.

        Whether the node must (still) receive ``key`` from the broker is the node's to decide
        (``Node.acquire_channel`` / ``release_channel`` look at ``has_local``), not the registry's.
        """
        self.pending.setdefault(key, {})[client] = []

    def buffer(self, waiting: dict[Client, list[Publication]], pub: Publication) -> None:
        """``pub`` arrived for a channel whose subscriptions ``waiting`` (its ``pending`` entry) are being set
        up: each keeps it, and it counts against each connection's write bound. A connection closed (for
        being slow, or any other reason) keeps nothing more."""
        size = held_size(pub)
        for client, buffered in list(waiting.items()):
            writer = client.writer
            if not writer.closed:
                buffered.append(pub)
                writer.hold(size)

    def finish_subscribe(
        self, key: ChannelKey, client: Client, push: Any, *, join_leave: bool = False, feed: bool = False
    ) -> list[Publication]:
        """Move ``client`` into the fan-out of ``key`` (its format's table, or with ``feed`` the FEED table,
        ``push`` then being its ``FeedSubscription``; with ``join_leave``, among those told of joins and
        leaves too); return what was buffered meanwhile."""
        buffered = self._drop_pending(key, client)
        tables = self.fanout.get(key)
        first = tables is None
        if tables is None:
            tables = self.fanout[key] = [{} for _ in range(self.formats + 1)]
        tables[self.formats if feed else client.fmt][client] = push
        if join_leave:
            watching = self.join_leave.get(key)
            if watching is None:
                watching = self.join_leave[key] = [{} for _ in range(self.formats)]
            watching[client.fmt][client] = None
        if first and self.watch is not None:
            self.watch(key)
        return buffered

    def memo(self, key: ChannelKey) -> DeltaMemo:
        """The delta memo of ``key``'s feed subscriptions (made for the first; dropped with the last)."""
        memo = self.memos.get(key)
        if memo is None:
            memo = self.memos[key] = DeltaMemo()
        return memo

    def cancel_subscribe(self, key: ChannelKey, client: Client) -> None:
        """Forget a subscription that failed to set up."""
        waiting = self.pending.get(key)
        if waiting is not None and client in waiting:
            self._drop_pending(key, client)

    def _drop_pending(self, key: ChannelKey, client: Client) -> list[Publication]:
        waiting = self.pending.get(key)
        if waiting is None:
            return []
        buffered = waiting.pop(client, [])
        if not waiting:
            del self.pending[key]
        if buffered:
            client.writer.release(sum(map(held_size, buffered)))
        return buffered

    def remove_subscriber(self, key: ChannelKey, client: Client) -> None:
        """Take ``client`` off ``key`` (active or still being set up)."""
        tables = self.fanout.get(key)
        if tables is not None:
            feeds = tables[self.formats]
            if client in tables[client.fmt]:
                del tables[client.fmt][client]
            elif client in feeds:
                del feeds[client]
                if not feeds:
                    self.memos.pop(key, None)
            if not any(tables):
                del self.fanout[key]
                if self.watch is not None:
                    self.watch(key)
        watching = self.join_leave.get(key)
        if watching is not None and client in watching[client.fmt]:
            del watching[client.fmt][client]
            if not any(watching):
                del self.join_leave[key]
        waiting = self.pending.get(key)
        if waiting is not None and client in waiting:
            self._drop_pending(key, client)

    def subscriber_count(self, key: ChannelKey) -> int:
        return sum(map(len, self.fanout.get(key, ())))

    def channel_keys(self) -> list[ChannelKey]:
        """Channels with at least one active subscriber on this node."""
        return list(self.fanout)
