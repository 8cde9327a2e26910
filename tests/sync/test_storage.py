"""The store stays proportional to the document, not to its edit history: 10,000 edits with much
churn, through a room and the real SQLite store, with compactions on the way."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from sync.room import RoomLimits
from sync.rooms import DocumentRooms
from sync.store_sqlite import WAL_HARD_LIMIT_BYTES, SqliteDocumentStore
from tests.sync.links import connect, pump
from tests.sync.yclient import YClient

EDITS = 10_000
KEY = ("", "churn")


async def edit_10000_times(rooms: DocumentRooms, store: SqliteDocumentStore) -> tuple[int, int, int]:
    """Three clients type and delete; return (history bytes, peak database bytes, peak WAL bytes)."""
    room = await rooms.acquire(KEY)
    rng = random.Random(7)
    clients = [YClient(i + 1) for i in range(3)]
    links = [connect(room, c) for c in clients]
    await pump(room, links)
    history = peak_db = peak_wal = 0
    for i in range(EDITS):
        who = i % 3
        text = clients[who].text
        if len(text) > 20_000 and rng.random() < 0.5:  # e.g. a notebook cell's output replaced
            at = rng.randrange(len(text) - 400)
            del text[at : at + rng.randint(100, 400)]
        else:
            text.insert(rng.randint(0, len(text)), "x" * rng.randint(100, 400))
        for message in clients[who].take():
            history += len(message)
            room.receive(links[who], message)
        if i % 100 == 99:
            await room.journal.flush()
            peak_db = max(peak_db, store.database_size())
            peak_wal = max(peak_wal, store.wal_size())
    await pump(room, links)
    rooms.release(room)
    return history, peak_db, peak_wal


async def test_file_size_after_10000_edits_is_a_small_multiple_of_the_snapshot(tmp_path: Path) -> None:
    store = SqliteDocumentStore(tmp_path / "d.sqlite3")
    rooms = DocumentRooms(store, unload_delay=60.0)
    history, peak_db, peak_wal = await edit_10000_times(rooms, store)
    await asyncio.sleep(0)  # a compaction due after the last edit is queued on the next tick
    room = rooms.rooms[KEY]
    await room.journal.flush()
    snapshot = len(room.doc.get_update())
    live_db = store.database_size()
    await rooms.close()  # compacts and flushes
    closed = store.files_size()
    print(
        f"history {history} B, snapshot {snapshot} B, database peak {peak_db} B, live {live_db} B, "
        f"WAL peak {peak_wal} B, after close {closed} B"
    )
    assert history > 5 * snapshot  # the history is much larger than the document...
    assert peak_db <= 3 * snapshot + 64 * 1024  # ...but the database follows the document
    assert peak_wal <= WAL_HARD_LIMIT_BYTES + 256 * 1024  # and the WAL is bounded by a constant
    assert closed <= 2 * snapshot + 32 * 1024


async def test_without_compaction_the_file_follows_the_history(tmp_path: Path) -> None:
    """The control: the same edits with compaction effectively off grow the database with the history,
    so the bound above is not met by accident."""
    store = SqliteDocumentStore(tmp_path / "d.sqlite3")
    limits = RoomLimits(compact_after_updates=10**9, compact_after_bytes=10**12)
    rooms = DocumentRooms(store, limits=limits, unload_delay=60.0)
    history, _, _ = await edit_10000_times(rooms, store)
    snapshot = len(rooms.rooms[KEY].doc.get_update())
    await store.checkpoint()  # every row in the database file
    assert store.database_size() > 3 * snapshot + 64 * 1024
    assert store.database_size() > history
    for room in rooms.rooms.values():
        room.log_rows = 0  # skip the compaction on close: this test is about the log
    await rooms.close()


@pytest.mark.parametrize("fsync", [False, True])
async def test_reopened_store_serves_the_same_document(tmp_path: Path, fsync: bool) -> None:
    store = SqliteDocumentStore(tmp_path / "d.sqlite3", fsync=fsync)
    rooms = DocumentRooms(store, limits=RoomLimits(compact_after_updates=50), unload_delay=60.0)
    room = await rooms.acquire(KEY)
    writer = YClient(1)
    link = connect(room, writer)
    for i in range(120):
        writer.text.insert(len(writer.text), f"{i} ")
        await pump(room, [link])
    expected = str(writer.text)
    rooms.release(room)
    await rooms.close()
    again = DocumentRooms(SqliteDocumentStore(tmp_path / "d.sqlite3"), unload_delay=60.0)
    reloaded = await again.acquire(KEY)
    reader = YClient(2)
    await pump(reloaded, [connect(reloaded, reader)])
    assert str(reader.text) == expected
    again.release(reloaded)
    await again.close()
