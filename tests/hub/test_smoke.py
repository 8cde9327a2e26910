from __future__ import annotations

import asyncio

from tests.conftest import TIMEOUT


async def test_sdk_publish_reaches_subscriber(hub, sdk):
    from centrifuge import SubscriptionEventHandler

    got: asyncio.Queue = asyncio.Queue()

    class Events(SubscriptionEventHandler):
        async def on_publication(self, ctx):
            await got.put(ctx.pub.data)

    client = sdk(hub)
    await client.connect()
    sub = client.new_subscription("news", events=Events())
    await sub.subscribe()
    await sub.ready(TIMEOUT)
    await sub.publish({"n": 1})
    assert await asyncio.wait_for(got.get(), TIMEOUT) == {"n": 1}


async def test_raw_protocol_round_trip(hub, raw_client):
    c = await raw_client(hub, connect={})
    reply = await c.command("subscribe", {"channel": "room"})
    assert reply["subscribe"]["recoverable"] is True
    await c.command("publish", {"channel": "room", "data": {"x": 1}})
    push = await c.push("pub")
    assert push == {"channel": "room", "pub": {"data": {"x": 1}, "offset": 1, "info": push["pub"]["info"]}}
