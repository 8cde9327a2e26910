"""Notifications across real nodes (``switchboard serve`` processes on one Redis, the inbox on one PostgreSQL
schema): the official SDKs (centrifuge-python, and centrifuge-js in Node as a browser app runs it) keep a
live badge that stays exact through marks from other devices on other nodes; an audience is every
subscriber on every node; ``delivered`` is recorded by the node that holds the device; and
``user_personal_single_connection`` keeps one connection per user across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIMEOUT, RawClient
from tests.hub.inbox.conftest import Badge
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401 (a fixture: npm ci of tests/hub/js_sdk)
from tests.nodes import HubNode, NodeSet, NodesFactory, eventually, make_nodes, module_nodes, user_token  # noqa: F401
from tests.postgres_servers import PostgresServer, fresh_database
from tests.redis_servers import RedisServer, redis_servers

JS = Path(__file__).parents[1] / "js_sdk" / "badge.mjs"
_tenants = itertools.count()


def fresh_tenant() -> str:
    """Each test its own tenant on the module's nodes: its users start empty."""
    return f"nodes-{next(_tenants)}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[NodeSet]:
    """Two nodes on a fresh Redis and a fresh PostgreSQL schema, for the module; personal channels in
    ``chat`` (history and recovery)."""
    dsn = asyncio.run(fresh_database(postgres))
    with (
        redis_servers(1) as servers,
        module_nodes(
            tmp_path_factory,
            [servers[0].url],
            count=2,
            database_url=dsn,
            user_subscribe_to_personal=True,
            user_personal_channel_namespace="chat",
        ) as nodes,
    ):
        yield nodes


async def call(node: HubNode, method: str, params: dict[str, Any]) -> Any:
    body = await node.api(method, params)
    assert "result" in body, body
    return body["result"]


async def test_the_python_sdk_badge_stays_exact_through_marks_from_another_node(
    shared: NodeSet, sdk: Any
) -> None:
    n1, n2 = shared[0], shared[1]
    tenant = fresh_tenant()
    badge = Badge("chat:#")
    phone = sdk(n1, token=user_token("alice", tenant=tenant), events=badge)
    laptop = sdk(n2, token=user_token("alice", tenant=tenant))
    for client in (phone, laptop):
        await client.connect()
        await client.ready(TIMEOUT)
    for i in range(3):
        await call(
            n2, "notify", {"tenant": tenant, "recipients": ["alice"], "category": "c", "title": f"n{i}"}
        )
    await badge.shows(unread=3, unseen=3, total=3, version=3)
    page = (await laptop.rpc("inbox.list", {"limit": 2})).data
    await laptop.rpc("inbox.mark", {"action": "read", "ids": [page["items"][0]["id"]]})
    await badge.shows(unread=2, unseen=2, version=4)
    await laptop.rpc("inbox.mark", {"action": "seen", "up_to": page["head_cursor"]})
    await badge.shows(unread=2, unseen=0, total=3, version=5)
    await call(n1, "inbox_mark", {"tenant": tenant, "user": "alice", "action": "archived", "all": True})
    await badge.shows(unread=0, unseen=0, total=0, version=6)
    assert (await phone.rpc("inbox.counts", {})).data == badge.counts


