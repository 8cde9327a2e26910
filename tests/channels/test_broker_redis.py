"""RedisBroker against real redis-server processes.

The first half is the Broker contract, run against the memory broker and the Redis broker on one server,
on two consistent-hashed servers and on a 3-master cluster: the same assertions, so the Redis broker
behaves as the memory one where the behaviour does not depend on the clock (expiry is checked through the
keys' TTLs). The second half is what only many nodes have: two brokers on one Redis, restarts, sharding,
a down Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.broker import IDEMPOTENCY_TTL, HistoryPolicy
from channels.broker_memory import DEFAULT_META_TTL, MemoryBroker
from channels.broker_redis import RedisBroker
from channels.errors import BrokerUnavailable, ChannelError, TooManyKeys, UnrecoverablePosition
from channels.names import ChannelKey
from channels.publication import ClientInfo, Publication, StreamPosition
from channels.redis_shards import RedisShards, route_of
from tests.redis_servers import RedisCluster, RedisServer

TIMEOUT = 10.0
KEY: ChannelKey = ("", "chat:room")
OTHER: ChannelKey = ("tenant-b", "chat:room")
HIST = HistoryPolicy(size=10, ttl=60.0)


class Handler:
    """Records what the broker delivers; ``wait`` returns once the expected count arrived."""

    def __init__(self) -> None:
        self.pubs: list[tuple[ChannelKey, Publication]] = []
        self.joins: list[tuple[ChannelKey, ClientInfo]] = []
        self.leaves: list[tuple[ChannelKey, ClientInfo]] = []
        self.resubscribed: list[list[ChannelKey]] = []
        self.epochs: list[str] = []
        """The epoch handed with each publication of ``pubs``."""
        self._changed = asyncio.Event()

    def _bump(self) -> None:
        self._changed.set()

    def handle_publication(self, key: ChannelKey, pub: Publication, epoch: str) -> None:
        self.pubs.append((key, pub))
        self.epochs.append(epoch)
        self._bump()

    def handle_join(self, key: ChannelKey, info: ClientInfo) -> None:
        self.joins.append((key, info))
        self._bump()

    def handle_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        self.leaves.append((key, info))
        self._bump()

    def handle_resubscribed(self, keys: list[ChannelKey]) -> None:
        self.resubscribed.append(keys)
        self._bump()

    async def until(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not cond():
                self._changed.clear()
                await self._changed.wait()

    async def pubs_n(self, n: int) -> list[tuple[ChannelKey, Publication]]:
        await self.until(lambda: len(self.pubs) >= n)
        return self.pubs


@dataclass
class Setup:
    broker: Any
    handler: Handler
    kind: str


@pytest.fixture
async def make_broker() -> AsyncIterator[Callable[..., Awaitable[tuple[RedisBroker, Handler]]]]:
    opened: list[RedisShards] = []

    async def make(
        urls: list[str], *, cluster: bool = False, node_id: str = "n1", **kw: Any
    ) -> tuple[RedisBroker, Handler]:
        shards = RedisShards(urls, cluster=cluster, **kw)
        opened.append(shards)
        broker = RedisBroker(shards, node_id=node_id)
        handler = Handler()
        broker.set_handler(handler)
        await broker.start()
        return broker, handler

    yield make
    for s in opened:
        await s.close()


@pytest.fixture(params=["memory", "redis", "redis_two", "cluster"])
async def setup(request: Any, make_broker: Any) -> Setup:
    kind = request.param
    if kind == "memory":
        memory = MemoryBroker()
        handler = Handler()
        memory.set_handler(handler)
        return Setup(memory, handler, kind)
    if kind == "redis":
        urls = [request.getfixturevalue("redis_server").url]
    elif kind == "redis_two":
        urls = [s.url for s in request.getfixturevalue("redis_two")]
    else:
        urls = request.getfixturevalue("redis_cluster").urls
    broker, handler = await make_broker(urls, cluster=kind == "cluster")
    return Setup(broker, handler, kind)


async def publish_n(
    broker: Any, n: int, key: ChannelKey = KEY, history: HistoryPolicy = HIST
) -> list[StreamPosition]:
    return [(await broker.publish(key, b"%d" % i, history=history)).position for i in range(n)]


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


# ---------------------------------------------------------------- the contract, on every backend


async def test_offsets_grow_by_one_and_epoch_is_stable(setup: Setup) -> None:
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    positions = await publish_n(broker, 5)
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1 and positions[0].epoch
    await handler.pubs_n(5)
    assert [(k, p.offset, p.data) for k, p in handler.pubs] == [(KEY, i + 1, b"%d" % i) for i in range(5)]
    assert (await broker.history(KEY)).position == positions[-1]


async def test_channels_and_tenants_have_their_own_streams(setup: Setup) -> None:
    a = await publish_n(setup.broker, 3, KEY)
    b = await publish_n(setup.broker, 2, OTHER)
    assert [p.offset for p in b] == [1, 2]
    assert a[0].epoch != b[0].epoch
    assert offsets((await setup.broker.history(OTHER)).publications) == [1, 2]
    assert offsets((await setup.broker.history(KEY)).publications) == [1, 2, 3]


async def test_every_publication_comes_with_its_stream_epoch(setup: Setup) -> None:
    """(Review R1-3.) The handler gets each publication's epoch (a position is offset and epoch: a stream
    that was lost and started over can reach the same offsets); '' without history."""
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    with_history = await broker.publish(KEY, b"1", history=HIST)
    await broker.publish(KEY, b"2")
    await handler.pubs_n(2)
    assert with_history.position.epoch
    assert handler.epochs == [with_history.position.epoch, ""]
    assert [p.data for _, p in handler.pubs] == [b"1", b"2"]


async def test_publish_without_history_has_no_position(setup: Setup) -> None:
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    for policy in (None, HistoryPolicy(0, 60.0), HistoryPolicy(10, 0.0)):
        result = await broker.publish(KEY, b"1", history=policy)
        assert result.position == StreamPosition() and not result.suppressed
    await handler.pubs_n(3)
    assert [p.offset for _, p in handler.pubs] == [0, 0, 0]
    hist = await broker.history(KEY)
    assert hist.publications == [] and hist.position.offset == 0


async def test_publication_carries_info_tags_and_time(setup: Setup) -> None:
    await setup.broker.subscribe(KEY)
    info = ClientInfo("u", "c", b'{"a":1}', None)
    await setup.broker.publish(KEY, b"{}", info=info, tags={"k": "v"}, history=HIST)
    pub = (await setup.handler.pubs_n(1))[0][1]
    assert pub.info == info and pub.tags == {"k": "v"} and pub.time > 0 and pub.data == b"{}"
    stored = (await setup.broker.history(KEY)).publications[0]
    assert (stored.info, stored.tags, stored.time, stored.data) == (info, {"k": "v"}, pub.time, b"{}")


async def test_history_is_empty_position_of_a_new_stream(setup: Setup) -> None:
    first = await setup.broker.history(KEY, limit=0)
    assert first.position.offset == 0 and first.position.epoch and first.publications == []
    assert (await setup.broker.history(KEY, limit=0)).position == first.position
    result = await setup.broker.publish(KEY, b"1", history=HIST)
    assert result.position == StreamPosition(1, first.position.epoch)


async def stream_keys(setup: Setup, key: ChannelKey) -> int:
    """How much state the backend keeps for ``key``'s stream: 1 for a memory stream; for Redis, how many of
    its stream and meta keys exist."""
    if setup.kind == "memory":
        return int(key in setup.broker._streams)  # noqa: SLF001 - what is kept is the point
    shards, route = setup.broker.shards, route_of(*key)
    shard = shards.shard_for(route)
    return int(await shard.execute("EXISTS", shards.key("hist", route), shards.key("meta", route)))


FRESH = iter(range(10**9))
"""A new channel name for every example (the backends outlive the examples of one test)."""

READS = st.fixed_dictionaries(
    {},
    optional={
        "limit": st.integers(-1, 5),
        "reverse": st.booleans(),
        "since": st.builds(StreamPosition, st.integers(0, 5), st.sampled_from(["", "deadbeef"])),
    },
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(READS, min_size=1, max_size=4), published=st.integers(0, 3))
async def test_reading_keeps_nothing_and_the_first_publication_keeps_the_epoch(
    setup: Setup, reads: list[dict[str, Any]], published: int
) -> None:
    """(Issue 10.) A history read (or a position read) of a name nobody published on creates no state: anyone
    may read any name. It still answers with an epoch, and the stream's first publication keeps it, so a
    reader of the empty stream recovers exactly what was published after its read."""
    key = ("t", f"fresh:{next(FRESH)}")
    told = set()
    for read in reads:
        try:
            told.add((await setup.broker.history(key, **read)).position)
        except UnrecoverablePosition:
            pass
        assert await stream_keys(setup, key) == 0
    told.add((await setup.broker.history(key, limit=0)).position)
    assert len(told) == 1
    empty = told.pop()
    assert empty.offset == 0 and empty.epoch
    positions = await publish_n(setup.broker, published, key)
    assert all(p.epoch == empty.epoch for p in positions)
    assert await stream_keys(setup, key) == bool(published) * (1 if setup.kind == "memory" else 2)
    since = await setup.broker.history(key, since=empty)
    assert [(p.offset, p.data) for p in since.publications] == [(i + 1, b"%d" % i) for i in range(published)]


async def test_remove_history_keeps_position(setup: Setup) -> None:
    positions = await publish_n(setup.broker, 3)
    await setup.broker.remove_history(KEY)
    hist = await setup.broker.history(KEY)
    assert hist.publications == [] and hist.position == positions[-1]
    assert (await setup.broker.publish(KEY, b"x", history=HIST)).position == StreamPosition(
        4, positions[-1].epoch
    )
    assert offsets((await setup.broker.history(KEY)).publications) == [4]
    await setup.broker.remove_history(("", "never-published"))


LATEST = HistoryPolicy(size=1, ttl=60.0, latest_keys=3)
"""Cache recovery's table: history of one, the latest of up to three keys."""


