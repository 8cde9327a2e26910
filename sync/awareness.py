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

Owners are any hashable objects (the hub passes its connection objects).
"""

from __future__ import annotations

from collections.abc import Iterable

from sync.protocol import NULL_STATE, AwarenessEntry

MAX_IDS_PER_OWNER = 32
"""Most client ids one connection may announce states for (a browser tab announces one)."""

OUTDATED_TIMEOUT = 30.0
"""Seconds after which a state that was not renewed is removed (y-protocols ``outdatedTimeout``)."""


class AwarenessStates:
    __slots__ = ("_states", "_clocks", "_updated", "_owner", "_owned")

    def __init__(self) -> None:
        self._states: dict[int, bytes] = {}
        self._clocks: dict[int, int] = {}
        self._updated: dict[int, float] = {}
        self._owner: dict[int, object] = {}
        self._owned: dict[object, set[int]] = {}

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
        for entry in entries:
            client_id = entry.client_id
            owned = self._owned.get(owner, ())
            known = clocks.get(client_id, 0)
            removal = entry.state == NULL_STATE
            if removal and client_id not in states and client_id not in clocks:
                continue  # nothing to remove: remembering the id would only cost memory
            if not removal and client_id not in owned and len(owned) >= MAX_IDS_PER_OWNER:
                continue  # one connection speaks for a few clients, not for unbounded state
            # Equal clocks are stale, even for an identical state: the stock provider echoes every
            # client's changes back, so "same again" from another connection does not mean it owns the id.
            if not (known < entry.clock or (known == entry.clock and removal and client_id in states)):
                continue
            clocks[client_id] = entry.clock
            self._updated[client_id] = now
            if removal:
                states.pop(client_id, None)
                self._disown(client_id)
            else:
                states[client_id] = entry.state
                if self._owner.get(client_id) is not owner:
                    self._disown(client_id)
                    self._owner[client_id] = owner
                    self._owned.setdefault(owner, set()).add(client_id)
            accepted.append(entry)
        return accepted

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
            if self._states.pop(client_id, None) is None:
                continue
            clock = self._clocks[client_id] + 1
            self._clocks[client_id] = clock
            self._updated[client_id] = now
            removed.append(AwarenessEntry(client_id, clock, NULL_STATE))
        return removed

    def _disown(self, client_id: int) -> None:
        previous = self._owner.pop(client_id, None)
        if previous is not None:
            owned = self._owned.get(previous)
            if owned is not None:
                owned.discard(client_id)
                if not owned:
                    del self._owned[previous]
