"""Inbox benchmark: a user with 100,000 items, and a notify to 10,000 recipients, on SQLite and PostgreSQL.

    nice .venv/bin/python bench/inbox_store.py                 # both stores, about a minute
    nice .venv/bin/python bench/inbox_store.py --stores sqlite --items 20000 --calls 300    # a quick look

For each store, in one run:

1. **load**: one user gets ``--items`` items (a third read, one in ten archived, one in a hundred with an
   expiry far ahead) and nine other users of the tenant get as many between them, written straight into
   the tables in bulk with the counter rows computed from them (going through ``notify`` 100,000 times
   would measure the load, not the reads). A fresh ``counts()`` is checked against a count over the rows
   before anything is timed.
2. **reads**, each ``--calls`` times, sequentially, p50/p99 in ms:
   ``counts`` (the maintained counters) beside the **baseline** that a store without counters runs: one
   ``SELECT count(*)`` (with the unread/unseen sums) over the user's unarchived, unexpired rows, on the
   same connection path, and the floor of that path (``SELECT 1``: the driver's round trip, on SQLite a
   hop to aiosqlite's thread and back); ``list`` first page (20, newest first), the first page of unread
   only, and a page 50,000 items deep through a cursor (keyset pagination: no OFFSET).
3. **notify to 10,000 recipients** (``--fanout``): the time until ``notify`` returns, i.e. until the items,
   counters and deliveries of every recipient are committed; ``--repeats`` runs, each to a fresh tenant.

Durability is each store's default: SQLite WAL with ``synchronous = NORMAL``; PostgreSQL with ``fsync`` and
``synchronous_commit`` on (the cluster is a throwaway one this script starts with ``initdb``, on a free
loopback port, and removes at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inbox.inbox import InboxOptions, to_json  # noqa: E402
from inbox.inbox_postgres import PostgresInbox  # noqa: E402
from inbox.inbox_sqlite import SqliteInbox  # noqa: E402
from inbox.model import ListQuery, Notification, StatusFilter  # noqa: E402
from tests.postgres_servers import PostgresServer  # noqa: E402

TENANT = "bench"
USER = "heavy"
Store = SqliteInbox | PostgresInbox

BASELINE = (
    "SELECT count(*), sum(CASE WHEN read_at IS NULL THEN 1 ELSE 0 END),"
    " sum(CASE WHEN seen_at IS NULL THEN 1 ELSE 0 END) FROM inbox_items"
    " WHERE tenant = {0} AND user_id = {1} AND archived_at IS NULL AND (expire_at IS NULL OR expire_at > {2})"
)


def rows_for(user: str, count: int, first_id: int, now: float, rng: random.Random) -> list[tuple[Any, ...]]:
    """Item rows (id, tenant, user, seq, category, notification, first notification, created, seen, read,
    archived, expire) for one user; ids double as list positions and notification ids."""
    rows = []
    for k in range(count):
        i = first_id + k
        read = now - 10 if rng.random() < 1 / 3 else None
        archived = now - 5 if rng.random() < 0.1 else None
        expire = now + 10**7 if rng.random() < 0.01 else None
        created = now - (count - k)
        rows.append(
            (
                i,
                TENANT,
                user,
                i,
                rng.choice(["comment", "mention", "digest"]),
                i,
                i,
                created,
                read,
                read,
                archived,
                expire,
            )
        )
    return rows


def counter(rows: list[tuple[Any, ...]]) -> tuple[int, int, int]:
    live = [r for r in rows if r[10] is None]
    unread = sum(1 for r in live if r[9] is None)
    unseen = sum(1 for r in live if r[8] is None)
    return unread, unseen, len(live)


CONTENT = to_json(
    {"title": "Alice commented", "body": "Looks good", "url": "", "actions": [], "data": {"doc": 7}}
)


async def load_sqlite(store: SqliteInbox, users: dict[str, list[tuple[Any, ...]]]) -> None:
    async with store._write() as db:
        for user, rows in users.items():
            await db.executemany(
                "INSERT INTO inbox_notifications VALUES (?, ?, 'comment', ?, 1, ?)",
                [(r[0], TENANT, CONTENT, r[7]) for r in rows],
            )
            await db.executemany(
                "INSERT INTO inbox_items (id, tenant, user_id, seq, category, notification_id,"
                " first_notification_id, created_at, updated_at, seen_at, read_at, archived_at, expire_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r[:8], r[7], *r[8:]) for r in rows],
            )
            await db.execute(
                "INSERT INTO inbox_counts VALUES (?, ?, ?, ?, ?, ?)",
                (TENANT, user, *counter(rows), len(rows)),
            )
        top = max(r[0] for rows in users.values() for r in rows)
        await db.execute("UPDATE inbox_meta SET value = ? WHERE key = 'seq'", (str(top),))
    await store._db(True).execute("ANALYZE")


async def load_postgres(store: PostgresInbox, users: dict[str, list[tuple[Any, ...]]]) -> None:
    pool = store._pool_or_raise()
    async with pool.acquire() as conn, conn.transaction():
        for user, rows in users.items():
            await conn.copy_records_to_table(
                "inbox_notifications",
                records=[(r[0], TENANT, "comment", CONTENT, 1, r[7]) for r in rows],
                columns=["id", "tenant", "category", "content", "recipients", "created_at"],
            )
            await conn.copy_records_to_table(
                "inbox_items",
                records=[(*r[:8], r[7], *r[8:]) for r in rows],
                columns=[
                    "id",
                    "tenant",
                    "user_id",
                    "seq",
                    "category",
                    "notification_id",
                    "first_notification_id",
                    "created_at",
                    "updated_at",
                    "seen_at",
                    "read_at",
                    "archived_at",
                    "expire_at",
                ],
            )
            await conn.execute(
                "INSERT INTO inbox_counts VALUES ($1, $2, $3, $4, $5, $6)",
                TENANT,
                user,
                *counter(rows),
                len(rows),
            )
        top = max(r[0] for rows in users.values() for r in rows)
        for seq in ("inbox_seq", "inbox_item_ids", "inbox_notifications_id_seq"):
            await conn.execute(f"SELECT setval('{seq}', $1)", top)
    await pool.execute("VACUUM ANALYZE")


async def timed(calls: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """p50 and p99 of ``calls`` sequential calls, ms (after 20 warm-up calls)."""
    for _ in range(min(20, calls)):
        await fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def line(store: str, what: str, n: int, a: float, b: float, unit: str = "p50/p99 ms") -> None:
    print(f"{store:<10} {what:<46} {n:>6} {a:>10.3f} {b:>10.3f}  {unit}", flush=True)


async def bench_store(kind: str, store: Store, args: argparse.Namespace) -> None:
    now = time.time()
    rng = random.Random(7)
    users = {USER: rows_for(USER, args.items, 1, now, rng)}
    next_id = args.items + 1
    for k in range(9):
        users[f"other{k}"] = rows_for(f"other{k}", args.items // 9, next_id, now, rng)
        next_id += args.items // 9
    start = time.perf_counter()
    if isinstance(store, SqliteInbox):
        await load_sqlite(store, users)
        baseline = BASELINE.format("?", "?", "?")

        async def count_rows() -> Any:
            return await store._read(baseline, (TENANT, USER, time.time()))

        async def floor() -> Any:
            return await store._read("SELECT 1")
    else:
        await load_postgres(store, users)
        baseline = BASELINE.format("$1", "$2", "$3")

        async def count_rows() -> Any:
            return await store._read(baseline, TENANT, USER, time.time())

        async def floor() -> Any:
            return await store._read("SELECT 1")

    print(
        f"# {kind}: loaded {sum(map(len, users.values()))} items in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    counts = await store.counts(TENANT, USER)
    total, unread, unseen = (int(v) for v in (await count_rows())[0])
    assert (counts.total, counts.unread, counts.unseen) == (total, unread, unseen), (
        counts,
        total,
        unread,
        unseen,
    )
    print(f"# {kind}: {USER} has {total} unarchived items, {unread} unread, {unseen} unseen", flush=True)

    line(kind, "floor: SELECT 1 on the same path", args.calls, *await timed(args.calls, floor))
    line(
        kind,
        "counts (maintained counters)",
        args.calls,
        *await timed(args.calls, lambda: store.counts(TENANT, USER)),
    )
    line(
        kind,
        f"baseline: SELECT count(*) over {total} rows",
        args.calls // 4,
        *await timed(args.calls // 4, count_rows),
    )
    line(
        kind,
        "list first page (20)",
        args.calls,
        *await timed(args.calls, lambda: store.list_items(TENANT, USER)),
    )
    unread_page = ListQuery(status=StatusFilter.UNREAD)
    line(
        kind,
        "list first page, unread only",
        args.calls,
        *await timed(args.calls, lambda: store.list_items(TENANT, USER, unread_page)),
    )
    page = await store.list_items(TENANT, USER, ListQuery(limit=100))
    deep = ListQuery()
    for _ in range(min(500, args.items // 200)):  # walk to about half way
        assert page.next_cursor is not None
        page = await store.list_items(TENANT, USER, ListQuery(limit=100, cursor=page.next_cursor))
    deep = ListQuery(cursor=page.next_cursor)
    line(
        kind,
        f"list page ~{min(500, args.items // 200) * 100} items deep (cursor)",
        args.calls,
        *await timed(args.calls, lambda: store.list_items(TENANT, USER, deep)),
    )

    recipients = tuple(f"r{k}" for k in range(args.fanout))
    took = []
    for k in range(args.repeats):
        n = Notification(f"fanout{k}", recipients, "comment", {"doc": 7}, title="Alice commented")
        start = time.perf_counter()
        result = await store.notify(n)
        took.append((time.perf_counter() - start) * 1000)
        assert len(result.counts) == args.fanout
    line(
        kind,
        f"notify to {args.fanout} recipients (stored)",
        args.repeats,
        statistics.median(took),
        max(took),
        "median/max ms",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'store':<10} {'operation':<46} {'n':>6} {'a':>10} {'b':>10}  unit")
    with tempfile.TemporaryDirectory(prefix="inbox-bench-") as tmp:
        for kind in args.stores.split(","):
            if kind == "sqlite":
                store: Store = SqliteInbox(Path(tmp) / "inbox.sqlite3", InboxOptions())
                await store.open()
                try:
                    await bench_store(kind, store, args)
                finally:
                    await store.close()
            elif kind == "postgres":
                server = PostgresServer()
                try:
                    server.start()
                    pg = PostgresInbox(server.dsn(), InboxOptions())
                    await pg.open()
                    try:
                        await bench_store(kind, pg, args)
                    finally:
                        await pg.close()
                finally:
                    server.stop()
            else:
                raise SystemExit(f"unknown store {kind}")


if __name__ == "__main__":
    asyncio.run(main())
