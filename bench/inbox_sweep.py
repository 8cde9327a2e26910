"""The inbox's expiry sweep (hub/inbox/expiry.py), on SQLite and PostgreSQL: what an idle sweep costs (the
one every node runs every ``inbox_expire_interval``), and a sweep of many expired items.

    nice .venv/bin/python bench/inbox_sweep.py                    # both stores, about a minute
    nice .venv/bin/python bench/inbox_sweep.py --stores sqlite --users 200

For each store: ``--users`` users get ``--kept`` items each that do not expire and ``--expiring`` items
each that expire together (one notify per round to every user, through the store's ``notify``); then 20
sweeps with nothing expired (median and max), then the clock passes the expiry and one sweep deletes them
(at most 10 transactions of 1,000, as the node's) with its pushes counted (the push itself is a no-op
here: the broker's cost is the fan-out benchmarks'). The PostgreSQL cluster is a throwaway one started
here (``fsync`` off, as the tests').
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hub.inbox.expiry import ExpirySweep  # noqa: E402
from inbox.inbox import InboxOptions  # noqa: E402
from inbox.inbox_postgres import PostgresInbox  # noqa: E402
from inbox.inbox_sqlite import SqliteInbox  # noqa: E402
from inbox.model import Notification, UserCounts  # noqa: E402
from tests.postgres_servers import PostgresServer, fresh_database  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def measure(
    kind: str, store: SqliteInbox | PostgresInbox, clock: Clock, args: argparse.Namespace
) -> None:
    await store.open()
    users = tuple(f"u{k}" for k in range(args.users))
    for i in range(args.kept):
        await store.notify(Notification("", users, "c", {"i": i}))
    for i in range(args.expiring):
        await store.notify(Notification("", users, "c", {"x": i}, expire_at=clock.now + 60))
    pushes = 0

    async def push(swept: Sequence[UserCounts]) -> None:
        nonlocal pushes
        pushes += len(swept)

    sweep = ExpirySweep(store, push, 10.0)
    idle = []
    for _ in range(20):
        started = time.perf_counter()
        await sweep.sweep()
        idle.append(time.perf_counter() - started)
    clock.now += 61
    started = time.perf_counter()
    await sweep.sweep()
    full = time.perf_counter() - started
    stored = args.users * (args.kept + args.expiring)
    expired = args.users * args.expiring
    print(
        f"{kind}: idle sweep ({stored:,} items, none expired):"
        f" median {statistics.median(idle) * 1000:.2f} ms, max {max(idle) * 1000:.2f} ms;"
        f" sweep of {expired:,} expired items of {args.users:,} users:"
        f" {full * 1000:.0f} ms, {pushes:,} pushes"
    )
    await store.close()


async def main(args: argparse.Namespace) -> None:
    if "sqlite" in args.stores:
        with tempfile.TemporaryDirectory() as folder:
            clock = Clock()
            await measure(
                "sqlite", SqliteInbox(Path(folder) / "inbox.sqlite3", InboxOptions(clock=clock)), clock, args
            )
    if "postgres" in args.stores:
        server = PostgresServer({"fsync": "off"})
        server.start()
        try:
            clock = Clock()
            store = PostgresInbox(await fresh_database(server), InboxOptions(clock=clock), pool_size=4)
            await measure("postgres", store, clock, args)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--kept", type=int, default=100, help="items per user that do not expire")
    parser.add_argument("--expiring", type=int, default=10, help="items per user that expire together")
    asyncio.run(main(parser.parse_args()))
