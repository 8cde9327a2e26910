"""The SQLite document store on a real file: ordered atomic batches, compaction, tenants, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sync.store import Append, Compact, StoreError
from sync.store_sqlite import SqliteDocumentStore

A = ("", "a")
B = ("", "b")
A_OTHER_TENANT = ("acme", "a")


async def test_appends_load_in_order_and_survive_reopening(tmp_path: Path) -> None:
    store = SqliteDocumentStore(tmp_path / "docs.sqlite3")
    await store.open()
    await store.write([Append(A, b"1"), Append(B, b"x"), Append(A, b"2")])
    await store.write([Append(A, b"3")])
    await store.close()
    store = SqliteDocumentStore(tmp_path / "docs.sqlite3")
    await store.open()
    loaded = await store.load(A)
    assert loaded.updates == [b"1", b"2", b"3"]
    assert (loaded.log_rows, loaded.log_bytes, loaded.snapshot_bytes) == (3, 3, 0)
    assert (await store.load(B)).updates == [b"x"]
    assert (await store.load(("", "never"))).updates == []
    await store.close()


async def test_tenant_is_part_of_the_key(tmp_path: Path) -> None:
    store = SqliteDocumentStore(tmp_path / "docs.sqlite3")
    await store.open()
    await store.write([Append(A, b"mine"), Append(A_OTHER_TENANT, b"theirs")])
    assert (await store.load(A)).updates == [b"mine"]
    assert (await store.load(A_OTHER_TENANT)).updates == [b"theirs"]
    await store.close()


async def test_compact_replaces_what_came_before_and_keeps_what_follows(tmp_path: Path) -> None:
    store = SqliteDocumentStore(tmp_path / "docs.sqlite3")
    await store.open()
    await store.write([Append(A, b"1"), Append(A, b"2"), Append(B, b"x")])
    await store.write([Append(A, b"3"), Compact(A, b"SNAP"), Append(A, b"4")])
    loaded = await store.load(A)
    assert loaded.updates == [b"SNAP", b"4"]
    assert (loaded.snapshot_bytes, loaded.log_rows, loaded.log_bytes) == (4, 1, 1)
    assert (await store.load(B)).updates == [b"x"]
    await store.write([Compact(A, b"SNAP2")])
    assert (await store.load(A)).updates == [b"SNAP2"]
    await store.close()


async def test_a_failed_batch_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite3"
    store = SqliteDocumentStore(path)
    await store.open()
    await store.write([Append(A, b"1")])
    # Another writer holds the write lock: our batch cannot commit and must leave nothing behind.
    other = sqlite3.connect(path, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    store_timeout = await store._conn().execute("PRAGMA busy_timeout = 0")
    await store_timeout.close()
    with pytest.raises(StoreError):
        await store.write([Append(A, b"2"), Compact(A, b"SNAP")])
    other.rollback()
    other.close()
    assert (await store.load(A)).updates == [b"1"]
    await store.write([Append(A, b"3")])
    assert (await store.load(A)).updates == [b"1", b"3"]
    await store.close()


async def test_the_file_shrinks_after_compaction(tmp_path: Path) -> None:
    store = SqliteDocumentStore(tmp_path / "docs.sqlite3")
    await store.open()
    blob = bytes(range(256)) * 8
    for i in range(50):
        await store.write([Append(A, blob + bytes([i])) for _ in range(20)])
    grown = store.files_size()
    await store.write([Compact(A, b"small")])
    await store.shrink()
    await store.checkpoint()
    shrunk = store.files_size()
    assert grown > 1_500_000
    assert shrunk < 64 * 1024, (grown, shrunk)
    await store.close()


async def test_unopened_store_refuses() -> None:
    store = SqliteDocumentStore("/nonexistent/never.sqlite3")
    with pytest.raises(StoreError):
        await store.load(A)


async def test_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        await SqliteDocumentStore(blocker / "docs.sqlite3").open()