async def test_latest_keeps_each_keys_newest_in_offset_order(setup: Setup) -> None:
    """(Issue 12.) With ``latest_keys`` a stream keeps the latest publication of each key beside its history
    (which holds one here): read with the position in one step, in offset order, keys on every node."""
    broker = setup.broker
    await broker.subscribe(KEY)
    empty = await broker.latest(KEY)
    assert empty.publications == [] and empty.position.offset == 0 and empty.position.epoch
    info = ClientInfo("u", "c")
    for i, key in enumerate(["a", "b", "a", "c", "b", ""][:5]):
        await broker.publish(KEY, b'{"n":%d}' % i, history=LATEST, feed_key=key, info=info, tags={"t": key})
    latest = await broker.latest(KEY)
    assert [(p.key, p.offset, p.data) for p in latest.publications] == [
        ("a", 3, b'{"n":2}'),
        ("c", 4, b'{"n":3}'),
        ("b", 5, b'{"n":4}'),
    ]
    assert latest.position == StreamPosition(5, empty.position.epoch)
    assert latest.publications[0].info == info and latest.publications[0].tags == {"t": "a"}
    delivered = await setup.handler.pubs_n(5)
    assert [p.key for _, p in delivered] == ["a", "b", "a", "c", "b"]
    assert offsets((await broker.history(KEY)).publications) == [5]  # history keeps its own size


