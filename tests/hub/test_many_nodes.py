"""Many nodes, one hub, end to end: real ``switchboard serve`` processes sharing Redis (tests/nodes.py), with
raw protocol clients and the official centrifuge-python SDK connected to different nodes.

Three nodes on one Redis are shared by the module (each test uses its own channel names); the sharded
(two Redis servers) and cluster layouts start their own nodes.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis as redis_sync
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.redis_shards import RedisShards, route_of
from tests import conftest
from tests import nodes as harness
from tests.conftest import TIMEOUT, RawClient
from tests.hub import test_docs_js, ydocs
from tests.hub.test_docs_js import WORDS, NodeFactory
from tests.hub.ydocs import YConnect, settle
from tests.nodes import HubNode, NodeSet, NodesFactory, eventually, module_nodes, user_token
from tests.redis_servers import RedisCluster, RedisServer, redis_servers

# fixtures defined elsewhere, used here
raw_client = conftest.raw_client
sdk = conftest.sdk
make_nodes = harness.make_nodes
node = test_docs_js.node
node_clients = test_docs_js.node_clients
yconnect = ydocs.yconnect

_names = itertools.count()


def fresh(prefix: str = "room") -> str:
    """A channel name no other test of the module uses."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def redis_one() -> Iterator[RedisServer]:
    with redis_servers(1) as servers:
        yield servers[0]


@pytest.fixture(scope="module")
def hub3(tmp_path_factory: pytest.TempPathFactory, redis_one: RedisServer) -> Iterator[NodeSet]:
    """Three nodes on one Redis, for the whole module."""
    with module_nodes(tmp_path_factory, [redis_one.url]) as nodes:
        yield nodes


Connect = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def connect(raw_client: Connect) -> Connect:
    """``await connect(node, user)``: a raw JSON client connected (with a token for ``user``, anonymous
    when None)."""

    async def open_(node: HubNode, user: str | None = None) -> RawClient:
        params = {"token": user_token(user)} if user is not None else {}
        return await raw_client(node, connect=params)

    return open_


async def subscribe(client: RawClient, channel: str, **params: Any) -> dict[str, Any]:
    reply = await client.command("subscribe", {"channel": channel, **params})
    assert "subscribe" in reply, reply
    result: dict[str, Any] = reply["subscribe"]
    return result


async def pubs(client: RawClient, channel: str, n: int) -> list[tuple[int, Any]]:
    """The next ``n`` publications of ``channel`` as (offset, data)."""
    out = []
    for _ in range(n):
        push = await client.push("pub")
        assert push["channel"] == channel, push
        out.append((push["pub"].get("offset", 0), push["pub"]["data"]))
    return out


async def no_more_pubs(client: RawClient, channel: str, marker_node: HubNode) -> None:
    """Nothing else arrives for ``channel`` before a marker published after everything else: proves there
    was no duplicate or stray delivery without waiting for a silence."""
    await marker_node.api("publish", {"channel": channel, "data": {"marker": True}})
    push = await client.push("pub")
    assert push["pub"]["data"] == {"marker": True}, push


# --- the harness itself (one node, memory broker) -------------------------------------------------------


async def test_harness_stops_restarts_on_its_port_and_kills_a_node(make_nodes: NodesFactory) -> None:
    (solo,) = await make_nodes(1)
    port = solo.port
    assert await solo.stop() == 0  # SIGTERM: a clean shutdown
    await solo.start()
    assert solo.port == port and "result" in await solo.api("publish", {"channel": "x", "data": 1})
    await solo.kill()
    assert not solo.running and solo.starts == 2 and solo.log().count("--- start") == 2


async def test_harness_reports_a_node_that_cannot_start(make_nodes: NodesFactory) -> None:
    with pytest.raises(AssertionError, match="presence_update_interval must be shorter"):
        await make_nodes(1, presence_ttl=1.0, presence_update_interval=5.0)


# --- the cluster of nodes ------------------------------------------------------------------------------


