"""What is in a store's database, read around the store's own code (for assertions)."""

from __future__ import annotations

from typing import Any

from inbox.inbox_postgres import PostgresInbox
from inbox.model import Counts
from tests.inbox.conftest import Store

TABLES = [
    "inbox_notifications",
    "inbox_items",
    "inbox_counts",
    "inbox_deliveries",
    "inbox_dedupe",
    "inbox_preferences",
    "outbox_events",
    "outbox_tasks",
    "outbox_attempts",
]


async def query(store: Store, sql: str, *params: Any) -> list[Any]:
    if isinstance(store, PostgresInbox):
        return list(await store._read(sql.replace("?", "${}").format(*range(1, len(params) + 1)), *params))
    return await store._read(sql, params)


async def execute(store: Store, sql: str) -> None:
    if isinstance(store, PostgresInbox):
        await store._pool_or_raise().execute(sql)
    else:
        await store._db(True).execute(sql)


async def table_sizes(store: Store) -> dict[str, int]:
    return {t: int((await query(store, f"SELECT count(*) FROM {t}"))[0][0]) for t in TABLES}


async def schema_versions(store: Store) -> list[int]:
    return [int(r[0]) for r in await query(store, "SELECT version FROM schema_version ORDER BY version")]


async def stored_counts(store: Store, tenant: str, user: str) -> Counts:
    """The user's counts from a count over the stored items (not the counters), and the counter row's
    version."""
    now = store.options.clock()
    rows = await query(
        store,
        "SELECT count(*), sum(CASE WHEN read_at IS NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN seen_at IS NULL THEN 1 ELSE 0 END) FROM inbox_items"
        " WHERE tenant = ? AND user_id = ? AND archived_at IS NULL AND (expire_at IS NULL OR expire_at > ?)",
        tenant,
        user,
        now,
    )
    total, unread, unseen = (int(v or 0) for v in rows[0])
    version = await query(
        store, "SELECT version FROM inbox_counts WHERE tenant = ? AND user_id = ?", tenant, user
    )
    return Counts(unread, unseen, total, int(version[0][0]) if version else 0)
