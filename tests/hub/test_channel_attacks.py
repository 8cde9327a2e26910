"""Attacks on the channel side of a real ``switchboard serve`` (issue 10), each as a hostile client would make
it, each with the node's memory (RSS) or log measured from outside the process.

Every test would fail on the code before its fix (said in each docstring, with the figure the old code
reached); the attacks are scaled down to a few seconds, but so that the old code fails clearly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.parse
from typing import Any

import orjson
import pytest
import websockets
from websockets.frames import Frame, Opcode

from channels.redis_shards import route_of
from hub.logs import LIMITED_BURST, LIMITED_RATE
from tests import nodes as harness
from tests.attacker import unread_sse_streams
from tests.conftest import TIMEOUT, RawClient, http_client, token
from tests.hub.test_session import Conn, GatedBroker, make_node
from tests.nodes import API_KEY, HubNode, NodesFactory, eventually
from tests.redis_proxy import Proxy
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes

MB = 1024 * 1024


async def api_batch(node: HubNode, commands: list[dict[str, Any]], *, parallel: bool = False) -> list[Any]:
    async with http_client(timeout=TIMEOUT * 3) as http:
        response = await http.post(
            f"{node.http}/api/batch",
            content=orjson.dumps({"commands": commands, "parallel": parallel}),
            headers={"X-API-Key": API_KEY},
        )
    assert response.status_code == 200, response.text[:500]
    replies: list[Any] = response.json()["replies"]
    return replies


async def test_history_of_names_nobody_published_on_keeps_no_memory(make_nodes: NodesFactory) -> None:
    """42,000 history reads of fresh names: each created a stream kept for 90 days (the old code grew by
    ~50 MB here, ~1.2 KB a name); now reading keeps nothing, and the node stays within what parsing one
    batch body costs."""
    [node] = await make_nodes(1)
    with node.sample_rss() as rss:
        for batch in range(6):
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
    waits. The old code kept all of them (+24 MB here, and more the longer Redis is slow); now the client
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
            for _ in range(24):  # 24 x 250 x 4 KB: 24 MB through the channel
                commands = [{"publish": {"channel": "busy", "data": {"pad": pad}}} for _n in range(250)]
                await api_batch(publisher, commands)
        assert rss.peak - rss.start < 12 * MB, rss
        assert await client.closed() == (3008, "slow")
    finally:
        proxy.release_commands()
        await proxy.close()


# ---------------------------------------------------------------- logs


def unread_streams(node: HubNode, count: int, channel: str) -> list[socket.socket]:
    """``count`` uni_sse streams subscribed to ``channel`` (the token's channels) whose client never reads."""
    return unread_sse_streams(node.port, count, token("reader", channels=[channel]))


def node_lines(node: HubNode) -> list[str]:
    return [line for line in node.log().splitlines() if not line.startswith("--- start")]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_logs_never_carry_control_characters_from_input(
    make_nodes: NodesFactory, log_format: str
) -> None:
    """(Issue 10.) Input reached log lines raw: the server API's method name from the URL (a terminal escape,
    a forged line after CR LF), a token's user and tenant in every line of the session. Now every line of
    the node's log is printable, in both formats, and the forged line is an escaped part of a real one."""
    [node] = await make_nodes(1, log_format=log_format)
    hostile = "x\x1b[2J\r\nFAKE 2025-01-01 ERROR forged\x9b\u2028"
    async with http_client(timeout=TIMEOUT) as http:
        url = node.http + "/api/" + urllib.parse.quote(hostile)
        response = await http.post(url, json={}, headers={"X-API-Key": API_KEY})
        assert response.json()["error"]["code"] == 104
    ws = await websockets.connect(node.url, open_timeout=TIMEOUT)
    client = RawClient(ws)
    reply = await client.command("connect", {"token": token(hostile, tenant="t\n\x85")})
    assert "connect" in reply
    assert (await client.command("subscribe", {"channel": "nope:x"}))["error"]["code"] == 102
    await ws.close()
    lines = node_lines(node)  # each line was written before the reply it is about
    assert lines
    for line in lines:
        assert line.isprintable(), repr(line)
        assert not line.startswith("FAKE")
    if log_format == "json":
        parsed = [json.loads(line) for line in lines]
        api = next(r for r in parsed if r["logger"] == "switchboard.api")
        assert "x\\x1b[2J\\r\\nFAKE 2025-01-01 ERROR forged\\x9b\\u2028" in api["message"]
        session = [r for r in parsed if r.get("tenant") == "t\\n\\x85"]
        assert session and all(r["user"].startswith("x\\x1b[2J\\r\\nFAKE") for r in session)
    else:
        assert any("x\\x1b[2J\\r\\nFAKE 2025-01-01 ERROR forged\\x9b\\u2028" in line for line in lines)
        assert any("tenant='t\\n\\x85'" in line for line in lines)


async def test_client_misbehaviour_is_one_rate_limited_line_without_a_traceback(
    make_nodes: NodesFactory,
) -> None:
    """(Issue 10.) Each text frame that is not UTF-8 wrote an ERROR traceback (uvicorn), each API client
    that left mid-body an ERROR traceback (ClientDisconnect), each SSE stream cut for not reading an ERROR
    line. Now each is a line at INFO or WARNING, without a traceback, and a flood of them is rate-limited
    (hub.logs.log_limited: a burst of LIMITED_BURST, then LIMITED_RATE a second)."""
    [node] = await make_nodes(1)
    started = time.monotonic()
    for _ in range(60):  # text frames that are not UTF-8: each closes its connection with 1007
        ws = await websockets.connect(node.url, open_timeout=TIMEOUT)
        ws.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe{}"))
        ws.send_data()
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1007
    for _ in range(60):  # API clients that leave before their body ends
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Length: 100\r\n\r\n{"
            % API_KEY.encode()
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    socks = unread_streams(node, 5, "feed")  # on a feed of 4 KB messages: cut with 3008
    try:

        async def streams_connected() -> bool:
            return node.log().count("transport='uni_sse'") >= 5

        await eventually(streams_connected)
        for _ in range(20):  # 8 MB: past the socket's send buffer (loopback autotunes it to MBs) and 1 MiB
            await api_batch(node, [{"publish": {"channel": "feed", "data": {"pad": "x" * 4000}}}] * 100)

        async def streams_reset() -> bool:  # the 3008 closes, then the streams' ends
            return (
                node.log().count("disconnect 3008") >= 5
                and (await node.api("info"))["result"]["nodes"][0]["num_clients"] == 0
            )

        await eventually(streams_reset)
    finally:
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - started
    lines = node_lines(node)
    assert not [line for line in lines if " ERROR " in line or line.startswith(("Traceback", "  File"))]
    most = LIMITED_BURST + LIMITED_RATE * elapsed + 1
    utf8 = [line for line in lines if "is not UTF-8: closed 1007" in line]
    assert 1 <= len(utf8) <= most and all(" INFO " in line for line in utf8)
    left = [line for line in lines if "the client left before its body ended" in line]
    assert 1 <= len(left) <= most and all(" INFO " in line for line in left)
    slow = [line for line in lines if "slow consumer" in line]
    assert len(slow) == 5 and all(" WARNING " in line for line in slow)


# ---------------------------------------------------------------- slow streams


async def test_slow_sse_streams_are_bounded_node_wide_and_their_memory_comes_back(
    make_nodes: NodesFactory,
) -> None:
    """(Issue 10, scaled down.) 2,000 uni_sse streams that never read, on a feed of 4 KB messages, took a node
    from 57 MB to 2,351 MB, and it stayed there after every stream was cut (3008) and closed. Here 50 such
    streams with a 4 MiB queue each: the old code rose by ~235 MB and kept it. Now all streams together may
    hold ``node_queue_max_size`` (16 MiB here; the largest holders are cut first), a cut stream's unsent
    bytes are dropped at once, and the node gives the freed memory back to the system (hub.memory)."""
    [node] = await make_nodes(1, client_queue_max_size=4 * MB, node_queue_max_size=16 * MB)
    socks = unread_streams(node, 50, "feed")
    try:

        async def clients() -> int:
            return int((await node.api("info"))["result"]["nodes"][0]["num_clients"])

        async def all_connected() -> bool:
            return await clients() == 50

        async def all_cut() -> bool:
            return await clients() == 0

        await eventually(all_connected)
        with node.sample_rss() as rss:
            # 8 MB a stream: past what the kernel takes into its socket buffers on loopback, then the queues
            for _ in range(100):
                await api_batch(node, [{"publish": {"channel": "feed", "data": {"pad": "x" * 4000}}}] * 20)
            await eventually(all_cut)
        assert rss.peak - rss.start < 60 * MB, rss
        assert node.log().count("disconnect 3008") == 50
        assert "over node_queue_max_size" in node.log()
    finally:
        for sock in socks:
            sock.close()

    async def memory_came_back() -> bool:  # the feed's history (1,000 x 4 KB) stays, as it should
        return node.rss() - rss.start < 16 * MB

    await eventually(memory_came_back)
