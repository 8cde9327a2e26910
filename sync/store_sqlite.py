"""The embedded document store: one SQLite file, through aiosqlite and one inline writer.

Layout: one table, ``doc_log(id, tenant, name, snapshot, data)``, indexed by ``(tenant, name, id)``. A
document's rows in ``id`` order are its snapshot (``snapshot = 1``, at most one) and the updates
appended after it. ``Compact`` deletes the document's rows and inserts the snapshot in the same
transaction as the rest of its batch.

Durability: WAL journal. ``synchronous = NORMAL`` (the default) makes every committed batch survive a crash
of the process (``kill -9``): the WAL is written before ``commit`` returns, the OS flushes it later.
``fsync=True`` sets ``synchronous = FULL``, so a commit also survives power loss, at the cost of an fsync
per batch (batches are group commits, so one fsync covers every update of a loop tick).

Connections (each relay waits for its commit, so the commit path is kept short):

- the writer. Without fsync a commit only appends to the WAL (about 0.1-0.3 ms for a batch here), so it
  runs inline on the event loop: handing it to a thread and back costs two GIL hand-offs, which under
  load took 5-17 ms per batch on this machine (and doubled the relay latency). With ``fsync=True`` the
  commit waits for the disk, so the writer is an aiosqlite connection (its own thread) instead.
- aiosqlite connections for everything that may wait on the disk: loading documents, and checkpoints.
  The writer never checkpoints below ``WAL_HARD_LIMIT_BYTES``; the checkpointer copies the WAL into the
  database (``PASSIVE``, never blocking the writer) once it passes ``WAL_CHECKPOINT_BYTES``, at most every
  ``CHECKPOINT_SPACING`` seconds, since a checkpoint syncs the files (tens of milliseconds on a busy disk).

File size: the database is created with ``auto_vacuum = INCREMENTAL``; after a batch with compactions that
left a quarter of the file free, freed pages are returned to the file system (``PRAGMA incremental_vacuum``,
``VACUUM_STEP_PAGES`` per batch), so the database shrinks back to the size of the snapshots plus the logs
since, instead of keeping the high-water mark of the edit history. Otherwise freed pages are reused. The WAL
is bounded on its own: it restarts after each complete checkpoint and is cut back to
``WAL_CHECKPOINT_BYTES`` when it does; it never passes ``WAL_HARD_LIMIT_BYTES`` by much.
"""

from __future__ import annotations

import asyncio
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

WAL_CHECKPOINT_BYTES = 1024 * 1024
"""Once the WAL passes this size it is checkpointed (off the commit path)."""

CHECKPOINT_SPACING = 0.25
"""Seconds between two checkpoints started by the store."""

WAL_HARD_LIMIT_BYTES = 4 * WAL_CHECKPOINT_BYTES
"""Past this the writer checkpoints on its own (SQLite's ``wal_autocheckpoint``), so the WAL is bounded."""

VACUUM_MIN_FREE_PAGES = 16
"""Compactions that leave fewer free pages than this (or than a quarter of the file) keep them for reuse
instead of shrinking the file."""

VACUUM_STEP_PAGES = 128
"""Pages given back per batch (after a compaction, and after each later batch until done), so a shrink
never holds the writer for more than a few milliseconds."""

BUSY_TIMEOUT_MS = 200
"""How long the writer waits for the checkpointer's brief exclusive moments (TRUNCATE)."""


def _pragmas(fsync: bool) -> list[str]:
    return [
        f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}",
        f"PRAGMA wal_autocheckpoint = {WAL_HARD_LIMIT_BYTES // 4096}",
        f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_BYTES}",
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    ]


Statement = tuple[str, list[tuple[str, str, int, bytes]] | tuple[str, str] | tuple[str, str, int, bytes]]


def _statements(ops: Sequence[StoreOp]) -> tuple[list[Statement], bool]:
    """The statements of one batch, in order (consecutive appends as one executemany), and whether it
    compacts."""
    statements: list[Statement] = []
    compacted = False
    run: list[tuple[str, str, int, bytes]] = []
    for op in ops:
        if isinstance(op, Append):
            run.append((op.key[0], op.key[1], 0, op.update))
            continue
        if run:
            statements.append((_INSERT, run))
            run = []
        assert isinstance(op, Compact)
        statements.append((_DELETE, op.key))
        statements.append((_INSERT, (op.key[0], op.key[1], 1, op.snapshot)))
        compacted = True
    if run:
        statements.append((_INSERT, run))
    return statements, compacted


def _write_batch(conn: sqlite3.Connection, ops: Sequence[StoreOp]) -> bool:
    """Apply ``ops`` in one transaction (the inline writer); return whether it compacted."""
    statements, compacted = _statements(ops)
    try:
        for sql, params in statements:
            if isinstance(params, list):
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.commit()
    except sqlite3.Error:
        try:
            conn.rollback()
        except sqlite3.Error:
            log.exception("rollback failed")
        raise
    return compacted


