"""Fixtures of the worker tests: outbox stores on real time (leases and retries must really pass), on
SQLite and PostgreSQL (``store_kind``), a webhook receiver, and a Mosquitto broker (``mosquitto``)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import tests.inbox.conftest as inbox_conftest
from hub.outbound.routes import Routes
from hub.outbound.settings import Webhook
from inbox.inbox import InboxOptions
from inbox.inbox_postgres import PostgresInbox
from inbox.inbox_sqlite import SqliteInbox
from inbox.outbox import RetryPolicy, Topic
from inbox.preferences import PreferencePolicy
from tests.mqtt_broker import mosquitto  # noqa: F401
from tests.postgres_servers import fresh_database
from tests.workers.receiver import Receiver

store_kind = inbox_conftest.store_kind  # the fixture, defined in tests/inbox/conftest.py

SECRET = "whsec_" + base64.b64encode(b"switchboard-webhook-test-key-32b").decode()
FAST_RETRIES = RetryPolicy(max_attempts=8, base=0.02, cap=0.2)

Store = SqliteInbox | PostgresInbox
MakeStore = Callable[..., Awaitable[Store]]


def webhook(url: str, name: str = "main", **kw: Any) -> Webhook:
    kw.setdefault("events", frozenset(Topic))
    kw.setdefault("timeout", 0.5)
    return Webhook(name, url, (base64.b64decode(SECRET[len("whsec_") :]),), **kw)


@pytest.fixture
async def make_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeStore]:
    """``await make_store(routes, retry=...)``: an open store routing by ``routes``; every call of one test
    opens the same database (another node or process)."""
    opened: list[Store] = []
    dsn: list[str] = []
    lock = asyncio.Lock()

    async def make(
        routes: Routes, retry: RetryPolicy = FAST_RETRIES, policy: PreferencePolicy | None = None
    ) -> Store:
        options = InboxOptions(route=routes.route, retry=retry, policy=policy or PreferencePolicy())
        store: Store
        if store_kind == "sqlite":
            store = SqliteInbox(tmp_path / "inbox.sqlite3", options)
        else:
            async with lock:
                if not dsn:
                    dsn.append(await fresh_database(request.getfixturevalue("postgres")))
            store = PostgresInbox(dsn[0], options, pool_size=4)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRET).start()
    yield r
    await r.stop()