async def test_a_key_past_latest_keys_is_refused_and_nothing_is_published(setup: Setup) -> None:
    broker = setup.broker
    await broker.subscribe(KEY)
    for key in "abc":
        await broker.publish(KEY, b"1", history=LATEST, feed_key=key)
    with pytest.raises(TooManyKeys):
        await broker.publish(KEY, b"2", history=LATEST, feed_key="d")
    assert (await broker.publish(KEY, b"3", history=LATEST, feed_key="b")).position.offset == 4
    await setup.handler.pubs_n(4)
    assert [p.data for _, p in setup.handler.pubs] == [b"1", b"1", b"1", b"3"]
    assert sorted(p.key for p in (await broker.latest(KEY)).publications) == ["a", "b", "c"]


async def test_remove_history_drops_the_latest_too(setup: Setup) -> None:
    broker = setup.broker
    for key in "ab":
        await broker.publish(KEY, b"1", history=LATEST, feed_key=key)
    await broker.remove_history(KEY)
    latest = await broker.latest(KEY)
    assert latest.publications == [] and latest.position.offset == 2
    await broker.publish(KEY, b"2", history=LATEST, feed_key="d")  # room again
    assert [p.key for p in (await broker.latest(KEY)).publications] == ["d"]


async def test_reading_the_latest_keeps_nothing(setup: Setup) -> None:
    key = ("t", f"fresh:{next(FRESH)}")
    told = await setup.broker.latest(key)
    assert await stream_keys(setup, key) == 0
    assert told.position == (await setup.broker.history(key, limit=0)).position


