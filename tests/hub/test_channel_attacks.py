"""Attacks on the channel side of a real ``switchboard serve`` (issue 10), each as a hostile client would make
it, each with the node's memory (RSS) or log measured from outside the process.

Every test would fail on the code before its fix (said in each docstring, with the figure the old code
reached); the attacks are scaled down to a few seconds, but so that the old code fails clearly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import websockets

from channels.redis_shards import route_of
from tests import nodes as harness
from tests.conftest import TIMEOUT, RawClient
from tests.hub.test_session import Conn, GatedBroker, make_node
from tests.nodes import API_KEY, HubNode, NodesFactory, eventually
from tests.redis_proxy import Proxy
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes

MB = 1024 * 1024


async def api_batch(node: HubNode, commands: list[dict[str, Any]], *, parallel: bool = False) -> list[Any]:
    async with httpx.AsyncClient(timeout=TIMEOUT * 3) as http:
        response = await http.post(
            f"{node.http}/api/batch",
            content=orjson.dumps({"commands": commands, "parallel": parallel}),
            headers={"X-API-Key": API_KEY},
        )
    assert response.status_code == 200, response.text[:500]
    replies: list[Any] = response.json()["replies"]
    return replies


async def test_history_of_names_nobody_published_on_keeps_no_memory(make_nodes: NodesFactory) -> None:
    """56,000 history reads of fresh names: each created a stream kept for 90 days (the old code grew by
    ~75 MB here, ~1.3 KB a name); now reading keeps nothing, and the node stays within what parsing one
    batch body costs."""
    [node] = await make_nodes(1)
    with node.sample_rss() as rss:
        for batch in range(8):
            commands = [{"history": {"channel": f"fresh{batch}-{i}", "limit": 1}} for i in range(7000)]
            replies = await api_batch(node, commands)
            assert all(r["history"]["offset"] == 0 and r["history"]["epoch"] for r in replies)
    assert rss.peak - rss.start < 30 * MB, rss


async def test_a_parallel_batch_of_a_whole_body_of_publishes_stays_bounded(make_nodes: NodesFactory) -> None:
    """One 1 MiB ``/api/batch`` body with ``parallel: true`` holds 28,000 publishes: the old code started
    them all at once (+57 MB RSS here, twice what the same body costs run in order); now at most
    ``api_batch_max_parallel`` run at a time and the node costs what the sequential batch costs."""
    [node] = await make_nodes(1)
    commands = [{"publish": {"channel": "n", "data": 1}} for _ in range(28_000)]
    with node.sample_rss() as rss:
        replies = await api_batch(node, commands, parallel=True)
    assert sorted(r["publish"]["offset"] for r in replies) == list(range(1, 28_001))
    assert rss.peak - rss.start < 42 * MB, rss


async def test_publications_buffered_for_a_slow_subscribe_count_against_the_write_bound() -> None:
    """While a subscription's history read is slow, what the channel publishes is buffered for it
    (``Registry.pending``): the old code kept every publication for as long as the read took, whatever its
    size. Now the buffer is the connection's backlog: past ``client_queue_max_size`` it is a slow consumer
    (3008), its buffer takes nothing more, and nothing of it is left once the read returns. Another
    subscriber of the channel is not affected."""
    broker = GatedBroker()
    node = make_node(broker=broker, client_queue_max_size=64 * 1024)
    bystander = Conn(node)
    await bystander.connect()
    await bystander.send("subscribe", {"channel": "busy"})
    subscriber = Conn(node)
    await subscriber.connect()
    read_may_return = asyncio.Event()
    reading = asyncio.Event()

    async def slow_read() -> None:
        reading.set()
        await read_may_return.wait()

    broker.before.append(slow_read)
    subscribing = asyncio.get_running_loop().create_task(
        subscriber.send("subscribe", {"channel": "busy", "recoverable": True})
    )
    async with asyncio.timeout(TIMEOUT):
        await reading.wait()
    for n in range(100):  # 100 x 4 KB: 400 KB, six times the bound
        await node.publish("busy", {"n": n, "pad": "x" * 4000})
        node.scheduler.flush()
    assert subscriber.transport.closed == (3008, "slow")
    held = node.registry.pending[("", "busy")][subscriber.client]
    assert len(held) == 17  # the 17th of ~4 KB passes 64 KB: the writer closes and keeps nothing more
    read_may_return.set()
    async with asyncio.timeout(TIMEOUT):
        await subscribing
    assert node.registry.pending == {}
    assert subscriber.client.writer.held_bytes == 0
    assert not any("push" in m for m in subscriber.transport.messages())
    assert bystander.transport.closed is None
    assert sum("push" in m for m in bystander.transport.messages()) == 100


async def test_a_subscribe_stalled_on_its_history_read_cannot_hoard_a_busy_channel(
    make_nodes: NodesFactory, redis_server: RedisServer
) -> None:
    """A real node whose history reads stall (its Redis command connection is held; pub/sub flows): a client
    subscribes to a busy channel and the node buffers the channel's publications for it while the read
    waits. The old code kept all of them (+40 MB here, and more the longer Redis is slow); now the client
    is a slow consumer at ``client_queue_max_size`` (3008) and the node keeps nothing more."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        [stalled] = await make_nodes(1, redis=[proxy.url], redis_connect_timeout=20.0)
        [publisher] = await make_nodes(1, redis=[redis_server.url])
        ws = await websockets.connect(stalled.url, max_size=None, open_timeout=TIMEOUT)
        client = RawClient(ws)
        assert "connect" in await client.command("connect", {})
        proxy.hold_commands()
        await client.send_raw(orjson.dumps({"id": 9, "subscribe": {"channel": "busy"}}).decode())
        channel = "sb:ch:{" + route_of("", "busy") + "}"

        async def subscribed() -> bool:  # the node listens to the channel: its history read is on its way
            return redis_server.command("PUBSUB", "NUMSUB", channel).endswith(b":1\r\n")

        await eventually(subscribed)
        pad = "x" * 4000
        with stalled.sample_rss() as rss:
            for _ in range(40):  # 40 x 250 x 4 KB: 40 MB through the channel
                commands = [{"publish": {"channel": "busy", "data": {"pad": pad}}} for _n in range(250)]
                await api_batch(publisher, commands)
        assert rss.peak - rss.start < 20 * MB, rss
        assert await client.closed() == (3008, "slow")
    finally:
        proxy.release_commands()
        await proxy.close()