async def info_nodes(node: HubNode) -> dict[str, dict[str, Any]]:
    reply = await node.api("info")
    assert "result" in reply, reply
    return {n["name"]: n for n in reply["result"]["nodes"]}


async def test_info_lists_every_node_with_its_counts(hub3: NodeSet, connect: Connect) -> None:
    for node in hub3:

        async def all_three(node: HubNode = node) -> bool:
            return sorted(await info_nodes(node)) == ["n1", "n2", "n3"]

        await eventually(all_three)
    before = (await info_nodes(hub3[0]))["n2"]
    c = await connect(hub3[1], "ann")
    await subscribe(c, fresh())

    async def counted() -> bool:  # node 2's own figures, as node 1 reports them
        n2 = (await info_nodes(hub3[0]))["n2"]
        return bool(
            n2["num_clients"] == before["num_clients"] + 1 and n2["num_subs"] == before["num_subs"] + 1
        )

    await eventually(counted)


# --- channels across nodes -----------------------------------------------------------------------------


async def test_publications_reach_subscribers_on_every_node_in_one_order(
    hub3: NodeSet, connect: Connect
) -> None:
    channel = fresh()
    clients = [await connect(node, f"u{i}") for i, node in enumerate(hub3)]
    for c in clients:
        await subscribe(c, channel)
    sent = []
    for i in range(30):  # from a client of each node in turn, then from each node's server API
        if i % 2 == 0:
            reply = await clients[i % 3].command("publish", {"channel": channel, "data": {"i": i}})
            assert reply.get("publish") == {}, reply
        else:
            reply = await hub3[i % 3].api("publish", {"channel": channel, "data": {"i": i}})
            assert "result" in reply, reply
        sent.append({"i": i})
    expected = [(k + 1, data) for k, data in enumerate(sent)]
    for c in clients:
        assert await pubs(c, channel, len(sent)) == expected
    for c in clients:
        await no_more_pubs(c, channel, hub3[2])


async def test_no_delivery_to_a_client_that_unsubscribed_on_another_node(
    hub3: NodeSet, connect: Connect
) -> None:
    channel, other = fresh(), fresh()
    a = await connect(hub3[0], "a")
    b = await connect(hub3[1], "b")
    await subscribe(a, channel)
    await subscribe(b, channel)
    await subscribe(b, other)
    assert "unsubscribe" in await b.command("unsubscribe", {"channel": channel})
    await hub3[2].api("publish", {"channel": channel, "data": "after"})
    assert await pubs(a, channel, 1) == [(1, "after")]
    await hub3[2].api("publish", {"channel": other, "data": "other"})
    push = await b.push("pub")  # the next thing b gets is from the other channel: nothing from the first
    assert (push["channel"], push["pub"]["data"]) == (other, "other")


async def test_history_is_the_same_from_every_node(hub3: NodeSet, connect: Connect) -> None:
    channel = fresh()
    for i in range(5):
        await hub3[i % 3].api("publish", {"channel": channel, "data": i})
    answers = []
    for node in hub3:
        reply = await node.api("history", {"channel": channel, "limit": 100})
        result = reply["result"]
        answers.append(
            (result["epoch"], result["offset"], [(p["offset"], p["data"]) for p in result["publications"]])
        )
    assert answers[0][1:] == (5, [(k + 1, k) for k in range(5)])
    assert answers[0] == answers[1] == answers[2]
    c = await connect(hub3[2], "reader")
    await subscribe(c, channel)
    reply = await c.command("history", {"channel": channel, "limit": 100})
    assert [(p["offset"], p["data"]) for p in reply["history"]["publications"]] == answers[0][2]
    assert reply["history"]["epoch"] == answers[0][0]