async def test_history_size_trims_oldest(setup: Setup) -> None:
    await publish_n(setup.broker, 5, history=HistoryPolicy(size=3, ttl=60.0))
    hist = await setup.broker.history(KEY)
    assert offsets(hist.publications) == [3, 4, 5]
    assert [p.data for p in hist.publications] == [b"2", b"3", b"4"]
    assert hist.position.offset == 5


async def test_idempotency_is_per_channel_and_key(setup: Setup) -> None:
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    await broker.subscribe(OTHER)
    first = await broker.publish(KEY, b"1", history=HIST, idempotency_key="k")
    again = await broker.publish(KEY, b"1", history=HIST, idempotency_key="k")
    assert again.suppressed and again.position == first.position
    assert not (await broker.publish(OTHER, b"1", history=HIST, idempotency_key="k")).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST, idempotency_key="j")).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST)).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST, idempotency_key="")).suppressed
    await handler.pubs_n(5)
    assert offsets((await broker.history(KEY)).publications) == [1, 2, 3, 4]


async def test_idempotency_without_history(setup: Setup) -> None:
    await setup.broker.subscribe(KEY)
    await setup.broker.publish(KEY, b"1", idempotency_key="k")
    result = await setup.broker.publish(KEY, b"1", idempotency_key="k")
    assert result.suppressed and result.position == StreamPosition()
    await setup.broker.publish(KEY, b"2")
    pubs = await setup.handler.pubs_n(2)
    assert [p.data for _, p in pubs] == [b"1", b"2"]


async def test_limit_reverse_since(setup: Setup) -> None:
    broker = setup.broker
    epoch = (await publish_n(broker, 5))[0].epoch

    async def hist(**kw: Any) -> list[int]:
        return offsets((await broker.history(KEY, **kw)).publications)

    assert await hist() == [1, 2, 3, 4, 5]
    assert await hist(limit=-1) == [1, 2, 3, 4, 5]
    assert await hist(limit=2) == [1, 2]
    none = await broker.history(KEY, limit=0)
    assert none.publications == [] and none.position.offset == 5
    assert await hist(limit=100) == [1, 2, 3, 4, 5]
    assert await hist(reverse=True) == [5, 4, 3, 2, 1]
    assert await hist(reverse=True, limit=2) == [5, 4]
    assert await hist(since=StreamPosition(2, epoch)) == [3, 4, 5]
    assert await hist(since=StreamPosition(2, epoch), limit=2) == [3, 4]
    assert await hist(since=StreamPosition(0, epoch)) == [1, 2, 3, 4, 5]
    assert await hist(since=StreamPosition(5, epoch)) == []
    assert await hist(since=StreamPosition(9, epoch)) == []
    assert await hist(since=StreamPosition(4, epoch), reverse=True) == [3, 2, 1]
    assert await hist(since=StreamPosition(4, epoch), reverse=True, limit=2) == [3, 2]
    assert await hist(since=StreamPosition(1, epoch), reverse=True) == []


