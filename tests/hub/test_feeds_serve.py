"""Live feeds on real ``switchboard serve`` processes: the latest value of every key across nodes (Redis),
and a slow conflated reader on a high-rate channel that stays connected while the node's memory stays
bounded."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import websockets

from tests import nodes as harness
from tests.conftest import TIMEOUT, RawClient
from tests.nodes import NodesFactory
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes

MB = 1024 * 1024


async def ws_client(url: str, **kw: Any) -> RawClient:
    ws = await websockets.connect(url, max_size=None, open_timeout=TIMEOUT, **kw)
    client = RawClient(ws)
    assert "connect" in await client.command("connect", {})
    return client


async def test_the_latest_of_every_key_is_served_by_every_node(
    make_nodes: NodesFactory, redis_server: RedisServer
) -> None:
    """Readings published through one node: a dashboard opening on another node gets the latest of every
    sensor at once (the table is in Redis, written by the publish script), then live readings, conflated."""
    a, b = await make_nodes(2, redis=[redis_server.url])
    publisher = await ws_client(a.url)
    for n in range(50):
        reply = await publisher.command(
            "publish", {"channel": "feeds:plant", "data": {"sensor": f"t{n % 5}", "n": n}}
        )
        assert reply.get("publish") == {}, reply
    dashboard = await ws_client(b.url)
    result = (await dashboard.command("subscribe", {"channel": "feeds:plant"}))["subscribe"]
    assert result["recovered"] is True
    seen: dict[str, int] = {}
    while len(seen) < 5:
        data = (await dashboard.push("pub"))["pub"]["data"]
        seen[data["sensor"]] = data["n"]
    assert seen == {f"t{i}": 45 + i for i in range(5)}
    await publisher.command("publish", {"channel": "feeds:plant", "data": {"sensor": "t9", "n": 99}})
    assert (await dashboard.push("pub"))["pub"]["data"] == {"sensor": "t9", "n": 99}
    for client in (publisher, dashboard):
        await client.ws.close()


async def test_a_slow_conflated_reader_on_a_busy_channel_stays_connected_and_bounded(
    make_nodes: NodesFactory,
) -> None:
    """A reader that stops reading while 100 sensors publish 2 KB readings as fast as one publisher can send
    them for a few seconds and at least 8,000 of them (hundreds of megabytes a minute; on a busy machine the
    count, not the clock, is what makes it tens of megabytes): the node's RSS stays within a few megabytes of
    where it was (its slots hold one reading per key), the reader is not disconnected, and when it reads
    again it catches up to the newest reading of every sensor. An events namespace closes such a reader with
    3008; before conflation this one was closed too."""
    [node] = await make_nodes(1)
    slow = await ws_client(node.url, max_queue=1, ping_interval=None)
    assert "subscribe" in await slow.command("subscribe", {"channel": "feeds:busy"})
    publisher = await ws_client(node.url)
    pad = "x" * 2000
    latest: dict[str, int] = {}
    warm = node.rss()
    with node.sample_rss() as rss:
        n = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 4.0
        while loop.time() < end or n <= 8_000:  # a busy machine sends fewer in 4 s: then until 8,000
            frame = []
            for _ in range(25):  # a frame within client_max_message_size (64 KiB)
                n += 1
                sensor = f"s{n % 100}"
                latest[sensor] = n
                cmd = {
                    "id": n,
                    "publish": {"channel": "feeds:busy", "data": {"sensor": sensor, "n": n, "pad": pad}},
                }
                frame.append(orjson.dumps(cmd))
            await publisher.ws.send(b"\n".join(frame).decode())
            await publisher.reply(n)  # the last of the batch: all of it was taken
    assert n > 8_000, n  # tens of megabytes went past the reader
    assert rss.peak - warm < 24 * MB, (rss, warm)
    assert slow.ws.close_code is None
    got: dict[str, int] = {}
    async with asyncio.timeout(TIMEOUT * 3):
        while got != latest:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    data = (await slow.push("pub"))["pub"]["data"]
                    assert data["n"] > got.get(data["sensor"], 0)  # never older after newer
                    got[data["sensor"]] = data["n"]
    assert slow.ws.close_code is None
    for client in (slow, publisher):
        await client.ws.close()
