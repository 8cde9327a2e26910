"""``python -m tests.hub.slow_store_serve SECONDS serve ...``: ``switchboard serve`` whose SQLite document
store waits ``SECONDS`` before every write (a slow disk), for tests that attack a real node through it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from hub.cli import main
from sync.store import StoreOp
from sync.store_sqlite import SqliteDocumentStore


def slow_down(delay: float) -> None:
    write = SqliteDocumentStore.write

    async def slow_write(self: SqliteDocumentStore, ops: Sequence[StoreOp]) -> None:
        await asyncio.sleep(delay)
        await write(self, ops)

    SqliteDocumentStore.write = slow_write  # type: ignore[method-assign]


if __name__ == "__main__":
    slow_down(float(sys.argv[1]))
    main(sys.argv[2:])