async def test_wrong_epoch_is_unrecoverable(setup: Setup) -> None:
    await publish_n(setup.broker, 3)
    for epoch in ("not-the-epoch", ""):
        with pytest.raises(UnrecoverablePosition):
            await setup.broker.history(KEY, since=StreamPosition(1, epoch))
    assert issubclass(UnrecoverablePosition, ChannelError)


async def test_join_leave_in_order_with_publications(setup: Setup) -> None:
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    info = ClientInfo("u", "c", b"{}", b'{"x":1}')
    order: list[str] = []
    handler.handle_join = lambda k, i: (order.append("join"), Handler.handle_join(handler, k, i))  # type: ignore[method-assign]
    handler.handle_leave = lambda k, i: (order.append("leave"), Handler.handle_leave(handler, k, i))  # type: ignore[method-assign]
    handler.handle_publication = lambda k, p, e: (  # type: ignore[method-assign]
        order.append("pub"),
        Handler.handle_publication(handler, k, p, e),
    )
    await broker.publish_join(KEY, info)
    await broker.publish(KEY, b"1", history=HIST)
    await broker.publish_leave(KEY, info)
    await handler.until(lambda: len(order) == 3)
    assert order == ["join", "pub", "leave"]
    assert handler.joins == [(KEY, info)] and handler.leaves == [(KEY, info)]


@pytest.mark.parametrize("setup", ["redis", "redis_two", "cluster"], indirect=True)
async def test_unsubscribed_channels_are_not_delivered(setup: Setup) -> None:
    """(Redis backends only: the memory broker delivers everything to its one node, which filters.)"""
    broker, handler = setup.broker, setup.handler
    await broker.subscribe(KEY)
    await broker.publish(OTHER, b"other")
    await broker.publish(KEY, b"1")
    await handler.pubs_n(1)
    await broker.unsubscribe(KEY)
    await broker.subscribe(OTHER)
    await broker.publish(KEY, b"2")
    await broker.publish(OTHER, b"3")
    await handler.pubs_n(2)
    assert [(k, p.data) for k, p in handler.pubs] == [(KEY, b"1"), (OTHER, b"3")]


# ---------------------------------------------------------------- Redis only


async def test_keys_carry_prefix_and_tenant_and_expire(redis_server: RedisServer, make_broker: Any) -> None:
    broker, _ = await make_broker([redis_server.url], prefix="pfx")
    await broker.publish(
        ("acme", "chat:x"), b"1", history=HistoryPolicy(10, 30.0, meta_ttl=100.0), idempotency_key="i"
    )
    keys = sorted(redis_server.command("KEYS", "*").split(b"\r\n")[2::2])
    route = route_of("acme", "chat:x").encode()
    assert keys == [
        b"pfx:hist:{" + route + b"}",
        b"pfx:idem:{" + route + b"}:i",
        b"pfx:meta:{" + route + b"}",
    ]

    def pttl(key: bytes) -> int:
        return int(redis_server.command("PTTL", key.decode()).strip()[1:])

    assert 25_000 < pttl(keys[0]) <= 30_000
    assert IDEMPOTENCY_TTL * 1000 - 5_000 < pttl(keys[1]) <= IDEMPOTENCY_TTL * 1000
    assert 95_000 < pttl(keys[2]) <= 100_000
    await broker.publish(("acme", "chat:y"), b"1", history=HIST)
    assert pttl(b"pfx:meta:{" + route_of("acme", "chat:y").encode() + b"}") > (DEFAULT_META_TTL - 60) * 1000


async def test_expired_entries_are_not_returned(redis_server: RedisServer, make_broker: Any) -> None:
    """History ttl applies per publication (each entry's Redis-clock deadline), not only to the whole key:
    an old entry kept alive by newer publications is filtered out. Ages are set through the entry's field."""
    broker, _ = await make_broker([redis_server.url])
    await publish_n(broker, 3)
    stream = "sb:hist:{" + route_of(*KEY) + "}"
    redis_server.command("XADD", stream, "4-0", "d", "x", "x", "1")  # a deadline long past
    redis_server.command("HSET", "sb:meta:{" + route_of(*KEY) + "}", "s", "4")
    hist = await broker.history(KEY)
    assert offsets(hist.publications) == [1, 2, 3] and hist.position.offset == 4


