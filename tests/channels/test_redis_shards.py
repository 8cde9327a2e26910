"""channels.redis_shards against real redis-server processes: the ring, routes, pub/sub, reconnects."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from channels.redis_shards import RedisShards, ShardUnavailable, route_of
from tests.redis_servers import RedisCluster, RedisServer

TIMEOUT = 10.0


def _urls(n: int) -> list[str]:
    return [f"redis://10.0.0.{i}:6379/0" for i in range(1, n + 1)]


# -- the ring (no Redis needed: clients connect lazily) ----------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 2**32))
def test_ring_spreads_routes_evenly(n: int, seed: int) -> None:
    shards = RedisShards(_urls(n))
    rnd = random.Random(seed)
    counts = [0] * n
    total = 4000
    for _ in range(total):
        counts[shards.shard_for(route_of("t", f"ch{rnd.getrandbits(64)}")).index] += 1
    for c in counts:
        assert 0.6 / n < c / total < 1.5 / n, counts


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_adding_a_server_moves_only_its_share_and_only_to_it(n: int, seed: int) -> None:
    before = RedisShards(_urls(n))
    after = RedisShards(_urls(n + 1))
    rnd = random.Random(seed)
    routes = [route_of(f"t{rnd.randrange(5)}", f"ch{rnd.getrandbits(64)}") for _ in range(3000)]
    moved = 0
    for r in routes:
        old, new = before.shard_for(r), after.shard_for(r)
        if old.url != new.url:
            moved += 1
            assert new.index == n, "a route moved between two old servers"
    assert moved / len(routes) < 1.6 / (n + 1)
    assert moved > 0


def test_the_same_server_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        RedisShards(["redis://a:6379/0", "redis://user:pw@a:6379"])


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError):
        RedisShards(["redis://a:6379"], prefix="p{x}")


@given(tenant=st.text(), name=st.text(), kind=st.sampled_from(["hist", "meta", "pub", "idem", "pres"]))
def test_every_key_of_a_route_is_on_the_route_slot(tenant: str, name: str, kind: str) -> None:
    shards = RedisShards(["redis://a:6379"], prefix="tenant-x:sb")
    route = route_of(tenant, name)
    assert "{" not in route and "}" not in route
    slot = key_slot(route.encode())
    assert key_slot(shards.key(kind, route).encode()) == slot
    assert key_slot(shards.channel(kind, route).encode()) == slot


_PREFIX = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="{}"), max_size=6)
_NAME = st.text(st.characters(blacklist_categories=["Cs"]), max_size=6)


@given(
    a=st.tuples(_PREFIX, st.integers(0, 15), _NAME),
    b=st.tuples(_PREFIX, st.integers(0, 15), _NAME),
)
def test_pubsub_channel_names_carry_the_db(a: tuple[str, int, str], b: tuple[str, int, str]) -> None:
    """(Review R1-5.) Redis pub/sub ignores SELECT, so the db is part of the name: two (prefix, db, route)
    give one name only if they are equal, whatever the prefixes hold; the hash tag stays the route's."""

    def name(prefix: str, db: int, name: str) -> str:
        return RedisShards([f"redis://a:6379/{db}"], prefix=prefix).channel("ch", route_of("t", name))

    assert (name(*a) == name(*b)) == (a == b)
    assert key_slot(name(*a).encode()) == key_slot(route_of("t", a[2]).encode())


