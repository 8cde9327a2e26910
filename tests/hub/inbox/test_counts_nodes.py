"""Counts never drift, end to end: random concurrent notify/mark sequences through two real nodes
(``switchboard serve`` processes on a fresh Redis, sharing one PostgreSQL schema) from several devices per
user, over the protocol: notifies through either node's server API, marks through either node's API and
through the devices' ``inbox.mark`` RPC (by ids, up to a cursor, all).

Each device keeps what a badge shows: the counts of the highest version pushed on its personal channel.
Afterwards, for every user, every device's badge equals a fresh ``inbox.counts`` (asked of either node),
which equals a count over the stored items (SQL, around the hub), with the counter row's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from tests.conftest import TIMEOUT
from tests.nodes import HubNode, NodesFactory, make_nodes, user_token  # noqa: F401 (a fixture)
from tests.postgres_servers import PostgresServer, fresh_database
from tests.redis_servers import RedisServer

USERS = ["u0", "u1", "u2"]
DEVICES = 2
"""Per user; device d of a user is connected to node d % 2."""

notify_op = st.tuples(
    st.just("notify"),
    st.integers(0, 1),  # through this node's API
    st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    st.sampled_from([None, None, "g1"]),  # group key
    st.sampled_from([None, None, "d1"]),  # dedupe key
)
mark_op = st.tuples(
    st.just("mark"),
    st.sampled_from(USERS),
    st.integers(0, DEVICES),  # DEVICES: through a node's API instead of a device
    st.sampled_from(["seen", "unseen", "read", "unread", "archived", "unarchived", "interacted"]),
    st.sampled_from(["ids", "all", "up_to"]),
    st.lists(st.integers(0, 40), max_size=3),  # indexes into the item ids seen so far
)
ops = st.lists(st.one_of(notify_op, mark_op), min_size=1, max_size=16)


class Device:
    """A raw protocol client that answers pings, matches replies to calls and keeps its badge."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.badge: dict[str, int] | None = None
        self.changed = asyncio.Event()
        self._calls = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, node: HubNode, user: str, tenant: str) -> Device:
        ws = await websockets.connect(node.url, open_timeout=TIMEOUT, max_size=None)
        device = cls(ws)
        reply = await device.call("connect", {"token": user_token(user, tenant=tenant)})
        assert "connect" in reply, reply
        return device

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                for line in (frame if isinstance(frame, str) else frame.decode()).split("\n"):
                    msg = orjson.loads(line)
                    if not msg:
                        await self.ws.send("{}")  # the pong to the hub's ping
                    elif "id" in msg:
                        self._waiting.pop(msg["id"]).set_result(msg)
                    elif "pub" in msg.get("push", {}):
                        counts = msg["push"]["pub"]["data"]["counts"]
                        if self.badge is None or counts["version"] > self.badge["version"]:
                            self.badge = counts
                            self.changed.set()

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        cmd_id = next(self._calls)
        future = self._waiting[cmd_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(orjson.dumps({"id": cmd_id, method: params}).decode())
        async with asyncio.timeout(TIMEOUT):
            return await future

    async def rpc(self, method: str, data: dict[str, Any]) -> Any:
        reply = await self.call("rpc", {"method": method, "data": data})
        assert "rpc" in reply, reply
        return reply["rpc"].get("data")

    async def shows(self, counts: dict[str, int]) -> None:
        """Wait (bounded) until the badge shows ``counts``; fails with what it shows instead."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while self.badge != counts:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"badge {self.badge} never became {counts}") from None

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Run:
    def __init__(self, nodes: list[HubNode], devices: dict[str, list[Device]], tenant: str) -> None:
        self.nodes = nodes
        self.devices = devices
        self.tenant = tenant
        self.ids: list[int] = []

    async def step(self, op: tuple[Any, ...]) -> None:
        if op[0] == "notify":
            _, k, users, group, dedupe = op
            params: dict[str, Any] = {"tenant": self.tenant, "recipients": users, "category": "comment"}
            if group:
                params.update(group_key=group, group_window=600)
            if dedupe:
                params.update(dedupe_key=dedupe, dedupe_window=600)
            body = await self.nodes[k].api("notify", params)
            self.ids += [r["item_id"] for r in body["result"]["recipients"] if r["item_id"] is not None]
            return
        _, user, via, action, scope, picks = op
        mark: dict[str, Any] = {"action": action}
        device = self.devices[user][via % DEVICES]
        if scope == "ids":
            chosen = sorted({self.ids[i % len(self.ids)] for i in picks}) if self.ids else []
            if not chosen:
                return
            mark["ids"] = chosen
        elif scope == "up_to":
            head = (await device.rpc("inbox.list", {"limit": 1}))["head_cursor"]
            if head is None:
                return
            mark["up_to"] = head
        else:
            mark["all"] = True
        if via == DEVICES:
            body = await self.nodes[len(picks) % 2].api(
                "inbox_mark", {"tenant": self.tenant, "user": user, **mark}
            )
            assert "result" in body, body
        else:
            await device.rpc("inbox.mark", mark)


async def stored_counts(dsn: str, tenant: str, user: str) -> dict[str, int]:
    """The user's counts from a count over the stored items, with the counter row's version."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE read_at IS NULL), count(*) FILTER (WHERE seen_at IS NULL),"
            " count(*) FROM inbox_items WHERE tenant = $1 AND user_id = $2 AND archived_at IS NULL",
            tenant,
            user,
        )
        version = await conn.fetchval(
            "SELECT version FROM inbox_counts WHERE tenant = $1 AND user_id = $2", tenant, user
        )
    finally:
        await conn.close()
    return {"unread": row[0], "unseen": row[1], "total": row[2], "version": version or 0}