async def test_two_nodes_on_one_redis_see_each_other(redis_server: RedisServer, make_broker: Any) -> None:
    a, ha = await make_broker([redis_server.url], node_id="a")
    b, hb = await make_broker([redis_server.url], node_id="b")
    await a.subscribe(KEY)
    await b.subscribe(KEY)
    pa = await a.publish(KEY, b"from-a", history=HIST)
    pb = await b.publish(KEY, b"from-b", history=HIST)
    assert (pa.position.offset, pb.position.offset) == (1, 2) and pa.position.epoch == pb.position.epoch
    for h in (ha, hb):
        await h.pubs_n(2)
        assert [(p.offset, p.data) for _, p in h.pubs] == [(1, b"from-a"), (2, b"from-b")]
    # idempotency across nodes
    first = await a.publish(KEY, b"x", history=HIST, idempotency_key="k")
    again = await b.publish(KEY, b"x", history=HIST, idempotency_key="k")
    assert again.suppressed and again.position == first.position


async def test_deployments_on_two_dbs_of_one_redis_do_not_see_each_other(
    redis_server: RedisServer, make_broker: Any
) -> None:
    """(Review R1-5.) Redis pub/sub ignores the db: two deployments kept apart only by the db number (same
    prefix) must still not receive each other's publications (a tenant leak otherwise)."""
    prod, hp = await make_broker([redis_server.url + "/0"], node_id="prod")
    staging, hs = await make_broker([redis_server.url + "/1"], node_id="staging")
    await prod.subscribe(KEY)
    await staging.subscribe(KEY)
    await staging.publish(KEY, b"staging", history=HIST)
    await prod.publish(KEY, b"prod", history=HIST)  # after staging's on the same server: it would come first
    assert [p.data for _, p in await hp.pubs_n(1)] == [b"prod"]
    assert [p.data for _, p in await hs.pubs_n(1)] == [b"staging"]
    await staging.publish(KEY, b"staging-2", history=HIST)
    assert [p.data for _, p in await hs.pubs_n(2)] == [b"staging", b"staging-2"]
    assert [p.data for _, p in hp.pubs] == [b"prod"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_node=st.lists(st.integers(1, 30), min_size=2, max_size=4))
async def test_concurrent_publishers_never_skip_or_repeat(
    redis_server: RedisServer, per_node: list[int]
) -> None:
    opened: list[RedisShards] = []
    try:
        brokers: list[tuple[RedisBroker, Handler]] = []
        for i in range(len(per_node)):
            shards = RedisShards([redis_server.url])
            opened.append(shards)
            broker = RedisBroker(shards, node_id=f"n{i}")
            handler = Handler()
            broker.set_handler(handler)
            await broker.start()
            await broker.subscribe(KEY)
            brokers.append((broker, handler))
        redis_server.command("FLUSHALL")
        big = HistoryPolicy(size=1000, ttl=60.0)

        async def run(broker: RedisBroker, n: int, node: int) -> list[int]:
            return [
                (await broker.publish(KEY, b"%d:%d" % (node, j), history=big)).position.offset
                for j in range(n)
            ]

        results = await asyncio.gather(
            *(run(b, n, i) for i, ((b, _), n) in enumerate(zip(brokers, per_node, strict=True)))
        )
        total = sum(per_node)
        assert sorted(o for r in results for o in r) == list(range(1, total + 1))
        for r in results:
            assert r == sorted(r)
        for _, h in brokers:
            await h.pubs_n(total)
            assert [p.offset for _, p in h.pubs] == list(range(1, total + 1))
        assert offsets((await brokers[0][0].history(KEY)).publications) == list(range(1, total + 1))
    finally:
        for s in opened:
            await s.close()


