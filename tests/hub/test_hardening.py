"""Regression tests for what review found: each would fail on the code before its fix."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest

from channels.broker_memory import MemoryBroker
from hub.hooks import ConnectingResult, Hooks
from hub.writer import FlushScheduler, Writer
from tests.conftest import OPEN, TIMEOUT, token
from tests.hub.test_session import Conn, FakeTransport, make_node

HISTORY = dataclasses.replace(OPEN, history_size=1000, history_ttl=300.0)


class FailingBroker(MemoryBroker):
    """Fails the history read of one channel, as a backend error would."""

    def __init__(self, bad_channel: str) -> None:
        super().__init__()
        self.bad = bad_channel

    async def history(self, key, **kw):  # type: ignore[no-untyped-def]
        if key[1] == self.bad:
            raise RuntimeError("backend down")
        return await super().history(key, **kw)


async def test_failed_connect_leaves_no_ghost_subscriptions() -> None:
    node = make_node(broker=FailingBroker("b"))
    conn = Conn(node)
    reply = await conn.call("connect", {"token": token("ann", channels=["a", "b"])})
    assert reply["error"]["code"] == 100
    assert node.registry.pending == {} and node.registry.channels == {}
    assert node.registry.clients == {} and node.registry.users == {}
    assert await node.presence.get(("", "a")) == {}
    assert conn.client.subs == {}
    await node.publish("a", {"n": 1})  # nothing buffers it any more
    assert node.registry.pending == {}


async def test_malformed_recovery_of_a_server_side_channel_means_no_recovery() -> None:
    node = make_node()
    conn = Conn(node)
    subs = {"a": {"recover": True, "offset": -0.5}, "b": {"recover": True, "offset": "x", "epoch": 3}}
    reply = await conn.call("connect", {"token": token("ann", channels=["a", "b"]), "subs": subs})
    assert set(reply["connect"]["subs"]) == {"a", "b"}
    assert not any(r.get("was_recovering") for r in reply["connect"]["subs"].values())


async def test_subscription_token_is_not_a_connection_token(hub, raw_client) -> None:
    c = await raw_client(hub)
    await c.send_raw(orjson.dumps({"id": 1, "connect": {"token": token("alice", channel="$x")}}).decode())
    assert await c.closed() == (3500, "invalid token")


async def test_subscription_token_of_another_tenant_is_refused(hub, raw_client) -> None:
    c = await raw_client(hub, connect={"token": token("alice", tenant="globex")})
    foreign = token("alice", channel="$x", tenant="acme")
    assert (await c.command("subscribe", {"channel": "$x", "token": foreign}))["error"]["code"] == 103
    own = token("alice", channel="$x", tenant="globex")
    assert "subscribe" in await c.command("subscribe", {"channel": "$x", "token": own})
    refresh = await c.command("sub_refresh", {"channel": "$x", "token": foreign})
    assert refresh["error"]["code"] == 103


def test_embedding_without_config_is_not_development_mode(monkeypatch) -> None:
    from hub import Switchboard

    for name in list(__import__("os").environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    sb = Switchboard()
    assert not sb.config.dev_mode
    assert not sb.config.allow_anonymous_connect_without_token


@pytest.mark.parametrize(("missed", "recovered"), [(5, True), (6, False)])
async def test_recovery_is_capped(missed: int, recovered: bool) -> None:
    node = make_node(channel=HISTORY, client_recovery_max_publication_limit=5)
    first = Conn(node)
    await first.call("connect", {})
    sub = (await first.call("subscribe", {"channel": "c"}))["subscribe"]
    for n in range(missed):
        await node.publish("c", {"n": n})
    again = Conn(node)
    await again.call("connect", {})
    req = {"channel": "c", "recover": True, "offset": sub.get("offset", 0), "epoch": sub["epoch"]}
    result = (await again.call("subscribe", req))["subscribe"]
    assert result["recovered"] is recovered
    assert len(result.get("publications", [])) == (missed if recovered else 0)


async def test_server_subscribe_goes_on_past_a_failing_or_closing_connection(monkeypatch) -> None:
    from hub.client import Client

    node = make_node()
    conns = [Conn(node) for _ in range(4)]
    for c in conns:
        await c.call("connect", {"token": token("ann")})
    real = Client.server_subscribe

    async def flaky(self: Client, name: str) -> bool:
        if self is conns[0].client:
            raise RuntimeError("boom")
        return await real(self, name)

    monkeypatch.setattr(Client, "server_subscribe", flaky)
    node.disconnect_user("ann", client_id=conns[1].client.id)  # closing, not yet cleaned up
    assert await node.subscribe_user("ann", "news") == 2
    assert [("news" in c.client.subs) for c in conns] == [False, False, True, True]


async def test_slow_command_does_not_cost_a_healthy_client_its_connection(make_hub, raw_client) -> None:
    async def slow(ctx: Any) -> str:
        await asyncio.sleep(2.5)  # time is the subject: longer than ping + pong timeout
        return "done"

    hub = await make_hub(hooks=Hooks(rpc={"slow": slow}), client_ping_interval=1, client_pong_timeout=1)
    c = await raw_client(hub, connect={})
    reply = await c.command("rpc", {"method": "slow"})
    assert reply["rpc"]["data"] == "done"
    assert "publish" in await c.command("publish", {"channel": "x", "data": 1})


async def test_refresh_of_a_connection_whose_tenant_came_from_a_hook(make_hub, raw_client) -> None:
    async def place(ctx: Any) -> ConnectingResult:
        return ConnectingResult(tenant="from-hook")

    hub = await make_hub(hooks=Hooks(on_connecting=place))
    c = await raw_client(hub, connect={"token": token("ann", ttl=60)})
    reply = await c.command("refresh", {"token": token("ann", ttl=120)})
    assert reply["refresh"]["expires"] is True
    await c.send_raw(orjson.dumps({"id": 99, "refresh": {"token": token("bob", ttl=120)}}).decode())
    assert await c.closed() == (3500, "invalid token")


async def test_deeply_nested_data_is_a_bad_request() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.call("connect", {})
    deep = "[" * 300 + "0" + "]" * 300  # parses (orjson reads 1024 levels) but cannot be written (254)
    await conn.client.handle_frame('{"id":7,"publish":{"channel":"c","data":' + deep + "}}")
    node.scheduler.flush()
    assert conn.transport.take()[-1] == {"id": 7, "error": {"code": 107, "message": "bad request"}}


async def test_node_restarts_after_stop() -> None:
    node = make_node()
    await node.start()
    await node.stop()
    await node.start()
    assert node.started and not node.stopping
    await node.stop()
    assert not node.started


def test_a_broken_transport_does_not_silence_the_others() -> None:
    class Broken(FakeTransport):
        def write_messages(self, messages: list[bytes]) -> int:
            raise OSError("socket gone")

    loop = asyncio.new_event_loop()
    try:
        scheduler = FlushScheduler(loop)
        errors: list[str] = []
        broken = Writer(
            Broken(), scheduler, 1 << 20, lambda: errors.append("slow"), lambda: errors.append("write")
        )
        healthy_transport = FakeTransport()
        healthy = Writer(healthy_transport, scheduler, 1 << 20, lambda: None)
        broken.push(b"1")
        healthy.push(b"2")
        scheduler.flush()
        assert errors == ["write"] and healthy_transport.writes == [[b"2"]]
        broken.push(b"3")  # closed now: ignored
        assert broken.pending == []
    finally:
        loop.close()


async def test_timeout_constant_is_generous() -> None:
    assert TIMEOUT >= 10
