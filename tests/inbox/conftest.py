"""Fixtures of the inbox tests: a controllable clock, and the store under test on SQLite and on
PostgreSQL (one throwaway cluster per session, a fresh schema per test).

``store_kind`` parametrizes every test that asks for ``make_store`` over both backends; the PostgreSQL
cluster starts only when a PostgreSQL case runs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inbox.inbox import InboxOptions
from inbox.inbox_postgres import PostgresInbox
from inbox.inbox_sqlite import SqliteInbox
from tests.postgres_servers import PostgresServer

START = 1_800_000_000.0


class Clock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


_databases = itertools.count()


async def fresh_database(server: PostgresServer) -> str:
    """A DSN whose connections see an empty database: a new schema, first on their ``search_path`` (asyncpg
    passes unknown DSN parameters as server settings). A schema costs milliseconds where a CREATE DATABASE
    took a second on a busy machine."""
    name = f"inbox_{next(_databases)}"
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{server.dsn()}?search_path={name}"


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