class JsBadge:
    """``badge.mjs`` in Node: its badge lines, and RPC calls through it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.badge: dict[str, int] | None = None
        self.replies: dict[int, dict[str, Any]] = {}
        self.lines: list[dict[str, Any]] = []
        self._calls = itertools.count(1)

    async def _next_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            assert self.proc.stderr is not None
            raise AssertionError(f"badge.mjs ended: {self.lines} {(await self.proc.stderr.read()).decode()}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        assert "event" in line, self.lines  # {"error": ...}: the script failed
        if line["event"] == "badge":
            self.badge = line["counts"]
        elif line["event"] == "rpc":
            self.replies[line["id"]] = line
        return line

    async def shows(self, counts: dict[str, int]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.badge != counts:
                await self._next_line()

    async def rpc(self, method: str, data: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None
        call_id = next(self._calls)
        self.proc.stdin.write(json.dumps({"id": call_id, "method": method, "data": data}).encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(TIMEOUT):
            while call_id not in self.replies:
                await self._next_line()
        return self.replies.pop(call_id)

    async def rpc_data(self, method: str, data: dict[str, Any]) -> Any:
        reply = await self.rpc(method, data)
        assert "data" in reply, reply
        return reply["data"]


@pytest.fixture
async def js_badge(centrifuge_js: Path) -> AsyncIterator[Any]:  # noqa: F811
    started: list[asyncio.subprocess.Process] = []

    async def start(node: HubNode, token: str, personal: str) -> JsBadge:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(JS),
            node.url,
            token,
            personal,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        started.append(proc)
        return JsBadge(proc)

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_js_sdk_badge_in_a_browser_app_stays_exact_across_nodes(
    shared: NodeSet, js_badge: Any, raw_client: Any
) -> None:
    n1, n2 = shared[0], shared[1]
    tenant = fresh_tenant()
    app = await js_badge(n1, user_token("alice", tenant=tenant), "chat:#alice")
    await app.shows({"unread": 0, "unseen": 0, "total": 0, "version": 0})
    other: RawClient = await raw_client(n2, connect={"token": user_token("alice", tenant=tenant)})
    sent = [
        await call(
            n2, "notify", {"tenant": tenant, "recipients": ["alice"], "category": "c", "data": {"i": i}}
        )
        for i in range(4)
    ]
    await app.shows({"unread": 4, "unseen": 4, "total": 4, "version": 4})
    ids = [s["recipients"][0]["item_id"] for s in sent]
    reply = await other.command("rpc", {"method": "inbox.mark", "data": {"action": "read", "ids": ids[:3]}})
    assert reply["rpc"]["data"]["changed"] == 3
    await app.shows({"unread": 1, "unseen": 1, "total": 4, "version": 5})
    # the app marks from the browser: its own push comes back like any other
    assert (await app.rpc_data("inbox.mark", {"action": "seen", "all": True}))["changed"] == 1  # read: seen
    await app.shows({"unread": 1, "unseen": 0, "total": 4, "version": 6})
    await call(n1, "notify", {"tenant": tenant, "recipients": ["alice"], "category": "c", "data": {"i": 4}})
    await app.shows({"unread": 2, "unseen": 1, "total": 5, "version": 7})
    page = await app.rpc_data("inbox.list", {"status": "unread"})
    assert [i["data"] for i in page["items"]] == [{"i": 4}, {"i": 3}]
    assert await app.rpc_data("inbox.counts", {}) == app.badge
    assert (await app.rpc("inbox.mark", {"action": "burn", "all": True}))["error"]["code"] == 107


async def test_an_audience_is_every_subscriber_on_every_node_and_delivered_is_recorded_where_the_device_is(
    shared: NodeSet, raw_client: Any
) -> None:
    n1, n2 = shared[0], shared[1]
    tenant = fresh_tenant()
    devices = {}
    for name, node in (("alice", n1), ("bob", n2), ("carol", n2)):
        devices[name] = await raw_client(node, connect={"token": user_token(name, tenant=tenant)})
        assert "subscribe" in await devices[name].command("subscribe", {"channel": "chat:room"})
    await devices["carol"].ws.close()  # carol leaves: offline when the notify runs
    await eventually(lambda: _subscribers(n1, tenant, 2))
    sent = await call(n1, "notify", {"tenant": tenant, "channel": "chat:room", "category": "c"})
    assert sorted(r["user"] for r in sent["recipients"]) == ["alice", "bob"]
    nid = sent["notification_id"]

    async def both_delivered() -> bool:
        status = await call(n2, "notification_status", {"tenant": tenant, "notification_id": nid})
        return bool(status["summary"]["in_app"] == {"delivered": 2})

    await eventually(both_delivered)


async def _subscribers(node: HubNode, tenant: str, n: int) -> bool:
    channels = await call(node, "channels", {"tenant": tenant, "pattern": "chat:room"})
    return bool(channels["channels"].get("chat:room", {}).get("num_clients") == n)


@pytest.fixture
async def single(make_nodes: NodesFactory, redis_server: RedisServer) -> list[HubNode]:  # noqa: F811
    return await make_nodes(
        2,
        redis=[redis_server.url],
        user_subscribe_to_personal=True,
        user_personal_channel_namespace="chat",
        user_personal_single_connection=True,
    )


async def test_one_connection_per_user_across_nodes_the_newest_wins(
    single: list[HubNode], raw_client: Any
) -> None:
    n1, n2 = single
    first = await raw_client(n1, connect={"token": user_token("alice")})
    bob = await raw_client(n1, connect={"token": user_token("bob")})
    second = await raw_client(n2, connect={"token": user_token("alice")})
    assert await first.closed() == (3504, "connection limit")
    third = await raw_client(n1, connect={"token": user_token("alice")})
    assert await second.closed() == (3504, "connection limit")
    assert "rpc" in await third.command("rpc", {"method": "inbox.counts"})
    assert "rpc" in await bob.command("rpc", {"method": "inbox.counts"})
    # two connections at the same moment on two nodes: exactly one survives
    for _ in range(3):
        pair = await asyncio.gather(
            raw_client(n1, connect={"token": user_token("carol")}),
            raw_client(n2, connect={"token": user_token("carol")}),
        )
        closing = {asyncio.ensure_future(c.closed()): c for c in pair}
        done, pending = await asyncio.wait(closing, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and next(iter(done)).result() == (3504, "connection limit")
        [survivor_closing] = pending
        survivor_closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await survivor_closing  # its read must end before the next one starts
        survivor = closing[survivor_closing]
        assert "rpc" in await survivor.command("rpc", {"method": "inbox.counts"})
