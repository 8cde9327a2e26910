"""The document relay interface: how one document's updates, awareness and writer role travel between the
nodes that hold it open.

Without a relay (``DocumentRooms(relay=None)``) a node is alone: every room is its document's writer and
nothing leaves the node. With one, every node holding a document open keeps a ``DocLink`` to the others:

- every change a node's room integrates from its own peers (or the server-side API) is published to the
  other holders (``publish_update``); a change that came from another node is applied, relayed to local
  peers and never published again;
- awareness accepted from a local peer, and the removals when it leaves, are published per connection
  (``publish_awareness``) so the other nodes can tell the connections apart (each speaks for at most a few
  client ids, see ``sync.awareness``); remote states expire like any other when they are not renewed;
- ``catch_up`` runs the sync exchange with the other holders: it sends this room's state vector, each
  holder answers with what the room lacks (and its own state vector, and its peers' awareness), and the
  room sends back what the holders lack. ``DocumentRooms`` runs it once a room is loaded, before any peer
  joins (waiting, within a bound, for every holder known to exist), so a late joiner's first sync step 2
  holds the full state; the relay runs it again by itself whenever messages may have been missed;
- exactly one holder at a time is the document's *writer* (a lease): only its journal writes the document
  to the store. The link tells its room through ``on_lease`` when it gains or loses the role.

The room side of the contract is ``RelayedRoom`` (``sync.room.DocRoom`` implements it).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from pycrdt import Doc

from sync.store import DocKey

LeaseCallback = Callable[[bool], None]
"""``on_lease(True)``: this node is now the document's writer; ``on_lease(False)``: it no longer is."""


class RelayedRoom(Protocol):
    """What a link needs from the room it serves. Calls come synchronously from the relay's reader."""

    doc: Doc[Any]
    closed: bool

    def apply_remote(self, update: bytes) -> None:
        """Apply an update from another node: relay it to local peers, store it if this node writes the
        document, never publish it again."""

    def apply_remote_awareness(self, owner: Hashable, update: bytes) -> None:
        """Apply an awareness update announced by ``owner`` (a connection on another node)."""

    def local_awareness(self) -> list[tuple[int, bytes]]:
        """The awareness states announced by this node's own peers: (connection id, awareness update)."""


class DocLink(Protocol):
    """One document's link to the other nodes that hold it."""

    writer: bool
    """Whether this node holds the document's writer lease."""

    def bind(self, room: RelayedRoom, on_lease: LeaseCallback) -> None:
        """Start delivering to ``room`` (messages that arrived before are delivered now, in order)."""

    async def catch_up(self, wait: bool = True) -> int:
        """Run the sync exchange with the other holders; with ``wait``, return once every holder known to
        exist answered, or the relay's bound passed. Returns the number of answers counted. Raises
        ``sync.store.StoreError`` when the request cannot be sent (the other nodes cannot be reached)."""

    async def claim(self) -> bool:
        """Try to become the writer now; ``on_lease(True)`` is called if this node got it."""

    def publish_update(self, update: bytes) -> None:
        """Send a change this node integrated from its own peers to the other holders (queued, in order)."""

    def publish_awareness(self, connection: int, update: bytes) -> None:
        """Send an awareness update accepted from local connection ``connection``."""

    async def flush(self) -> None:
        """Return once everything queued so far was published to the other nodes (or failed to be, which
        schedules a resync; never raises)."""

    async def close(self) -> None:
        """Send what is queued, give up the writer lease (telling the others), stop receiving; never
        disturbs a newer link of the same document (a reloaded room)."""


class DocumentRelay(Protocol):
    node_id: str

    @property
    def backlog_full(self) -> bool:
        """Whether the messages waiting to be sent to the other nodes passed the relay's bound (then the
        callers that can wait do, in ``has_room``, instead of queueing more)."""

    async def has_room(self) -> None:
        """Return once the backlog is within the relay's bound (at once if it is)."""

    async def start(self) -> None:
        """Start background work (lease upkeep, reconnect handling); idempotent, also after ``close``."""

    async def attach(self, key: DocKey) -> DocLink:
        """Start receiving ``key``'s messages (buffered until ``bind``). Raises ``sync.store.StoreError``
        when the other nodes cannot be reached now."""

    async def close(self) -> None:
        """Stop background work (links are closed by their rooms first)."""
