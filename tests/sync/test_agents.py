"""sync.agents: an agent's session in a document (presence, cursor, renewal, removal, a room closed under
it) and AgentEdits, the edits of agents without a session (one presence per agent, lingering, bounded)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sync import agents
from sync.agents import Agent, AgentEdits, AgentSession
from sync.content import document_json
from sync.edit import InvalidEdit
from sync.room import DocRoom
from sync.rooms import DocumentRooms
from sync.store import DocKey, StoreError
from sync.store_sqlite import SqliteDocumentStore
from tests.conftest import TIMEOUT

KEY: DocKey = ("", "notes")
INSERT = [{"op": "text.insert", "path": ["text"], "index": 0, "text": "hi"}]


@contextlib.asynccontextmanager
async def rooms_at(path: Path) -> AsyncIterator[DocumentRooms]:
    rooms = DocumentRooms(SqliteDocumentStore(path), unload_delay=60.0)
    try:
        yield rooms
    finally:
        await rooms.close()


def states(room: DocRoom) -> dict[int, Any]:
    return {e.client_id: orjson.loads(e.state) for e in room.awareness.snapshot()}


async def test_a_session_shows_the_agent_moves_its_cursor_and_leaves(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        async with AgentSession(rooms, KEY, Agent("Helper", "#30bced")) as session:
            room = rooms.rooms[KEY]
            assert states(room)[session.client_id]["cursor"] is None
            assert room.users == 1  # the session holds the document
            result = await session.edit(INSERT)
            state = states(room)[session.client_id]
            assert result.cursor is not None
            assert state["cursor"] == {"anchor": result.cursor.anchor, "head": result.cursor.head}
            assert state["bot"] is True and state["user"]["name"] == "Helper"
            session.rename(Agent("Helper 2"))
            assert states(room)[session.client_id]["cursor"] == state["cursor"]
        assert states(room) == {} and room.users == 0
        session.close()  # again: nothing


async def test_a_session_renews_its_state_before_the_room_would_expire_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agents, "RENEW_INTERVAL", 0.05)
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        async with AgentSession(rooms, KEY, Agent("Helper")) as session:
            room = rooms.rooms[KEY]
            first = room.awareness.clock(session.client_id)
            renewed = asyncio.Event()
            announce = room.announce

            def counted(*args: Any) -> bool:
                renewed.set()
                return announce(*args)

            monkeypatch.setattr(room, "announce", counted)
            for _ in range(2):
                renewed.clear()
                await asyncio.wait_for(renewed.wait(), TIMEOUT)
            assert room.awareness.clock(session.client_id) >= first + 2
        assert states(room) == {}


async def test_a_room_closed_under_a_session_is_taken_again_by_its_next_edit(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        async with AgentSession(rooms, KEY, Agent("Helper")) as session:
            first = rooms.rooms.pop(KEY)  # what a failed store write does (sync.rooms)
            first.close(StoreError("disk gone"))
            with pytest.raises(StoreError):
                first.edit(INSERT)
            await session.edit(INSERT)
            again = rooms.rooms[KEY]
            assert again is not first and session.client_id in states(again)
            assert session.content() == {"text": "hi"}
        assert states(again) == {}


async def test_a_refused_edit_applies_nothing_and_the_session_goes_on(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        async with AgentSession(rooms, KEY, Agent("Helper")) as session:
            version = session.version()
            with pytest.raises(InvalidEdit):
                await session.edit(
                    [*INSERT, {"op": "text.delete", "path": ["text"], "index": 5, "length": 1}]
                )
            assert session.version() == version
            await session.edit(INSERT, if_version=version)
            assert session.content() == {"text": "hi"}


def test_a_bad_agent_is_refused_at_once() -> None:
    rooms: Any = None
    for agent in (Agent(""), Agent("x" * 65), Agent("a\nb"), Agent("ok", "red")):
        with pytest.raises(ValueError):
            AgentSession(rooms, KEY, agent)


async def test_sessionless_edits_show_one_agent_per_document_until_it_lingered(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        edits = AgentEdits(rooms, linger=60.0)
        await edits.edit(KEY, INSERT, agent=Agent("Writer"))
        await edits.edit(KEY, INSERT, agent=Agent("Writer", "#ee6352"))
        await edits.edit(KEY, INSERT, agent=Agent("Other"))
        await edits.edit(KEY, INSERT)  # no agent: nobody shown
        room = rooms.rooms[KEY]
        shown = sorted((s["user"]["name"], s["user"]["color"]) for s in states(room).values())
        assert shown == [("Other", Agent("Other").state()["user"]["color"]), ("Writer", "#ee6352")]
        assert len(edits) == 2 and room.users == 2
        edits.close()
        assert states(room) == {} and len(edits) == 0 and room.users == 0
        assert document_json(room.doc) == {"text": "hihihihi"}


async def test_without_linger_the_agent_leaves_with_its_edit_and_lingering_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        await AgentEdits(rooms, linger=0.0).edit(KEY, INSERT, agent=Agent("Quick"))
        assert states(rooms.rooms[KEY]) == {}
        monkeypatch.setattr(agents, "MAX_LINGERING", 1)
        edits = AgentEdits(rooms, linger=60.0)
        await edits.edit(KEY, INSERT, agent=Agent("First"))
        await edits.edit(KEY, INSERT, agent=Agent("Second"))  # past the bound: ends with its edit
        assert [s["user"]["name"] for s in states(rooms.rooms[KEY]).values()] == ["First"]
        edits.close()
