"""The control channel across nodes (``hub.control``): real hubs on free ports, each with its own
connections to one real Redis, joined by ``RedisControl``. A server API call on one node acts on the user's
connections on every node; ``info`` lists every live node and drops stopped and silent ones; ``channels``
sums the nodes; an emulation request sent to the wrong node reaches the session; Redis down is an error,
never a claimed success. A property: a tenant-bound key acts on its tenant only, on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from channels.redis_shards import RedisShards
from hub.api import ServerAPI
from hub.client import State
from hub.config import ApiKey
from hub.control import LocalControl, RedisControl, Target
from hub.hooks import Hooks
from hub.node import Node
from presence.presence_memory import MemoryPresence
from tests.conftest import TIMEOUT, RawClient, RunningHub, http_client, token
from tests.hub.test_api import ACME_KEY, Sink, api_config, call, result, subscriber
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401 (a fixture)
from tests.hub.test_transport_http import open_stream
from tests.redis_servers import RedisServer

INTERVAL = 0.2
"""Announcement interval of the test nodes: a silent node is dropped after 0.6 s."""

Join = Callable[..., Awaitable[RedisControl]]


def adopt(node: Any, control: RedisControl) -> None:
    """Make ``control`` the running node's control channel, answering what the node's services asked its
    first one to answer when they started (stream snapshots, bots): the app gives a node its Redis control
    before it starts; these tests swap it in afterwards."""
    control.handlers.update(node.control.handlers)
    node.control = control


@pytest.fixture
async def join(redis_server: RedisServer) -> AsyncIterator[Join]:
    """Give a running hub a control channel over ``redis_server`` (what the app does with redis_urls)."""
    joined: list[tuple[RedisControl, RedisShards]] = []

    async def attach(hub: RunningHub, *, interval: float = INTERVAL) -> RedisControl:
        shards = RedisShards([redis_server.url], prefix="test")
        await shards.start()
        control = RedisControl(hub.sb.node, shards, node_info_interval=interval, survey_timeout=TIMEOUT / 2)
        adopt(hub.sb.node, control)
        await control.start()
        joined.append((control, shards))
        return control

    yield attach
    for control, shards in joined:
        await control.close()
        await shards.close()


async def nodes_of(controls: list[RedisControl]) -> None:
    """Wait until every node knows every other."""
    ids = {c.node.id for c in controls}
    async with asyncio.timeout(TIMEOUT):
        for c in controls:
            await c.wait_until(lambda c=c: set(c.peers()) == ids - {c.node.id})


@pytest.fixture
async def two(make_hub: Any, join: Join) -> tuple[RunningHub, RunningHub]:
    hubs = [await make_hub(api_config()), await make_hub(api_config())]
    await nodes_of([await join(h) for h in hubs])
    return hubs[0], hubs[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(timeout=TIMEOUT) as client:
        yield client


def api(hub: RunningHub, http: httpx.AsyncClient) -> httpx.AsyncClient:
    http.base_url = httpx.URL(hub.http)
    return http


# ---------------------------------------------------------------- operations on every node


async def test_disconnect_on_one_node_closes_the_users_connections_on_every_node(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any
) -> None:
    one, other = two
    here: RawClient = await raw_client(one, connect={"token": token("ann")})
    there: RawClient = await raw_client(other, connect={"token": token("ann")})
    kept: RawClient = await raw_client(other, connect={"token": token("ann")})
    bob: RawClient = await raw_client(other, connect={"token": token("bob")})
    [kept_id] = [c.id for c in other.sb.node.registry.user_clients("", "ann") if c.id != _id(other, there)]
    body = {"user": "ann", "whitelist": [kept_id], "disconnect": {"code": 4321, "reason": "bye"}}
    assert await result(api(one, http), "disconnect", body) == {}
    assert await here.closed() == (4321, "bye")
    assert await there.closed() == (4321, "bye")
    # the whitelisted connection and another user stay
    assert [c.id for c in other.sb.node.registry.user_clients("", "ann")] == [kept_id]
    assert await kept.command("presence", {"channel": "x"}) and bob.ws.close_code is None


def _id(hub: RunningHub, client: RawClient) -> str:
    """The hub-side id of the connection of ``client`` (the only one with its local port)."""
    port = client.ws.local_address[1]
    [c] = [c for c in hub.sb.node.sessions if c.remote.endswith(f":{port}")]
    return c.id


async def test_subscribe_unsubscribe_and_refresh_reach_the_other_node(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any
) -> None:
    one, other = two
    there: RawClient = await raw_client(other, connect={"token": token("ann")})
    await result(api(one, http), "subscribe", {"user": "ann", "channel": "news"})
    assert (await there.push("subscribe"))["channel"] == "news"
    await result(api(one, http), "unsubscribe", {"user": "ann", "channel": "news"})
    assert (await there.push("unsubscribe"))["channel"] == "news"
    await result(api(one, http), "refresh", {"user": "ann", "expired": True})
    assert (await there.closed())[0] == 3005


async def test_one_session_is_targeted_on_whichever_node_holds_it(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any
) -> None:
    one, other = two
    plain: RawClient = await raw_client(other, connect={"token": token("ann")})
    connect = json.dumps({"id": 1, "connect": {"token": token("ann")}}).encode()
    async with open_stream(http, "POST", other.http + "/connection/http_stream", content=connect) as stream:
        session = (await stream.message())["connect"]["session"]
        await result(api(one, http), "subscribe", {"user": "ann", "channel": "news", "session": session})
        push = await stream.message()
        assert push["push"]["channel"] == "news" and "subscribe" in push["push"]
    # the other connection of the user was not subscribed: a later publication reaches nobody there
    [client] = [c for c in other.sb.node.registry.user_clients("", "ann") if not c.session]
    assert client.subs == {} and plain.ws.close_code is None


async def test_a_bound_key_acts_on_its_tenant_on_every_node(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any
) -> None:
    one, other = two
    home: RawClient = await raw_client(other, connect={"token": token("ann")})
    acme: RawClient = await raw_client(other, connect={"token": token("ann", tenant="acme")})
    body = {"user": "ann", "disconnect": {"code": 4100, "reason": "acme"}}
    assert await result(api(one, http), "disconnect", body, key=ACME_KEY) == {}
    assert await acme.closed() == (4100, "acme")
    [client] = other.sb.node.registry.user_clients("", "ann")
    assert client.state is State.CONNECTED and home.ws.close_code is None
    denied = await call(api(one, http), "disconnect", {"user": "ann", "tenant": ""}, key=ACME_KEY)
    assert denied["error"]["code"] == 103


# ---------------------------------------------------------------- nodes, info, channels


async def test_info_lists_every_live_node_with_its_counts(
    make_hub: Any, join: Join, http: httpx.AsyncClient, raw_client: Any
) -> None:
    hubs = [await make_hub(api_config()) for _ in range(3)]
    controls = [await join(h) for h in hubs]
    await nodes_of(controls)
    await subscriber(raw_client, hubs[1], "chat:a", user="ann")
    await subscriber(raw_client, hubs[2], "chat:a", user="bob")
    await subscriber(raw_client, hubs[2], "chat:b", user="bob", tenant="acme")
    ids = [h.sb.node.id for h in hubs]

    def counted() -> bool:
        infos = [controls[0].peer_info(i) for i in ids[1:]]
        return [i and i["num_clients"] for i in infos] == [1, 2]

    async with asyncio.timeout(TIMEOUT):
        await controls[0].wait_until(counted)
    nodes = (await result(api(hubs[0], http), "info"))["nodes"]
    by_id = {n["uid"]: n for n in nodes}
    assert sorted(by_id) == sorted(ids)
    assert [(by_id[i]["num_clients"], by_id[i]["num_subs"], by_id[i]["num_users"]) for i in ids] == [
        (0, 0, 0),
        (1, 1, 1),
        (2, 2, 2),
    ]
    # a tenant's share is asked of every node at once (a survey), not read from the announcements
    acme = (await result(api(hubs[0], http), "info", key=ACME_KEY))["nodes"]
    assert sorted((n["uid"], n["num_clients"], n["num_channels"]) for n in acme) == sorted(
        [(ids[0], 0, 0), (ids[1], 0, 0), (ids[2], 1, 1)]
    )


async def test_a_stopped_node_is_dropped_at_once_and_a_silent_one_after_three_intervals(
    make_hub: Any, join: Join, http: httpx.AsyncClient, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, "switchboard.control")
    hubs = [await make_hub(api_config()) for _ in range(3)]
    controls = [await join(h) for h in hubs]
    await nodes_of(controls)
    await controls[2].close()  # a clean leave: it says so
    gone = hubs[2].sb.node.id
    async with asyncio.timeout(TIMEOUT):
        for c in controls[:2]:
            await c.wait_until(lambda c=c: gone not in c.peers())
    left = [r for r in caplog.records if r.getMessage() == f"node {gone} left"]
    assert len(left) == 2  # told, not found silent
    infos = (await result(api(hubs[0], http), "info"))["nodes"]
    assert {n["uid"] for n in infos} == {hubs[0].sb.node.id, hubs[1].sb.node.id}
    # A crash: the node stops announcing without a word (its tasks end, as when its process dies).
    silent = controls[1]
    for task in silent._tasks:
        task.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(TIMEOUT):
        await controls[0].wait_until(lambda: controls[0].peers() == [])
    assert loop.time() - started >= INTERVAL  # dropped for its silence, not at once
    assert any(r.getMessage() == f"node {silent.node.id} is silent: dropped" for r in caplog.records)
    infos = (await result(api(hubs[0], http), "info"))["nodes"]
    assert [n["uid"] for n in infos] == [hubs[0].sb.node.id]


async def test_channels_sums_the_subscribers_of_every_node(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any
) -> None:
    one, other = two
    await subscriber(raw_client, one, "chat:a", user="ann")
    await subscriber(raw_client, other, "chat:a", user="bob")
    await subscriber(raw_client, other, "chat:b", user="bob")
    await subscriber(raw_client, other, "chat:a", user="eve", tenant="acme")
    got = (await result(api(one, http), "channels"))["channels"]
    assert got == {"chat:a": {"num_clients": 2}, "chat:b": {"num_clients": 1}}
    got = (await result(api(other, http), "channels", {"pattern": "*b"}))["channels"]
    assert got == {"chat:b": {"num_clients": 1}}
    got = (await result(api(one, http), "channels", key=ACME_KEY))["channels"]
    assert got == {"chat:a": {"num_clients": 1}}
    assert (await call(api(one, http), "channels", {"pattern": "["}))["error"]["code"] == 107


# ---------------------------------------------------------------- emulation across nodes


@pytest.mark.parametrize("kind", ["http_stream", "sse"])
async def test_emulation_request_sent_to_another_node_reaches_the_session(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, kind: str
) -> None:
    """A load balancer without sticky sessions: the stream is on one node, the commands hit the other."""
    one, other = two
    connect = json.dumps({"id": 1, "connect": {"token": token("carol")}})
    url = other.http + "/connection/" + kind
    if kind == "sse":
        opened = open_stream(http, "GET", url, params={"cf_connect": connect})
    else:
        opened = open_stream(http, "POST", url, content=connect.encode())
    async with opened as stream:

        async def next_json() -> Any:
            if kind == "http_stream":
                return await stream.message()
            event = await stream.event()
            assert event is not None
            return event.json()

        result_ = (await next_json())["connect"]
        session, node = result_["session"], result_["node"]
        assert node == other.sb.node.id

        async def emulate(
            target: RunningHub, *commands: Any, node: str = node, session: str = session
        ) -> int:
            data = "\n".join(json.dumps(c) for c in commands)
            body = {"session": session, "node": node, "data": data}
            return (await http.post(target.http + "/emulation", json=body)).status_code

        assert await emulate(one, {"id": 2, "subscribe": {"channel": "chat:emu"}}) == 204
        assert (await next_json())["id"] == 2
        # in order, alternating between the nodes
        for n in range(3, 9):
            via = one if n % 2 else other
            assert await emulate(via, {"id": n, "publish": {"channel": "chat:emu", "data": {"n": n}}}) == 204
        got = [await next_json() for _ in range(12)]
        assert [m["push"]["pub"]["data"]["n"] for m in got if "push" in m] == list(range(3, 9))
        assert [m["id"] for m in got if "id" in m] == list(range(3, 9))
        assert await emulate(one, {}, session="nope") == 404
        assert await emulate(one, {}, node="no-such-node") == 404


@pytest.mark.parametrize(
    ("transport", "protocol"), [("http_stream", "json"), ("sse", "json"), ("http_stream", "protobuf")]
)
async def test_js_sdk_emulation_with_its_requests_on_another_node(
    two: tuple[RunningHub, RunningHub],
    centrifuge_js: Path,  # noqa: F811 (the fixture imported above)
    transport: str,
    protocol: str,
) -> None:
    """The official centrifuge-js SDK: its stream on one node, every /emulation request on the other."""
    one, other = two

    @other.sb.rpc("add")
    async def add(ctx: Any) -> Any:
        return {"sum": ctx.data["a"] + ctx.data["b"]}

    proc = await asyncio.create_subprocess_exec(
        "node",
        str(centrifuge_js),
        other.http,
        transport,
        token("jsuser"),
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1", "EMULATION_BASE": one.http},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (events, stderr.decode()[-2000:])
    by_kind = {e.get("event"): e for e in events}
    assert by_kind["connected"]["transport"] == transport
    assert by_kind["publication"]["data"] == {"from": transport}
    assert by_kind["rpc"]["data"] == {"sum": 42}
    assert by_kind["presence"]["users"] == ["jsuser"]
    assert "done" in by_kind


# ---------------------------------------------------------------- Redis down


async def test_redis_down_makes_cross_node_calls_fail_never_succeed(
    two: tuple[RunningHub, RunningHub], http: httpx.AsyncClient, raw_client: Any, redis_server: RedisServer
) -> None:
    one, other = two
    here: RawClient = await raw_client(one, connect={"token": token("ann")})
    control = one.sb.node.control
    assert isinstance(control, RedisControl)
    redis_server.stop()
    async with asyncio.timeout(TIMEOUT):
        await control.shard.wait_connected(False)
    for method, params in [
        ("disconnect", {"user": "ann"}),
        ("subscribe", {"user": "ann", "channel": "news"}),
        ("unsubscribe", {"user": "ann", "channel": "news"}),
        ("refresh", {"user": "ann", "expired": True}),
        ("channels", {}),
        ("info", {}),
    ]:
        assert (await call(api(one, http), method, params))["error"]["code"] == 100, method
    # nothing was done here either: an error means "not done", not "done here only"
    assert here.ws.close_code is None and await here.command("presence", {"channel": "x"})
    body = {"session": "s", "node": other.sb.node.id, "data": "{}"}
    assert (await http.post(one.http + "/emulation", json=body)).status_code == 503
    # back: the nodes find each other again and calls work
    redis_server.start()
    async with asyncio.timeout(TIMEOUT):
        await control.shard.wait_connected(True)
        await control.wait_until(lambda: control.peers() == [other.sb.node.id])
    assert await result(api(one, http), "disconnect", {"user": "ann"}) == {}
    assert (await here.closed())[0] == 3503


# ---------------------------------------------------------------- single node


async def test_local_control_acts_on_this_node_only() -> None:
    node = Node(api_config(), MemoryBroker(), MemoryPresence(), Hooks())
    assert isinstance(node.control, LocalControl)
    await node.start()
    try:
        sink = Sink()
        client = node.new_session(sink, scope={})
        await client.handle_frame(orjson.dumps({"id": 1, "connect": {"token": token("ann")}}))
        assert [n["uid"] for n in await node.control.nodes()] == [node.id]
        assert await node.control.emulate("elsewhere", "s", b"{}") is False
        await node.control.send_message(Target("", "ann"), {"hello": 1})
        node.scheduler.flush()
        assert any(b'"message"' in f and b'"hello"' in f for f in sink.frames)
        await node.control.disconnect_user(Target("", "ann", session="not-this-one"), 4000, "x")
        assert sink.closed is None
        await node.control.disconnect_user(Target("", "ann"), 4000, "x")
        assert sink.closed == (4000, "x")
        await node.end_session(client)
    finally:
        await node.stop()


# ---------------------------------------------------------------- property: tenants stay apart on every node

_ops = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe", "disconnect", "refresh"]),
        st.sampled_from(["ann", "bob"]),
        st.sampled_from([None, "acme", "", "other"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=_ops)
def test_a_bound_key_never_reaches_another_tenant_on_any_node(
    redis_server: RedisServer, ops: list[tuple[str, str, str | None]]
) -> None:
    asyncio.run(_tenants_scenario(redis_server.url, ops))


async def _tenants_scenario(url: str, ops: list[tuple[str, str, str | None]]) -> None:
    cfg = api_config()
    nodes = [Node(cfg, MemoryBroker(), MemoryPresence(), Hooks()) for _ in range(2)]
    shards = [RedisShards([url], prefix="prop") for _ in nodes]
    async with contextlib.AsyncExitStack() as stack:
        for node, shard in zip(nodes, shards, strict=True):
            await shard.start()
            stack.push_async_callback(shard.close)
            node.control = RedisControl(node, shard, node_info_interval=INTERVAL, survey_timeout=TIMEOUT / 2)
            await node.start()
            stack.push_async_callback(node.stop)
        await nodes_of([n.control for n in nodes])
        sessions: dict[tuple[int, str, str], tuple[Any, Sink]] = {}

        async def end_sessions() -> None:  # ended here, or stop() would wait out shutdown_timeout
            for (i, _, _), (client, _) in sessions.items():
                await nodes[i].end_session(client)

        stack.push_async_callback(end_sessions)
        for i, node in enumerate(nodes):
            for tenant in ("", "acme"):
                for user in ("ann", "bob", "zed"):
                    sink = Sink()
                    client = node.new_session(sink, scope={})
                    frame = {"id": 1, "connect": {"token": token(user, tenant=tenant or None)}}
                    await client.handle_frame(orjson.dumps(frame))
                    await client.handle_frame(orjson.dumps({"id": 2, "subscribe": {"channel": "news"}}))
                    sessions[(i, tenant, user)] = (client, sink)

        def home() -> Any:
            return [
                (c.state, sorted(c.subs), c.expires_at, sink.closed)
                for (_, tenant, _), (c, sink) in sessions.items()
                if tenant == ""
            ]

        before = home()
        server_api = ServerAPI(nodes[0])
        principal = ApiKey(ACME_KEY, "acme")
        for op, user, tenant in ops:
            # every op that runs changes its targets: a new channel, a lost one, an expiry, a close
            params: dict[str, Any] = {"user": user, "channel": "news" if op == "unsubscribe" else "other"}
            if op == "refresh":
                params["expire_at"] = 2_000_000_000
            if tenant is not None:
                params["tenant"] = tenant
            reply, _ = await server_api.reply(principal, op, params)
            assert reply is None or tenant in (None, "acme")
        # A barrier: node 2 applies operations in order, so once this message arrived, all the others did.
        _, marker = sessions[(1, "acme", "zed")]
        await nodes[0].control.send_message(Target("acme", "zed"), "barrier")
        async with asyncio.timeout(TIMEOUT):
            while not any(b"barrier" in f for f in marker.frames):
                await asyncio.sleep(0.005)  # polling a sink the test owns, bounded
                nodes[1].scheduler.flush()
        assert home() == before
        # and the acme side did change on both nodes whenever an op targeted it
        for i in (0, 1):
            changed = [
                sessions[(i, "acme", u)][1].closed is not None
                or sorted(sessions[(i, "acme", u)][0].subs) != ["news"]
                or sessions[(i, "acme", u)][0].expires_at != 0
                for u in ("ann", "bob")
            ]
            expected = [any(user == u and t in (None, "acme") for _, user, t in ops) for u in ("ann", "bob")]
            assert changed == expected, (i, ops)


# ---------------------------------------------------------------- Redis Cluster


async def test_operations_and_surveys_over_a_redis_cluster(
    make_hub: Any, redis_cluster: Any, http: httpx.AsyncClient, raw_client: Any
) -> None:
    """Sharded pub/sub: the shared channel and each node's inbox live on different slots (and nodes)."""
    hubs = [await make_hub(api_config()), await make_hub(api_config())]
    controls: list[RedisControl] = []
    async with contextlib.AsyncExitStack() as stack:
        for hub in hubs:
            shards = RedisShards(redis_cluster.urls, cluster=True, prefix="ctl")
            await shards.start()
            stack.push_async_callback(shards.close)
            control = RedisControl(
                hub.sb.node, shards, node_info_interval=INTERVAL, survey_timeout=TIMEOUT / 2
            )
            adopt(hub.sb.node, control)
            await control.start()
            stack.push_async_callback(control.close)
            controls.append(control)
        await nodes_of(controls)
        one, other = hubs
        await subscriber(raw_client, other, "chat:a", user="bob")
        got = (await result(api(one, http), "channels"))["channels"]
        assert got == {"chat:a": {"num_clients": 1}}
        there: RawClient = await raw_client(other, connect={"token": token("ann")})
        assert await result(api(one, http), "disconnect", {"user": "ann"}) == {}
        assert (await there.closed())[0] == 3503
