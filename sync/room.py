"""DocRoom: one open document on a node, its connections (peers) and their awareness.

The y-sync session of one connection, as y-websocket's server runs it:

- on join the room sends its sync step 1 (its state vector) and every known awareness state;
- a peer's step 1 is answered with step 2 (what the peer lacks), at most one at a time per peer: a step 1
  that arrives while the peer's last step 2 waits for the journal or is still being written to it
  (``Peer.replying``) is coalesced into it (dropped, and the peer is told ``COALESCED``). Nothing is lost:
  that step 2 holds the document as it was when it was computed, and every change since reaches the peer
  as a relayed update. (A y-websocket client sends step 1 when it connects and every ``resyncInterval``;
  it needs an answer, not one answer per request.) A step 1 with an empty state vector (a new client)
  is answered with the document's full state, built once and shared by every such answer until the
  document changes: late joiners arriving together cost one copy of the document, not one each, and a
  joiner of a document nobody edited since the last joiner costs no encoding at all (for 1.8 MB of
  50,000 edits pycrdt's ``get_update`` takes 30-60 ms of the loop). The copy is dropped when the document
  changes, or by the rooms' clock once no joiner asked for it for ``FULL_STATE_KEEP`` seconds
  (``forget_full_state``), so an idle open document does not hold its state twice for long.
- a peer's step 2 and update messages are applied to the room's pycrdt ``Doc`` ONCE; what the document
  actually integrated (pycrdt's after-transaction update: nothing for a duplicate, the released
  dependents for a gap that closed) is appended to the journal and relayed as ONE pre-built message to
  every other peer, after the journal made it durable;
- awareness is applied by the y-protocols rule and every accepted entry is relayed to ALL peers, the
  sender included; query-awareness is answered with every state;
- when a peer leaves, the awareness states it announced are removed and the others are told;
- server-side holders (agents, ``sync.agents``) announce states of their own (``announce``: the next clock
  of their client id, relayed and published like a peer's, under the same bounds) and remove them
  (``withdraw``) as a leaving peer's are removed.

Policies:

- Durability before relay: a peer receives an update (as a relay or inside a step 2) only after the
  journal wrote it, so a crash never loses an update that any client was sent. The sender keeps its own
  edit meanwhile, and a Yjs client always resends what the server lacks when it syncs again.
- Awareness is bounded (``sync.awareness``): a local peer that sends a state larger than
  ``RoomLimits.awareness.max_state_size`` raises ``LimitExceeded`` (its connection is closed); entries
  refused by the other bounds are dropped, and the peer is told ``AWARENESS_REFUSED``.
- Read-only peers get sync and awareness; updates from them are never applied or relayed.
  ``receive`` raises ``WriteRefused`` (the connection stays open) when such an update carried content the
  document lacks; the step 2 a read-only client sends in answer to our step 1 is dropped silently when it
  holds nothing new.
- Bad input raises (``ProtocolError``, ``UpdateRejected``, ``LimitExceeded``) before anything is applied:
  the caller closes that connection, the document and the other peers are unaffected.
- Compaction: once the log since the snapshot passes ``compact_after_updates`` rows or
  ``max(compact_after_bytes, snapshot size)`` bytes, the room queues a snapshot of its document
  (``Doc.get_update()``) behind the appends it covers. The byte bound grows with the snapshot, so a large
  document is re-encoded at most once per its own size of new updates.
- Size: ``max_document_size`` is checked before applying, against the stored size (snapshot plus log
  since, an upper bound of the encoded document) plus the bytes of updates still waiting for missing
  dependencies; only when that bound would pass the limit is the exact size computed. Server-side edits
  (``DocumentRooms.open``) are trusted and not size-checked; agents' JSON edits (``edit``) are checked
  the same way, against the size of their operations.

Across nodes (``link`` set, see ``sync.relay``): every change integrated from this node's peers or the
server-side API is also published to the other nodes holding the document, and changes from them
(``apply_remote``) are applied and relayed to this node's peers, never published again. Awareness from local
peers (and the removals when they leave) is published per connection; remote states are owned by
``("node", node id, connection)`` and expire like local ones when they are not renewed.
Only the document's writer (``writer``; always true on a single node) appends to the journal, and relays
to its peers after the commit. A room that is not the writer relays at once and marks itself ``unstored``;
when it becomes the writer (``take_over``) it merges what the store holds and appends its whole state once.
Remote updates are trusted (the node that took them from its peer checked them). The other nodes cannot be
slowed down from here, so while the journal's backlog is full (``Journal.full``) the writer relays a remote
change at once without journaling it and marks itself ``unjournaled``; ``store_unjournaled`` (called by
``DocumentRooms`` once the journal has room) then queues one compaction of the whole state. The node the
change came from holds it meanwhile, as it holds every change until a writer stored it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from pycrdt import Doc, TransactionEvent

from sync import protocol
from sync.awareness import AwarenessLimits, AwarenessStates
from sync.edit import EditLimits, EditResult, EditTooLarge, apply_edit, parse_ops
from sync.journal import Journal
from sync.protocol import AwarenessEntry, LimitExceeded, ProtocolError, SyncError, UpdateRejected
from sync.store import DocKey, StoredDocument, StoreError
from sync.update import client_ranges

if TYPE_CHECKING:
    from sync.relay import DocLink

log = logging.getLogger("switchboard.sync.room")

T = TypeVar("T")

EMPTY_UPDATE = b"\x00\x00"
"""A Yjs update with no structs and an empty delete set."""

EMPTY_STATE_VECTOR = b"\x00"
"""The state vector of a client that has nothing."""

KEEPALIVE = protocol.awareness(protocol.encode_awareness([]))
"""An awareness update with no entries: a no-op for every client, and a message the provider counts as
a sign of life (it reconnects after 30 s without one)."""


FULL_STATE_KEEP = 60.0
"""Seconds the shared full-state answer of an unchanged document is kept after its last use."""


class WriteRefused(SyncError):
    """A read-only peer sent an update with new content; it was dropped (the connection may stay)."""


COALESCED = "coalesced"
"""A notice: a sync step 1 was coalesced into the step 2 still on its way to the peer."""
AWARENESS_REFUSED = "awareness refused"
"""A notice: awareness entries from the peer were refused by a bound (``sync.awareness``)."""


class Peer(Protocol):
    """One connection of a room, as the room sees it. Implementations must not call back into the room
    from these methods."""

    @property
    def replying(self) -> bool:
        """Whether the last ``send_reply`` message is still queued for this peer (not yet written)."""

    def send(self, message: bytes, shared: bool = False) -> None:
        """Queue one y-websocket message (without awaiting). ``shared``: the same object goes to many peers
        (a relayed update, a broadcast, the full state), so holding it costs a peer no memory of its own."""

    def send_reply(self, message: bytes, shared: bool = False) -> None:
        """Queue a sync step 2 (as ``send``; ``replying`` tells when it has left)."""

    def notice(self, what: str) -> None:
        """Something the peer sent was not (fully) acted upon (``COALESCED``, ``AWARENESS_REFUSED``); the
        connection stays. For the peer's log, at most once per connection."""

    def terminate(self, error: SyncError) -> None:
        """End the connection because of ``error`` (the room is closing or failed)."""