async def test_restart_of_redis_gives_a_new_epoch_and_resubscribes(
    redis_server: RedisServer, make_broker: Any
) -> None:
    broker, handler = await make_broker([redis_server.url])
    await broker.subscribe(KEY)
    await broker.subscribe(OTHER)
    old = (await broker.publish(KEY, b"1", history=HIST)).position
    await handler.pubs_n(1)
    redis_server.kill()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(KEY, b"lost", history=HIST)
    with pytest.raises(BrokerUnavailable):
        await broker.history(KEY)
    redis_server.start()
    await handler.until(lambda: bool(handler.resubscribed))
    assert sorted(handler.resubscribed[0]) == sorted([KEY, OTHER])
    with pytest.raises(UnrecoverablePosition):
        await broker.history(KEY, since=old)
    new = (await broker.publish(KEY, b"2", history=HIST)).position
    assert new.offset == 1 and new.epoch != old.epoch
    await handler.pubs_n(2)
    assert [p.data for _, p in handler.pubs] == [b"1", b"2"]


async def test_an_empty_stream_read_before_a_redis_restart_is_not_recovered_after_it(
    redis_server: RedisServer, make_broker: Any
) -> None:
    """The derived epoch of an absent stream comes from the server's run: a reader of the empty stream
    before a restart (with or without persistence, or a failover) is refused after it, never handed the
    publications of a stream that may have lived and died meanwhile as if it had seen nothing."""
    broker, _ = await make_broker([redis_server.url])
    told = (await broker.history(KEY, limit=0)).position
    assert redis_server.command("DBSIZE") == b":0\r\n"
    redis_server.kill()
    with pytest.raises(BrokerUnavailable):
        await broker.history(KEY)
    redis_server.start()
    first = (await broker.publish(KEY, b"1", history=HIST)).position
    assert first.offset == 1 and first.epoch != told.epoch
    with pytest.raises(UnrecoverablePosition):
        await broker.history(KEY, since=told)


async def test_the_latest_table_expires_with_the_meta_and_dies_with_its_epoch(
    redis_server: RedisServer, make_broker: Any
) -> None:
    """(Issue 12.) The latest of each key lives in one hash beside the stream: it expires with the meta ttl
    (not the history ttl: a last value outlives the history of one), and a stream started over (its meta
    gone) starts with an empty table, so no value of the old epoch is served with the new one."""
    broker, _ = await make_broker([redis_server.url], prefix="pfx")
    policy = HistoryPolicy(1, 30.0, meta_ttl=100.0, latest_keys=10)
    for key in "ab":
        await broker.publish(KEY, b"1", history=policy, feed_key=key)
    route = route_of(*KEY)
    last = f"pfx:last:{{{route}}}"
    assert 95_000 < int(redis_server.command("PTTL", last).strip()[1:]) <= 100_000
    redis_server.command("DEL", f"pfx:meta:{{{route}}}")  # what expiry does to an idle stream
    await broker.publish(KEY, b"2", history=policy, feed_key="c")
    assert [(p.key, p.offset) for p in (await broker.latest(KEY)).publications] == [("c", 1)]


async def test_a_stream_whose_meta_expired_never_gets_its_epoch_back(
    redis_server: RedisServer, make_broker: Any
) -> None:
    """A stream idle past its meta ttl is gone; the next publication starts one in a later meta-ttl window,
    so with another epoch: a position of the old stream is refused, not matched against new offsets."""
    from tests.nodes import eventually

    broker, _ = await make_broker([redis_server.url])
    policy = HistoryPolicy(10, 0.2, meta_ttl=0.3)
    old = (await broker.publish(KEY, b"1", history=policy)).position
    meta = "sb:meta:{" + route_of(*KEY) + "}"

    async def expired() -> bool:
        return redis_server.command("EXISTS", meta) == b":0\r\n"

    await eventually(expired)
    assert (await broker.history(KEY, limit=0, meta_ttl=0.3)).position.epoch != old.epoch
    new = (await broker.publish(KEY, b"2", history=policy)).position
    assert new.offset == 1 and new.epoch != old.epoch
    with pytest.raises(UnrecoverablePosition):
        await broker.history(KEY, since=old, meta_ttl=0.3)


