"""Awareness bookkeeping of one document (cursors, names, selections), sans-I/O.

Semantics of y-protocols ``awareness.js`` as a server keeps them:

- An entry ``(client id, clock, state)`` is accepted when its clock is newer than the one known for that
  client, or equal with a ``null`` state for a client that still has one (a client leaving sends its
  current clock with ``null``). Anything else is stale and ignored (not relayed either).
- A ``null`` state removes the client. Its clock is kept, so a late copy of an older state stays stale.
- Every accepted entry is relayed to every connection of the document, the sender's included: the
  y-websocket provider counts its own echo as proof of life and reconnects after 30 s of silence.
- Which connection announced which client ids: when a connection ends, the states of the ids it still
  owns are removed with their clock + 1, as y-websocket's server does (``removeAwarenessStates``).
  An id announced again over a newer connection (a reconnect that raced the old socket's close) moves to
  it, so the old connection's close does not wipe the live state.
- States not renewed within ``OUTDATED_TIMEOUT`` are removed (clients renew theirs every 15 s).

Bounds (``AwarenessLimits``; every new joiner is sent every state at once, so what one connection announces
must not be able to crowd out the document): a state larger than ``max_state_size`` is never kept (the room
closes a local connection that sends one, see ``sync.room``), one owner speaks for at most
``max_ids_per_owner`` client ids, and the states together stay within ``max_bytes``. An entry past a bound
is refused: not kept, not relayed, counted in ``refused``. The clocks of removed ids are kept for at most
``MAX_REMOVED_CLOCKS`` ids (the oldest are forgotten first), so announcing and removing ids in turn cannot
grow the room either.

Owners are any hashable objects (the hub passes its connection objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sync.protocol import NULL_STATE, AwarenessEntry

OUTDATED_TIMEOUT = 30.0
"""Seconds after which a state that was not renewed is removed (y-protocols ``outdatedTimeout``)."""

MAX_REMOVED_CLOCKS = 1024
"""Removed client ids whose clock is remembered (so a late copy of an older state stays stale)."""


@dataclass(frozen=True, slots=True)
class AwarenessLimits:
    max_state_size: int = 16384
    """Bytes of one state's JSON."""
    max_ids_per_owner: int = 8
    """Client ids one connection may announce states for (a browser tab announces one)."""
    max_bytes: int = 524288
    """Bytes of every state of the document together."""


class AwarenessStates:
    __slots__ = ("_states", "_clocks", "_updated", "_owner", "_owned", "limits", "size", "refused")

    def __init__(self, limits: AwarenessLimits | None = None) -> None:
        self._states: dict[int, bytes] = {}
        self._clocks: dict[int, int] = {}
        self._updated: dict[int, float] = {}
        self._owner: dict[int, object] = {}
        self._owned: dict[object, set[int]] = {}
        self.limits = limits if limits is not None else AwarenessLimits()
        self.size = 0
        """Bytes of the present states."""
        self.refused = 0
        """Entries refused because of a bound."""

    def __len__(self) -> int:
        return len(self._states)

    def state(self, client_id: int) -> bytes | None:
        return self._states.get(client_id)

    def clock(self, client_id: int) -> int:
        return self._clocks.get(client_id, 0)

    def owned_by(self, owner: object) -> frozenset[int]:
        return frozenset(self._owned.get(owner, ()))

    def apply(self, entries: Iterable[AwarenessEntry], owner: object, now: float) -> list[AwarenessEntry]:
        """Apply an update announced over ``owner``; return the accepted entries (to relay)."""
        accepted: list[AwarenessEntry] = []
        states = self._states
        clocks = self._clocks
        limits = self.limits
        for entry in entries:
            client_id = entry.client_id
            owned = self._owned.get(owner, ())
            known = clocks.get(client_id, 0)
            removal = entry.state == NULL_STATE
            if removal and client_id not in states and client_id not in clocks:
                continue  # nothing to remove: remembering the id would only cost memory
            # Equal clocks are stale, even for an identical state: the stock provider echoes every
            # client's changes back, so "same again" from another connection does not mean it owns the id.
            if not (known < entry.clock or (known == entry.clock and removal and client_id in states)):
                continue
            if not removal:
                previous = len(states.get(client_id, b""))
                if (
                    len(entry.state) > limits.max_state_size
                    or (client_id not in owned and len(owned) >= limits.max_ids_per_owner)
                    or self.size - previous + len(entry.state) > limits.max_bytes
                ):
                    self.refused += 1  # one connection speaks for a few small states, not for the room
                    continue
            clocks[client_id] = entry.clock
            self._updated[client_id] = now
            if removal:
                self._drop(client_id)
                self._disown(client_id)
            else:
                self.size += len(entry.state) - len(states.get(client_id, b""))
                states[client_id] = entry.state
                if self._owner.get(client_id) is not owner:
                    self._disown(client_id)
                    self._owner[client_id] = owner
                    self._owned.setdefault(owner, set()).add(client_id)
            accepted.append(entry)
        self._forget_removed()
        return accepted

    def _drop(self, client_id: int) -> bool:
        state = self._states.pop(client_id, None)
        if state is None:
            return False
        self.size -= len(state)
        return True

    def _forget_removed(self) -> None:
        """Keep the clocks of at most MAX_REMOVED_CLOCKS removed ids, forgetting the oldest first."""
        excess = len(self._clocks) - len(self._states) - MAX_REMOVED_CLOCKS
        if excess <= 0:
            return
        for client_id in [c for c in self._clocks if c not in self._states][:excess]:
            del self._clocks[client_id]
            self._updated.pop(client_id, None)

    def remove_owner(self, owner: object, now: float) -> list[AwarenessEntry]:
        """``owner`` is gone: remove the states of the ids it owns; return the removals (to relay)."""
        ids = self._owned.pop(owner, None)
        if not ids:
            return []
        for client_id in ids:
            del self._owner[client_id]
        return self._remove(sorted(ids), now)

    def expire(self, now: float, timeout: float = OUTDATED_TIMEOUT) -> list[AwarenessEntry]:
        """Remove states not renewed within ``timeout``; return the removals (to relay)."""
        stale = [cid for cid in self._states if now - self._updated.get(cid, now) >= timeout]
        for client_id in stale:
            self._disown(client_id)
        removed = self._remove(stale, now)
        # Clocks of ids removed long ago are forgotten (y-protocols keeps them only for outdatedTimeout),
        # so a room's bookkeeping stays proportional to its live clients.
        gone = [
            c for c in self._clocks if c not in self._states and now - self._updated.get(c, now) >= timeout
        ]
        for client_id in gone:
            del self._clocks[client_id]
            self._updated.pop(client_id, None)
        return removed

    def snapshot(self) -> list[AwarenessEntry]:
        """Every present state (what a new connection is sent)."""
        clocks = self._clocks
        return [AwarenessEntry(cid, clocks[cid], state) for cid, state in self._states.items()]

    def _remove(self, ids: list[int], now: float) -> list[AwarenessEntry]:
        removed: list[AwarenessEntry] = []
        for client_id in ids:
            if not self._drop(client_id):
                continue
            clock = self._clocks[client_id] + 1
            self._clocks[client_id] = clock
            self._updated[client_id] = now
            removed.append(AwarenessEntry(client_id, clock, NULL_STATE))
        self._forget_removed()
        return removed

    def _disown(self, client_id: int) -> None:
        previous = self._owner.pop(client_id, None)
        if previous is not None:
            owned = self._owned.get(previous)
            if owned is not None:
                owned.discard(client_id)
                if not owned:
                    del self._owned[previous]