@dataclass(frozen=True, slots=True)
class RoomLimits:
    max_update_size: int = 4 * 1024 * 1024
    max_document_size: int = 32 * 1024 * 1024
    compact_after_updates: int = 1000
    compact_after_bytes: int = 1024 * 1024
    awareness: AwarenessLimits = AwarenessLimits()


def decode_state_vector(raw: bytes) -> dict[int, int]:
    """A Yjs state vector: ``varUint(n)`` then n pairs of ``varUint(client) varUint(clock)``."""
    reader = protocol.Reader(raw)
    return {reader.var_uint(): reader.var_uint() for _ in range(reader.var_uint())}


class DocRoom:
    def __init__(
        self,
        key: DocKey,
        journal: Journal,
        limits: RoomLimits,
        stored: StoredDocument | None = None,
    ) -> None:
        self.key = key
        self.journal = journal
        self.limits = limits
        self.doc: Doc[Any] = Doc()
        stored = stored if stored is not None else StoredDocument()
        for update in stored.updates:
            try:
                self.doc.apply_update(update)
            except ValueError as exc:
                raise StoreError(f"stored document {key[1]!r} does not decode: {exc}") from None
        self.snapshot_bytes = stored.snapshot_bytes
        self.log_rows = stored.log_rows
        self.log_bytes = stored.log_bytes
        self.size = stored.snapshot_bytes + stored.log_bytes
        """An upper bound of the encoded document's size."""
        self.unintegrated = 0
        """Bytes of updates that could not be integrated yet (missing dependencies)."""
        self._waiting: list[tuple[int, dict[int, int]]] = []
        """Those updates: size and the clock each of their clients reaches, until the document has it."""
        self.awareness = AwarenessStates(limits.awareness)
        self.peers: dict[Peer, bool] = {}
        """Connected peers and whether each may write."""
        self.users = 0
        """Peers plus server-side holders (``DocumentRooms.acquire``); unloaded when it drops to 0."""
        self.closed = False
        self.relayed = 0
        self.coalesced = 0
        """Sync step 1 messages coalesced into an earlier answer."""
        self._answering: set[Peer] = set()
        """Peers whose step 2 waits for the journal."""
        self._full_state: bytes | None = None
        """The sync step 2 of the whole document, while it is current (see ``_answer_step1``)."""
        self._full_state_used = 0.0
        """Monotonic second the full-state answer was last built or sent."""
        self._derived: dict[Callable[[Doc[Any]], Any], Any] | None = None
        """Answers computed from the document as it is now (``derived``); dropped at its next change."""
        self._derived_used = 0.0
        """Monotonic second a ``derived`` answer was last asked for."""
        self._sender: Peer | None = None
        self._integrated: bytes | None = None
        """The update the last transaction emitted (see ``_apply``)."""
        self._compact_due = False
        self.link: DocLink | None = None
        """The link to the other nodes holding this document (None: this node is alone)."""
        self.writer = True
        """Whether this node writes the document to the store (the writer lease, when ``link`` is set)."""
        self.unstored = False
        """Changes were applied that this node did not journal (it was not the writer then)."""
        self.stored_at = 0.0
        """Wall-clock second the last update this node journaled became durable (0: none yet)."""
        self.unjournaled = False
        """As the writer, it relayed remote changes without journaling them (its journal was full)."""
        self._remote = False
        """The change being applied came from another node (not to be published again)."""
        self.on_stored: Callable[[DocKey], None] | None = None
        """Called when this node, as the writer, stored a change (every change; debounce it)."""
        self._subscription = self.doc.observe(self._on_change)

    # ---------------------------------------------------------------- peers

    def join(self, peer: Peer, can_write: bool) -> None:
        self.peers[peer] = can_write
        peer.send(protocol.sync_step1(self.doc.get_state()))
        states = self.awareness.snapshot()
        if states:
            peer.send(protocol.awareness(protocol.encode_awareness(states)))

    def leave(self, peer: Peer, now: float | None = None) -> None:
        if self.peers.pop(peer, None) is None:
            return
        self._answering.discard(peer)
        self.withdraw(peer, now)

    # ---------------------------------------------------------------- server-side awareness (agents)

    def announce(self, owner: object, client_id: int, state: bytes, now: float | None = None) -> bool:
        """Set the awareness state of ``client_id`` on behalf of ``owner``, a server-side holder (an
        agent, ``sync.agents``), as a client renews its own: the next clock, relayed to every peer and
        published to the other nodes like a peer's. False when a bound refused it (``sync.awareness``)."""
        if self.closed:
            return False
        entry = AwarenessEntry(client_id, self.awareness.clock(client_id) + 1, state)
        accepted = self.awareness.apply([entry], owner, time.monotonic() if now is None else now)
        if accepted:
            self._announced(owner, accepted)
        return bool(accepted)

    def withdraw(self, owner: object, now: float | None = None) -> None:
        """Remove every state ``owner`` (a peer, or a server-side holder) still owns, as y-protocols'
        ``removeAwarenessStates`` does: state ``null`` with the clock + 1, which every Yjs ``Awareness``
        accepts (its rule: a newer clock, or a ``null`` at the same clock). Told to every peer and node."""
        removed = self.awareness.remove_owner(owner, time.monotonic() if now is None else now)
        if removed and not self.closed:
            self._announced(owner, removed)

    def _announced(self, owner: object, entries: list[AwarenessEntry]) -> None:
        encoded = protocol.encode_awareness(entries)
        self._broadcast(protocol.awareness(encoded))
        if self.link is not None:
            self.link.publish_awareness(id(owner), encoded)

    def withdraw_awareness(self, now: float | None = None) -> None:
        """The room is closing with its peers still joined (a failed write): remove their awareness and
        tell the other nodes (before the link closes). Local peers are being terminated; they are not told."""
        at = time.monotonic() if now is None else now
        for peer in self.peers:
            removed = self.awareness.remove_owner(peer, at)
            if removed and self.link is not None:
                self.link.publish_awareness(id(peer), protocol.encode_awareness(removed))

    def receive(self, peer: Peer, data: bytes, now: float | None = None) -> None:
        """Handle one message from ``peer``. Raises ``SyncError`` subclasses (see the module policies)."""
        message = protocol.decode(data)
        if isinstance(message, protocol.SyncUpdate | protocol.SyncStep2):
            self._apply(peer, message.update)
        elif isinstance(message, protocol.SyncStep1):
            self._answer_step1(peer, message.state_vector)
        elif isinstance(message, protocol.AwarenessMessage):
            entries = protocol.decode_awareness(message.update)
            limit = self.limits.awareness.max_state_size
            for entry in entries:
                if len(entry.state) > limit:
                    raise LimitExceeded(f"awareness state too large ({len(entry.state)} > {limit} bytes)")
            refused = self.awareness.refused
            accepted = self.awareness.apply(entries, peer, time.monotonic() if now is None else now)
            if self.awareness.refused != refused:
                peer.notice(AWARENESS_REFUSED)
            if accepted:
                # All accepted (the usual case): the incoming bytes are already the message to relay.
                every = len(accepted) == len(entries)
                relay = data if every else self._awareness_message(accepted)
                self._broadcast(relay)
                if self.link is not None:
                    encoded = message.update if every else protocol.encode_awareness(accepted)
                    self.link.publish_awareness(id(peer), encoded)
        elif isinstance(message, protocol.QueryAwareness):
            peer.send(self._awareness_message(self.awareness.snapshot()))
        else:  # an auth message: servers send those, clients do not
            log.debug("auth message from a client ignored")

    def _answer_step1(self, peer: Peer, state_vector: bytes) -> None:
        if peer in self._answering or peer.replying:
            decode_state_vector(state_vector)  # still judged: garbage closes the connection either way
            self.coalesced += 1
            peer.notice(COALESCED)
            return
        shared = state_vector == EMPTY_STATE_VECTOR
        if shared:
            if self._full_state is None:
                self._full_state = protocol.sync_step2(self.doc.get_update())
            self._full_state_used = time.monotonic()
            reply = self._full_state
        else:
            # Read by us first: yrs reserves room for as many entries as the count claims before reading them,
            # so 13 bytes claiming 2**62 entries cost 500 MB and seconds. Ours stops at the end of the bytes.
            decode_state_vector(state_vector)
            try:
                missing = self.doc.get_update(state_vector)
            except ValueError:
                raise ProtocolError("sync step 1 holds no valid state vector") from None
            reply = protocol.sync_step2(missing)
        if not self.writer:  # nothing here waits for this node's journal (see the module policies)
            peer.send_reply(reply, shared)
            return
        # Computed now (covers everything applied so far), sent once all of that is durable.
        self._answering.add(peer)

        def answer() -> None:
            if peer in self._answering:  # else the peer left meanwhile
                self._answering.discard(peer)
                peer.send_reply(reply, shared)

        self.journal.after_durable(answer, self.key)

    def _apply(self, peer: Peer, update: bytes) -> None:
        limits = self.limits
        if len(update) > limits.max_update_size:
            raise LimitExceeded(f"update too large ({len(update)} > {limits.max_update_size} bytes)")
        if not self.peers.get(peer, False):
            # Judged on the bytes alone: reading a read-only peer's update struct by struct would let it
            # spend the node's time (a 4 MiB update of 2 million structs takes seconds), again and again.
            if update != EMPTY_UPDATE:
                raise WriteRefused("read-only: update not applied")
            return
        self.make_room(len(update))
        # yrs reserves a table entry for every client the update's first count claims before it reads one:
        # 6 bytes claiming 450 million clients cost 0.5 GB and 0.4 s. A client section takes 3 bytes or more.
        reader = protocol.Reader(update)
        if reader.var_uint() * 3 > len(update) - reader.pos:
            raise UpdateRejected("invalid update: more clients than bytes")
        self._sender = peer
        self._integrated = None
        try:
            self.doc.apply_update(update)
        except (ValueError, RuntimeError) as exc:
            raise UpdateRejected(f"invalid update: {exc}") from None
        except BaseException as exc:
            # pycrdt turns a Rust panic on a malformed update into pyo3's PanicException, a BaseException.
            if type(exc).__name__ != "PanicException":
                raise
            raise UpdateRejected("invalid update: rejected by the CRDT") from None
        finally:
            self._sender = None
        # The common case: pycrdt integrated exactly what arrived (same bytes out as in). Otherwise look
        # inside: a duplicate, or structs waiting for what they depend on.
        if self._integrated is not None and self._waiting:
            self._release_waiting()
        if self._integrated != update:
            ends = self._missing_ends(update)
            if ends:
                # Parts wait for updates they depend on (held by pycrdt, not yet in the document): count
                # them against the size limit until they are integrated, so gaps cannot grow unbounded.
                self._waiting.append((len(update), ends))
                self.unintegrated += len(update)

    def make_room(self, size: int) -> None:
        """Raise ``LimitExceeded`` when ``size`` more bytes would pass ``max_document_size``: checked
        against the stored size (an upper bound), and only when that would pass it, the exact size."""
        limit = self.limits.max_document_size
        if self.size + self.unintegrated + size > limit:
            self.size = len(self.doc.get_update())
            if self.size + self.unintegrated + size > limit:
                raise LimitExceeded(f"document too large (limit {limit} bytes)")

    def _missing_ends(self, update: bytes) -> dict[int, int]:
        """The clients whose structs in ``update`` the document does not have yet, with the clock each
        reaches (deletions are not counted); empty when the document has them all."""
        try:
            ends = client_ranges(update)
        except ProtocolError:  # pycrdt is the judge of validity; our reader only looks
            return {}
        if not ends:
            return {}
        clocks = decode_state_vector(self.doc.get_state())
        return {client: end for client, end in ends.items() if end > clocks.get(client, 0)}

    def _release_waiting(self) -> None:
        """Stop counting the waiting updates the document has now integrated."""
        clocks = decode_state_vector(self.doc.get_state())
        self._waiting = [
            (size, ends)
            for size, ends in self._waiting
            if any(end > clocks.get(client, 0) for client, end in ends.items())
        ]
        self.unintegrated = sum(size for size, _ in self._waiting)

    # ---------------------------------------------------------------- document changes (any origin)

    def _on_change(self, event: TransactionEvent) -> None:
        """After every transaction that changed the document: log it, relay it once durable (on the
        writer; at once elsewhere), publish it to the other nodes unless it came from one."""
        update: bytes = event.update
        if update == EMPTY_UPDATE or self.closed:
            return
        self._full_state = None
        self._derived = None
        self._integrated = update
        self.size += len(update)
        sender = self._sender
        if self.writer and self._remote and self.journal.full:
            self.unjournaled = True  # see the module docstring: stored whole by ``store_unjournaled``
            self._relay(update, sender)
        elif self.writer:
            self.journal.append(self.key, update)
            self.log_rows += 1
            self.log_bytes += len(update)
            # The message is built when it goes out: while parked, the update is held once (the journal's).
            self.journal.after_durable(lambda: self._durable(update, sender), self.key)
            if self.on_stored is not None:
                self.on_stored(self.key)
            if not self._compact_due and self._compaction_due():
                self._compact_due = True
                asyncio.get_running_loop().call_soon(self._compact_if_due)
        else:
            self.unstored = True
            self._relay(update, sender)
        if self.link is not None and not self._remote:
            self.link.publish_update(update)

    def _durable(self, update: bytes, sender: Peer | None) -> None:
        self.stored_at = time.time()
        self._relay(update, sender)

    def _relay(self, update: bytes, sender: Peer | None) -> None:
        """Send ``update`` to every peer but its sender, as one message object shared by all."""
        if self.closed or not any(peer is not sender for peer in self.peers):
            return
        message = protocol.update(update)
        count = 0
        for peer in self.peers:
            if peer is not sender:
                peer.send(message, True)
                count += 1
        self.relayed += count

    # ---------------------------------------------------------------- other nodes (sync.relay.RelayedRoom)

    def apply_remote(self, update: bytes) -> None:
        """Apply an update another node integrated: relay it here, store it if writer, never publish it."""
        if self.closed:
            return
        self._remote = True
        try:
            self.doc.apply_update(update)
        except (ValueError, RuntimeError) as exc:
            log.warning("document %r: an update from another node was rejected: %s", self.key[1], exc)
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            log.warning("document %r: an update from another node made the CRDT panic", self.key[1])
        finally:
            self._remote = False

    def apply_remote_awareness(self, owner: Hashable, update: bytes) -> None:
        """Apply awareness announced by ``owner``, a connection on another node; relay what is accepted."""
        if self.closed:
            return
        entries = protocol.decode_awareness(update)
        accepted = self.awareness.apply(entries, owner, time.monotonic())
        if accepted:
            self._broadcast(self._awareness_message(accepted))

    def local_awareness(self) -> list[tuple[int, bytes]]:
        """The states this node's own peers announced, per connection (for another node's sync)."""
        out: list[tuple[int, bytes]] = []
        awareness = self.awareness
        for peer in self.peers:
            ids = awareness.owned_by(peer)
            entries = [
                AwarenessEntry(cid, awareness.clock(cid), state)
                for cid in sorted(ids)
                if (state := awareness.state(cid)) is not None
            ]
            if entries:
                out.append((id(peer), protocol.encode_awareness(entries)))
        return out

    def take_over(self, stored: StoredDocument | None) -> None:
        """This node became the writer: merge what the store holds (``stored``, None if it could not be
        read), then append the whole state once if this node applied changes it did not journal."""
        if self.closed:
            return
        self.writer = True
        if stored is not None:
            self.snapshot_bytes = stored.snapshot_bytes
            self.log_rows = stored.log_rows
            self.log_bytes = stored.log_bytes
            for update in stored.updates:  # what the store has and this node lacks goes to everyone
                try:
                    self.doc.apply_update(update)
                except ValueError as exc:
                    log.error("stored document %r does not decode: %s", self.key[1], exc)
        if self.unstored or stored is None:
            state = self.doc.get_update()
            self.journal.append(self.key, state)
            self.log_rows += 1
            self.log_bytes += len(state)
            self.unstored = False
            if self.on_stored is not None:
                self.on_stored(self.key)

    def store_unjournaled(self) -> None:
        """The writer relayed changes it did not journal (its journal was full): store the whole state."""
        if self.writer and self.unjournaled and not self.closed:
            self.compact()

    def store_before_leaving(self) -> None:
        """The room unloads while another node is the writer, holding changes this node never journaled:
        append its whole state once anyway. If the writer is alive it has them already (and a later
        compaction of its own loses nothing); if it died before storing them, this is the only copy that
        reaches the store. Only an append, never a compaction: merging a Yjs state again changes nothing,
        so this cannot undo the writer's work."""
        if self.closed or self.writer or not self.unstored:
            return
        self.journal.append(self.key, self.doc.get_update())
        self.unstored = False

    def stop_writing(self) -> None:
        """Another node writes the document now (or this one cannot tell that it still may)."""
        self.writer = False
        self.unstored = True  # what this node holds may not be in the store any more (a Redis restart)

    def transact(self, fn: Callable[[Doc[Any]], T], origin: str = "server") -> T:
        """Run ``fn`` on the document in one transaction; its changes are logged and relayed."""
        with self.doc.transaction(origin=origin):
            return fn(self.doc)

    def edit(
        self,
        ops: Any,
        *,
        if_version: str | None = None,
        unit: str = "utf16",
        limits: EditLimits = EditLimits(),
    ) -> EditResult:
        """Apply an agent's JSON ops (``sync.edit``) in one transaction; its changes are logged and relayed
        as ``transact``'s. Raises ``EditRejected`` (nothing applied; ``EditTooLarge`` also when the edit's
        ops would take the document past ``max_document_size``), ``StoreError`` on a closed room."""
        if self.closed:
            raise StoreError("the document was closed; open it again")
        parse_ops(ops, limits)  # a malformed edit says so before its size is judged against the document
        try:
            size = len(orjson.dumps(ops))
        except (
            TypeError,
            orjson.JSONEncodeError,
        ):  # an integer past 64 bits in a path: the dry run refuses it
            size = 0
        try:
            self.make_room(size)
        except LimitExceeded as exc:
            raise EditTooLarge(exc.reason) from None
        return apply_edit(self.doc, ops, if_version=if_version, unit=unit, limits=limits, origin="agent")

    # ---------------------------------------------------------------- compaction

    def _compaction_due(self) -> bool:
        limits = self.limits
        return self.log_rows >= limits.compact_after_updates or self.log_bytes >= max(
            limits.compact_after_bytes, self.snapshot_bytes
        )

    def _compact_if_due(self) -> None:
        self._compact_due = False
        if not self.closed and self.writer and self._compaction_due():
            self.compact()

    def compact(self) -> None:
        """Queue a snapshot that replaces the stored log (behind the appends it covers)."""
        snapshot = self.doc.get_update()
        self.journal.compact(self.key, snapshot)
        self.snapshot_bytes = len(snapshot)
        self.size = len(snapshot)
        self.log_rows = 0
        self.log_bytes = 0
        self.unjournaled = False

    # ---------------------------------------------------------------- upkeep

    def forget_full_state(self, now: float | None = None) -> None:
        """Drop the shared full-state answer, and the ``derived`` ones, each if nobody asked for it for
        ``FULL_STATE_KEEP`` seconds before ``now`` (None: drop them now): a reader polling one does not
        keep the other alive. The peers still sending the full state keep their reference."""
        if now is None or now - self._full_state_used >= FULL_STATE_KEEP:
            self._full_state = None
        if now is None or now - self._derived_used >= FULL_STATE_KEEP:
            self._derived = None

    def derived(self, make: Callable[[Doc[Any]], T]) -> T:
        """``make(doc)`` for the document as it is now, computed once and kept while the document is
        unchanged (dropped at its next change, or like the full state when unused): for an answer many
        readers ask of a document that changes less often than it is read (its JSON content and version,
        which cost an encoding and a copy of the whole document). ``make`` is the key: pass one function,
        not a new lambda each time; what it returns is shared, so it should be immutable (bytes)."""
        self._derived_used = time.monotonic()
        if self._derived is None:
            self._derived = {}
        elif make in self._derived:
            return self._derived[make]  # type: ignore[no-any-return]
        value = self._derived[make] = make(self.doc)
        return value

    def expire_awareness(self, now: float) -> None:
        removed = self.awareness.expire(now)
        if removed:
            self._broadcast(self._awareness_message(removed))

    def keepalive(self) -> None:
        self._broadcast(KEEPALIVE)

    def close(self, error: SyncError | None = None) -> None:
        """Stop relaying; with ``error``, end every peer's connection with it."""
        if self.closed:
            return
        self.closed = True
        self.doc.unobserve(self._subscription)
        if error is not None:
            for peer in list(self.peers):
                peer.terminate(error)

    def _broadcast(self, message: bytes) -> None:
        for peer in self.peers:
            peer.send(message, True)

    @staticmethod
    def _awareness_message(entries: list[AwarenessEntry]) -> bytes:
        return protocol.awareness(protocol.encode_awareness(entries))
