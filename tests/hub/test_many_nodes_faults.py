"""Faults of a many-node hub, end to end (real ``switchboard serve`` processes, tests/nodes.py): Redis
restarted under traffic (it comes back empty: the streams are gone), publishing while Redis is down, and a
node killed with SIGKILL.

What must hold: publications flow again once Redis is back; a subscriber never has a *silent* gap (within
one epoch its offsets are consecutive; anything it did not get is announced by ``recovered: false`` with a
new epoch); a publish Redis did not take is answered with an error, never a success; the clients of a dead
node recover on another node without a gap, and its presence entries expire after ``presence_ttl``.

One Redis and three nodes serve the whole module; every test leaves them running (Redis started again,
the killed node restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import websockets

from channels.redis_shards import RedisShards, route_of
from tests import conftest
from tests import nodes as harness
from tests.conftest import TIMEOUT, RawClient, http_client
from tests.hub import ydocs
from tests.hub.test_sdk_channels import connected, subscribed
from tests.hub.test_sdk_recovery import pubs_until
from tests.hub.test_transport_http import Event, Stream, cf_connect, open_stream
from tests.hub.ydocs import WsYClient, YConnect, settle
from tests.nodes import (
    PRESENCE_TTL,
    HubNode,
    NodeSet,
    NodesFactory,
    eventually,
    module_nodes,
    user_token,
)
from tests.redis_servers import RedisServer, redis_servers

# fixtures defined elsewhere, used here
raw_client = conftest.raw_client
sdk = conftest.sdk
redis_two = conftest.redis_two
make_nodes = harness.make_nodes
yconnect = ydocs.yconnect

_names = itertools.count()


def fresh(prefix: str = "fault") -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def redis_one() -> Iterator[RedisServer]:
    with redis_servers(1) as servers:
        yield servers[0]


@pytest.fixture(scope="module")
def hub3(tmp_path_factory: pytest.TempPathFactory, redis_one: RedisServer) -> Iterator[NodeSet]:
    """Three nodes on one Redis for the module; their documents are stored in Redis."""
    with module_nodes(tmp_path_factory, [redis_one.url], doc_store="redis") as nodes:
        yield nodes


@pytest.fixture
def redis(redis_one: RedisServer) -> Iterator[RedisServer]:
    """The module's Redis, running again after the test whatever it did to it."""
    yield redis_one
    redis_one.start()


async def client_on(node: HubNode, user: str) -> RawClient:
    ws = await websockets.connect(node.url, max_size=None, open_timeout=TIMEOUT)
    client = RawClient(ws)
    reply = await client.command("connect", {"token": user_token(user)})
    assert "connect" in reply, reply
    return client