async def scenario(nodes: list[HubNode], dsn: str, tenant: str, steps: list[tuple[Any, ...]]) -> None:
    devices = {u: [await Device.connect(nodes[d % 2], u, tenant) for d in range(DEVICES)] for u in USERS}
    try:
        run = Run(nodes, devices, tenant)
        wave = len(USERS) * DEVICES  # steps run concurrently in waves, across both nodes
        for start in range(0, len(steps), wave):
            await asyncio.gather(*(run.step(op) for op in steps[start : start + wave]))
        for user in USERS:
            fresh = await devices[user][1].rpc("inbox.counts", {})
            stored = await stored_counts(dsn, tenant, user)
            assert fresh == stored, (user, fresh, stored)
            if fresh["version"] == 0:
                assert all(d.badge is None for d in devices[user])  # never changed: never pushed
                continue
            for device in devices[user]:
                await device.shows(fresh)
    finally:
        for user_devices in devices.values():
            for device in user_devices:
                await device.close()


@pytest.fixture
def two_nodes(
    make_nodes: NodesFactory,  # noqa: F811 (the fixture imported above)
    redis_server: RedisServer,
    postgres: PostgresServer,
) -> Iterator[tuple[list[HubNode], str]]:
    """Two nodes on a fresh Redis sharing a fresh PostgreSQL schema; the DSN for the stored counts."""
    dsn = asyncio.run(fresh_database(postgres))
    nodes = asyncio.run(
        make_nodes(
            2,
            redis=[redis_server.url],
            database_url=dsn,
            user_subscribe_to_personal=True,
            user_personal_channel_namespace="chat",
            log_level="warning",
        )
    )
    yield nodes, dsn


_tenants = itertools.count()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_every_badge_equals_fresh_and_stored_counts_after_concurrent_changes(
    two_nodes: tuple[list[HubNode], str], steps: list[tuple[Any, ...]]
) -> None:
    nodes, dsn = two_nodes
    tenant = f"t{next(_tenants)}"  # each example its own tenant: every user starts empty
    asyncio.run(scenario(nodes, dsn, tenant, steps))
