"""Channel occupancy across nodes in Redis (standalone, sharded, cluster): each hub-wide transition is
reported once, to the node whose change made it; a dead node's channels are vacated by one purger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.presence.test_presence_redis as presence_redis
from channels.names import ChannelKey
from channels.redis_shards import RedisShards
from presence.occupancy import Transition
from presence.occupancy_redis import RedisOccupancy
from tests.presence.test_presence_redis import Deployment

deployment = presence_redis.deployment  # the fixture, defined in tests/presence/test_presence_redis.py

Make = Callable[..., Awaitable[RedisOccupancy]]


@pytest.fixture
async def make_node() -> AsyncIterator[Make]:
    opened: list[RedisShards] = []

    async def make(d: Deployment, name: str, ttl: float = 60.0) -> RedisOccupancy:
        shards = RedisShards(d.urls, cluster=d.cluster, connect_timeout=2.0)
        opened.append(shards)
        await shards.start()
        return RedisOccupancy(shards, ttl=ttl, owner=f"{name}/incarnation")

    yield make
    for shards in opened:
        await shards.close()


CHANNELS: list[ChannelKey] = [("", "chat:a"), ("", "chat:b"), ("acme", "chat:a")]
ops = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(CHANNELS), st.booleans()), min_size=1, max_size=25
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
async def test_each_transition_is_reported_once_by_the_node_that_made_it(
    ops: Sequence[tuple[int, ChannelKey, bool]],
    deployment: Deployment,
    make_node: Make,  # noqa: F811
) -> None:
    deployment.flush()
    nodes = [await make_node(deployment, f"n{i}") for i in range(3)]
    holders: dict[ChannelKey, set[int]] = {key: set() for key in CHANNELS}
    for node, key, has in ops:
        before = bool(holders[key])
        (holders[key].add if has else holders[key].discard)(node)
        after = bool(holders[key])
        reported = await nodes[node].update([(key, has)])
        expected = [] if before == after else [(key, after)]
        assert [(t.key, t.occupied) for t in reported] == expected


async def test_a_dead_nodes_channels_are_vacated_once_by_one_purger(
    deployment: Deployment,
    make_node: Make,  # noqa: F811
) -> None:
    deployment.flush()
    dead, alive, other = [await make_node(deployment, n) for n in ("dead", "alive", "other")]
    shared, alone = ("", "chat:shared"), ("", "chat:alone")
    assert [t.occupied for t in await dead.update([(shared, True), (alone, True)])] == [True, True]
    assert await alive.update([(shared, True)]) == []
    results: list[list[Transition]] = await asyncio.gather(alive.purge(dead.owner), other.purge(dead.owner))
    assert sorted((t.key, t.occupied) for r in results for t in r) == [(alone, False)]
    assert await alive.purge(dead.owner) == []  # done once
    assert [(t.key, t.occupied) for t in await alive.update([(shared, False)])] == [(shared, False)]
    assert [t.occupied for t in await other.update([(alone, True)])] == [True]  # free again


async def test_a_share_that_runs_out_ends_and_the_next_subscriber_occupies_again(
    deployment: Deployment,
    make_node: Make,  # noqa: F811
) -> None:
    deployment.flush()
    silent = await make_node(deployment, "silent", ttl=0.3)
    later = await make_node(deployment, "later", ttl=0.3)
    key = ("", "chat:expiring")
    assert [t.occupied for t in await silent.update([(key, True)])] == [True]
    assert await later.update([(key, True)]) == []  # occupied by silent's share
    assert [t.occupied for t in await later.update([(key, False)])] == []
    await asyncio.sleep(0.5)  # past the ttl: silent never renewed its share
    assert [t.occupied for t in await later.update([(key, True)])] == [True]
