"""The console's store for one node: the audit log in SQLite (``<data_dir>/admin.sqlite3``), revoked
sessions in memory (``hub.admin.store`` states the policies). The file is opened on first use."""

from __future__ import annotations

import asyncio
import heapq
import sqlite3
import time
from pathlib import Path

import aiosqlite

from hub.admin.store import MAX_REVOKED, AuditEntry, StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    role TEXT NOT NULL,
    remote TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
"""


class SqliteConsoleStore:
    def __init__(self, path: str | Path, max_entries: int) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._revoked: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            async with self._lock:
                if self._db is None:
                    try:
                        self.path.parent.mkdir(parents=True, exist_ok=True)
                        db = await aiosqlite.connect(self.path)
                        await db.execute("PRAGMA journal_mode = WAL")
                        await db.executescript(_SCHEMA)
                        await db.commit()
                    except (OSError, sqlite3.Error) as exc:
                        raise StoreUnavailable(f"audit log {self.path}: {exc}") from None
                    self._db = db
        return self._db

    async def append(self, entry: AuditEntry) -> None:
        db = await self._conn()
        try:
            cursor = await db.execute(
                "INSERT INTO audit (at, role, remote, action, tenant, target, result) VALUES (?,?,?,?,?,?,?)",
                (entry.at, entry.role, entry.remote, entry.action, entry.tenant, entry.target, entry.result),
            )
            newest = cursor.lastrowid or 0
            await db.execute("DELETE FROM audit WHERE id <= ?", (newest - self.max_entries,))
            await db.commit()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"audit log {self.path}: {exc}") from None

    async def entries(self, limit: int, before: int = 0) -> list[AuditEntry]:
        db = await self._conn()
        query = "SELECT at, role, remote, action, tenant, target, result, id FROM audit"
        args: tuple[int, ...] = (limit,)
        if before > 0:
            query += " WHERE id < ?"
            args = (before, limit)
        try:
            async with db.execute(query + " ORDER BY id DESC LIMIT ?", args) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"audit log {self.path}: {exc}") from None
        return [AuditEntry(*row) for row in rows]

    async def revoke(self, sid: str, until: float) -> None:
        self._forget_expired(time.time())
        if sid in self._revoked:
            return
        while len(self._revoked) >= MAX_REVOKED:
            _, oldest = heapq.heappop(self._expiry)
            self._revoked.pop(oldest, None)
        self._revoked[sid] = until
        heapq.heappush(self._expiry, (until, sid))

    async def revoked(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until > time.time()

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, sid = heapq.heappop(self._expiry)
            self._revoked.pop(sid, None)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
