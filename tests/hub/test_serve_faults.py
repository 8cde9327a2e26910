"""Real ``switchboard serve`` nodes when what they depend on fails: a Redis server that stops answering,
a node killed without a goodbye."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import websockets

import tests.conftest as conftest
import tests.nodes as harness
from tests.conftest import TIMEOUT, RawClient, http_client
from tests.nodes import HubNode, NodesFactory, eventually, user_token
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes  # fixtures defined elsewhere, used here
redis_two = conftest.redis_two
redis_server = conftest.redis_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def ready(node: HubNode) -> tuple[int, dict[str, Any]]:
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.get(f"{node.http}/ready")
    return response.status_code, response.json()


async def ready_becomes(node: HubNode, status: int, mentioning: str = "") -> None:
    async def check() -> bool:
        code, body = await ready(node)
        return code == status and mentioning in body.get("reason", "")

    await eventually(check, within=2 * TIMEOUT)


def shard_name(server: RedisServer) -> str:
    return f"127.0.0.1:{server.port}/0"


async def test_ready_is_503_while_a_redis_server_cannot_be_reached_and_200_once_it_can(
    make_nodes: NodesFactory, redis_two: list[RedisServer]
) -> None:
    first, second = redis_two
    (node,) = await make_nodes(
        1, redis=[first.url, second.url], node_info_interval=0.5, redis_connect_timeout=1.0
    )
    assert (await ready(node))[0] == 200
    # A server that stops answering without closing anything (a frozen process, a partition): only a PING
    # that does not come back shows it.
    assert second.proc is not None
    os.kill(second.proc.pid, signal.SIGSTOP)
    try:
        await ready_becomes(node, 503, mentioning=shard_name(second))
    finally:
        os.kill(second.proc.pid, signal.SIGCONT)
    await ready_becomes(node, 200)
    # A server that goes away (its connections close).
    first.stop()
    try:
        await ready_becomes(node, 503, mentioning=shard_name(first))
    finally:
        first.start()
    await ready_becomes(node, 200)
    log = node.log()
    assert f"not ready: redis {shard_name(second)}" in log
    assert log.count("ready again: every broker answers") == 2


async def subscribed(node: HubNode, user: str, channel: str) -> RawClient:
    client = RawClient(await websockets.connect(node.url, open_timeout=TIMEOUT))
    assert "connect" in await client.command("connect", {"token": user_token(user)})
    assert "subscribe" in await client.command("subscribe", {"channel": channel})
    return client


async def test_a_killed_nodes_clients_leave_presence_when_it_is_dropped_not_when_their_ttl_ends(
    make_nodes: NodesFactory, redis_server: RedisServer
) -> None:
    # presence_ttl far beyond the test's patience: only the purge can empty the channel in time
    victim, survivor = await make_nodes(2, redis=[redis_server.url], presence_ttl=120.0)
    channel = "chat:purge"
    clients = [
        await subscribed(victim, "ann", channel),
        await subscribed(victim, "bea", channel),
        await subscribed(survivor, "cid", channel),
    ]

    async def users() -> set[str]:
        reply = await survivor.api("presence", {"channel": channel})
        return {info["user"] for info in reply["result"]["presence"].values()}

    assert await users() == {"ann", "bea", "cid"}
    await victim.kill()

    async def only_the_survivors() -> bool:
        return await users() == {"cid"}

    await eventually(only_the_survivors)  # three node_info_intervals (1.5 s here) and a purge
    assert "node n1: 2 presence entries purged" in survivor.log()
    assert "presence" in await clients[2].command("presence", {"channel": channel})
    for client in clients:
        await client.ws.close()
