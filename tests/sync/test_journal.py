"""Group commit: callbacks only after durability, in order; batches gather what arrives during a commit;
a failed batch relays nothing and is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sync.journal import Journal
from sync.store import DocKey, StoreError, StoreOp
from sync.store_sqlite import SqliteDocumentStore

A: DocKey = ("", "a")
B: DocKey = ("t", "b")


class GatedStore(SqliteDocumentStore):
    """The real SQLite store, but each write waits for ``gate`` (so a test can hold a commit open)
    and records the batch sizes; ``fail_next`` makes the next write fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.batches: list[int] = []
        self.fail_next = False

    async def write(self, ops: Sequence[StoreOp]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk on fire")
        self.batches.append(len(ops))
        await super().write(ops)


async def test_callbacks_run_after_the_commit_in_order(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    journal = Journal(store)
    seen: list[str] = []
    journal.after_durable(lambda: seen.append("idle"))  # nothing pending: runs now
    assert seen == ["idle"]
    store.gate.clear()
    journal.append(A, b"1")
    journal.after_durable(lambda: seen.append("first"))
    await store.entered.wait()
    # While the first batch is being written: these wait for the next batch.
    journal.append(A, b"2")
    journal.append(B, b"3")
    journal.after_durable(lambda: seen.append("second"))
    assert seen == ["idle"]
    assert (await store.load(A)).updates == []
    store.gate.set()
    await journal.flush()
    assert seen == ["idle", "first", "second"]
    assert store.batches == [1, 2]
    assert (await store.load(A)).updates == [b"1", b"2"]
    assert (await store.load(B)).updates == [b"3"]
    await journal.close()
    await store.close()


async def test_a_callback_registered_during_a_commit_with_nothing_queued_waits_for_it(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    journal = Journal(store)
    store.gate.clear()
    journal.append(A, b"1")
    await store.entered.wait()
    seen: list[str] = []
    journal.after_durable(lambda: seen.append("x"))
    assert seen == []
    store.gate.set()
    await journal.flush()
    assert seen == ["x"]
    await journal.close()
    await store.close()


async def test_a_failed_batch_drops_its_callbacks_and_reports_its_documents(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    failures: list[set[DocKey]] = []
    journal = Journal(store, on_failure=lambda keys, exc: failures.append(keys))
    store.fail_next = True
    seen: list[str] = []
    journal.append(A, b"1")
    journal.append(B, b"2")
    journal.after_durable(lambda: seen.append("lost"))
    await journal.flush()
    assert seen == [] and failures == [{A, B}]
    journal.append(A, b"3")
    journal.after_durable(lambda: seen.append("kept"))
    await journal.flush()
    assert seen == ["kept"]
    assert (await store.load(A)).updates == [b"3"]
    await journal.close()
    await store.close()


async def test_close_writes_what_is_queued_then_refuses(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    journal = Journal(store)
    journal.append(A, b"1")
    await journal.close()
    assert (await store.load(A)).updates == [b"1"]
    try:
        journal.append(A, b"2")
    except StoreError:
        pass
    else:
        raise AssertionError("a closed journal accepted an append")
    await store.close()


async def test_a_failed_batch_of_one_document_does_not_starve_another(tmp_path: Path) -> None:
    """From review: bob's sync step 2 for document b was registered while document a's batch (which
    fails) was being written; b had nothing in that batch, so bob must still get it."""
    from sync.rooms import DocumentRooms
    from tests.sync.links import connect, pump
    from tests.sync.yclient import YClient

    store = GatedStore(tmp_path / "d.sqlite3")
    rooms = DocumentRooms(store, unload_delay=60)
    try:
        room_a = await rooms.acquire(("", "a"))
        room_b = await rooms.acquire(("", "b"))
        alice = YClient(1)
        link_a = connect(room_a, alice)
        await pump(room_a, [link_a])
        store.gate.clear()
        store.entered.clear()
        store.fail_next = True
        alice.text.insert(0, "x")
        for message in alice.take():
            room_a.receive(link_a, message)
        await store.entered.wait()  # document a's batch is being written, and will fail
        bob = YClient(2)
        link_b = connect(room_b, bob)
        for message in bob.take():
            room_b.receive(link_b, message)  # bob's step 1
        store.gate.set()
        await rooms.journal.flush()
        assert not room_b.closed and link_b.terminated is None
        assert any(m.startswith(b"\x00\x01") for m in link_b.inbox), "bob never got sync step 2"
        assert room_a.closed  # the failed document is reloaded from what is stored
    finally:
        await rooms.close()


async def test_past_its_bound_the_journal_is_full_until_a_batch_is_written(tmp_path: Path) -> None:
    """The backlog counts what is queued and what is being written; ``has_room`` waits until a batch took
    it back within ``max_bytes``."""
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    journal = Journal(store, max_bytes=1000)
    store.gate.clear()
    journal.append(A, b"x" * 600)
    await store.entered.wait()  # 600 bytes being written
    journal.append(A, b"y" * 300)
    assert journal.backlog == 900 and not journal.full
    journal.append(B, b"z" * 200)
    assert journal.full
    waiter = asyncio.ensure_future(journal.has_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    store.gate.set()
    await asyncio.wait_for(waiter, 5.0)  # the first batch (600) was written: 500 left
    assert not journal.full
    await journal.flush()
    assert journal.backlog == 0
    await store.close()


async def test_a_compaction_drops_the_operations_of_its_document_still_queued(tmp_path: Path) -> None:
    """A store that fell behind writes a document's latest snapshot, not every snapshot taken meanwhile."""
    store = GatedStore(tmp_path / "d.sqlite3")
    await store.open()
    journal = Journal(store)
    store.gate.clear()
    journal.append(B, b"first")
    await store.entered.wait()
    relayed: list[str] = []
    journal.append(A, b"a1")
    journal.after_durable(lambda: relayed.append("a1"), A)
    journal.compact(A, b"snapshot-1")
    journal.append(B, b"b2")
    journal.append(A, b"a2")
    journal.compact(A, b"snapshot-2")
    store.gate.set()
    await journal.flush()
    assert store.batches == [1, 2]  # B's append, then b2 and A's last snapshot
    assert (await store.load(A)).updates == [b"snapshot-2"]
    assert (await store.load(B)).updates == [b"first", b"b2"]
    assert relayed == ["a1"]  # callbacks still run, after the batch that holds what they waited for
    await store.close()
