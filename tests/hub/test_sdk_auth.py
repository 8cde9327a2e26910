"""Tokens and permissions through the official centrifuge-python SDK: subscription tokens, namespace and
user-limited channel rules, connection token refresh and expiry, invalid tokens, and the server-side
subscriptions of a token's ``channels`` claim."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from centrifuge import ClientState, ReplyError, SubscriptionState, SubscriptionUnsubscribedError

from hub.auth import mint_token
from hub.node import TICK
from tests.conftest import TIMEOUT, token
from tests.hub.test_sdk_channels import Rec, connected, subscribed


def exp_of(tok: str) -> int:
    return int(jwt.decode(tok, options={"verify_signature": False})["exp"])


async def refused(client: Any, channel: str, **kw: Any) -> tuple[Any, Any]:
    """Subscribe where the hub must refuse: return (subscription, its unsubscribed context)."""
    rec = Rec()
    sub = client.new_subscription(channel, events=rec, **kw)
    await sub.subscribe()
    kind, ctx = await rec.next("subscribed", "unsubscribed")
    assert kind == "unsubscribed", (channel, ctx)
    assert sub.state == SubscriptionState.UNSUBSCRIBED
    with pytest.raises(SubscriptionUnsubscribedError):
        await sub.ready(TIMEOUT)
    client.remove_subscription(sub)
    return sub, ctx


# ---------------------------------------------------------------- permissions


async def test_locked_channel_takes_a_subscription_token(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice"))
    _, ctx = await refused(alice, "locked:x")
    assert ctx.code == 103

    sub, rec = await subscribed(alice, "locked:x", token=token("alice", channel="locked:x"))
    await hub.sb.publish("locked:x", {"secret": 1})
    pub = await rec.pub()
    assert (pub.data, pub.offset) == ({"secret": 1}, 1)
    assert hub.sb.node.registry.clients[alice.client_id].subs["locked:x"].info.user == "alice"


@pytest.mark.parametrize(
    "sub_token",
    [
        pytest.param(lambda: token("alice", channel="locked:y"), id="another-channel"),
        pytest.param(lambda: token("bob", channel="locked:x"), id="another-user"),
        pytest.param(lambda: mint_token("x" * 40, "alice", channel="locked:x"), id="another-secret"),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
    ],
)
async def test_subscription_token_must_match_channel_user_and_key(hub, sdk, sub_token):
    alice, rec = await connected(sdk, hub, token=token("alice"))
    _, ctx = await refused(alice, "locked:x", token=sub_token())
    assert ctx.code == 103
    assert alice.state == ClientState.CONNECTED  # a refused subscription does not end the connection
    assert hub.sb.node.registry.clients[alice.client_id].subs == {}


async def test_expired_subscription_token_is_replaced_by_get_token(hub, sdk):
    calls: list[str] = []

    async def get_token(channel: str) -> str:
        calls.append(channel)
        return token("alice", channel=channel, ttl=60)

    alice, _ = await connected(sdk, hub, token=token("alice"))
    expired = token("alice", channel="locked:x", ttl=10, now=time.time() - 60)
    sub, rec = await subscribed(alice, "locked:x", token=expired, get_token=get_token)
    assert [e.code for e in rec.errors() if isinstance(e, ReplyError)] == [109]
    assert calls == ["locked:x"]


async def test_unknown_namespace_is_102(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice"))
    _, ctx = await refused(alice, "nope:x")
    assert ctx.code == 102
    with pytest.raises(ReplyError) as err:
        await alice.publish("nope:x", 1)
    assert err.value.code == 102


async def test_chat_channel_operations_need_a_subscription(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice"))
    for call in (
        lambda: alice.publish("chat:room", {"text": "hi"}),
        lambda: alice.history("chat:room", limit=-1),
        lambda: alice.presence("chat:room"),
        lambda: alice.presence_stats("chat:room"),
    ):
        with pytest.raises(ReplyError) as err:
            await call()
        assert err.value.code == 103
    assert (await hub.sb.node.broker.history(("", "chat:room"), limit=-1)).publications == []  # not published

    sub, rec = await subscribed(alice, "chat:room")
    await alice.publish("chat:room", {"text": "now"})
    assert (await rec.pub()).data == {"text": "now"}


async def test_user_limited_channel(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice"))
    bob, _ = await connected(sdk, hub, token=token("bob"))
    anon, _ = await connected(sdk, hub)
    sub, rec = await subscribed(alice, "personal:inbox#alice")
    _, ctx = await refused(bob, "personal:inbox#alice")
    assert ctx.code == 103
    _, ctx = await refused(anon, "personal:inbox#alice")
    assert ctx.code == 103

    await hub.sb.publish("personal:inbox#alice", "for alice")
    assert (await rec.pub()).data == "for alice"
    with pytest.raises(ReplyError) as err:
        await bob.publish("personal:inbox#alice", "spoof")
    assert err.value.code == 103


# ---------------------------------------------------------------- connection tokens


async def test_refreshed_connection_outlives_its_first_token(hub, sdk):
    issued: list[int] = []
    refreshed = asyncio.Event()

    async def get_token() -> str:
        tok = token("alice", ttl=3)
        issued.append(exp_of(tok))
        if len(issued) >= 2:
            refreshed.set()
        return tok

    client, rec = await connected(sdk, hub, get_token=get_token)
    sub, sub_rec = await subscribed(client, "chat:refresh")
    first_exp = issued[0]
    await asyncio.wait_for(refreshed.wait(), TIMEOUT)  # the SDK asked for a new token before the old expired

    # Time is the subject: wait until the hub would have closed a connection still on the first token
    # (its expiry, plus the close delay, plus one pass of the session clock).
    deadline = first_exp + hub.sb.config.client_expired_close_delay + TICK + 0.5
    await asyncio.sleep(max(0.0, deadline - time.time()))

    session = hub.sb.node.registry.clients[client.client_id]  # the same connection, still registered
    assert session.expires_at > first_exp
    assert session.user == "alice"
    await hub.sb.publish("chat:refresh", "still here")
    assert (await sub_rec.pub()).data == "still here"
    assert client.state == ClientState.CONNECTED
    assert [kind for kind, _ in rec.seen] == ["connecting", "connected"]  # no reconnect, no disconnect
    assert [kind for kind, _ in sub_rec.seen] == ["subscribing", "subscribed", "publication"]
    assert len(issued) >= 2


async def test_expiring_token_without_refresh_is_closed_with_3005(hub, sdk, raw_client):
    tok = token("alice", ttl=2)
    exp = exp_of(tok)
    raw = await raw_client(hub)
    reply = await raw.command("connect", {"token": tok})
    assert reply["connect"]["expires"] is True
    assert 1 <= reply["connect"]["ttl"] <= 2

    client, rec = await connected(sdk, hub, token=tok)  # no get_token: the SDK cannot refresh

    code, reason = await raw.closed()
    assert code == 3005
    assert time.time() > exp + hub.sb.config.client_expired_close_delay  # not before the grace period

    await rec.next("connected")  # past the events of the first connect
    kind, ctx = await rec.next("connecting", "disconnected")
    assert (kind, ctx.code) == ("connecting", 3005)  # 3005 asks the client to reconnect...
    # ...where the expired token is refused (109) and, with no get_token to get another, the SDK stops.
    kind, ctx = await rec.next("connecting", "disconnected")
    assert kind == "disconnected"
    assert [e.code for e in rec.errors() if isinstance(e, ReplyError)] == [109]
    assert client.state == ClientState.DISCONNECTED


async def test_expired_token_at_connect_is_109_and_sdk_gets_a_new_one(hub, sdk, raw_client):
    expired = token("alice", ttl=10, now=time.time() - 60)
    raw = await raw_client(hub)
    reply = await raw.command("connect", {"token": expired})
    assert reply["error"]["code"] == 109

    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return token("alice", ttl=60)

    client, rec = await connected(sdk, hub, token=expired, get_token=get_token)
    assert [e.code for e in rec.errors() if isinstance(e, ReplyError)] == [109]
    assert calls == 1
    assert hub.sb.node.registry.clients[client.client_id].user == "alice"
    assert [kind for kind, _ in rec.seen if kind in ("connected", "disconnected")] == ["connected"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: "garbage", id="garbage"),
        pytest.param(lambda: mint_token("y" * 40, "alice"), id="another-secret"),
    ],
)
async def test_invalid_connection_token_is_terminal_3500(hub, sdk, bad):
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return token("alice")

    rec = Rec()
    client = sdk(hub, token=bad(), get_token=get_token, events=rec)
    await client.connect()
    kind, ctx = await rec.next("connected", "disconnected")
    assert (kind, ctx.code) == ("disconnected", 3500)
    assert client.state == ClientState.DISCONNECTED
    assert calls == 0  # an invalid token is not an expired one: nothing to refresh
    assert hub.sb.node.registry.clients == {}


# ---------------------------------------------------------------- server-side subscriptions


async def test_channels_claim_subscribes_from_the_server_side(hub, sdk):
    rec = Rec()
    client = sdk(hub, token=token("alice", channels=["news", "chat:alerts", "nohist:ticks"]), events=rec)
    await client.connect()
    await client.ready(TIMEOUT)

    subs = {}
    for _ in range(3):
        _, ctx = await rec.next("subscribed")
        subs[ctx.channel] = ctx
    assert set(subs) == {"news", "chat:alerts", "nohist:ticks"}
    for name in ("news", "chat:alerts"):
        assert subs[name].recoverable and subs[name].positioned
        assert subs[name].stream_position is not None and subs[name].stream_position.offset == 0
        assert not subs[name].was_recovering
    assert not subs["nohist:ticks"].recoverable and subs["nohist:ticks"].stream_position is None

    await hub.sb.publish("news", {"n": 1})
    await hub.sb.publish("chat:alerts", {"n": 2})
    await hub.sb.publish("nohist:ticks", {"n": 3})
    got = []
    for _ in range(3):
        _, ctx = await rec.next("publication")
        got.append((ctx.channel, ctx.pub.data, ctx.pub.offset))
    assert got == [("news", {"n": 1}, 1), ("chat:alerts", {"n": 2}, 1), ("nohist:ticks", {"n": 3}, 0)]

    other, _ = await connected(sdk, hub, token=token("bob"))
    presence = (await other.presence("news")).clients
    assert {cid: info.user for cid, info in presence.items()} == {client.client_id: "alice"}
