"""Live feeds through the official centrifuge-python SDK: fossil delta compression
(``delta=DeltaType.FOSSIL``) over JSON and Protobuf, and the latest value of every key on subscribe and
after a reconnect (cache recovery), with the SDK unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from centrifuge import Client, DeltaType

from tests.conftest import TIMEOUT, RunningHub
from tests.hub import test_feeds
from tests.hub.test_feeds import sensors
from tests.hub.test_sdk_channels import connected, subscribed

feeds = test_feeds.feeds
"""A hub with the feed namespaces of test_feeds."""


@pytest.fixture(params=["json", "protobuf"])
async def raw_sdk(request: Any) -> AsyncIterator[tuple[Any, bool]]:
    """centrifuge-python as an app uses it, payloads untouched: JSON values over JSON, bytes over Protobuf
    (the ``sdk`` fixture's JSON-over-Protobuf client decodes data before the SDK applies a delta)."""
    protobuf = request.param == "protobuf"
    clients: list[Client] = []

    def make(hub: RunningHub, **kw: Any) -> Client:
        client = Client(hub.url, use_protobuf=protobuf, timeout=TIMEOUT, **kw)
        clients.append(client)
        return client

    yield make, protobuf
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def test_the_sdk_decodes_fossil_deltas_over_json_and_protobuf(
    feeds: RunningHub, raw_sdk: tuple[Any, bool]
) -> None:
    make, protobuf = raw_sdk
    client, _ = await connected(make, feeds)
    sub, rec = await subscribed(client, "alarms:sdk", delta=DeltaType.FOSSIL)
    assert sub._delta_negotiated  # noqa: SLF001 - the subscribe result said delta: true
    for n in range(10):
        await feeds.sb.node.publish("alarms:sdk", sensors(n))
    got = [await rec.pub() for _ in range(10)]
    data = [orjson.loads(p.data) if protobuf else p.data for p in got]
    assert data == [sensors(n) for n in range(10)]
    memo = feeds.sb.node.registry.memos[("", "alarms:sdk")]
    assert memo.encodes == 9  # one diff per publication after the first, sent as deltas


async def test_the_sdk_decodes_deltas_of_a_conflated_keyed_feed(
    feeds: RunningHub, raw_sdk: tuple[Any, bool]
) -> None:
    make, protobuf = raw_sdk
    for n in range(3):
        await feeds.sb.node.publish("feed:sdk", {**sensors(n), "sensor": f"s{n}"})
    client, _ = await connected(make, feeds)
    sub, rec = await subscribed(client, "feed:sdk", delta=DeltaType.FOSSIL)
    latest: dict[str, int] = {}
    for n in range(3, 40):
        await feeds.sb.node.publish("feed:sdk", {**sensors(n), "sensor": f"s{n % 3}"})
    expected = {f"s{n % 3}": n for n in range(37, 40)}
    while latest != expected:
        pub = await rec.pub()
        data = orjson.loads(pub.data) if protobuf else pub.data
        assert data == {**sensors(data["n"]), "sensor": data["sensor"]}
        latest[data["sensor"]] = data["n"]


async def test_a_dashboard_opens_and_reconnects_to_the_latest_of_every_sensor(
    feeds: RunningHub, sdk: Any
) -> None:
    for n in range(30):
        await feeds.sb.node.publish("feed:dash", {"sensor": f"t{n % 5}", "value": n})
    client, _ = await connected(sdk, feeds)
    _, rec = await subscribed(client, "feed:dash")  # no position: the SDK asks for nothing
    _, ctx = await rec.next("subscribed")
    assert ctx.was_recovering and ctx.recovered
    first = {}
    while len(first) < 5:
        pub = await rec.pub()
        first[pub.data["sensor"]] = pub.data["value"]
    assert first == {f"t{i}": 25 + i for i in range(5)}

    await client.disconnect()
    for n in range(30, 33):  # while it is away, three sensors change
        await feeds.sb.node.publish("feed:dash", {"sensor": f"t{n % 5}", "value": n})
    await client.connect()
    _, ctx = await rec.next("subscribed")
    assert ctx.recovered
    after = {}
    while len(after) < 5:
        pub = await rec.pub()
        after[pub.data["sensor"]] = pub.data["value"]
    assert after == {"t0": 30, "t1": 31, "t2": 32, "t3": 28, "t4": 29}


async def test_a_feed_with_nothing_yet_says_not_recovered(feeds: RunningHub, sdk: Any) -> None:
    client, _ = await connected(sdk, feeds)
    _, rec = await subscribed(client, "state:nothing")
    _, ctx = await rec.next("subscribed")
    assert ctx.was_recovering and not ctx.recovered
    await feeds.sb.node.publish("state:nothing", {"on": True})
    assert (await rec.pub()).data == {"on": True}
