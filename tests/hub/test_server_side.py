"""Server-initiated pushes through the embedding API, observed by the official SDK: subscribe,
unsubscribe, message, disconnect."""

from __future__ import annotations

import asyncio

from centrifuge import ClientEventHandler

from tests.conftest import TIMEOUT, token


class Recorder(ClientEventHandler):
    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()

    async def on_subscribed(self, ctx):
        await self.events.put(("subscribed", ctx.channel))

    async def on_unsubscribed(self, ctx):
        await self.events.put(("unsubscribed", ctx.channel))

    async def on_publication(self, ctx):
        await self.events.put(("pub", ctx.channel, ctx.pub.data))

    async def on_message(self, ctx):
        await self.events.put(("message", ctx.data))

    async def on_disconnected(self, ctx):
        await self.events.put(("disconnected", ctx.code))

    async def next(self, kind: str):
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = await self.events.get()
                if event[0] == kind:
                    return event


async def test_server_subscribe_publish_unsubscribe(hub, sdk):
    rec = Recorder()
    client = sdk(hub, token=token("ann"), events=rec)
    await client.connect()
    await client.ready(TIMEOUT)
    assert await hub.sb.subscribe("ann", "news") == 1
    assert await rec.next("subscribed") == ("subscribed", "news")
    await hub.sb.publish("news", {"n": 1})
    assert await rec.next("pub") == ("pub", "news", {"n": 1})
    assert await hub.sb.unsubscribe("ann", "news") == 1
    assert await rec.next("unsubscribed") == ("unsubscribed", "news")
    assert hub.sb.node.registry.subscriber_count(("", "news")) == 0


async def test_message_reaches_every_device_of_the_user_only(hub, raw_client):
    # centrifuge-python has no handler for message pushes, so this is checked at the protocol level.
    phones = [await raw_client(hub, connect={"token": token("ann")}) for _ in range(2)]
    other = await raw_client(hub, connect={"token": token("bob")})
    assert hub.sb.send("ann", {"alert": "hi"}) == 2
    for phone in phones:
        assert await phone.push("message") == {"message": {"data": {"alert": "hi"}}}
    assert hub.sb.send("bob", "second") == 1
    assert await other.push("message") == {"message": {"data": "second"}}  # bob got nothing before this


async def test_server_disconnect_is_terminal_for_the_sdk(hub, sdk):
    rec = Recorder()
    client = sdk(hub, token=token("ann"), events=rec)
    await client.connect()
    await client.ready(TIMEOUT)
    assert hub.sb.disconnect("ann") == 1
    assert await rec.next("disconnected") == ("disconnected", 3503)
    assert client.state.value == "disconnected"