async def test_publish_while_redis_is_stopped_raises(redis_server: RedisServer, make_broker: Any) -> None:
    broker, _ = await make_broker([redis_server.url], connect_timeout=2.0)
    redis_server.stop()
    for kw in ({"history": HIST}, {}, {"idempotency_key": "k"}):
        with pytest.raises(BrokerUnavailable):
            await broker.publish(KEY, b"1", **kw)
    with pytest.raises(BrokerUnavailable):
        await broker.publish_join(KEY, ClientInfo("u", "c"))
    with pytest.raises(BrokerUnavailable):
        await broker.subscribe(KEY)
    with pytest.raises(BrokerUnavailable):
        await broker.remove_history(KEY)


async def test_sharded_over_two_servers(redis_two: list[RedisServer], make_broker: Any) -> None:
    broker, handler = await make_broker([s.url for s in redis_two])
    keys = [("t", f"chat:{i}") for i in range(40)]
    for k in keys:
        await broker.subscribe(k)
        await broker.publish(k, b"x", history=HIST)
    await handler.pubs_n(len(keys))
    for i, server in enumerate(redis_two):
        mine = {route_of(*k) for k in keys if broker.shards.shard_for(route_of(*k)).index == i}
        assert mine, "every server gets channels"
        stored = {
            k.decode().split("{", 1)[1].rstrip("}") for k in server.command("KEYS", "*").split(b"\r\n")[2::2]
        }
        assert stored == mine


async def test_cluster_channels_spread_over_masters(redis_cluster: RedisCluster, make_broker: Any) -> None:
    broker, handler = await make_broker(redis_cluster.urls, cluster=True)
    keys = [("t", f"chat:{{{i}}}") for i in range(20)]
    for k in keys:
        await broker.subscribe(k)
    for k in keys:
        assert (await broker.publish(k, b"x", history=HIST)).position.offset == 1
    await handler.pubs_n(len(keys))
    assert {k for k, _ in handler.pubs} == set(keys)
    counts = [int(s.command("DBSIZE")[1:]) for s in redis_cluster.servers]
    assert all(counts) and sum(counts) == 2 * len(keys)
    for k in keys:
        assert offsets((await broker.history(k)).publications) == [1]


async def test_close_leaves_shards_to_their_owner(redis_server: RedisServer, make_broker: Any) -> None:
    """``close`` does not close the shards (presence and the control channel share them): after it they
    are still connected, an unsubscribe still reaches Redis (nothing more is delivered) and publishing and
    history still work."""
    broker, handler = await make_broker([redis_server.url])
    await broker.subscribe(KEY)
    await broker.close()
    shard = broker.shards.shards[0]
    assert shard.connected
    await broker.unsubscribe(KEY)
    assert b"sb:ch:{" + route_of(*KEY).encode() + b"}" not in redis_server.command("PUBSUB", "CHANNELS")
    result = await broker.publish(KEY, b"1", history=HIST)
    assert result.position.offset == 1
    await broker.barrier(KEY)  # a message sent to this node before it would have been dispatched by now
    assert handler.pubs == []
    assert [p.data for p in (await broker.history(KEY)).publications] == [b"1"]
    assert shard.connected


async def test_a_lost_reply_is_unavailable_and_a_retry_with_the_key_publishes_once(
    redis_server: RedisServer, make_broker: Any
) -> None:
    """Redis stops answering mid-publish (SIGSTOP): the publish raises BrokerUnavailable, never a false
    success; whether or not the script ran, a retry with the same idempotency key leaves one publication."""
    import os
    import signal

    broker, _ = await make_broker([redis_server.url], connect_timeout=0.5)
    await broker.publish(KEY, b"before", history=HIST)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BrokerUnavailable):
            await broker.publish(KEY, b"once", history=HIST, idempotency_key="retry-me")
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    again = await broker.publish(KEY, b"once", history=HIST, idempotency_key="retry-me")
    assert again.position.offset == 2
    hist = await broker.history(KEY)
    assert [p.data for p in hist.publications] == [b"before", b"once"]
