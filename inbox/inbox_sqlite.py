"""The embedded inbox store: one SQLite file under the data directory, through aiosqlite.

Durability as in ``sync.store_sqlite``: WAL journal, ``synchronous = NORMAL`` (a committed change survives
a crash of the process), or ``FULL`` with ``fsync=True`` (it survives power loss too, one fsync per
change). Every change is one ``BEGIN IMMEDIATE`` transaction on the writer connection: it takes the
database's write lock first, so the reads a change decides on (open groups, counters, leases) cannot be
changed under it, by this process or by another one on the same file (a worker process, a second store:
they queue on the lock for up to ``BUSY_TIMEOUT_MS``). Reads (``list``, ``counts``, status queries) run on
a second connection and never wait for the writer (WAL readers see the last commit).

The work runs in aiosqlite's threads, not on the event loop: a notify to 10,000 recipients writes for
a few hundred milliseconds, which the loop must not spend. One asyncio lock keeps this store's
transactions from interleaving on the writer connection.

Item ids are ``max(id) + 1`` onwards and ``seq`` (the list order) comes from a counter row, both taken
under the write lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from inbox import cursor as cursors
from inbox.errors import NotFound, SchemaError, StoreError
from inbox.inbox import (
    ITEM_COLUMNS,
    MAX_EXPIRE_BATCH,
    MAX_REPLAY,
    OUTBOX_DEPTH,
    InboxOptions,
    by_tenant,
    check_claim,
    check_delivery_report,
    check_delivery_reports,
    check_events,
    check_expire_at,
    check_kind,
    check_owner,
    check_page,
    check_prune,
    check_replay_ids,
    check_status_query,
    check_task_query,
    counts_from_rows,
    item_from_columns,
    migrations_to_run,
    record_outcome,
    states_moving_to,
    to_json,
)
from inbox.model import (
    ARCHIVED_SQL,
    MARK_SQL,
    STATUS_SQL,
    Counts,
    CountsDelta,
    DeliveryChannel,
    DeliveryState,
    Flags,
    ListQuery,
    Mark,
    MarkResult,
    Notification,
    NotificationStatus,
    NotifyResult,
    Page,
    TenantCounts,
    UserCounts,
    advance_delivery,
    check_id,
    check_tenant,
)
from inbox.outbox import (
    Attempt,
    AttemptResult,
    OutboxEvent,
    Task,
    TaskInfo,
    TaskState,
    Topic,
    Verdict,
)
from inbox.plan import EventRow, mark_event, plan_mark, plan_notify, plan_removal, route_event
from inbox.preferences import Preferences, parse_preferences
from inbox.status import DeliveryStatusRow, build_status

log = logging.getLogger("switchboard.inbox")

BUSY_TIMEOUT_MS = 5000
"""How long a change waits for another writer on the same file (a worker process) before failing."""

WAL_ATTEMPTS = 100

MIGRATIONS: list[str] = [
    # 1: the inbox
    """
    CREATE TABLE inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE inbox_notifications (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        category TEXT NOT NULL,
        content TEXT NOT NULL,
        recipients INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE inbox_dedupe (
        tenant TEXT NOT NULL,
        dedupe_key TEXT NOT NULL,
        notification_id INTEGER NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (tenant, dedupe_key)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_dedupe_until ON inbox_dedupe (until);
    CREATE TABLE inbox_items (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        category TEXT NOT NULL,
        notification_id INTEGER NOT NULL,
        first_notification_id INTEGER NOT NULL,
        group_key TEXT,
        group_until REAL,
        count INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        seen_at REAL,
        read_at REAL,
        archived_at REAL,
        interacted_at REAL,
        expire_at REAL
    );
    CREATE UNIQUE INDEX inbox_items_order ON inbox_items (tenant, user_id, seq);
    CREATE INDEX inbox_items_group ON inbox_items (tenant, user_id, group_key, seq)
        WHERE group_key IS NOT NULL;
    CREATE INDEX inbox_items_expiry ON inbox_items (expire_at) WHERE expire_at IS NOT NULL;
    CREATE INDEX inbox_items_user_expiry ON inbox_items (tenant, user_id, expire_at)
        WHERE expire_at IS NOT NULL;
    CREATE TABLE inbox_counts (
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        unread INTEGER NOT NULL DEFAULT 0,
        unseen INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE inbox_preferences (
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        preferences TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE inbox_deliveries (
        notification_id INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        item_id INTEGER,
        state TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL,
        PRIMARY KEY (notification_id, user_id, channel)
    ) WITHOUT ROWID;
    """,
    # 2: the outbox
    """
    CREATE TABLE outbox_events (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE outbox_tasks (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_owner TEXT,
        last_error TEXT NOT NULL DEFAULT '',
        notification_id INTEGER,
        user_id TEXT,
        channel TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX outbox_tasks_due ON outbox_tasks (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_tasks_state ON outbox_tasks (state, id);
    CREATE INDEX outbox_tasks_event ON outbox_tasks (event_id);
    CREATE TABLE outbox_attempts (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT NOT NULL,
        verdict TEXT NOT NULL,
        error TEXT NOT NULL,
        status INTEGER,
        at REAL NOT NULL
    );
    CREATE INDEX outbox_attempts_task ON outbox_attempts (task_id, id);
    """,
    # 3: event ids from a counter (max(id) + 1 would hand a pruned event's id out again, and a receiver
    # that deduplicates by webhook-id would drop the new event), and the database's origin name
    """
    INSERT INTO inbox_meta (key, value) SELECT 'event_id', coalesce(max(id), 0) FROM outbox_events WHERE true
        ON CONFLICT DO NOTHING;
    INSERT INTO inbox_meta (key, value) VALUES ('origin', lower(hex(randomblob(6)))) ON CONFLICT DO NOTHING;
    """,
    # 4: a destination's tasks by id (webhook_tasks by destination, a console's most recent deliveries)
    """
    CREATE INDEX outbox_tasks_destination ON outbox_tasks (destination, id);
    """,
]
LATEST = len(MIGRATIONS)

_UNEXPIRED = "(expire_at IS NULL OR expire_at > :now)"
_COUNTS = """
SELECT u.value, c.unread, c.unseen, c.total, c.version, e.unread, e.unseen, e.total
FROM json_each(:users) u
LEFT JOIN inbox_counts c ON c.tenant = :tenant AND c.user_id = u.value
LEFT JOIN (
    SELECT user_id, sum(read_at IS NULL) AS unread, sum(seen_at IS NULL) AS unseen, count(*) AS total
    FROM inbox_items
    WHERE tenant = :tenant AND user_id IN (SELECT value FROM json_each(:users))
      AND expire_at IS NOT NULL AND expire_at <= :now AND archived_at IS NULL
    GROUP BY user_id
) e ON e.user_id = u.value
"""
_TENANT_COUNTS = (
    "SELECT count(*), sum(unread), sum(unseen), sum(total) FROM inbox_counts WHERE tenant = ? AND total > 0"
)
"""``tenant_counts``: users with no item counted (every one archived or swept) are not
counted as users, and add nothing to the sums."""
_BUMP_COUNTS = """
INSERT INTO inbox_counts (tenant, user_id, unread, unseen, total, version) VALUES (?, ?, ?, ?, ?, 1)
ON CONFLICT (tenant, user_id) DO UPDATE SET
    unread = unread + excluded.unread, unseen = unseen + excluded.unseen, total = total + excluded.total,
    version = version + 1
"""


def _flags(seen: object, read: object, archived: object) -> Flags:
    return Flags(bool(seen), bool(read), bool(archived))


class SqliteInbox:
    """``InboxStore`` on one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        options: InboxOptions | None = None,
        *,
        fsync: bool = False,
        _migrate_to: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options or InboxOptions()
        self.fsync = fsync
        self._migrate_to = _migrate_to
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._cursor_key = b""
        self.origin = ""

    # -- life cycle ----------------------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await self._use_wal(db)
            await db.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'NORMAL'}")
            await db.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            await db.close()
            raise
        return db

    @staticmethod
    async def _use_wal(db: aiosqlite.Connection) -> None:
        """Switch to WAL. Connections that open a new file together (nodes starting at once, a node and
        its worker process) can find it locked while another one switches it, and SQLite answers that at
        once instead of through the busy timeout: so try again, for up to the busy timeout."""
        for attempt in range(WAL_ATTEMPTS):
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(BUSY_TIMEOUT_MS / 1000 / WAL_ATTEMPTS)  # a backoff on a lock held elsewhere

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = await self._connect()
            try:
                await self._migrate(writer)
                reader = await self._connect()
            except BaseException:
                await writer.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open inbox store {self.path}: {exc}") from None
        self._writer, self._reader = writer, reader
        log.info("inbox store %s open (fsync=%s, schema %d)", self.path, self.fsync, LATEST)

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        rows = list(await db.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_version"))
        for version in migrations_to_run(int(rows[0][0]), LATEST, self._migrate_to):
            # One transaction per migration, its version row included; the check runs under the write
            # lock, so two processes opening one file together migrate once.
            await db.execute("BEGIN IMMEDIATE")
            try:
                if list(
                    await db.execute_fetchall("SELECT 1 FROM schema_version WHERE version = ?", (version,))
                ):
                    await db.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, self.options.clock()))
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                await db.execute("ROLLBACK")
                raise SchemaError(f"inbox schema migration {version} failed: {exc}") from None
            log.info("inbox schema migrated to version %d", version)
        await db.execute(
            "INSERT INTO inbox_meta (key, value) VALUES ('cursor_key', ?) ON CONFLICT DO NOTHING",
            (os.urandom(32).hex(),),
        )
        await db.execute("INSERT INTO inbox_meta (key, value) VALUES ('seq', '0') ON CONFLICT DO NOTHING")
        rows = list(await db.execute_fetchall("SELECT value FROM inbox_meta WHERE key = 'cursor_key'"))
        self._cursor_key = bytes.fromhex(rows[0][0])
        rows = list(await db.execute_fetchall("SELECT value FROM inbox_meta WHERE key = 'origin'"))
        self.origin = str(rows[0][0]) if rows else ""

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        for db in (reader, writer):
            if db is not None:
                await db.close()

    def _db(self, writer: bool) -> aiosqlite.Connection:
        db = self._writer if writer else self._reader
        if db is None:
            raise StoreError("inbox store is not open")
        return db

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        db = self._db(True)
        async with self._lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"inbox store busy: {exc}") from None
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("inbox rollback failed")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"inbox write failed: {exc}") from None
                raise

    async def _read(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._db(False).execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"inbox read failed: {exc}") from None

    # -- helpers inside a transaction ----------------------------------------------------------------

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> Any:
        rows = list(await db.execute_fetchall(sql, params))
        return rows[0] if rows else None

    async def _next_seq(self, db: aiosqlite.Connection, n: int) -> int:
        """Reserve ``n`` list positions; returns the first."""
        row = await self._one(
            db,
            "UPDATE inbox_meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'seq' RETURNING value",
            (n,),
        )
        return int(row[0]) - n + 1

    async def _counts_of(
        self, db: aiosqlite.Connection, tenant: str, users: Sequence[str]
    ) -> dict[str, Counts]:
        now = self.options.clock()
        rows = await db.execute_fetchall(
            _COUNTS, {"tenant": tenant, "users": to_json(list(users)), "now": now}
        )
        return counts_from_rows(rows)

    async def _bump(
        self, db: aiosqlite.Connection, tenant: str, deltas: Mapping[str, CountsDelta]
    ) -> dict[str, Counts]:
        await db.executemany(
            _BUMP_COUNTS, [(tenant, user, d.unread, d.unseen, d.total) for user, d in sorted(deltas.items())]
        )
        return await self._counts_of(db, tenant, list(deltas))

    async def _store_events(
        self, db: aiosqlite.Connection, rows: Sequence[EventRow], notification_id: int | None
    ) -> None:
        if not rows:
            return
        now = self.options.clock()
        first = await self._one(
            db,
            "UPDATE inbox_meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'event_id'"
            " RETURNING CAST(value AS INTEGER) - ? + 1",
            (len(rows), len(rows)),
        )
        event_rows, task_rows = [], []
        for event_id, row in enumerate(rows, start=int(first[0])):
            e = row.event
            event_rows.append((event_id, e.tenant, str(e.topic), to_json(dict(e.payload)), now))
            for t in row.tasks:
                bound = t.channel is not None
                task_rows.append(
                    (
                        event_id,
                        e.tenant,
                        t.destination,
                        now,
                        notification_id if bound else None,
                        t.user,
                        str(t.channel) if bound else None,
                        now,
                        now,
                    )
                )
        await db.executemany("INSERT INTO outbox_events VALUES (?, ?, ?, ?, ?)", event_rows)
        await db.executemany(
            "INSERT INTO outbox_tasks (event_id, tenant, destination, next_attempt_at, notification_id,"
            " user_id, channel, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            task_rows,
        )

    # -- inbox ---------------------------------------------------------------------------------------

    async def notify(self, notification: Notification) -> NotifyResult:
        n = notification
        now = self.options.clock()
        check_expire_at(n, now)
        recipients = to_json(list(n.recipients))
        async with self._write() as db:
            if n.dedupe_key is not None:
                first = await self._one(
                    db,
                    "SELECT notification_id FROM inbox_dedupe"
                    " WHERE tenant = ? AND dedupe_key = ? AND until > ?",
                    (n.tenant, n.dedupe_key, now),
                )
                if first is not None:
                    return NotifyResult(int(first[0]), True, [], {})
            cursor = await db.execute(
                "INSERT INTO inbox_notifications (tenant, category, content, recipients, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (n.tenant, n.category, to_json(n.content()), len(n.recipients), now),
            )
            notification_id = int(cursor.lastrowid or 0)
            if n.dedupe_key is not None:
                await db.execute(
                    "INSERT INTO inbox_dedupe VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                    " notification_id = excluded.notification_id, until = excluded.until",
                    (n.tenant, n.dedupe_key, notification_id, now + n.dedupe_window),
                )
            prefs = {
                user: parse_preferences(orjson.loads(raw))
                for user, raw in await db.execute_fetchall(
                    "SELECT user_id, preferences FROM inbox_preferences"
                    " WHERE tenant = ? AND user_id IN (SELECT value FROM json_each(?))",
                    (n.tenant, recipients),
                )
            }
            groups: dict[str, tuple[int, Flags]] = {}
            if n.group_key is not None:
                for user, item_id, seen, read, archived in await db.execute_fetchall(
                    "SELECT user_id, id, seen_at IS NOT NULL, read_at IS NOT NULL, archived_at IS NOT NULL"
                    " FROM inbox_items WHERE tenant = ? AND user_id IN (SELECT value FROM json_each(?))"
                    " AND group_key = ? AND group_until > ? AND archived_at IS NULL"
                    f" AND {_UNEXPIRED.replace(':now', '?')} ORDER BY seq",
                    (n.tenant, recipients, n.group_key, now, now),
                ):
                    groups[user] = (int(item_id), _flags(seen, read, archived))  # the newest wins
            first_id = int((await self._one(db, "SELECT coalesce(max(id), 0) + 1 FROM inbox_items"))[0])
            plan = plan_notify(
                n,
                notification_id,
                now,
                self.options.policy,
                prefs,
                groups,
                range(first_id, first_id + len(n.recipients)),
                self.options.route,
            )
            moved = len(plan.creates) + len(plan.collapses)
            seq = await self._next_seq(db, moved) if moved else 0
            group_until = now + n.group_window if n.group_window is not None else None
            await db.executemany(
                "INSERT INTO inbox_items (id, tenant, user_id, seq, category, notification_id,"
                " first_notification_id, group_key, group_until, created_at, updated_at, expire_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item_id,
                        n.tenant,
                        user,
                        seq + i,
                        n.category,
                        notification_id,
                        notification_id,
                        n.group_key,
                        group_until,
                        now,
                        now,
                        n.expire_at,
                    )
                    for i, (user, item_id) in enumerate(plan.creates)
                ],
            )
            await db.executemany(
                "UPDATE inbox_items SET seq = ?, notification_id = ?, count = count + 1, updated_at = ?,"
                " seen_at = NULL, read_at = NULL, expire_at = ? WHERE id = ?",
                [
                    (seq + len(plan.creates) + i, notification_id, now, n.expire_at, item_id)
                    for i, (_user, item_id) in enumerate(plan.collapses)
                ],
            )
            items = {r.user: r.item_id for r in plan.results}
            await db.executemany(
                "INSERT INTO inbox_deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (notification_id, d.user, str(d.channel), items[d.user], str(d.state), d.error, now)
                    for d in plan.deliveries
                ],
            )
            counts = await self._bump(db, n.tenant, plan.deltas) if plan.deltas else {}
            await self._store_events(db, plan.events, notification_id)
        return NotifyResult(notification_id, False, plan.results, counts, plan.delivery_counts())

    def _position(self, tenant: str, user: str, cursor: str) -> int:
        return cursors.decode(self._cursor_key, tenant, user, cursor)

    async def list_items(self, tenant: str, user: str, query: ListQuery = ListQuery()) -> Page:
        check_owner(tenant, user)
        check_kind("query", query, ListQuery)
        before = self._position(tenant, user, query.cursor) if query.cursor is not None else 2**63 - 1
        where = [
            "i.tenant = :tenant",
            "i.user_id = :user",
            "i.seq < :before",
            _UNEXPIRED.replace("expire_at", "i.expire_at"),
        ]
        where += [c for c in (STATUS_SQL[query.status], ARCHIVED_SQL[query.archived]) if c]
        params: dict[str, Any] = {
            "tenant": tenant,
            "user": user,
            "before": before,
            "now": self.options.clock(),
            "limit": query.limit + 1,
        }
        if query.categories:
            where.append("i.category IN (SELECT value FROM json_each(:categories))")
            params["categories"] = to_json(list(query.categories))
        rows = await self._read(
            f"SELECT {ITEM_COLUMNS} FROM inbox_items i"
            " JOIN inbox_notifications n ON n.id = i.notification_id"
            f" WHERE {' AND '.join(where)} ORDER BY i.seq DESC LIMIT :limit",
            params,
        )
        return self._page(tenant, user, rows, query.limit)

    def _page(self, tenant: str, user: str, rows: Sequence[Sequence[Any]], limit: int) -> Page:
        items = [item_from_columns(row) for row in rows[:limit]]
        key = self._cursor_key
        head = cursors.encode(key, tenant, user, int(rows[0][1])) if rows else None
        more = cursors.encode(key, tenant, user, int(rows[limit - 1][1])) if len(rows) > limit else None
        return Page(items, more, head)

    async def counts(self, tenant: str, user: str) -> Counts:
        check_owner(tenant, user)
        rows = await self._read(
            _COUNTS, {"tenant": tenant, "users": to_json([user]), "now": self.options.clock()}
        )
        return counts_from_rows(rows)[user]

    async def tenant_counts(self, tenant: str) -> TenantCounts:
        check_tenant(tenant)
        rows = await self._read(_TENANT_COUNTS, (tenant,))
        return TenantCounts(*(int(v or 0) for v in rows[0]))

    async def mark(self, tenant: str, user: str, mark: Mark) -> MarkResult:
        check_owner(tenant, user)
        check_kind("mark", mark, Mark)
        now = self.options.clock()
        params: dict[str, Any] = {"tenant": tenant, "user": user, "now": now}
        where = ["tenant = :tenant", "user_id = :user", _UNEXPIRED]
        if mark.ids:
            where.append("id IN (SELECT value FROM json_each(:ids))")
            params["ids"] = to_json(list(mark.ids))
        elif mark.up_to is not None:
            where.append("seq <= :up_to")
            params["up_to"] = self._position(tenant, user, mark.up_to)
        if mark.categories:
            where.append("category IN (SELECT value FROM json_each(:categories))")
            params["categories"] = to_json(list(mark.categories))
        set_clause, changes = MARK_SQL[mark.action]
        where.append(changes)
        target = " AND ".join(where)
        async with self._write() as db:
            groups = await db.execute_fetchall(
                "SELECT seen_at IS NOT NULL, read_at IS NOT NULL, archived_at IS NOT NULL, count(*)"
                f" FROM inbox_items WHERE {target} GROUP BY 1, 2, 3",
                params,
            )
            changed, delta = plan_mark(mark.action, ((_flags(s, r, a), int(c)) for s, r, a, c in groups))
            if not changed:
                return MarkResult(0, (await self._counts_of(db, tenant, [user]))[user])
            updated = await db.execute_fetchall(
                f"UPDATE inbox_items SET {set_clause.format(now=':now')} WHERE {target}"
                + (" RETURNING id" if mark.ids else ""),
                params,
            )
            counts = (await self._bump(db, tenant, {user: delta}))[user]
            ids = sorted(int(r[0]) for r in updated) if mark.ids else None
            event = route_event(mark_event(tenant, user, mark, ids, changed), self.options.route)
            if event is not None:
                await self._store_events(db, [event], None)
        return MarkResult(changed, counts)

    async def preferences(self, tenant: str, user: str) -> Preferences:
        check_owner(tenant, user)
        rows = await self._read(
            "SELECT preferences FROM inbox_preferences WHERE tenant = ? AND user_id = ?", (tenant, user)
        )
        return parse_preferences(orjson.loads(rows[0][0])) if rows else Preferences()

    async def set_preferences(self, tenant: str, user: str, preferences: Preferences) -> None:
        check_owner(tenant, user)
        check_kind("preferences", preferences, Preferences)
        async with self._write() as db:
            await db.execute(
                "INSERT INTO inbox_preferences VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " preferences = excluded.preferences, updated_at = excluded.updated_at",
                (tenant, user, to_json(preferences.as_dict()), self.options.clock()),
            )

    async def notification_status(
        self, tenant: str, notification_id: int, *, after_user: str = "", limit: int = 100
    ) -> NotificationStatus:
        check_status_query(tenant, notification_id, after_user, limit)
        head = await self._read(
            "SELECT category, created_at FROM inbox_notifications WHERE id = ? AND tenant = ?",
            (notification_id, tenant),
        )
        if not head:
            raise NotFound(f"no notification {notification_id}")
        select = (
            "SELECT d.user_id, d.channel, d.item_id, d.state, d.error, d.updated_at, i.id IS NOT NULL,"
            " i.seen_at IS NOT NULL, i.read_at IS NOT NULL, i.archived_at IS NOT NULL"
            " FROM inbox_deliveries d LEFT JOIN inbox_items i ON i.id = d.item_id AND d.channel = 'in_app'"
            " WHERE d.notification_id = ?"
        )
        page_users = await self._read(
            "SELECT DISTINCT user_id FROM inbox_deliveries WHERE notification_id = ? AND user_id > ?"
            " ORDER BY user_id LIMIT ?",
            (notification_id, after_user, limit),
        )
        last = page_users[-1][0] if page_users else after_user
        page = await self._read(
            select + " AND d.user_id > ? AND d.user_id <= ? ORDER BY d.user_id, d.channel",
            (notification_id, after_user, last),
        )
        every = await self._read(
            "SELECT d.channel, d.state, i.id IS NOT NULL, i.seen_at IS NOT NULL, i.read_at IS NOT"
            " NULL, count(*)"
            " FROM inbox_deliveries d LEFT JOIN inbox_items i ON i.id = d.item_id AND d.channel = 'in_app'"
            " WHERE d.notification_id = ? GROUP BY 1, 2, 3, 4, 5",
            (notification_id,),
        )
        return build_status(
            notification_id,
            tenant,
            str(head[0][0]),
            float(head[0][1]),
            [DeliveryStatusRow.from_row(r) for r in page],
            [
                (DeliveryChannel(c), DeliveryState(s), bool(present), bool(seen), bool(read), int(n))
                for c, s, present, seen, read, n in every
            ],
        )

    async def record_delivery(
        self,
        tenant: str,
        notification_id: int,
        user: str,
        channel: DeliveryChannel,
        state: DeliveryState,
        error: str = "",
    ) -> DeliveryState:
        check_delivery_report(tenant, notification_id, user, channel, state, error)
        async with self._write() as db:
            found = await self._one(
                db,
                "SELECT 1 FROM inbox_deliveries d JOIN inbox_notifications n ON n.id = d.notification_id"
                " WHERE d.notification_id = ? AND d.user_id = ? AND d.channel = ? AND n.tenant = ?",
                (notification_id, user, str(channel), tenant),
            )
            if found is None:
                raise NotFound(f"no {channel} delivery of notification {notification_id} to that user")
            new = await self._advance(db, (notification_id, user, str(channel)), state, error)
        assert new is not None
        return new

    async def record_deliveries(
        self, channel: DeliveryChannel, state: DeliveryState, deliveries: Sequence[tuple[str, int, str]]
    ) -> int:
        reports = check_delivery_reports(channel, state, deliveries)
        if not reports:
            return 0
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE inbox_deliveries SET state = :state, error = '', updated_at = :now"
                " WHERE channel = :channel AND state IN (SELECT value FROM json_each(:before))"
                " AND (notification_id, user_id) IN ("
                "   SELECT n.id, json_extract(r.value, '$[2]') FROM json_each(:reports) r"
                "   JOIN inbox_notifications n"
                "     ON n.id = json_extract(r.value, '$[1]') AND n.tenant = json_extract(r.value, '$[0]'))",
                {
                    "state": str(state),
                    "now": self.options.clock(),
                    "channel": str(channel),
                    "before": to_json(states_moving_to(state)),
                    "reports": to_json(reports),
                },
            )
            moved = cursor.rowcount
        return max(moved, 0)

    async def _advance(
        self, db: aiosqlite.Connection, key: tuple[int, str, str], reported: DeliveryState | None, error: str
    ) -> DeliveryState | None:
        """Apply ``advance_delivery`` to the delivery ``key`` (notification, user, channel), if it exists."""
        row = await self._one(
            db,
            "SELECT state, error FROM inbox_deliveries"
            " WHERE notification_id = ? AND user_id = ? AND channel = ?",
            key,
        )
        if row is None:
            return None
        new, kept = advance_delivery(DeliveryState(row[0]), row[1], reported, error)
        await db.execute(
            "UPDATE inbox_deliveries SET state = ?, error = ?, updated_at = ?"
            " WHERE notification_id = ? AND user_id = ? AND channel = ?",
            (str(new), kept, self.options.clock(), *key),
        )
        return new

    async def expire(self, *, limit: int = 1000) -> list[UserCounts]:
        check_page(limit, MAX_EXPIRE_BATCH)
        now = self.options.clock()
        async with self._write() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT id, tenant, user_id, seen_at IS NOT NULL, read_at IS NOT NULL,"
                    " archived_at IS NOT NULL"
                    " FROM inbox_items WHERE expire_at IS NOT NULL AND expire_at <= ? ORDER BY"
                    " expire_at LIMIT ?",
                    (now, limit),
                )
            )
            await db.execute(
                "DELETE FROM inbox_dedupe WHERE (tenant, dedupe_key) IN"
                " (SELECT tenant, dedupe_key FROM inbox_dedupe WHERE until <= ? LIMIT ?)",
                (now, limit),
            )
            if not rows:
                return []
            await db.executemany("DELETE FROM inbox_items WHERE id = ?", [(r[0],) for r in rows])
            deltas = plan_removal((t, u, _flags(s, r, a), 1) for _id, t, u, s, r, a in rows)
            out: list[UserCounts] = []
            for tenant, users in by_tenant(deltas).items():
                counts = await self._bump(db, tenant, users)
                out.extend(UserCounts(tenant, user, counts[user]) for user in sorted(users))
        return out

    # -- outbox --------------------------------------------------------------------------------------

    async def append(self, events: Sequence[OutboxEvent]) -> int:
        check_events(events)
        rows = [r for r in (route_event(e, self.options.route) for e in events) if r is not None]
        if rows:
            async with self._write() as db:
                await self._store_events(db, rows, None)
        return len(rows)

    async def claim(
        self, worker: str, destinations: Sequence[str] | None = None, *, limit: int = 100, lease: float = 30.0
    ) -> list[Task]:
        names, seconds = check_claim(worker, destinations, limit, lease)
        where = "t.state = 'pending' AND t.next_attempt_at <= :now"
        params: dict[str, Any] = {}
        if names is not None:
            params["destinations"] = to_json(names)
            where += " AND t.destination IN (SELECT value FROM json_each(:destinations))"
        now = self.options.clock()
        params.update(now=now, limit=limit, worker=worker, until=now + seconds)
        async with self._write() as db:
            rows = await db.execute_fetchall(
                "UPDATE outbox_tasks SET attempts = attempts + 1, lease_owner = :worker,"
                " next_attempt_at = :until,"
                " updated_at = :now WHERE id IN (SELECT t.id FROM outbox_tasks t WHERE "
                + where
                + " ORDER BY t.next_attempt_at, t.id LIMIT :limit)"
                " RETURNING id, event_id, destination, tenant, attempts, next_attempt_at, created_at",
                params,
            )
            rows = sorted(rows, key=lambda r: r[0])
            events = {
                int(r[0]): (r[1], r[2])
                for r in await db.execute_fetchall(
                    "SELECT id, topic, payload FROM outbox_events WHERE id IN (SELECT value FROM"
                    " json_each(?))",
                    (to_json([r[1] for r in rows]),),
                )
            }
        return [
            Task(
                int(i),
                int(e),
                d,
                t,
                Topic(events[e][0]),
                orjson.loads(events[e][1]),
                int(a),
                float(u),
                float(c),
            )
            for i, e, d, t, a, u, c in rows
        ]

    async def record(self, worker: str, task: Task, result: AttemptResult) -> Verdict:
        now = self.options.clock()
        plan = record_outcome(self.options, now, worker, task, result)
        async with self._write() as db:
            bound = await self._one(
                db,
                "UPDATE outbox_tasks SET state = ?, next_attempt_at = ?, last_error = ?, lease_owner = NULL,"
                " updated_at = ? WHERE id = ? AND state = 'pending' AND attempts = ? AND lease_owner = ?"
                " RETURNING notification_id, user_id, channel",
                (str(plan.state), plan.due, plan.error, now, task.id, task.attempt, worker),
            )
            final = plan.verdict if bound is not None else Verdict.STALE
            await db.execute(
                "INSERT INTO outbox_attempts (task_id, attempt, worker, verdict, error, status, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task.id, task.attempt, worker, str(final), plan.error, result.status, now),
            )
            if bound is not None and bound[0] is not None:
                await self._advance(db, (int(bound[0]), bound[1], bound[2]), plan.delivery, plan.error)
        return final

    async def tasks(
        self,
        *,
        state: TaskState | None = None,
        destination: str | None = None,
        tenant: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[TaskInfo]:
        check_task_query(state, destination, tenant, after_id, limit, before_id)
        where, params = _task_filter(state, destination, tenant)
        params.update(after=after_id, limit=limit)
        order = "t.id"
        if before_id is not None:
            where += " AND t.id < :before"
            params["before"] = before_id
            order = "t.id DESC"
        rows = await self._read(
            "SELECT t.id, t.event_id, t.destination, t.tenant, e.topic, t.state, t.attempts,"
            " t.next_attempt_at,"
            " t.last_error, t.created_at, t.updated_at, e.payload FROM outbox_tasks t"
            f" JOIN outbox_events e ON e.id = t.event_id WHERE t.id > :after{where} ORDER BY {order}"
            f" LIMIT :limit",
            params,
        )
        return [
            TaskInfo(
                int(i),
                int(e),
                d,
                t,
                Topic(tp),
                TaskState(s),
                int(a),
                float(n),
                le,
                float(c),
                float(u),
                orjson.loads(p),
            )
            for i, e, d, t, tp, s, a, n, le, c, u, p in rows
        ]

    async def replay(
        self,
        task_ids: Sequence[int] | None = None,
        *,
        destination: str | None = None,
        tenant: str | None = None,
    ) -> int:
        check_task_query(None, destination, tenant)
        ids = check_replay_ids(task_ids)
        where, params = _task_filter(TaskState.DEAD, destination, tenant)
        if ids is not None:
            params["ids"] = to_json(ids)
            where += " AND t.id IN (SELECT value FROM json_each(:ids))"
        now = self.options.clock()
        params.update(now=now, limit=MAX_REPLAY)
        async with self._write() as db:
            rows = await db.execute_fetchall(
                "UPDATE outbox_tasks SET state = 'pending', attempts = 0, next_attempt_at = :now,"
                " updated_at = :now,"
                f" lease_owner = NULL WHERE id IN (SELECT t.id FROM outbox_tasks t WHERE 1{where}"
                " ORDER BY t.id LIMIT :limit) RETURNING id",
                params,
            )
        return len(list(rows))

    async def outbox_depth(self, tenant: str | None = None) -> dict[tuple[str, TaskState], int]:
        if tenant is None:
            rows = await self._read(OUTBOX_DEPTH.format(""))
        else:
            check_tenant(tenant)
            rows = await self._read(OUTBOX_DEPTH.format(" AND tenant = ?"), (tenant,))
        return {(str(d), TaskState(s)): int(n) for d, s, n in rows}

    async def attempts(self, task_id: int) -> list[Attempt]:
        check_id("task_id", task_id)
        rows = await self._read(
            "SELECT task_id, attempt, worker, verdict, error, status, at FROM outbox_attempts WHERE"
            " task_id = ?"
            " ORDER BY id",
            (task_id,),
        )
        return [Attempt(int(t), int(a), w, Verdict(v), e, s, float(at)) for t, a, w, v, e, s, at in rows]

    async def prune(self, *, before: float, limit: int = 10000) -> int:
        before = check_prune(before, limit)
        async with self._write() as db:
            rows = list(
                await db.execute_fetchall(
                    "DELETE FROM outbox_tasks WHERE id IN (SELECT id FROM outbox_tasks WHERE state = 'done'"
                    " AND updated_at < ? ORDER BY id LIMIT ?) RETURNING id, event_id",
                    (before, limit),
                )
            )
            if rows:
                await db.executemany("DELETE FROM outbox_attempts WHERE task_id = ?", [(r[0],) for r in rows])
                await db.execute(
                    "DELETE FROM outbox_events WHERE id IN (SELECT value FROM json_each(?))"
                    " AND NOT EXISTS (SELECT 1 FROM outbox_tasks t WHERE t.event_id = outbox_events.id)",
                    (to_json(sorted({int(r[1]) for r in rows})),),
                )
        return len(rows)


def _task_filter(
    state: TaskState | None, destination: str | None, tenant: str | None
) -> tuple[str, dict[str, Any]]:
    """The WHERE conditions (checked by ``check_task_query``) of a task query."""
    where, params = "", {}
    for column, value in (("state", state), ("destination", destination), ("tenant", tenant)):
        if value is not None:
            where += f" AND t.{column} = :{column}"
            params[column] = str(value)
    return where, params