class Tracker:
    """A subscriber that follows the protocol as an SDK does: on ``unsubscribe`` with a resubscribe code
    (2500) it subscribes again recovering from its position; it records what it got and checks, as it goes,
    that offsets within an epoch are consecutive (a silent gap is a violation)."""

    def __init__(self, client: RawClient, channel: str, acked: list[int]) -> None:
        self.client = client
        self.channel = channel
        self.acked = acked
        self.epoch = ""
        self.offset = 0
        self.received: list[int] = []
        self.violations: list[str] = []
        self.resubscribes: list[bool] = []
        """``recovered`` of every resubscription, in order."""
        self.acked_at_unrecovered = 0
        """How many publications may have been in the stream when the last ``recovered: false`` reply
        arrived: only those may be missing."""
        self.progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def subscribe(self, *, recover: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"channel": self.channel}
        if recover:
            params |= {"recover": True, "offset": self.offset, "epoch": self.epoch}
        reply = await self.client.command("subscribe", params)
        assert "subscribe" in reply, reply
        result: dict[str, Any] = reply["subscribe"]
        if recover:
            recovered = bool(result.get("recovered"))
            self.resubscribes.append(recovered)
            if not recovered:
                # + 1: the tests publish from one client, one at a time, so at most one publication is in
                # flight; it may be in the stream (covered by this reply's position) before its ack is read.
                self.acked_at_unrecovered = len(self.acked) + 1
                if result.get("epoch", "") == self.epoch:
                    self.violations.append(f"recovered: false with the same epoch {self.epoch}")
            elif result.get("epoch", "") != self.epoch:
                self.violations.append("recovered: true across an epoch change")
        if not recover or not result.get("recovered"):
            self.epoch, self.offset = result.get("epoch", ""), result.get("offset", 0)
        for pub in result.get("publications", []):
            self._take(pub)
        return result

    def _take(self, pub: dict[str, Any]) -> None:
        offset = pub.get("offset", 0)
        if offset != self.offset + 1:
            self.violations.append(f"offset {offset} after {self.offset} in epoch {self.epoch}")
        self.offset = offset
        self.received.append(pub["data"])
        self.progress.set()

    async def run(self) -> None:
        while True:
            push = await self.client.push()
            if push.get("channel") != self.channel:
                continue
            if "pub" in push:
                self._take(push["pub"])
            elif "unsubscribe" in push:
                code = push["unsubscribe"].get("code", 0)
                assert 2500 <= code < 3000, push  # only "resubscribe" unsubscriptions are expected here
                await self.subscribe(recover=True)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self.run())
        self.task.add_done_callback(lambda _: self.progress.set())
        return self.task

    async def until_received(self, data: int) -> None:
        try:
            async with asyncio.timeout(TIMEOUT * 2):
                while data not in self.received:
                    if self.task is not None and self.task.done():
                        self.task.result()  # the reader failed: its error is the test's
                        raise AssertionError("the reader ended")
                    self.progress.clear()
                    await self.progress.wait()
        except TimeoutError:
            raise AssertionError(f"{data} never arrived: {self}") from None

    def __repr__(self) -> str:
        return (
            f"Tracker(epoch={self.epoch}, offset={self.offset}, received={self.received}, "
            f"resubscribes={self.resubscribes}, violations={self.violations})"
        )

    def check(self) -> None:
        """No silent gap: what is missing was acknowledged before a ``recovered: false``."""
        assert not self.violations, self.violations
        missing = set(self.acked) - set(self.received)
        announced = set(self.acked[: self.acked_at_unrecovered])
        assert missing <= announced, (sorted(missing - announced), self)
        assert len(self.received) == len(set(self.received)), "a publication arrived twice"


async def test_publish_while_redis_is_down_is_an_error_then_works_again(
    hub3: NodeSet, redis: RedisServer
) -> None:
    channel = fresh()
    acked: list[int] = []
    tracker = Tracker(await client_on(hub3[2], "listener"), channel, acked)
    await tracker.subscribe()
    reader = tracker.start()
    pub = await client_on(hub3[0], "talker")
    sent = itertools.count()

    first_ok: list[float] = []

    async def publish() -> bool:
        data = next(sent)
        reply = await pub.command("publish", {"channel": channel, "data": data})
        if "publish" in reply:
            acked.append(data)
            first_ok.append(time.monotonic())
            return True
        assert reply["error"]["code"] == 100, reply
        return False

    try:
        for _ in range(3):
            assert await publish()
        await tracker.until_received(acked[-1])
        redis.stop()
        assert not await publish()  # an error, not a false success
        api = await hub3[1].api("publish", {"channel": channel, "data": -1})
        assert "error" in api, api
        history = await pub.command("history", {"channel": channel, "limit": 10})
        assert "error" in history, history
        redis.start()

        async def flowing() -> bool:
            """Publications reach the subscriber again (its node resubscribed; it may first be told to
            resubscribe itself): publish one and see whether anything new arrived."""
            before = len(tracker.received)
            if await publish():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        while len(tracker.received) == before:
                            tracker.progress.clear()
                            await tracker.progress.wait()
            return len(tracker.received) > before

        back_at, first_ok[:] = time.monotonic(), []
        await eventually(flowing, within=TIMEOUT * 2, every=0.01)
        print(
            f"after Redis is back: first publish taken in {first_ok[0] - back_at:.2f} s, "
            f"publications delivered again in {time.monotonic() - back_at:.2f} s"
        )
        tracker.check()
        assert False in tracker.resubscribes, "the stream was lost with Redis: the subscriber must be told"
        assert -1 not in tracker.received
    finally:
        reader.cancel()


