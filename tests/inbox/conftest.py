"""Fixtures of the inbox tests: a controllable clock, and the store under test on SQLite and on
PostgreSQL (the session's throwaway cluster, ``postgres`` in tests/conftest.py; a fresh schema per test).

``store_kind`` parametrizes every test that asks for ``make_store`` over both backends; the PostgreSQL
cluster starts only when a PostgreSQL case runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from inbox.inbox import InboxOptions
from inbox.inbox_postgres import PostgresInbox
from inbox.inbox_sqlite import SqliteInbox
from tests.postgres_servers import fresh_database

__all__ = ["fresh_database"]  # the inbox tests import it from here

START = 1_800_000_000.0


class Clock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


Store = SqliteInbox | PostgresInbox
MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[MakeStore]:
    """``await make_store(**options)``: an open store of this test's kind with ``clock``; every call on
    one test shares one database (several instances: several nodes or processes)."""
    opened: list[Store] = []
    location: dict[str, str] = {}
    creating = asyncio.Lock()

    async def make(_migrate_to: int | None = None, **kw: Any) -> Store:
        options = InboxOptions(clock=clock, **kw)
        store: Store
        if store_kind == "sqlite":
            store = SqliteInbox(tmp_path / "inbox.sqlite3", options, _migrate_to=_migrate_to)
        else:
            async with creating:  # stores made together share the one schema
                if "dsn" not in location:
                    location["dsn"] = await fresh_database(request.getfixturevalue("postgres"))
            store = PostgresInbox(location["dsn"], options, pool_size=4, _migrate_to=_migrate_to)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()
