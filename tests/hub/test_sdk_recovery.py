"""Recovery through the official centrifuge-python SDK: a subscriber whose connection drops while
publications go on gets every missed publication exactly once and in order when it comes back - or, when
history no longer holds the gap, ``recovered=False`` and none of them (never a partial set)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from hub import codes
from tests.conftest import OPEN, TIMEOUT, token
from tests.hub.test_sdk_channels import Rec, connected, subscribed


async def drop_and_hold(hub: Any, client: Any, rec: Rec, how: str) -> None:
    """End the client's connection abruptly and hold its reconnect (see ``Rec.gate``) until the test
    opens the gate; return once the SDK has noticed the loss."""
    rec.gate.clear()
    if how == "server":
        hub.sb.node.registry.clients[client.client_id].disconnect(codes.FORCE_RECONNECT.error())
        expected = codes.FORCE_RECONNECT.code
    else:
        client._conn.transport.abort()  # the TCP connection is gone without a close handshake
        expected = 1  # centrifuge-python's "transport closed"
    while True:
        _, ctx = await rec.next("connecting")
        if ctx.code != 0:  # 0: the connect() call at the start, not a lost connection
            break
    assert ctx.code == expected


async def pubs_until(rec: Rec, last: int) -> list[Any]:
    out = []
    while True:
        pub = await rec.pub()
        out.append(pub)
        if pub.data["n"] == last:
            return out


@pytest.mark.parametrize("how", ["server", "client"])
async def test_missed_publications_recovered_exactly_once_in_order(hub, sdk, how):
    client, rec = await connected(sdk, hub, token=token("sub"))
    sub, sub_rec = await subscribed(client, "chat:room")  # recovery is forced by the namespace
    _, first = await sub_rec.next("subscribed")
    assert (first.recoverable, first.was_recovering, first.recovered) == (True, False, False)

    for n in range(1, 4):
        await hub.sb.publish("chat:room", {"n": n})
    received = await pubs_until(sub_rec, 3)

    await drop_and_hold(hub, client, rec, how)
    for n in range(4, 7):  # while the subscriber is away
        await hub.sb.publish("chat:room", {"n": n})
    rec.gate.set()

    _, again = await sub_rec.next("subscribed")
    assert (again.was_recovering, again.recovered) == (True, True)
    assert again.stream_position is not None and again.stream_position.offset == 6
    assert again.stream_position.epoch == first.stream_position.epoch
    for n in range(7, 9):  # live again
        await hub.sb.publish("chat:room", {"n": n})
    received += await pubs_until(sub_rec, 8)
    await hub.sb.publish("chat:room", {"n": 9})
    received += await pubs_until(sub_rec, 9)  # nothing (no duplicate) came between 8 and 9

    assert [p.data["n"] for p in received] == list(range(1, 10))
    assert [p.offset for p in received] == list(range(1, 10))
    assert hub.sb.node.registry.clients[client.client_id].user == "sub"


async def test_gap_beyond_history_is_not_recovered_and_nothing_partial_delivered(make_hub, sdk):
    hub = await make_hub(channel=dataclasses.replace(OPEN, history_size=3))
    client, rec = await connected(sdk, hub, token=token("sub"))
    _, sub_rec = await subscribed(client, "room")

    for n in range(1, 3):
        await hub.sb.publish("room", {"n": n})
    received = await pubs_until(sub_rec, 2)

    await drop_and_hold(hub, client, rec, "server")
    for n in range(3, 9):  # six missed, history keeps three (6, 7, 8)
        await hub.sb.publish("room", {"n": n})
    rec.gate.set()

    _, again = await sub_rec.next("subscribed")
    assert (again.was_recovering, again.recovered) == (True, False)
    assert again.stream_position is not None and again.stream_position.offset == 8
    await hub.sb.publish("room", {"n": 9})
    received += await pubs_until(sub_rec, 9)
    assert [p.data["n"] for p in received] == [1, 2, 9]  # not 6, 7, 8: no partial set


async def test_server_side_subscription_recovers_on_reconnect(hub, sdk):
    client, rec = await connected(sdk, hub, token=token("alice", channels=["feed"]))
    _, first = await rec.next("subscribed")
    assert (first.channel, first.recoverable, first.was_recovering) == ("feed", True, False)

    for n in range(1, 3):
        await hub.sb.publish("feed", {"n": n})
    received = await pubs_until(rec, 2)

    await drop_and_hold(hub, client, rec, "server")
    for n in range(3, 6):
        await hub.sb.publish("feed", {"n": n})
    rec.gate.set()

    _, again = await rec.next("subscribed")
    assert (again.channel, again.was_recovering, again.recovered) == ("feed", True, True)
    await hub.sb.publish("feed", {"n": 6})
    received += await pubs_until(rec, 6)
    assert [(p.data["n"], p.offset) for p in received] == [(n, n) for n in range(1, 7)]


async def test_recovery_while_publications_never_stop(make_hub, sdk):
    """A publisher publishes without pause while the subscriber loses its connection twice (once closed
    by the hub, once cut on the client side) and recovers: in the end it has every publication once."""
    hub = await make_hub(
        channel=dataclasses.replace(OPEN, history_size=100_000), client_recovery_max_publication_limit=100_000
    )
    publisher, _ = await connected(sdk, hub)
    client, rec = await connected(sdk, hub, token=token("sub"))
    _, sub_rec = await subscribed(client, "live")
    stop = asyncio.Event()
    published = 0

    async def publish_forever() -> None:
        nonlocal published
        while not stop.is_set():
            await publisher.publish("live", {"n": published + 1})  # paced by its round trip
            published += 1

    def numbers() -> list[int]:
        return [ctx.pub.data["n"] for kind, ctx in sub_rec.seen if kind == "publication"]

    async def past(n: int) -> None:
        """Wait until the subscriber has had a publication numbered ``n`` or later."""
        while not numbers() or numbers()[-1] < n:
            await sub_rec.next("publication")

    task = asyncio.create_task(publish_forever())
    try:
        await past(20)
        hub.sb.node.registry.clients[client.client_id].disconnect(codes.FORCE_RECONNECT.error())
        _, ctx = await sub_rec.next("subscribed")
        assert (ctx.was_recovering, ctx.recovered) == (True, True)
        await past(published + 10)
        client._conn.transport.abort()
        _, ctx = await sub_rec.next("subscribed")
        assert (ctx.was_recovering, ctx.recovered) == (True, True)
        await past(published + 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    await past(published)

    assert numbers() == list(range(1, published + 1))
    offsets = [ctx.pub.offset for kind, ctx in sub_rec.seen if kind == "publication"]
    assert offsets == list(range(1, published + 1))
    assert [kind for kind, _ in sub_rec.seen].count("subscribed") == 3
