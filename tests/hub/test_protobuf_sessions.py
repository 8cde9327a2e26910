"""Protobuf beside JSON on one hub: negotiation, cross-protocol fan-out (encoded once per format), and
the JSON-payload rule. The whole SDK suite also runs over Protobuf (the ``sdk`` fixture's params)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from centrifuge import ReplyError

from hub import wire
from tests.conftest import RunningHub, token
from tests.hub.test_sdk_channels import connected, subscribed

pytestmark = pytest.mark.all_websocket_modes


@pytest.fixture
def proto_sdk(sdk: Any) -> Any:
    """The SDK factory in Protobuf mode only (see ``protobuf_only``)."""
    return sdk


protobuf_only = pytest.mark.parametrize("sdk", ["protobuf"], indirect=True)


@protobuf_only
async def test_sdk_protobuf_session_speaks_protobuf(hub: RunningHub, proto_sdk: Any) -> None:
    client, _ = await connected(proto_sdk, hub, token=token("alice"))
    (session,) = [c for c in hub.sb.node.sessions if c.id == client.client_id]
    assert session.fmt == wire.PROTOBUF


@protobuf_only
async def test_protobuf_and_json_subscribers_get_the_same_publication(
    hub: RunningHub, proto_sdk: Any, raw_client: Any
) -> None:
    pb, _ = await connected(proto_sdk, hub, token=token("alice"))
    sub, rec = await subscribed(pb, "chat:mixed")
    pb2, _ = await connected(proto_sdk, hub, token=token("carol"))
    _, rec2 = await subscribed(pb2, "chat:mixed")
    js = await raw_client(hub, connect={"token": token("bob")})
    js2 = await raw_client(hub, connect={"token": token("dave")})
    for raw in (js, js2):
        assert "subscribe" in await raw.command("subscribe", {"channel": "chat:mixed"})

    encoded: dict[int, int] = {}
    real = wire.CODECS

    class Counting:
        def __init__(self, fmt: int) -> None:
            self.fmt = fmt

        def __getattr__(self, name: str) -> Any:
            attr = getattr(real[self.fmt], name)
            if name != "encode_publication_push":
                return attr

            def counted(*a: Any) -> bytes:
                encoded[self.fmt] = encoded.get(self.fmt, 0) + 1
                return attr(*a)  # type: ignore[no-any-return]

            return counted

    import hub.node as node_module

    node_module.CODECS = tuple(Counting(i) for i in range(len(real)))  # type: ignore[assignment]
    try:
        await sub.publish({"text": "from protobuf"})
        for r in (rec, rec2):
            assert (await r.pub()).data == {"text": "from protobuf"}
        for raw in (js, js2):
            push = await raw.push("pub")
            assert push["pub"]["data"] == {"text": "from protobuf"}
            assert push["pub"]["info"]["user"] == "alice"
    finally:
        node_module.CODECS = real
    assert encoded == {wire.JSON: 1, wire.PROTOBUF: 1}  # once per format, not per subscriber


@protobuf_only
async def test_protobuf_publish_of_non_json_bytes_is_refused(hub: RunningHub, proto_sdk: Any) -> None:
    from centrifuge import Client

    client = Client(hub.url, use_protobuf=True, token=token("alice"), timeout=10.0)
    try:
        await client.connect()
        sub = client.new_subscription("chat:bin")
        await sub.subscribe()
        with pytest.raises(ReplyError) as err:
            await sub.publish(b"\xff\x00 not json")
        assert err.value.code == 107
        await sub.publish(b'{"ok": true}')  # JSON bytes are fine, and the connection is still usable
    finally:
        await client.disconnect()


@protobuf_only
@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint longer than 10 bytes
        b"\x05\x08",  # a length past the end of the frame
        b"\x02\x0a\xff",  # a string field whose length runs past its message
        b"\x03\x08\x01\x22",  # a truncated field
    ],
)
async def test_protobuf_garbage_closes_only_that_connection(
    hub: RunningHub, proto_sdk: Any, garbage: bytes, caplog: Any
) -> None:
    import logging

    import websockets

    caplog.set_level(logging.INFO)
    healthy, _ = await connected(proto_sdk, hub, token=token("alice"))
    sub, rec = await subscribed(healthy, "chat:calm")
    async with websockets.connect(hub.url, subprotocols=["centrifuge-protobuf"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "centrifuge-protobuf"
        await ws.send(garbage)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 3501
    assert any("bad frame" in r.getMessage() for r in caplog.records)
    await sub.publish({"still": "fine"})
    assert (await rec.pub()).data == {"still": "fine"}


@protobuf_only
async def test_a_token_that_never_expires_encodes_over_protobuf(hub: RunningHub, proto_sdk: Any) -> None:
    """ttl is a uint32: exp 9999999999 (the usual "never") is clamped, not an encoding failure that would
    leave the connection or a subscription half set up."""
    import time

    from hub.auth import mint_token
    from tests.conftest import SECRET

    never = 9999999999 - time.time()
    client, _ = await connected(
        proto_sdk, hub, token=mint_token(SECRET, "alice", ttl=never, channels=["news"])
    )
    sub_token = mint_token(SECRET, "alice", channel="locked:x", ttl=never)
    sub, rec = await subscribed(client, "locked:x", token=sub_token)
    await hub.sb.publish("locked:x", {"n": 1})
    assert (await rec.pub()).data == {"n": 1}
    assert hub.sb.node.registry.pending == {}


async def test_a_subscribe_reply_that_cannot_be_encoded_leaves_nothing_behind(
    make_hub: Any, raw_client: Any
) -> None:
    from hub.hooks import Hooks, SubscribeResult

    async def on_subscribe(ctx: Any) -> SubscribeResult:
        return SubscribeResult(data=object())  # not JSON: the reply cannot be written

    hub = await make_hub(hooks=Hooks(on_subscribe=on_subscribe))
    client = await raw_client(hub, connect={"token": token("alice")})
    reply = await client.command("subscribe", {"channel": "chat:h"})
    assert reply["error"]["code"] == 100
    assert hub.sb.node.registry.pending == {} and hub.sb.node.registry.fanout == {}
    again = await client.command("subscribe", {"channel": "chat:h"})
    assert again["error"]["code"] == 100  # not 105: the failed one did not stay subscribed
