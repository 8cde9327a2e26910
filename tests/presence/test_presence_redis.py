"""Presence in Redis over real redis-server processes: one server, two sharded servers, a 3-master cluster.

"Two nodes" are two RedisPresence instances, each over its own RedisShards (its own connections), as two
hub processes would be. Expiry is waited for on a condition with a deadline, never slept for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings

from channels.names import ChannelKey
from channels.publication import ClientInfo
from channels.redis_shards import RedisShards, route_of
from presence.presence import PresenceStats, PresenceUnavailable
from presence.presence_redis import REFRESH_SLICE, RedisPresence
from tests.conftest import TIMEOUT
from tests.presence.cases import CASES, ROOM, ROOM_B, Case, Op, check_against_model, ops_strategy
from tests.redis_servers import RedisCluster, RedisServer

LONG_TTL = 60.0
"""Nothing expires during a test that is not about expiry."""
REFRESH_BUDGET = 0.5
"""A refresh that cannot reach a Redis stopped by the test gives up soon (a node's gives up after ttl / 3)."""


@dataclass
class Deployment:
    urls: list[str]
    cluster: bool
    flush: Callable[[], None]


@pytest.fixture(params=["standalone", "sharded", "cluster"])
def deployment(request: Any) -> Deployment:
    """The three shapes: one server (redis_server), two on the hash ring (redis_two), a cluster."""
    if request.param == "standalone":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Deployment([server.url], False, lambda: _flush([server]))
    if request.param == "sharded":
        two: list[RedisServer] = request.getfixturevalue("redis_two")
        return Deployment([s.url for s in two], False, lambda: _flush(two))
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return Deployment(cluster.urls, True, cluster.flushall)


def _flush(servers: Sequence[RedisServer]) -> None:
    for s in servers:
        assert s.command("FLUSHALL").startswith(b"+OK")


NodeFactory = Callable[..., Awaitable[RedisPresence]]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """``await make_node(urls, cluster=..., ttl=...)``: a RedisPresence over its own, started RedisShards."""
    opened: list[RedisShards] = []

    async def make(
        urls: Sequence[str],
        *,
        cluster: bool = False,
        ttl: float = LONG_TTL,
        connect_timeout: float = 2.0,
        refresh_budget: float = REFRESH_BUDGET,
    ) -> RedisPresence:
        shards = RedisShards(urls, cluster=cluster, connect_timeout=connect_timeout)
        opened.append(shards)
        await shards.start()
        return RedisPresence(shards, ttl=ttl, refresh_budget=refresh_budget)

    yield make
    for shards in opened:
        await shards.close()


async def two_nodes(make_node: NodeFactory, d: Deployment, ttl: float = LONG_TTL) -> list[RedisPresence]:
    return [await make_node(d.urls, cluster=d.cluster, ttl=ttl) for _ in range(2)]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` is true (polled: expiry is Redis's clock, there is no event to wait on)."""
    deadline = time.monotonic() + TIMEOUT
    while not await check():
        assert time.monotonic() < deadline, f"not within {TIMEOUT} s: {what}"
        await asyncio.sleep(0.05)  # polling interval, not a wait for the effect


# -- the shared behaviour, on every deployment, written by one node and read by the other -----------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_shared_behaviour(case: Case, deployment: Deployment, make_node: NodeFactory) -> None:
    writer, reader = await two_nodes(make_node, deployment)
    await case(writer, reader)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=ops_strategy)
async def test_matches_a_model(ops: list[Op], deployment: Deployment, make_node: NodeFactory) -> None:
    """Random add/remove/refresh from two nodes, read through both: always exactly the model."""
    deployment.flush()
    nodes = await two_nodes(make_node, deployment)
    await check_against_model(nodes, ops)


# -- across nodes ------------------------------------------------------------------------------------------


async def test_stats_exact_across_nodes(redis_server: RedisServer, make_node: NodeFactory) -> None:
    a, b = await two_nodes(make_node, Deployment([redis_server.url], False, lambda: None))
    await a.add(ROOM, ClientInfo("alice", "a1"))
    await a.add(ROOM, ClientInfo("alice", "a2"))
    await b.add(ROOM, ClientInfo("alice", "b1"))
    await b.add(ROOM, ClientInfo("bob", "b2"))
    await b.add(ROOM, ClientInfo("bob", "b3"))
    await a.add(ROOM, ClientInfo("carol", "a3"))
    for node in (a, b):
        assert await node.stats(ROOM) == PresenceStats(num_clients=6, num_users=3)
        assert set(await node.get(ROOM)) == {"a1", "a2", "a3", "b1", "b2", "b3"}
    await a.remove(ROOM, "a3")
    await b.remove(ROOM, "b1")
    for node in (a, b):
        assert await node.stats(ROOM) == PresenceStats(num_clients=4, num_users=2)


async def test_a_crowd_joining_at_once_is_recorded(redis_server: RedisServer, make_node: NodeFactory) -> None:
    """Issue 15: 300 subscribes of one room at once took a pooled Redis connection each; past redis-py's
    100 the rest failed ("Too many connections", the subscribe answered 100). They share the shard's
    pipelined connection now."""
    node = await make_node([redis_server.url])
    crowd = [ClientInfo(f"u{i}", f"c{i}") for i in range(300)]
    await asyncio.gather(*(node.add(ROOM, info) for info in crowd))
    assert await node.stats(ROOM) == PresenceStats(num_clients=300, num_users=300)
    await asyncio.gather(*(node.remove(ROOM, info.client) for info in crowd))
    assert await node.get(ROOM) == {}


# -- expiry ------------------------------------------------------------------------------------------------


async def test_unrefreshed_entry_expires_refreshed_one_stays(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    p = await make_node([redis_server.url], ttl=1.0)
    kept, dropped = ClientInfo("alice", "kept"), ClientInfo("bob", "dropped")
    # "kept" is added first: had refresh done nothing, it would expire no later than "dropped"
    await p.add(ROOM, kept)
    await p.add(ROOM, dropped)

    async def refresh_forever() -> None:
        while True:
            await p.refresh([(ROOM, kept)])
            await asyncio.sleep(0.1)  # the node's refresh interval, well under the ttl

    refresher = asyncio.create_task(refresh_forever())
    try:

        async def dropped_gone() -> bool:
            return "dropped" not in await p.get(ROOM)

        await eventually(dropped_gone, "the unrefreshed entry expires")
        assert await p.get(ROOM) == {"kept": kept}
        assert await p.stats(ROOM) == PresenceStats(1, 1)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_dead_nodes_entries_expire_for_the_living(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    """Node A adds and then never refreshes (it died); node B, with its own long ttl, stops seeing them."""
    dead = await make_node([redis_server.url], ttl=1.0)
    alive = await make_node([redis_server.url], ttl=LONG_TTL)
    await dead.add(ROOM, ClientInfo("alice", "a1"))
    await dead.add(ROOM, ClientInfo("bob", "a2"))
    await alive.add(ROOM, ClientInfo("alice", "b1"))
    assert await alive.stats(ROOM) == PresenceStats(3, 2)

    async def only_the_living() -> bool:
        return await alive.stats(ROOM) == PresenceStats(1, 1)

    await eventually(only_the_living, "the dead node's entries expire")
    assert list(await alive.get(ROOM)) == ["b1"]
    route = route_of(*ROOM)
    r = aioredis.Redis.from_url(redis_server.url)
    try:  # the expired entries left both structures, not only what get() shows
        assert await r.hlen(alive.shards.key("presence", route)) == 1
        assert await r.zcard(alive.shards.key("presence_exp", route)) == 1
    finally:
        await r.aclose()


async def test_a_dead_nodes_entries_are_purged_at_once_and_only_once(
    deployment: Deployment, make_node: NodeFactory
) -> None:
    """Node "dead" added entries in many channels (two tenants, every shard) and died; two living nodes ask
    for its purge at the same time: one removes exactly its live entries, the other finds it done."""
    dead, alive, third = [await make_node(deployment.urls, cluster=deployment.cluster) for _ in range(3)]
    rooms: list[ChannelKey] = [("", f"purge-{i}") for i in range(40)] + [("acme", "purge-0")]
    for i, room in enumerate(rooms):
        await dead.add(room, ClientInfo("ann", f"dead-{i}"))
        await alive.add(room, ClientInfo("bob", f"alive-{i}"))
    await dead.remove(rooms[0], "dead-0")  # gone before the crash: not listed for a purge any more
    await dead.refresh([(room, ClientInfo("ann", f"dead-{i}")) for i, room in enumerate(rooms) if i])
    counts = await asyncio.gather(alive.purge(dead.owner), third.purge(dead.owner))
    assert sorted(counts) == [0, len(rooms) - 1]
    for i, room in enumerate(rooms):
        assert list(await third.get(room)) == [f"alive-{i}"]
        assert await third.stats(room) == PresenceStats(1, 1)
    assert await third.purge(dead.owner) == 0  # nothing left, whoever asks
    assert await third.purge("") == 0
    assert dead.owner != alive.owner != third.owner


async def test_the_owner_index_is_best_effort(redis_two: list[RedisServer], make_node: NodeFactory) -> None:
    """The owner's index lives on its own shard: with only that shard down, adds and removes on the other
    still succeed (and a purge then misses them: they are left to their ttl, as before there was a purge)."""
    p = await make_node([s.url for s in redis_two])
    p.owner = next(o for o in (f"node-{i}" for i in range(100)) if p._index(o)[0].index == 1)
    room = next(
        k for k in (("", f"room{i}") for i in range(100)) if p.shards.shard_for(route_of(*k)).index == 0
    )
    redis_two[1].stop()
    await p.add(room, ClientInfo("alice", "a1"))
    await p.add(room, ClientInfo("bob", "b1"))
    await p.remove(room, "b1")
    assert list(await p.get(room)) == ["a1"]
    with pytest.raises(PresenceUnavailable):  # the refresh says so: the index could not be written
        await p.refresh([(room, ClientInfo("alice", "a1"))])
    redis_two[1].start()
    await p.refresh([(room, ClientInfo("alice", "a1"))])  # the index is written again
    other = await make_node([s.url for s in redis_two])
    assert await other.purge(p.owner) == 1
    assert await other.get(room) == {}


async def test_abandoned_channel_keys_vanish(redis_server: RedisServer, make_node: NodeFactory) -> None:
    """Nobody reads the channel again: its keys expire by themselves (no lazy cleanup involved)."""
    p = await make_node([redis_server.url], ttl=1.0)
    await p.add(ROOM, ClientInfo("alice", "c1"))
    route = route_of(*ROOM)
    keys = [p.shards.key("presence", route), p.shards.key("presence_exp", route)]
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await r.exists(*keys) == 2
        assert 0 < await r.pttl(keys[0]) <= 1000

        async def gone() -> bool:
            return await r.exists(*keys) == 0

        await eventually(gone, "the abandoned channel's keys expire")
    finally:
        await r.aclose()


# -- refresh -----------------------------------------------------------------------------------------------


async def test_refresh_re_adds_and_replaces(redis_server: RedisServer, make_node: NodeFactory) -> None:
    p = await make_node([redis_server.url])
    await p.add(ROOM, ClientInfo("alice", "c1"))
    many = [(ROOM_B, ClientInfo(f"user{i % 7}", f"m{i}")) for i in range(2500)]  # > one script batch
    await p.refresh([(ROOM, ClientInfo("alice", "c1", None, b"new")), (ROOM, ClientInfo("bob", "c2")), *many])
    assert await p.get(ROOM) == {"c1": ClientInfo("alice", "c1", None, b"new"), "c2": ClientInfo("bob", "c2")}
    assert await p.stats(ROOM_B) == PresenceStats(2500, 7)


async def test_refresh_many_channels(deployment: Deployment, make_node: NodeFactory) -> None:
    """More channels than one script call and more entries than one pipeline take, over every shape."""
    writer, reader = await two_nodes(make_node, deployment)
    keys: list[ChannelKey] = [(f"t{i % 3}", f"room{i}") for i in range(700)]
    per_channel = 7  # a call holds 71 channels (497 entries): pipelines (2000) go out with a call half full
    members = {
        key: {f"{key[1]}-c{j}": ClientInfo(f"user{j}", f"{key[1]}-c{j}", b"x") for j in range(per_channel)}
        for key in keys
    }
    await writer.refresh([(key, info) for key in keys for info in members[key].values()])
    for key in keys:
        assert await reader.get(key) == members[key]
    assert await reader.stats(keys[-1]) == PresenceStats(per_channel, per_channel)


async def test_refresh_after_redis_lost_its_scripts(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    """NOSCRIPT in the refresh pipeline (Redis restarted or SCRIPT FLUSH): the scripts are sent again."""
    p = await make_node([redis_server.url])
    await p.add(ROOM, ClientInfo("alice", "c1"))
    assert redis_server.command("SCRIPT", "FLUSH").startswith(b"+OK")
    await p.refresh([(ROOM, ClientInfo("alice", "c1", b"v2")), (ROOM_B, ClientInfo("bob", "c2"))])
    assert await p.get(ROOM) == {"c1": ClientInfo("alice", "c1", b"v2")}
    assert list(await p.get(ROOM_B)) == ["c2"]
    assert redis_server.command("SCRIPT", "FLUSH").startswith(b"+OK")
    await p.add(ROOM, ClientInfo("alice", "c3"))  # the single-call path too
    assert set(await p.get(ROOM)) == {"c1", "c3"}


async def test_removal_during_refresh_wins(redis_server: RedisServer, make_node: NodeFactory) -> None:
    """The node snapshots its entries, a client leaves while the refresh is in flight: it stays removed."""
    p = await make_node([redis_server.url])
    c1, c2 = ClientInfo("alice", "c1"), ClientInfo("bob", "c2")
    await p.add(ROOM, c1)
    await p.add(ROOM, c2)
    started, proceed = asyncio.Event(), asyncio.Event()
    real_refresh = p._refresh  # noqa: SLF001 - hold the refresh's Redis calls until the removal is done

    async def held(entries: Iterable[tuple[ChannelKey, ClientInfo]], taken: Any) -> None:
        started.set()
        await proceed.wait()
        await real_refresh(entries, taken)

    p._refresh = held  # type: ignore[method-assign]  # noqa: SLF001
    c3 = ClientInfo("carol", "c3")
    await p.add(ROOM, c3)
    refresh = asyncio.create_task(p.refresh([(ROOM, c1), (ROOM, c2), (ROOM, c3)]))
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
        await p.remove(ROOM, "c1")
        await p.remove(ROOM, "c3")  # c3 leaves and comes back meanwhile: present in the end
        await p.add(ROOM, c3)
        proceed.set()
        await refresh
    assert await p.get(ROOM) == {"c2": c2, "c3": c3}


async def test_a_client_back_during_the_re_removal_stays(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    """(Review R1.) Two clients of a refresh leave while it is in flight, so both are removed again after
    it; one comes back while the first of those removals runs: it must stay (it was removed until the next
    refresh when the set of re-removals was computed once)."""
    from presence.presence_redis import _remove  # noqa: PLC2701 - to spot the re-removal's Redis call

    p = await make_node([redis_server.url])
    infos = {"c1": ClientInfo("alice", "c1"), "c2": ClientInfo("bob", "c2")}
    for info in infos.values():
        await p.add(ROOM, info)
    real_refresh, real_run = p._refresh, p._run  # noqa: SLF001
    state: dict[str, Any] = {"left": False, "back": None}

    async def refresh_then_leave(entries: Iterable[tuple[ChannelKey, ClientInfo]], taken: Any) -> None:
        await real_refresh(
            entries, taken
        )  # its re-adds landed; now both clients leave, still inside the refresh
        await p.remove(ROOM, "c1")
        await p.remove(ROOM, "c2")
        state["left"] = True

    async def run(script: Any, key: ChannelKey, args: Sequence[Any]) -> Any:
        if state["left"] and script is _remove and state["back"] is None:
            state["back"] = "c2" if args[0] == "c1" else "c1"  # the other one comes back meanwhile
            await p.add(ROOM, infos[state["back"]])
        return await real_run(script, key, args)

    p._refresh = refresh_then_leave  # type: ignore[method-assign]  # noqa: SLF001
    p._run = run  # type: ignore[method-assign]  # noqa: SLF001
    async with asyncio.timeout(TIMEOUT):
        await p.refresh([(ROOM, info) for info in infos.values()])
    assert state["back"] is not None
    assert await p.get(ROOM) == {state["back"]: infos[state["back"]]}


# -- placement ---------------------------------------------------------------------------------------------


async def test_sharded_keys_land_on_the_ring_shard(
    redis_two: list[RedisServer], make_node: NodeFactory
) -> None:
    p = await make_node([s.url for s in redis_two])
    keys: list[ChannelKey] = [("", f"room{i}") for i in range(40)]
    for key in keys:
        await p.add(key, ClientInfo("alice", "c1"))
    clients = [aioredis.Redis.from_url(s.url) for s in redis_two]
    try:
        per_shard = [0, 0]
        for key in keys:
            route = route_of(*key)
            home = p.shards.shard_for(route).index
            per_shard[home] += 1
            for i, r in enumerate(clients):
                want = 2 if i == home else 0
                assert (
                    await r.exists(p.shards.key("presence", route), p.shards.key("presence_exp", route))
                    == want
                )
        assert min(per_shard) > 0, per_shard  # the ring spreads 40 channels over both servers
    finally:
        for r in clients:
            await r.aclose()


async def test_cluster_keys_of_a_channel_share_a_slot(
    redis_cluster: RedisCluster, make_node: NodeFactory
) -> None:
    p = await make_node(redis_cluster.urls, cluster=True)
    key: ChannelKey = ("x}", "{a}b")
    await p.add(key, ClientInfo("alice", "c1"))
    route = route_of(*key)
    slots = {
        redis_cluster.servers[0].command("CLUSTER", "KEYSLOT", p.shards.key(kind, route))
        for kind in ("presence", "presence_exp")
    }
    assert len(slots) == 1, slots
    assert list(await p.get(key)) == ["c1"]


# -- Redis down --------------------------------------------------------------------------------------------


async def test_redis_down_raises_unavailable_then_recovers(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    p = await make_node([redis_server.url])
    await p.add(ROOM, ClientInfo("alice", "c1"))
    redis_server.stop()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: p.add(ROOM, ClientInfo("bob", "c2")),
        lambda: p.remove(ROOM, "c1"),
        lambda: p.get(ROOM),
        lambda: p.stats(ROOM),
        lambda: p.refresh([(ROOM, ClientInfo("alice", "c1"))]),
    ]
    for call in calls:
        with pytest.raises(PresenceUnavailable):
            await call()
    redis_server.start()  # empty: Redis lost its data and its script cache

    async def works_again() -> bool:
        with contextlib.suppress(PresenceUnavailable):
            await p.add(ROOM, ClientInfo("bob", "c2"))
            return True
        return False

    await eventually(works_again, "presence works once Redis is back")
    await p.refresh([(ROOM, ClientInfo("alice", "c1"))])
    assert set(await p.get(ROOM)) == {"c1", "c2"}


async def test_one_shard_down_the_others_still_refreshed(
    redis_two: list[RedisServer], make_node: NodeFactory
) -> None:
    p = await make_node([s.url for s in redis_two])
    keys: list[ChannelKey] = [("", f"room{i}") for i in range(40)]
    down = redis_two[1]
    down.stop()
    entries = [(key, ClientInfo("alice", f"c-{key[1]}")) for key in keys]
    with pytest.raises(PresenceUnavailable):
        await p.refresh(entries)
    alive = [key for key in keys if p.shards.shard_for(route_of(*key)).index == 0]
    assert 0 < len(alive) < len(keys)
    for key in alive:
        assert list(await p.get(key)) == [f"c-{key[1]}"]
    with pytest.raises(PresenceUnavailable):
        await p.get(next(key for key in keys if key not in alive))


# -- a refresh while Redis stalls (issue 15: a node's refresh failed in a connect storm) -------------------

STALL_TIMEOUT = 0.3
"""The nodes' Redis timeout in the stall tests: a paused Redis fails a round trip after this long."""


class Warned(logging.Handler):
    """Records the presence log lines; ``first`` is set at the first warning."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.first = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno >= logging.WARNING:
            self.first.set()


@pytest.fixture
def warned() -> Iterator[Warned]:
    handler = Warned()
    logger = logging.getLogger("switchboard.presence")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    """Redis holds every write and script (CLIENT PAUSE WRITE) until the block ends; reads still answer."""
    assert server.command("CLIENT", "PAUSE", str(int(TIMEOUT * 4000)), "WRITE").startswith(b"+OK")
    try:
        yield
    finally:
        assert server.command("CLIENT", "UNPAUSE").startswith(b"+OK")


async def expire_at(p: RedisPresence, redis_url: str, keys: Sequence[ChannelKey]) -> list[float]:
    """Every entry's expire-at time in ``keys``, read straight from Redis."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        scores: list[float] = []
        for key in keys:
            zkey = p.shards.key("presence_exp", route_of(*key))
            scores += [score for _, score in await r.zrange(zkey, 0, -1, withscores=True)]
        return scores
    finally:
        await r.aclose()


STALL_KEYS: list[ChannelKey] = [("", f"room{i}") for i in range(3)]
STALL_ENTRIES = [(key, ClientInfo("u", f"{key[1]}-{n}")) for key in STALL_KEYS for n in range(1500)]
"""4,500 entries: three round trips of channel entries and three of the owner index."""


async def test_a_refresh_rides_out_a_stalled_redis(
    redis_server: RedisServer, make_node: NodeFactory, warned: Warned
) -> None:
    """Redis stops answering in the middle of a refresh (a connect storm's backlog, a failover): the round
    trips that fail are sent again, with smaller batches and backoff, and once Redis answers every entry is
    renewed. One warning says what failed; nothing is raised."""
    p = await make_node([redis_server.url], connect_timeout=STALL_TIMEOUT, refresh_budget=TIMEOUT * 2)
    await p.refresh(STALL_ENTRIES)
    before = await expire_at(p, redis_server.url, STALL_KEYS)
    assert len(before) == len(STALL_ENTRIES)
    with stalled(redis_server):
        refresh = asyncio.create_task(p.refresh(STALL_ENTRIES))
        async with asyncio.timeout(TIMEOUT):
            await warned.first.wait()  # a round trip timed out
    async with asyncio.timeout(TIMEOUT * 2):
        await refresh
    after = await expire_at(p, redis_server.url, STALL_KEYS)
    assert len(after) == len(STALL_ENTRIES) and min(after) > max(before)  # every entry renewed
    assert [r.levelno for r in warned.records if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert "presence refresh: redis" in warned.records[0].getMessage()
    assert "all 4500 entries refreshed after" in warned.records[-1].getMessage()  # the info line at the end


async def test_a_refresh_gives_up_after_its_budget_and_the_next_one_renews(
    redis_server: RedisServer, make_node: NodeFactory, warned: Warned
) -> None:
    """Redis stalls longer than the refresh's budget: the refresh raises PresenceUnavailable saying how many
    entries it did not refresh (the node logs it as a warning); the next refresh renews them."""
    p = await make_node([redis_server.url], connect_timeout=STALL_TIMEOUT, refresh_budget=STALL_TIMEOUT)
    await p.refresh(STALL_ENTRIES)
    before = await expire_at(p, redis_server.url, STALL_KEYS)
    with stalled(redis_server):
        with pytest.raises(
            PresenceUnavailable, match=r"4500 of 4500 entries not refreshed.*4500 of 4500 not listed"
        ):
            async with asyncio.timeout(TIMEOUT):
                await p.refresh(STALL_ENTRIES)
    await p.refresh(STALL_ENTRIES)
    after = await expire_at(p, redis_server.url, STALL_KEYS)
    assert len(after) == len(STALL_ENTRIES) and min(after) > max(before)
    assert not [r for r in warned.records if r.levelno > logging.WARNING]


async def test_entries_are_read_a_slice_at_a_time_and_a_removal_meanwhile_wins(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    """A refresh reads its entries lazily (a node's 100,000 would hold the loop ~100 ms read at once), the
    loop let go between slices; a client read in the first slice and removed while the rest are read is not
    brought back by the refresh."""
    p = await make_node([redis_server.url])
    infos = [ClientInfo("u", f"c{n}") for n in range(2 * REFRESH_SLICE + 1)]
    await p.refresh([(ROOM, info) for info in infos])
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    read_at: list[int] = []
    removal: list[asyncio.Task[None]] = []

    def entries() -> Iterator[tuple[ChannelKey, ClientInfo]]:
        for n, info in enumerate(infos):
            if n == REFRESH_SLICE:  # c0 was read in the first slice; it leaves now
                removal.append(asyncio.get_running_loop().create_task(p.remove(ROOM, "c0")))
            read_at.append(ticks)
            yield ROOM, info

    ticker = asyncio.create_task(tick())
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.sleep(0)  # the ticker runs once before the refresh starts
            await p.refresh(entries())
            await removal[0]
    finally:
        ticker.cancel()
    assert read_at[0] < read_at[-1]  # the loop ran between the first entry read and the last
    present = await p.get(ROOM)
    assert "c0" not in present and len(present) == len(infos) - 1


async def test_removals_during_a_refresh_win_also_when_one_shard_is_down(
    redis_two: list[RedisServer], make_node: NodeFactory
) -> None:
    """Clients on both shards leave while a refresh is in flight; then shard 1 goes down. The refresh
    re-adds shard 0's entries (they come back), fails for shard 1, and must remove shard 0's again.
    Before (review of the issue-15 rework), the re-removals stopped at the first that raised (one for
    shard 1), so shard 0's entries popped after it stayed in Redis for a whole ttl."""
    p = await make_node([s.url for s in redis_two])
    keys: list[ChannelKey] = [("", f"room{i}") for i in range(40)]
    entries = [(key, ClientInfo("alice", f"c-{key[1]}")) for key in keys]
    for key, info in entries:
        await p.add(key, info)
    alive = [key for key in keys if p.shards.shard_for(route_of(*key)).index == 0]
    assert 0 < len(alive) < len(keys)
    started, proceed = asyncio.Event(), asyncio.Event()
    real_refresh = p._refresh  # noqa: SLF001

    async def held(entries: Iterable[tuple[ChannelKey, ClientInfo]], taken: Any) -> None:
        started.set()
        await proceed.wait()
        await real_refresh(entries, taken)

    p._refresh = held  # type: ignore[method-assign]  # noqa: SLF001
    refresh = asyncio.create_task(p.refresh(entries))
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
        for key, info in entries:  # every client leaves (as the node does, best effort)
            try:
                await p.remove(key, info.client)
            except PresenceUnavailable:
                pass
        redis_two[1].stop()  # shard 1 goes away before the refresh's round trips
        proceed.set()
        with pytest.raises(PresenceUnavailable):
            await refresh
    ghosts = {key[1]: await p.get(key) for key in alive}
    assert not any(ghosts.values()), f"re-added after their removal: {[k for k, v in ghosts.items() if v]}"


async def test_a_refresh_cancelled_by_node_stop_leaves_no_entry_it_brought_back(
    redis_server: RedisServer, make_node: NodeFactory
) -> None:
    """Node.stop drains (every client leaves: removals recorded by the refresh in flight), then cancels
    the refresh while it still retries. Before (review of the issue-15 rework), the re-removals ran only
    when the refresh ended normally, so a re-add that landed after the removal was never undone and the
    departed client stayed listed for a ttl (one node: nobody purges its owner)."""
    p = await make_node([redis_server.url])
    c1 = ClientInfo("alice", "c1")
    await p.add(ROOM, c1)
    removed, stuck = asyncio.Event(), asyncio.Event()
    real_refresh = p._refresh  # noqa: SLF001

    async def slow(entries: Iterable[tuple[ChannelKey, ClientInfo]], taken: Any) -> None:
        await removed.wait()  # the drain's removal lands first...
        await real_refresh(entries, taken)  # ...then the refresh's re-add (a retried round trip)
        stuck.set()
        await asyncio.Event().wait()  # another lane still retrying when the node stops

    p._refresh = slow  # type: ignore[method-assign]  # noqa: SLF001
    refresh = asyncio.create_task(p.refresh([(ROOM, c1)]))
    async with asyncio.timeout(TIMEOUT):
        await asyncio.sleep(0)
        await p.remove(ROOM, "c1")
        removed.set()
        await stuck.wait()
        refresh.cancel()  # Node.stop
        with pytest.raises(asyncio.CancelledError):
            await refresh
    assert await p.get(ROOM) == {}, "a client gone before the stop is still listed"
