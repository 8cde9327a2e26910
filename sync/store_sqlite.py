"""The embedded document store: one SQLite file through aiosqlite.

Layout: one table, ``doc_log(id, tenant, name, snapshot, data)``, indexed by ``(tenant, name, id)``. A
document's rows in ``id`` order are its snapshot (``snapshot = 1``, at most one) and the updates
appended after it. ``Compact`` deletes the document's rows and inserts the snapshot in the same
transaction as the rest of its batch.

Durability: WAL journal. ``synchronous = NORMAL`` (the default) makes every committed batch survive a crash
of the process (``kill -9``): the WAL is written before ``commit`` returns, the OS flushes it later.
``fsync=True`` sets ``synchronous = FULL``, so a commit also survives power loss, at the cost of an fsync
per batch (batches are group commits, so one fsync covers every update of a loop tick).

File size: the database is created with ``auto_vacuum = INCREMENTAL``; after a batch with compactions the
freed pages are returned to the file system (``PRAGMA incremental_vacuum``) and the WAL is checkpointed
and truncated, so the database shrinks back to the size of the snapshots plus the logs since, instead of
keeping the high-water mark of the edit history. Between compactions freed pages are simply reused. The
WAL is bounded on its own (``WAL_CHECKPOINT_PAGES``): about 1 MiB, however long the history.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from sync.store import Append, Compact, DocKey, StoredDocument, StoreError, StoreOp

log = logging.getLogger("switchboard.sync.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS doc_log (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    snapshot INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS doc_log_key ON doc_log (tenant, name, id);
"""

_INSERT = "INSERT INTO doc_log (tenant, name, snapshot, data) VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM doc_log WHERE tenant = ? AND name = ?"

WAL_CHECKPOINT_PAGES = 256
"""The WAL is checkpointed into the database every this many pages and truncated back to this size, so it
stays around 1 MiB whatever the write rate (SQLite's default lets it reach 4 MiB)."""

VACUUM_MIN_FREE_PAGES = 16
"""Compactions that leave fewer free pages than this keep them for reuse instead of shrinking the file."""


class SqliteDocumentStore:
    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path)
            try:
                # auto_vacuum can only be chosen before the first table exists.
                await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'NORMAL'}")
                await db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
                await db.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_PAGES * 4096}")
                await db.executescript(_SCHEMA)
                await db.commit()
            except BaseException:
                await db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open document store {self.path}: {exc}") from None
        self._db = db
        log.info("document store %s open (fsync=%s)", self.path, self.fsync)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("document store is not open")
        return self._db

    async def load(self, key: DocKey) -> StoredDocument:
        db = self._conn()
        try:
            rows = await db.execute_fetchall(
                "SELECT snapshot, data FROM doc_log WHERE tenant = ? AND name = ? ORDER BY id", key
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot load document: {exc}") from None
        stored = StoredDocument()
        for snapshot, data in rows:
            stored.updates.append(bytes(data))
            if snapshot:
                stored.snapshot_bytes = len(data)
            else:
                stored.log_rows += 1
                stored.log_bytes += len(data)
        return stored

    async def write(self, ops: Sequence[StoreOp]) -> None:
        db = self._conn()
        compacted = False
        try:
            run: list[tuple[str, str, int, bytes]] = []
            for op in ops:
                if isinstance(op, Append):
                    run.append((op.key[0], op.key[1], 0, op.update))
                    continue
                if run:
                    await db.executemany(_INSERT, run)
                    run = []
                assert isinstance(op, Compact)
                await db.execute(_DELETE, op.key)
                await db.execute(_INSERT, (op.key[0], op.key[1], 1, op.snapshot))
                compacted = True
            if run:
                await db.executemany(_INSERT, run)
            await db.commit()
        except sqlite3.Error as exc:
            try:
                await db.rollback()
            except sqlite3.Error:
                log.exception("rollback failed")
            raise StoreError(f"cannot write documents: {exc}") from None
        if compacted:
            await self._give_back_space(db)

    async def _give_back_space(self, db: aiosqlite.Connection) -> None:
        try:
            async with db.execute("PRAGMA freelist_count") as cursor:
                row = await cursor.fetchone()
            if row is not None and row[0] >= VACUUM_MIN_FREE_PAGES:
                # The pragma frees one page per step and Python's sqlite3 steps once; sqlite3_exec
                # (executescript) runs it to the end.
                await db.executescript("PRAGMA incremental_vacuum;")
                await db.commit()
                await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:  # the data is committed; a failed shrink only costs disk space
            log.exception("could not shrink the document store")

    def files_size(self) -> int:
        """Bytes the store takes on disk (the database and its WAL)."""
        return self.database_size() + self.wal_size()

    def database_size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def wal_size(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0