async def test_redis_restarted_under_traffic(hub3: NodeSet, redis: RedisServer) -> None:
    channel = fresh("traffic")
    acked: list[int] = []
    trackers = []
    for node, user in ((hub3[0], "s1"), (hub3[1], "s2")):
        t = Tracker(await client_on(node, user), channel, acked)
        await t.subscribe()
        trackers.append(t)
    readers = [t.start() for t in trackers]
    away = await client_on(hub3[1], "away")  # disconnected while Redis restarts, back on another node
    away_tracker = Tracker(away, channel, acked)
    await away_tracker.subscribe()
    away_reader = away_tracker.start()
    publisher = await client_on(hub3[2], "publisher")
    errors = 0
    sent = itertools.count()

    async def publish_one() -> None:
        nonlocal errors
        data = next(sent)
        reply = await publisher.command("publish", {"channel": channel, "data": data})
        if "publish" in reply:
            acked.append(data)
        else:
            assert reply["error"]["code"] == 100, reply
            errors += 1

    try:
        while len(acked) < 20:
            await publish_one()
        await away_tracker.until_received(acked[-1])
        away_reader.cancel()
        await away.ws.close()
        redis.stop()
        for _ in range(5):
            await publish_one()
        redis.start()
        restarted_at = len(acked)

        def caught_up(t: Tracker) -> bool:
            """Told about the lost stream, and receiving what was published after that."""
            return False in t.resubscribes and any(x in t.received for x in acked[t.acked_at_unrecovered :])

        async with asyncio.timeout(TIMEOUT * 3):
            while len(acked) < restarted_at + 20 or not all(caught_up(t) for t in trackers):
                await publish_one()
                await asyncio.sleep(0)  # let the readers take what arrived
        await publish_one()
        for t in trackers:
            await t.until_received(acked[-1])  # publications flow: the last one reaches everybody
            t.check()
        assert errors >= 5  # every publish while Redis was down was refused
        back = Tracker(await client_on(hub3[0], "away"), channel, acked)
        back.epoch, back.offset = away_tracker.epoch, away_tracker.offset
        result = await back.subscribe(recover=True)
        assert result["recovered"] is False and result["epoch"] != away_tracker.epoch
    finally:
        for r in readers:
            r.cancel()


async def test_a_killed_nodes_clients_recover_elsewhere_and_its_presence_expires(hub3: NodeSet) -> None:
    channel = fresh("chat:kill")
    victim_node, other, third = hub3[0], hub3[1], hub3[2]
    victim = await client_on(victim_node, "victim")
    tracker = Tracker(victim, channel, [])
    await tracker.subscribe()
    watcher = await client_on(other, "watcher")
    await watcher.command("subscribe", {"channel": channel})
    for i in range(3):
        await third.api("publish", {"channel": channel, "data": i})
    reader = tracker.start()
    try:
        await tracker.until_received(2)
        reply = await watcher.command("presence", {"channel": channel})
        old_clients = {c for c, info in reply["presence"]["presence"].items() if info["user"] == "victim"}
        assert len(old_clients) == 1
        killed_at = time.monotonic()
        await victim_node.kill()
        with contextlib.suppress(websockets.ConnectionClosed):  # the reader sees the connection drop
            await asyncio.wait_for(reader, TIMEOUT)
        for i in range(3, 8):
            await third.api("publish", {"channel": channel, "data": i})
        back = Tracker(await client_on(other, "victim"), channel, [])
        back.epoch, back.offset, back.received = tracker.epoch, tracker.offset, list(tracker.received)
        result = await back.subscribe(recover=True)
        assert result["recovered"] is True, result
        assert back.received == list(range(8)) and not back.violations  # no gap, no duplicate

        async def victim_entry_gone() -> bool:
            reply = await watcher.command("presence", {"channel": channel})
            return not old_clients & set(reply["presence"]["presence"])

        await eventually(victim_entry_gone, within=PRESENCE_TTL + TIMEOUT)
        gone_after = time.monotonic() - killed_at
        stats = await watcher.command("presence_stats", {"channel": channel})
        assert stats["presence_stats"] == {"num_clients": 2, "num_users": 2}  # watcher + victim's new one

        async def dropped_from_info() -> bool:
            nodes = (await other.api("info"))["result"]["nodes"]
            return victim_node.name not in {n["name"] for n in nodes}

        await eventually(dropped_from_info)
        print(
            f"presence entry of the killed node gone {gone_after:.2f} s after SIGKILL (ttl {PRESENCE_TTL} s)"
        )
    finally:
        reader.cancel()
        with contextlib.suppress(Exception):
            await victim.ws.close()
        await victim_node.start()  # the module's nodes stay three


# --- documents: the writer killed, then the whole hub restarted (documents stored in Redis) --------------


def words(conn: WsYClient) -> set[str]:
    return set(str(conn.text).split())


async def write_words(conn: WsYClient, prefix: str, numbers: range) -> None:
    for i in numbers:
        conn.text.insert(len(conn.text), f"{prefix}{i} ")
        await conn.flush()