async def test_presence_and_stats_span_the_nodes(hub3: NodeSet, connect: Connect) -> None:
    channel = fresh("chat:presence")
    clients = [await connect(node, user) for node, user in zip(hub3, ["ann", "bob", "cid"], strict=True)]
    for c in clients:
        await subscribe(c, channel)
    second = await connect(hub3[2], "ann")  # a second connection of one user, on another node
    await subscribe(second, channel)
    want_users = {"ann": 2, "bob": 1, "cid": 1}
    for node, c in zip(hub3, clients, strict=True):
        reply = await c.command("presence", {"channel": channel})
        users = [info["user"] for info in reply["presence"]["presence"].values()]
        assert {u: users.count(u) for u in users} == want_users
        stats = await c.command("presence_stats", {"channel": channel})
        assert stats["presence_stats"] == {"num_clients": 4, "num_users": 3}
        api = await node.api("presence_stats", {"channel": channel})
        assert api["result"] == {"num_clients": 4, "num_users": 3}
    assert "unsubscribe" in await second.command("unsubscribe", {"channel": channel})
    stats = await clients[0].command("presence_stats", {"channel": channel})
    assert stats["presence_stats"] == {"num_clients": 3, "num_users": 3}


async def presence_push(client: RawClient, kind: str, user: str) -> dict[str, Any]:
    """The next ``kind`` (join/leave) push about ``user``, skipping others (one sees its own join too)."""
    while True:
        push = await client.push(kind)
        if push[kind]["info"]["user"] == user:
            return push


async def test_join_and_leave_cross_nodes(hub3: NodeSet, connect: Connect) -> None:
    channel = fresh("chat:jl")
    watcher = await connect(hub3[0], "watcher")
    await subscribe(watcher, channel, join_leave=True)
    bob = await connect(hub3[1], "bob")
    await subscribe(bob, channel)
    join = await presence_push(watcher, "join", "bob")
    assert join["channel"] == channel and join["join"]["info"]["client"]
    assert "unsubscribe" in await bob.command("unsubscribe", {"channel": channel})
    leave = await presence_push(watcher, "leave", "bob")
    assert leave["leave"]["info"]["client"] == join["join"]["info"]["client"]
    cid = await connect(hub3[2], "cid")
    await subscribe(cid, channel)
    await presence_push(watcher, "join", "cid")
    cid.ws.transport.abort()  # a dropped connection leaves too
    await presence_push(watcher, "leave", "cid")


# --- recovery on another node ----------------------------------------------------------------------------