async def _write_batch_async(db: aiosqlite.Connection, ops: Sequence[StoreOp]) -> bool:
    """The same through aiosqlite (the writer when fsync is on: a commit waits for the disk)."""
    statements, compacted = _statements(ops)
    try:
        for sql, params in statements:
            if isinstance(params, list):
                await db.executemany(sql, params)
            else:
                await db.execute(sql, params)
        await db.commit()
    except sqlite3.Error:
        try:
            await db.rollback()
        except sqlite3.Error:
            log.exception("rollback failed")
        raise
    return compacted


def _worth_shrinking(free: int, pages: int) -> bool:
    return free >= max(VACUUM_MIN_FREE_PAGES, pages // 4)


def _give_back_space(conn: sqlite3.Connection) -> bool:
    """Return up to VACUUM_STEP_PAGES free pages to the file system if free pages are a quarter of the
    file; return whether more remain to give back."""
    try:
        free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
        if not _worth_shrinking(free, pages):
            return False
        # The pragma frees one page per step and Python's sqlite3 steps once; sqlite3_exec
        # (executescript) runs it to the end.
        conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
        conn.commit()
        return free > VACUUM_STEP_PAGES
    except sqlite3.Error:  # the data is committed; a failed shrink only costs disk space
        log.exception("could not shrink the document store")
        return False


async def _give_back_space_async(db: aiosqlite.Connection) -> bool:
    """``_give_back_space`` through aiosqlite."""
    try:
        free: int = (await db.execute_fetchall("PRAGMA freelist_count"))[0][0]  # type: ignore[index]
        pages: int = (await db.execute_fetchall("PRAGMA page_count"))[0][0]  # type: ignore[index]
        if not _worth_shrinking(free, pages):
            return False
        await db.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
        await db.commit()
        return free > VACUUM_STEP_PAGES
    except sqlite3.Error:
        log.exception("could not shrink the document store")
        return False


class SqliteDocumentStore:
    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._db: aiosqlite.Connection | None = None
        """Loads, and the writes when fsync is on."""
        self._inline: sqlite3.Connection | None = None
        """The writer when fsync is off (used on the event loop's thread only)."""
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._last_checkpoint = float("-inf")
        self._shrinking = False
        self.checkpoints = 0

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
                for pragma in _pragmas(self.fsync):
                    await db.execute(pragma)
                await db.executescript(_SCHEMA)
                await db.commit()
                checkpointer = await aiosqlite.connect(self.path)
                if not self.fsync:
                    inline = sqlite3.connect(self.path)
                    for pragma in _pragmas(False):
                        inline.execute(pragma)
                    self._inline = inline
            except BaseException:
                await db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open document store {self.path}: {exc}") from None
        self._db = db
        self._checkpointer = checkpointer
        log.info("document store %s open (fsync=%s)", self.path, self.fsync)

    async def close(self) -> None:
        if self._db is not None:
            await self.shrink()
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await checkpointer.close()
        db, self._db = self._db, None
        if db is not None:
            await db.close()  # the last connection checkpoints and removes the WAL

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
        try:
            if self._inline is not None:
                if _write_batch(self._inline, ops) or self._shrinking:
                    self._shrinking = _give_back_space(self._inline)
            elif await _write_batch_async(db, ops) or self._shrinking:
                self._shrinking = await _give_back_space_async(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write documents: {exc}") from None
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """At most one checkpoint every CHECKPOINT_SPACING seconds (each one syncs the files)."""
        if self._checkpointing is not None or self.wal_size() <= WAL_CHECKPOINT_BYTES:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_checkpoint < CHECKPOINT_SPACING:
            return
        self._last_checkpoint = loop.time()
        self._checkpointing = loop.create_task(self._checkpoint("PASSIVE"))

    async def _checkpoint(self, mode: str) -> None:
        try:
            if self._checkpointer is not None:
                await self._checkpointer.execute_fetchall(f"PRAGMA wal_checkpoint({mode})")
                self.checkpoints += 1
        except sqlite3.Error:  # the WAL keeps the data; the next checkpoint tries again
            log.exception("document store checkpoint failed")
        finally:
            self._checkpointing = None

    async def shrink(self) -> None:
        """Give back every free page now (not a step per batch); for shutdown and tests."""
        if self._inline is not None:
            while _give_back_space(self._inline):  # noqa: ASYNC110 (a yield between steps, not a wait)
                await asyncio.sleep(0)
        elif self._db is not None:
            while await _give_back_space_async(self._db):
                pass
        self._shrinking = False

    async def checkpoint(self) -> None:
        """Copy the whole WAL into the database and truncate it (waits for the writer to be idle)."""
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        await self._checkpoint("TRUNCATE")

    def files_size(self) -> int:
        """Bytes the store takes on disk (the database and its WAL)."""
        return self.database_size() + self.wal_size()

    def database_size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def wal_size(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0