@pytest.mark.parametrize("store", ["redis", "sqlite-shared-disk"])
async def test_documents_survive_a_killed_writer_and_a_full_restart(
    request: pytest.FixtureRequest, make_nodes: NodesFactory, yconnect: YConnect, store: str
) -> None:
    """Every edit another client received is kept: the node that loaded the document first (its writer) is
    killed, edits go on through the others, then the whole hub stops and starts again. The store is Redis
    (no shared disk: the module's nodes) or SQLite in one data directory all nodes share (with a directory
    of its own, a node that never held a document finds nothing once its holders unloaded it)."""
    if store == "redis":
        nodes: Sequence[HubNode] = request.getfixturevalue("hub3")
    else:
        redis_url = request.getfixturevalue("redis_one").url
        nodes = await make_nodes(3, redis=[redis_url], shared_data_dir=True, doc_store="sqlite")
    name = fresh("survivor")
    try:
        a = await yconnect(nodes[0], name)  # loads it first: the writer
        b = await yconnect(nodes[1], name)
        await write_words(a, "a", range(10))
        await write_words(b, "b", range(10))
        first = {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}
        await settle([a, b], lambda: words(a) == words(b) == first)
        await nodes[0].kill()
        await write_words(b, "b", range(10, 20))
        c = await yconnect(nodes[2], name)  # on a node that never held it: the full state from node 2
        everything = first | {f"b{i}" for i in range(10, 20)}
        await c.until(lambda: words(c) == everything)
        assert await asyncio.gather(*(n.stop() for n in nodes[1:])) == [0, 0]
        await asyncio.gather(*(n.start() for n in nodes))
        late = await yconnect(nodes[0], name)
        assert words(late) == everything
    finally:
        await asyncio.gather(*(n.start() for n in nodes))  # the module's nodes stay up


# --- one of two Redis shards down -----------------------------------------------------------------------


async def test_one_shard_down_leaves_the_other_shards_channels_working(
    make_nodes: NodesFactory, redis_two: list[RedisServer]
) -> None:
    urls = [s.url for s in redis_two]
    nodes = await make_nodes(2, redis=urls)
    ring = RedisShards(urls)  # the nodes' ring, only computed
    on: dict[int, str] = {}  # shard index -> a channel living there
    for name in (f"shard-down-{i}" for i in itertools.count()):
        on.setdefault(ring.shard_for(route_of("", name)).index, name)
        if len(on) == 2:
            break
    acked: dict[int, list[int]] = {0: [], 1: []}
    trackers = {k: Tracker(await client_on(nodes[1], f"sub{k}"), on[k], acked[k]) for k in (0, 1)}
    for t in trackers.values():
        await t.subscribe()
    readers = [t.start() for t in trackers.values()]
    publisher = await client_on(nodes[0], "pub")
    sent = itertools.count()

    async def publish(k: int) -> bool:
        data = next(sent)
        reply = await publisher.command("publish", {"channel": on[k], "data": data})
        if "publish" in reply:
            acked[k].append(data)
            return True
        assert reply["error"]["code"] == 100, reply
        return False

    try:
        for k in (0, 1):
            assert await publish(k)
            await trackers[k].until_received(acked[k][-1])
        redis_two[1].stop()
        assert not await publish(1)  # its shard is down: an error
        for _ in range(3):  # the other shard's channel carries on, from node to node
            assert await publish(0)
        await trackers[0].until_received(acked[0][-1])
        redis_two[1].start()

        async def flowing_again() -> bool:
            before = len(trackers[1].received)
            if await publish(1):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        while len(trackers[1].received) == before:
                            trackers[1].progress.clear()
                            await trackers[1].progress.wait()
            return len(trackers[1].received) > before

        await eventually(flowing_again, within=TIMEOUT * 2, every=0.01)
        for t in trackers.values():
            t.check()
        assert trackers[0].resubscribes == []  # the healthy shard's subscriber never noticed
    finally:
        for r in readers:
            r.cancel()