@given(
    a=st.tuples(st.text(max_size=6), st.text(max_size=6)),
    b=st.tuples(st.text(max_size=6), st.text(max_size=6)),
)
def test_routes_are_unambiguous(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert (route_of(*a) == route_of(*b)) == (a == b)


def test_route_escapes_braces_percent_and_tenant_colons() -> None:
    assert route_of("acme", "chat:{x}") == "acme:chat:%7Bx%7D"
    assert route_of("a:b", "c") == "a%3Ab:c"
    assert route_of("a", "b:c") != route_of("a:b", "c")
    assert route_of("", "%7B") == ":%257B"


# -- pub/sub against real servers ----------------------------------------------------------------------


class Inbox:
    """Collects messages; ``wait(n)`` returns once n arrived (event-driven, generous timeout)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.items.append(data)
        self._changed.set()

    async def wait(self, n: int) -> list[bytes]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.items


@pytest.fixture
async def make_shards() -> AsyncIterator[Callable[..., Any]]:
    opened: list[RedisShards] = []

    async def make(urls: list[str], **kw: Any) -> RedisShards:
        shards = RedisShards(urls, **kw)
        opened.append(shards)
        await shards.start()
        return shards

    yield make
    for s in opened:
        await s.close()


async def test_standalone_pubsub_in_order(redis_server: RedisServer, make_shards: Any) -> None:
    shards = await make_shards([redis_server.url])
    shard = shards.shards[0]
    assert shard.connected
    inbox, other = Inbox(), Inbox()
    await shard.subscribe("a", inbox)
    await shard.subscribe("b", other)
    for i in range(200):
        await shard.publish("a", b"%d" % i)
    await shard.publish("b", b"b")
    assert await inbox.wait(200) == [b"%d" % i for i in range(200)]
    assert await other.wait(1) == [b"b"]
    await shard.unsubscribe("a")
    await shard.publish("a", b"late")
    await shard.publish("b", b"b2")
    await other.wait(2)  # b2 was published after 'late' on the same connection: 'late' would be here by now
    assert len(inbox.items) == 200


async def test_cluster_spublish_reaches_ssubscribe_on_every_node(
    redis_cluster: RedisCluster, make_shards: Any
) -> None:
    shards = await make_shards(redis_cluster.urls, cluster=True)
    assert len(shards.shards) == 1
    shard = shards.shards[0]
    inboxes = {}
    for i in range(30):
        ch = shards.channel("pub", route_of("t", f"room{i}"))
        inboxes[ch] = Inbox()
        await shard.subscribe(ch, inboxes[ch])
    assert shard.connected
    assert len(shard._conns) == 3, "channels spread over the three primaries"
    assert await shards.unreachable() == {}  # every primary answers its PING (what /ready asks)
    for ch in inboxes:
        await shard.publish(ch, ch.encode())
    for ch, inbox in inboxes.items():
        assert await inbox.wait(1) == [ch.encode()]
    # the subscriptions are sharded ones, on the owner of the slot
    for s in redis_cluster.servers:
        assert s.command("PUBSUB", "NUMSUB", "x").startswith(b"*2")
    assert (
        sum(int(s.command("PUBSUB", "SHARDNUMSUB", *inboxes).count(b":1")) for s in redis_cluster.servers)
        == 30
    )


async def test_resubscribes_after_restart_and_fires_on_reconnect(
    redis_server: RedisServer, make_shards: Any
) -> None:
    shards = await make_shards([redis_server.url])
    shard = shards.shards[0]
    inbox = Inbox()
    await shard.subscribe("a", inbox)
    reconnected = asyncio.Event()
    shard.on_reconnect(reconnected.set)
    redis_server.kill()
    redis_server.start()
    async with asyncio.timeout(TIMEOUT):
        await reconnected.wait()
    assert shard.connected
    await shard.publish("a", b"after")
    assert await inbox.wait(1) == [b"after"]


async def test_down_shard_raises_shard_unavailable(redis_server: RedisServer, make_shards: Any) -> None:
    shards = await make_shards([redis_server.url], connect_timeout=2.0)
    shard = shards.shards[0]
    redis_server.stop()
    with pytest.raises(ShardUnavailable):
        await shard.publish("a", b"x")
    assert issubclass(ShardUnavailable, ConnectionError)
    async with asyncio.timeout(TIMEOUT):
        await shard.wait_connected(False)  # the reader notices the closed socket on its own
    with pytest.raises(ShardUnavailable):
        await shard.subscribe("a", Inbox())
    # and nothing is left subscribed: the server comes back, the channel was never confirmed
    reconnected = asyncio.Event()
    shard.on_reconnect(reconnected.set)
    redis_server.start()
    async with asyncio.timeout(TIMEOUT):
        await reconnected.wait()
    assert redis_server.command("PUBSUB", "NUMSUB", "a").endswith(b":0\r\n")


async def test_start_on_a_down_server_does_not_fail_and_connects_later(make_shards: Any) -> None:
    server = RedisServer()
    try:
        shards = await make_shards([server.url], connect_timeout=1.0)
        shard = shards.shards[0]
        assert not shard.connected
        with pytest.raises(ShardUnavailable):
            await shard.publish("a", b"x")
        server.start()
        async with asyncio.timeout(TIMEOUT):
            await shard.wait_connected()
        inbox = Inbox()
        await shard.subscribe("a", inbox)
        await shard.publish("a", b"x")
        assert await inbox.wait(1) == [b"x"]
    finally:
        server.cleanup()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.booleans(), min_size=1, max_size=8))
async def test_concurrent_subscribe_unsubscribe_last_call_wins(
    redis_server: RedisServer, ops: list[bool]
) -> None:
    shards = RedisShards([redis_server.url])
    await shards.start()
    try:
        shard = shards.shards[0]
        inbox = Inbox()
        calls = [shard.subscribe("c", inbox) if sub else shard.unsubscribe("c") for sub in ops]
        await asyncio.gather(*calls)
        numsub = redis_server.command("PUBSUB", "NUMSUB", "c")
        await shard.publish("c", b"m")
        await shard.subscribe("probe", (probe := Inbox()))
        await shard.publish("probe", b"p")
        await probe.wait(1)  # published after "m" on one connection: "m" has arrived if it ever will
        if ops[-1]:
            assert numsub.endswith(b":1\r\n")
            assert inbox.items == [b"m"]
        else:
            assert numsub.endswith(b":0\r\n")
            assert inbox.items == []
    finally:
        await shards.close()


async def test_sharded_standalone_routes_to_the_ring_shard(
    redis_two: list[RedisServer], make_shards: Any
) -> None:
    shards = await make_shards([s.url for s in redis_two])
    seen = {0: 0, 1: 0}
    for i in range(40):
        route = route_of("t", f"ch{i}")
        shard = shards.shard_for(route)
        seen[shard.index] += 1
        await shard.redis.set(shards.key("k", route), b"1")
    assert seen[0] and seen[1]
    for i, server in enumerate(redis_two):
        assert server.command("DBSIZE") == b":%d\r\n" % seen[i]


async def test_a_server_that_stops_answering_is_unavailable_then_recovers(
    redis_server: RedisServer, make_shards: Any
) -> None:
    """SIGSTOP: the socket stays open but nothing answers (a hung Redis, or a reply lost on the way): the
    command fails with ShardUnavailable after connect_timeout instead of hanging, and works again later."""
    import os
    import signal

    shards = await make_shards([redis_server.url], connect_timeout=0.5)
    shard = shards.shards[0]
    assert await shard.execute("SET", "k", "v") == b"OK"
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ShardUnavailable):
            await shard.execute("GET", "k")
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert await shard.execute("GET", "k") == b"v"


async def test_a_late_unsubscribe_confirmation_does_not_drop_a_new_subscription(
    redis_server: RedisServer, make_shards: Any
) -> None:
    """(Review R1-2.) UNSUBSCRIBE confirmed after connect_timeout, then SUBSCRIBE of the same channel: the
    late confirmation belongs to the UNSUBSCRIBE (swallowed), it is no slot move (standalone has none), and
    the channel keeps delivering. Before the fix the new handler was dropped and nothing arrived again."""
    from tests.redis_proxy import Proxy

    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        shards = await make_shards([proxy.url], connect_timeout=0.5)
        shard = shards.shards[0]
        inbox = Inbox()
        await shard.subscribe("c", inbox)
        await shard.publish("c", b"one")
        assert await inbox.wait(1) == [b"one"]
        proxy.hold()  # Redis's answers on the pub/sub connection are late (> connect_timeout)
        await shard.unsubscribe("c")  # gives up waiting; errors are suppressed by design
        task = asyncio.create_task(shard.subscribe("c", inbox))
        await asyncio.sleep(0)  # one loop step: the task writes its SUBSCRIBE and waits for Redis
        assert not task.done()
        proxy.release()
        async with asyncio.timeout(TIMEOUT):
            await task
        await shard.publish("c", b"two")
        assert await inbox.wait(2) == [b"one", b"two"]
        assert shard.connected
    finally:
        await proxy.close()


async def test_an_unsubscribe_during_the_reconnect_handshake_reaches_redis(
    redis_server: RedisServer, make_shards: Any
) -> None:
    """(Review R1.) A channel unsubscribed while the reconnect's SUBSCRIBE for it is on its way: once the
    connection is up, Redis no longer has it subscribed (it would send its messages for nothing)."""
    from tests.redis_proxy import Proxy

    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        shards = await make_shards([proxy.url], connect_timeout=2.0)
        shard = shards.shards[0]
        await shard.subscribe("c", Inbox())
        conn = shard._conns["main"]  # noqa: SLF001
        resubscribed, real_send = asyncio.Event(), conn._send  # noqa: SLF001

        def send(kind: bytes, channel: bytes, args: tuple[Any, ...]) -> asyncio.Future[Any]:
            if kind == conn.sub and channel == b"c":
                resubscribed.set()
            return real_send(kind, channel, args)

        conn._send = send  # type: ignore[method-assign]  # noqa: SLF001
        proxy.hold()  # the reconnect's confirmations wait
        assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub").startswith(b":1")
        async with asyncio.timeout(TIMEOUT):
            await shard.wait_connected(False)
            await resubscribed.wait()  # the reconnect's SUBSCRIBE is written
            await shard.unsubscribe("c")  # not connected: only forgotten locally
            proxy.release()
            await shard.wait_connected(True)
            await shard.barrier("c")  # Redis answered everything sent before on that connection
        numsub = redis_server.command("PUBSUB", "NUMSUB", "c")
        assert numsub.endswith(b":0\r\n"), numsub
    finally:
        await proxy.close()


async def test_password_and_db_from_the_url(make_shards: Any) -> None:
    server = RedisServer(extra_args=["--requirepass", "s3cret"])
    try:
        server.start()
        shards = await make_shards([f"redis://:s3cret@127.0.0.1:{server.port}/3"])
        shard = shards.shards[0]
        assert shard.connected and "s3cret" not in shard.name
        await shard.execute("SET", "k", "v")
        assert await shard.redis.get("k") == b"v"  # the same db 3 through redis-py
        assert await shard.execute("DBSIZE") == 1
        assert b" db=3 " in await shard.execute("CLIENT", "INFO")
        inbox = Inbox()
        await shard.subscribe("c", inbox)
        await shard.publish("c", b"m")
        assert await inbox.wait(1) == [b"m"]
        wrong = await make_shards([f"redis://:wrong@127.0.0.1:{server.port}/3"], connect_timeout=1.0)
        with pytest.raises(ShardUnavailable):
            await wrong.shards[0].execute("GET", "k")
        assert server.command("AUTH", "s3cret").startswith(b"+OK")
    finally:
        server.cleanup()


async def test_script_is_loaded_on_first_use(redis_server: RedisServer, make_shards: Any) -> None:
    from channels.redis_shards import Script

    shards = await make_shards([redis_server.url])
    shard = shards.shards[0]
    script = Script("return {KEYS[1], ARGV[1]}")
    assert await shard.eval(script, ["k"], ["a"]) == [b"k", b"a"]
    redis_server.command("SCRIPT", "FLUSH")
    assert await shard.eval(script, ["k"], [b"b"]) == [b"k", b"b"]


async def test_ordered_scripts_never_run_out_of_order_after_a_script_flush(
    redis_server: RedisServer, make_shards: Any
) -> None:
    """A session's pipelined publishes rely on their scripts running in call order. After SCRIPT FLUSH the
    first EVALSHA answers NOSCRIPT while a later one is already sent: retrying the first with EVAL would
    run it after the later one (had the script come back meanwhile), so it fails instead (it did not run)
    and the later one keeps its place. A new connection loads every script first: no NOSCRIPT at all."""
    from channels.redis_shards import Script

    shards = await make_shards([redis_server.url])
    shard = shards.shards[0]
    script = Script("redis.call('RPUSH', KEYS[1], ARGV[1]) return ARGV[1]")
    assert await shard.eval(script, ["log"], ["0"], ordered=True) == b"0"
    redis_server.command("SCRIPT", "FLUSH")
    first = asyncio.ensure_future(shard.eval(script, ["log"], ["a"], ordered=True))
    second = asyncio.ensure_future(shard.eval(script, ["log"], ["b"], ordered=True))
    done = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(done[0], ShardUnavailable) and done[1] == b"b"
    assert await shard.execute("LRANGE", "log", 0, -1) == [b"0", b"b"]
    redis_server.command("SCRIPT", "FLUSH")
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # the command connection is dropped
    with pytest.raises(ShardUnavailable):
        await shard.execute("PING")  # the loss is noticed; the next call reconnects
    redis_server.command("CONFIG", "RESETSTAT")
    calls = [shard.eval(script, ["log"], [str(n)], ordered=True) for n in range(3)]
    assert await asyncio.gather(*calls) == [b"0", b"1", b"2"]
    stats = redis_server.command("INFO", "commandstats")
    assert b"cmdstat_eval:" not in stats and b"failed_calls=0" in stats.split(b"cmdstat_evalsha:")[1][:80]


async def test_cluster_failover_moves_sharded_subscriptions(make_shards: Any) -> None:
    """A replica takes over a master's slots (CLUSTER FAILOVER): Redis drops the sharded subscriptions of
    those slots on the old master; they are subscribed again on the new one and on_reconnect fires."""
    import subprocess
    import time

    from tests.redis_servers import REDIS_CLI

    cluster = RedisCluster()
    replica = RedisServer(cluster=True)
    try:
        cluster.start()
        replica.start()
        master = cluster.servers[0]
        master_id = master.command("CLUSTER", "MYID").split(b"\r\n")[1].decode()
        await asyncio.to_thread(
            subprocess.run,
            [REDIS_CLI, "--cluster", "add-node", f"127.0.0.1:{replica.port}", f"127.0.0.1:{master.port}",
             "--cluster-slave", "--cluster-master-id", master_id],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while b"master_link_status:up" not in replica.command("INFO", "replication"):
            assert time.monotonic() < deadline, "the replica did not sync"
            await asyncio.sleep(0.05)  # polling the replica's state with a deadline
        shards = await make_shards(cluster.urls, cluster=True)
        shard = shards.shards[0]
        # a channel whose slot the first master owns
        ch = next(
            c
            for c in (shards.channel("pub", route_of("t", f"r{i}")) for i in range(1000))
            if shard.redis.nodes_manager.get_node_from_slot(key_slot(c.encode())).port == master.port  # type: ignore[union-attr]
        )
        inbox = Inbox()
        await shard.subscribe(ch, inbox)
        moved = asyncio.Event()
        shard.on_reconnect(moved.set)
        assert replica.command("CLUSTER", "FAILOVER").startswith(b"+OK")
        async with asyncio.timeout(TIMEOUT):
            await moved.wait()
        await shard.publish(ch, b"after-failover")
        assert await inbox.wait(1) == [b"after-failover"]
    finally:
        replica.cleanup()
        cluster.cleanup()