class Subscriber:
    """One subscriber that keeps hopping between nodes: what it received, and the position it holds."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.received: list[tuple[int, Any]] = []
        self.epoch = ""
        self.client: RawClient | None = None

    async def join(self, node: HubNode) -> dict[str, Any]:
        ws = await websockets.connect(node.url, max_size=None, open_timeout=TIMEOUT)
        self.client = RawClient(ws)
        assert "connect" in await self.client.command("connect", {"token": user_token("hopper")})
        params: dict[str, Any] = {}
        if self.epoch:
            last = self.received[-1][0] if self.received else 0
            params |= {"recover": True, "offset": last, "epoch": self.epoch}
        result = await subscribe(self.client, self.channel, **params)
        if not self.epoch:
            self.epoch = result["epoch"]
        assert result["epoch"] == self.epoch, "the stream's epoch changed: Redis kept the stream"
        for pub in result.get("publications", []):
            self.received.append((pub["offset"], pub["data"]))
        return result

    async def live(self, n: int) -> None:
        assert self.client is not None
        self.received += await pubs(self.client, self.channel, n)

    async def leave(self) -> None:
        assert self.client is not None
        await self.client.ws.close()


async def hop_scenario(nodes: NodeSet, steps: list[tuple[int, int, int, int]]) -> None:
    """Each step: ``live`` publications while connected, disconnect, ``missed`` publications from a client
    of node ``via``, reconnect to node ``to`` recovering. Everything arrives exactly once, in order."""
    sub = Subscriber(fresh("hop"))
    publishers = []
    for node in nodes:
        ws = await websockets.connect(node.url, open_timeout=TIMEOUT)
        publishers.append(RawClient(ws))
        assert "connect" in await publishers[-1].command("connect", {"token": user_token("publisher")})
    published: list[int] = []

    async def publish(via: int, n: int) -> None:
        for _ in range(n):
            published.append(len(published))
            reply = await publishers[via].command("publish", {"channel": sub.channel, "data": published[-1]})
            assert reply.get("publish") == {}, reply

    try:
        await sub.join(nodes[0])
        for live, missed, via, to in steps:
            await publish(via, live)
            await sub.live(live)
            await sub.leave()
            await publish(via, missed)
            result = await sub.join(nodes[to])
            assert result.get("recovered") is True, result
        await publish(0, 1)  # and live delivery goes on from the recovered position
        await sub.live(1)
        assert sub.received == [(k + 1, data) for k, data in enumerate(published)]
    finally:
        for c in [*publishers, sub.client]:
            if c is not None:
                await c.ws.close()


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 2), st.integers(0, 2)),
        min_size=1,
        max_size=4,
    )
)
def test_recovery_on_another_node_has_no_gap_and_no_duplicate(
    hub3: NodeSet, steps: list[tuple[int, int, int, int]]
) -> None:
    asyncio.run(hop_scenario(hub3, steps))


# --- fan-out across nodes as a model ---------------------------------------------------------------------

Op = tuple[str, int, int]
"""("sub" | "unsub" | "pub", client or node index, channel index)."""

ops = st.lists(
    st.tuples(st.sampled_from(["sub", "unsub", "pub"]), st.integers(0, 3), st.integers(0, 2)),
    min_size=1,
    max_size=25,
)


async def fanout_scenario(nodes: NodeSet, script: list[Op]) -> None:
    """Four clients (two on node 1, one on each other node) follow ``script``; every publication reaches
    exactly the clients subscribed to its channel when it was published, on whatever node they are."""
    tag = fresh("model")
    channels = [f"{tag}-{c}" for c in range(3)]
    homes = [nodes[0], nodes[0], nodes[1], nodes[2]]
    clients = []
    for k, home in enumerate(homes):
        ws = await websockets.connect(home.url, max_size=None, open_timeout=TIMEOUT)
        clients.append(RawClient(ws))
        assert "connect" in await clients[-1].command("connect", {"token": user_token(f"model{k}")})
    subscribed: list[set[int]] = [set() for _ in clients]
    expected: list[list[tuple[str, int]]] = [[] for _ in clients]
    published = 0
    try:
        for op, who, c in script:
            if op == "sub" and c not in subscribed[who]:
                await subscribe(clients[who], channels[c])
                subscribed[who].add(c)
            elif op == "unsub" and c in subscribed[who]:
                assert "unsubscribe" in await clients[who].command("unsubscribe", {"channel": channels[c]})
                subscribed[who].discard(c)
            elif op == "pub":
                published += 1
                publisher = clients[who]  # publishes through its own node
                reply = await publisher.command("publish", {"channel": channels[c], "data": published})
                assert reply.get("publish") == {}, reply
                for k in range(len(clients)):
                    if c in subscribed[k]:
                        expected[k].append((channels[c], published))
        # One Redis keeps the order of everything published, so a last publication on a channel of each
        # client's own proves everything before it has arrived.
        for k, client in enumerate(clients):
            await subscribe(client, f"{tag}-end-{k}")
            await homes[(k + 1) % 3].api("publish", {"channel": f"{tag}-end-{k}", "data": "end"})
            got = []
            while True:
                push = await client.push("pub")
                if push["pub"]["data"] == "end":
                    break
                got.append((push["channel"], push["pub"]["data"]))
            assert got == expected[k], (k, got, expected[k])
    finally:
        for client in clients:
            await client.ws.close()


@settings(max_examples=8, deadline=None)
@given(ops)
def test_publications_reach_exactly_the_subscribers_on_any_node(hub3: NodeSet, script: list[Op]) -> None:
    asyncio.run(fanout_scenario(hub3, script))


# --- the server API across nodes ------------------------------------------------------------------------


async def test_disconnect_through_another_nodes_api(hub3: NodeSet, connect: Connect) -> None:
    bob_2 = await connect(hub3[1], "bob-dc")
    bob_3 = await connect(hub3[2], "bob-dc")
    other = await connect(hub3[1], "carol-dc")
    reply = await hub3[0].api("disconnect", {"user": "bob-dc"})
    assert "error" not in reply, reply
    for c in (bob_2, bob_3):
        code, _ = await c.closed()
        assert code == 3503  # Centrifugo's "force disconnect" (no reconnect advice)
    channel = fresh()
    await subscribe(other, channel)
    await hub3[0].api("publish", {"channel": channel, "data": "still here"})
    assert await pubs(other, channel, 1) == [(1, "still here")]


async def test_server_side_subscribe_and_unsubscribe_on_another_node(hub3: NodeSet, connect: Connect) -> None:
    channel = fresh()
    dora = await connect(hub3[2], "dora")
    assert "error" not in await hub3[0].api("subscribe", {"user": "dora", "channel": channel})
    push = await dora.push("subscribe")
    assert push["channel"] == channel
    await hub3[1].api("publish", {"channel": channel, "data": 1})
    assert await pubs(dora, channel, 1) == [(1, 1)]
    assert "error" not in await hub3[1].api("unsubscribe", {"user": "dora", "channel": channel})
    assert (await dora.push("unsubscribe"))["channel"] == channel


async def test_channels_counts_merge_across_nodes(hub3: NodeSet, connect: Connect) -> None:
    channel = fresh("merge")
    clients = [await connect(node, f"m{i}") for i, node in enumerate(hub3)]
    for c in clients:
        await subscribe(c, channel)
    reply = await hub3[0].api("channels", {"pattern": channel})
    assert reply["result"]["channels"] == {channel: {"num_clients": 3}}, reply


# --- the official SDK on different nodes ----------------------------------------------------------------


async def test_sdk_clients_on_two_nodes_talk(hub3: NodeSet, sdk: Any) -> None:
    from centrifuge import SubscriptionEventHandler

    channel = fresh("chat:sdk")
    got: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]

    class Handler(SubscriptionEventHandler):  # type: ignore[misc]
        def __init__(self, q: asyncio.Queue[Any]) -> None:
            self.q = q

        async def on_publication(self, ctx: Any) -> None:
            self.q.put_nowait((ctx.pub.offset, ctx.pub.data))

    subs = []
    for k, node in enumerate(hub3[:2]):
        client = sdk(node, token=user_token(f"sdk{k}"))
        await client.connect()
        sub = client.new_subscription(channel, events=Handler(got[k]))
        await sub.subscribe()
        await sub.ready(TIMEOUT)
        subs.append(sub)
    for i in range(5):
        await subs[i % 2].publish({"n": i})
    for q in got:
        async with asyncio.timeout(TIMEOUT):
            assert [await q.get() for _ in range(5)] == [(i + 1, {"n": i}) for i in range(5)]
    third = sdk(hub3[2], token=user_token("sdk-reader"))
    await third.connect()
    sub3 = third.new_subscription(channel)
    await sub3.subscribe()
    await sub3.ready(TIMEOUT)
    history = await sub3.history(limit=10)
    assert [(p.offset, p.data) for p in history.publications] == [(i + 1, {"n": i}) for i in range(5)]
    presence = await sub3.presence_stats()
    assert (presence.num_clients, presence.num_users) == (3, 3)


# --- sharding over two Redis servers, and Redis Cluster -------------------------------------------------

ROUTE = re.compile(rb"\{(.*)\}")


def keys_by_route(server: RedisServer) -> dict[str, list[bytes]]:
    client = redis_sync.Redis(port=server.port)
    try:
        out: dict[str, list[bytes]] = {}
        for key in client.scan_iter(count=1000):
            match = ROUTE.search(key)
            if match:
                out.setdefault(match.group(1).decode(), []).append(key)
        return out
    finally:
        client.close()


async def test_channels_are_sharded_over_two_redis_servers(
    make_nodes: NodesFactory, redis_two: list[RedisServer], connect: Connect
) -> None:
    urls = [s.url for s in redis_two]
    nodes = await make_nodes(3, redis=urls)
    channels = [f"shard-{i}" for i in range(24)]
    watchers = [await connect(node, f"w{k}") for k, node in enumerate(nodes)]
    for channel in channels:
        for w in watchers:
            await subscribe(w, channel)
        reply = await watchers[0].command("publish", {"channel": channel, "data": channel})
        assert reply.get("publish") == {}, reply
    for w in watchers:
        got = [(p["channel"], p["pub"]["data"]) for p in [await w.push("pub") for _ in channels]]
        assert got == [(c, c) for c in channels]
    ring = RedisShards(urls)  # the same ring the nodes use: only computed, never connected
    expected = {route_of("", c): ring.shard_for(route_of("", c)).index for c in channels}
    assert set(expected.values()) == {0, 1}, "24 channels should use both servers"
    for index, server in enumerate(redis_two):
        found = keys_by_route(server)
        mine = {route for route, shard in expected.items() if shard == index}
        ours = {route for route in found if route in expected}
        assert ours == mine, f"server {index} holds {sorted(ours - mine)} and lacks {sorted(mine - ours)}"


async def test_three_nodes_over_redis_cluster(
    make_nodes: NodesFactory, redis_cluster: RedisCluster, connect: Connect, yconnect: YConnect
) -> None:
    nodes = await make_nodes(3, redis=redis_cluster.urls, cluster=True)
    channels = [f"cl-{i}" for i in range(6)]
    subscribers = [await connect(node, f"c{k}") for k, node in enumerate(nodes)]
    for channel in channels:
        for s in subscribers:
            await subscribe(s, channel)
    for i, channel in enumerate(channels):
        await nodes[i % 3].api("publish", {"channel": channel, "data": i})
    for s in subscribers:
        got = {
            p["channel"]: (p["pub"]["offset"], p["pub"]["data"])
            for p in [await s.push("pub") for _ in channels]
        }
        assert got == {c: (1, i) for i, c in enumerate(channels)}
    for i, channel in enumerate(channels):
        reply = await nodes[(i + 1) % 3].api("history", {"channel": channel, "limit": 10})
        assert [(p["offset"], p["data"]) for p in reply["result"]["publications"]] == [(1, i)]
    for i, channel in enumerate(channels):  # presence: every node's subscribers, read from any node
        reply = await nodes[i % 3].api("presence_stats", {"channel": channel})
        assert reply["result"] == {"num_clients": 3, "num_users": 3}, reply
    # documents: editors on two nodes converge, a late joiner on the third gets the full state
    a = await yconnect(nodes[0], "cluster-doc")
    b = await yconnect(nodes[1], "cluster-doc")
    a.text.insert(0, "from a ")
    await a.flush()
    b.text.insert(0, "from b ")
    await b.flush()
    await settle([a, b], lambda: str(a.text) == str(b.text) and len(str(a.text)) == 14)
    c = await yconnect(nodes[2], "cluster-doc")
    assert str(c.text) == str(a.text)
    # the channels' keys are spread over the masters (one slot per channel, hash tags)
    masters_with_keys = sum(1 for s in redis_cluster.servers if int(s.command("DBSIZE")[1:].strip()) > 0)
    assert masters_with_keys >= 2


# --- documents across nodes, with the stock Yjs client -------------------------------------------------


async def test_yjs_clients_on_two_nodes_converge_and_a_late_joiner_on_a_third_gets_everything(
    hub3: NodeSet, node: NodeFactory
) -> None:
    room = fresh("doc")
    ids = ["a", "b"]
    editors = [
        await node("edit", f"ws://127.0.0.1:{hub.port}/doc", room, "", ident, str(WORDS), ",".join(ids))
        for hub, ident in zip(hub3[:2], ids, strict=True)
    ]
    finals = [(await editor.event("complete"))["text"] for editor in editors]
    assert finals[0] == finals[1]
    assert sorted(finals[0].split()) == sorted(f"{ident}-{i}" for ident in ids for i in range(WORDS))
    late = await node("watch", f"ws://127.0.0.1:{hub3[2].port}/doc", room, "")
    assert (await late.event("synced"))["text"] == finals[0]  # the full state at its first sync