@pytest.mark.parametrize("sdk", ["json"], indirect=True)  # Protobuf across nodes: test_many_nodes.py
async def test_sdk_client_of_a_killed_node_recovers_on_another(hub3: NodeSet, sdk: Any) -> None:
    """centrifuge-python connected to a node that dies: its reconnect lands on another node (as behind a
    load balancer) and recovers every publication it missed, exactly once, in order."""
    victim_node, survivor = hub3[2], hub3[0]
    channel = fresh("chat:sdk-kill")
    client, rec = await connected(sdk, victim_node, token=user_token("sdk-victim"))
    sub, sub_rec = await subscribed(client, channel)
    _, first = await sub_rec.next("subscribed")
    try:
        for n in range(1, 4):
            await survivor.api("publish", {"channel": channel, "data": {"n": n}})
        received = await pubs_until(sub_rec, 3)
        rec.gate.clear()  # hold the SDK's reconnect while the test publishes
        await victim_node.kill()
        while True:
            _, ctx = await rec.next("connecting")
            if ctx.code != 0:  # a lost connection, not the first connect
                break
        for n in range(4, 7):
            await survivor.api("publish", {"channel": channel, "data": {"n": n}})
        client._address = survivor.url  # what the load balancer does: the next connection lands elsewhere
        rec.gate.set()
        _, again = await sub_rec.next("subscribed")
        assert (again.was_recovering, again.recovered) == (True, True)
        assert again.stream_position.epoch == first.stream_position.epoch
        await survivor.api("publish", {"channel": channel, "data": {"n": 7}})
        received += await pubs_until(sub_rec, 7)
        assert [(p.offset, p.data["n"]) for p in received] == [(n, n) for n in range(1, 8)]
    finally:
        rec.gate.set()
        await victim_node.start()  # the module's nodes stay three


# --- a unidirectional SSE subscriber across a Redis restart ---------------------------------------------


async def next_pub(stream: Stream) -> Event:
    """The next publication event (the default namespace also pushes joins and leaves)."""
    while True:
        event = await stream.event()
        assert event is not None, "the stream ended"
        if "pub" in event.json():
            return event


async def test_sse_subscriber_is_told_when_redis_lost_its_stream(hub3: NodeSet, redis: RedisServer) -> None:
    """A uni_sse client cannot resubscribe by itself: when its node missed publications it is disconnected
    (3010) and its resume on another node says ``unrecovered`` instead of a silent gap; live events follow."""
    channel = fresh("sse")
    params = cf_connect({"token": user_token("sse", channels=[channel])})
    publisher = await client_on(hub3[0], "sse-publisher")

    async def publish(data: int) -> bool:
        reply = await publisher.command("publish", {"channel": channel, "data": data})
        return "publish" in reply

    async with http_client(timeout=TIMEOUT) as http:
        async with open_stream(http, "GET", hub3[1].http + "/connection/uni_sse", params=params) as stream:
            connect = await stream.event()
            assert connect is not None and channel in connect.json()["connect"]["subs"]
            for i in range(2):
                assert await publish(i)
            seen = [await next_pub(stream) for _ in range(2)]
            assert [e.json()["pub"]["data"] for e in seen] == [0, 1]
            last_id = seen[-1].id
            redis.stop()
            redis.start()
            sent = itertools.count(2)

            async def told() -> bool:  # publish until the node notices what it missed and says so
                await publish(next(sent))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        while True:
                            event = await stream.event()
                            if event is None:
                                return True
                            data = event.json()
                            if "disconnect" in data:
                                assert data["disconnect"]["code"] == 3010, data
                                return True
                            assert data.keys() & {"pub", "join", "leave"}, data
                return False

            await eventually(told, within=TIMEOUT * 2, every=0.01)
        headers = {"Last-Event-ID": last_id or ""}
        resume_url = hub3[2].http + "/connection/uni_sse"
        async with contextlib.AsyncExitStack() as opened:
            async with asyncio.timeout(TIMEOUT * 2):
                while True:  # as EventSource does: node 3 may still be reconnecting to Redis (3004)
                    attempt = contextlib.AsyncExitStack()
                    stream = await attempt.enter_async_context(
                        open_stream(http, "GET", resume_url, params=params, headers=headers)
                    )
                    connect = await stream.event()
                    assert connect is not None
                    if "disconnect" not in connect.json():
                        opened.push_async_exit(attempt)
                        break
                    assert connect.json()["disconnect"]["code"] < 3500, connect.json()
                    await attempt.aclose()
                    await asyncio.sleep(0.1)  # EventSource's retry delay, shortened
            assert connect.json()["connect"]["subs"][channel]["recovered"] is False
            notice = await stream.event()
            while notice is not None and notice.event != "unrecovered" and "pub" not in notice.json():
                notice = await stream.event()  # a join may come first
            assert (
                notice is not None and notice.event == "unrecovered" and notice.json()["channel"] == channel
            )
            assert await publish(-1)
            live = await next_pub(stream)
            assert live.json()["pub"]["data"] == -1
