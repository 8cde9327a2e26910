"""Agents at work in a document: their edits (``sync.edit``) on the room's live document, and their
presence while they work (an awareness state with a cursor, ``sync.cursors``), as a person's editor shows
a collaborator.

``AgentSession`` is one agent in one document for as long as it is open: it holds the room (the document
stays loaded), announces the agent's state ``{user: {name, color, colorLight, bot}, bot: true, cursor}``
under an awareness client id of its own, and moves the cursor to the range each of its edits changed.
``AgentEdits`` serves agents that hold no session (an HTTP request, one call): an agent's presence is shown
from its edit until ``linger`` seconds after it, and the next edit of the same agent in the same document
within that time reuses it, so an agent editing in steps shows as one collaborator whose cursor moves.

Policies:

- Order: an edit is applied as one transaction through the room (``DocRoom.edit``), so it is stored and
  relayed like any client's update (on a node that is not the document's writer too: published to the
  other nodes). Its cursor is announced only once the edit settled (``DocumentRooms.settled``): a client
  receives the update before the positions that name its characters.
- Identity: a session takes a random client id (as a Yjs client picks its own), so its awareness clock
  starts afresh; a client id is never reused by a later session, whose clock would look stale to clients
  that remember the old one (y-protocols keeps the clock of a removed client for as long as it runs).
- Renewal: while open, the state is announced again every ``OUTDATED_TIMEOUT / 2`` (y-protocols renews
  its own state as often), so neither the room nor the clients expire it.
- Leaving: the state is removed as y-protocols' ``removeAwarenessStates`` removes one (``DocRoom.withdraw``:
  state ``null``, clock + 1), for every peer and every other node.
- A room closed under a session (a failed store write, see ``sync.rooms``) is acquired again by its next
  edit, and the state announced again there.
- Bounds: the awareness bounds of the document hold for agents too (``sync.awareness``): a state they
  refuse is not shown (the edit still applies). ``AgentEdits`` keeps at most ``MAX_LINGERING`` presences per
  node; past it a presence ends with its edit.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from sync.awareness import OUTDATED_TIMEOUT
from sync.content import document_json
from sync.cursors import RelativePosition, agent_state
from sync.edit import EditLimits, EditResult
from sync.room import DocRoom
from sync.rooms import DocumentRooms
from sync.store import DocKey
from sync.version import document_version

log = logging.getLogger("switchboard.sync.agents")

RENEW_INTERVAL = OUTDATED_TIMEOUT / 2
MAX_LINGERING = 10_000


@dataclass(frozen=True, slots=True)
class Agent:
    """Who an agent is, as people see it: ``name`` (1-64 printable characters) and ``color``
    (``#rrggbb``; None: one of ``sync.cursors.PALETTE`` chosen by the name)."""

    name: str
    color: str | None = None

    def state(
        self, anchor: RelativePosition | None = None, head: RelativePosition | None = None
    ) -> dict[str, Any]:
        """Its awareness state (raises ``ValueError`` for a bad name or colour)."""
        return agent_state(self.name, anchor, head, self.color)


class AgentSession:
    """One agent in one document (see the module docstring). Use it as an async context manager, or
    ``open()`` / ``close()``."""

    def __init__(
        self,
        rooms: DocumentRooms,
        key: DocKey,
        agent: Agent,
        *,
        unit: str = "utf16",
        limits: EditLimits = EditLimits(),
    ) -> None:
        """Raises ``ValueError`` for a bad agent (name or colour)."""
        self.rooms = rooms
        self.key = key
        self.unit = unit
        self.limits = limits
        self.client_id = random.getrandbits(32)
        self.shown = False
        """Whether the document's awareness took the state (its bounds may refuse it)."""
        self._agent = agent
        self._state = orjson.dumps(agent.state())
        self._room: DocRoom | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._renewal: asyncio.TimerHandle | None = None

    @property
    def agent(self) -> Agent:
        return self._agent

    # ---------------------------------------------------------------- lifetime

    async def open(self) -> None:
        """Acquire the document and show the agent (no cursor yet)."""
        await self._ensure_room()

    def close(self) -> None:
        """Remove the agent's state for everyone and release the document (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        room, self._room = self._room, None
        if room is not None:
            room.withdraw(self)
            self.rooms.release(room)

    async def __aenter__(self) -> AgentSession:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _ensure_room(self) -> DocRoom:
        if self._closed:
            raise RuntimeError("the agent's session is closed")
        async with self._opening:
            room = self._room
            if room is not None and not room.closed:
                return room
            if room is not None:  # closed under us (a failed write): take the document again
                self._room = None
                self.rooms.release(room)
            room = await self.rooms.acquire(self.key)
            if self._closed:  # closed while acquiring
                self.rooms.release(room)
                raise RuntimeError("the agent's session is closed")
            self._room = room
            self._announce()
            return room

    # ---------------------------------------------------------------- what the agent does

    async def edit(self, ops: Any, *, if_version: str | None = None) -> EditResult:
        """Apply ``ops`` (``sync.edit``) in one transaction, wait until it settled, then move the cursor to
        the last edited range. Raises ``EditRejected`` (nothing applied), ``SyncError`` when the document
        cannot be opened."""
        await self.rooms.has_room()
        room = await self._ensure_room()
        result = room.edit(ops, if_version=if_version, unit=self.unit, limits=self.limits)
        await self.rooms.settled(room)
        cursor = result.cursor
        if cursor is not None and not self._closed:
            self.move(cursor.anchor, cursor.head)
        return result

    def move(self, anchor: RelativePosition | None, head: RelativePosition | None) -> None:
        """Show the cursor between ``anchor`` and ``head`` (Yjs relative positions; None: no cursor)."""
        self._state = orjson.dumps(self._agent.state(anchor, head))
        self._announce()

    def rename(self, agent: Agent) -> None:
        """Show the agent under another name or colour (the cursor stays)."""
        state = orjson.loads(self._state)
        cursor = state.get("cursor") or {}
        self._agent = agent
        self._state = orjson.dumps(agent.state(cursor.get("anchor"), cursor.get("head")))
        self._announce()

    def version(self) -> str:
        """The document's version now (``sync.version``), for a later ``if_version``."""
        if self._room is None:
            raise RuntimeError("the agent's session is not open")
        return document_version(self._room.doc).encode()

    def content(self) -> dict[str, Any]:
        """The document's content now (``sync.content``)."""
        if self._room is None:
            raise RuntimeError("the agent's session is not open")
        return document_json(self._room.doc)

    # ---------------------------------------------------------------- awareness

    def _announce(self) -> None:
        room = self._room
        if room is None or self._closed or room.closed:
            return  # a closed room: the next edit takes the document again and announces there
        shown = room.announce(self, self.client_id, self._state)
        if not shown and self.shown is not shown:
            log.info("document %r: the awareness of agent %r was refused by a bound", self.key[1], self.name)
        self.shown = shown
        if self._renewal is not None:
            self._renewal.cancel()
        self._renewal = asyncio.get_running_loop().call_later(RENEW_INTERVAL, self._announce)

    @property
    def name(self) -> str:
        return self._agent.name


class _Shown:
    __slots__ = ("session", "busy", "timer")

    def __init__(self, session: AgentSession) -> None:
        self.session = session
        self.busy = 0
        self.timer: asyncio.TimerHandle | None = None


class AgentEdits:
    """Edits by agents that hold no session, each shown while it works and ``linger`` seconds after."""

    def __init__(self, rooms: DocumentRooms, linger: float, limits: EditLimits = EditLimits()) -> None:
        self.rooms = rooms
        self.linger = linger
        self.limits = limits
        self._shown: dict[tuple[DocKey, str, str], _Shown] = {}

    def __len__(self) -> int:
        return len(self._shown)

    async def edit(
        self,
        key: DocKey,
        ops: Any,
        *,
        agent: Agent | None = None,
        if_version: str | None = None,
        unit: str = "utf16",
    ) -> EditResult:
        """Apply ``ops`` to the document ``key``; with ``agent``, show it while it works (see the class).
        Raises as ``AgentSession.edit``, and ``ValueError`` for a bad agent."""
        if agent is None:
            return await self.rooms.edit(key, ops, if_version=if_version, unit=unit, limits=self.limits)
        slot = (key, agent.name, unit)
        shown = self._shown.get(slot)
        if shown is None:
            shown = _Shown(AgentSession(self.rooms, key, agent, unit=unit, limits=self.limits))
            if len(self._shown) < MAX_LINGERING:
                self._shown[slot] = shown
        elif shown.session.agent != agent:
            shown.session.rename(agent)
        if shown.timer is not None:
            shown.timer.cancel()
            shown.timer = None
        shown.busy += 1
        try:
            return await shown.session.edit(ops, if_version=if_version)
        finally:
            shown.busy -= 1
            if shown.busy == 0:
                if self.linger > 0 and self._shown.get(slot) is shown:
                    shown.timer = asyncio.get_running_loop().call_later(self.linger, self._end, slot, shown)
                else:
                    self._end(slot, shown)

    def _end(self, slot: tuple[DocKey, str, str], shown: _Shown) -> None:
        if shown.busy:
            return
        if self._shown.get(slot) is shown:
            del self._shown[slot]
        shown.session.close()

    def close(self) -> None:
        """End every presence now (before the rooms close)."""
        for slot, shown in list(self._shown.items()):
            if shown.timer is not None:
                shown.timer.cancel()
            shown.busy = 0
            self._end(slot, shown)
