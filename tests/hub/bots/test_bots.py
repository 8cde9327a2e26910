"""Bots on a real hub (``hub.bots``): the bot claim and who may carry it, how presence and join pushes show
a bot to the official centrifuge-python SDK, a bot's own limits, and calls of ``agent.*`` methods served by
a centrifuge-python bot: answers, errors, timeouts, a bot that leaves mid-call, every bound."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from centrifuge import ReplyError, SubscriptionEventHandler

from hub.auth import mint_token
from hub.bots.service import BOT_CHANNEL
from tests.conftest import SECRET, TIMEOUT, RawClient, token
from tests.hub.bots.conftest import BOT_SECRET, answer, bot_config, bot_token, serving_bot


async def _refused(raw_client: Any, hub: Any, tok: str) -> tuple[int, str]:
    client: RawClient = await raw_client(hub)
    await client.send_raw(f'{{"id": 1, "connect": {{"token": "{tok}"}}}}')
    return await client.closed()


# ---------------------------------------------------------------- who is a bot


async def test_a_bot_claim_needs_the_bot_key(make_hub: Any, raw_client: Any, caplog: Any) -> None:
    hub = await make_hub(bot_config())
    caplog.set_level(logging.WARNING, logger="switchboard.client")
    # signed with the people's key: refused, with a log line saying why
    assert await _refused(raw_client, hub, token("mallory", bot=True)) == (3500, "invalid token")
    assert "a bot claim on a token not signed with bot_token_hmac_secret_key" in caplog.text
    # with the bot key: a bot claim that is not a boolean, or a bot's info that is not an object
    assert await _refused(raw_client, hub, bot_token("b", bot="yes")) == (3500, "invalid token")
    assert await _refused(raw_client, hub, bot_token("b", info="Helper")) == (3500, "invalid token")
    # the bot key without the claim: a person
    person = await raw_client(hub, connect={"token": bot_token("ann", bot=False)})
    assert (await person.command("rpc", {"method": "bot.serve", "data": {"prefix": "agent."}}))["error"][
        "code"
    ] == 103
    # a hub without a bot key has no bots
    plain = await make_hub()
    assert await _refused(raw_client, plain, bot_token("helper")) == (3500, "invalid token")
    assert await _refused(raw_client, plain, token("helper", bot=True)) == (3500, "invalid token")


async def test_a_refresh_cannot_turn_a_bot_into_a_person(make_hub: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config())
    bot = await raw_client(hub, connect={"token": bot_token("helper", ttl=60)})
    assert "refresh" in await bot.command("refresh", {"token": bot_token("helper", ttl=120)})
    await bot.send_raw(f'{{"id": 9, "refresh": {{"token": "{token("helper", ttl=120)}"}}}}')
    assert await bot.closed() == (3500, "invalid token")


class Joins(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joins: asyncio.Queue[Any] = asyncio.Queue()

    async def on_join(self, ctx: Any) -> None:
        await self.joins.put(ctx.info)


async def test_presence_and_join_show_a_bot_to_the_python_sdk(make_hub: Any, sdk: Any) -> None:
    hub = await make_hub(bot_config())
    person = sdk(hub, token=token("ann", info={"name": "Ann", "bot": True}))  # a person cannot pass as one
    await person.connect()
    joins = Joins()
    room = person.new_subscription("room", events=joins)
    await room.subscribe()
    await room.ready(TIMEOUT)
    bot = sdk(hub, token=bot_token("helper", info={"name": "Helper"}))
    await bot.connect()
    await bot.new_subscription("room").subscribe()
    async with asyncio.timeout(TIMEOUT):
        joined = await joins.joins.get()
        while joined.user != "helper":
            joined = await joins.joins.get()
    assert joined.conn_info == {"bot": True, "name": "Helper"}
    presence = (await room.presence()).clients
    infos = {c.user: c.conn_info for c in presence.values()}
    assert infos == {"ann": {"name": "Ann"}, "helper": {"bot": True, "name": "Helper"}}


async def test_a_bot_has_its_own_channel_and_rate_limits(make_hub: Any, raw_client: Any) -> None:
    hub = await make_hub(
        bot_config(
            client_channel_limit=5,
            bot_client_channel_limit=2,
            client_command_rate_limit=0.0,
            bot_command_rate_limit=0.01,
            bot_command_rate_burst=4,
        )
    )
    bot = await raw_client(hub, connect={"token": bot_token("helper")})
    person = await raw_client(hub, connect={"token": token("ann")})
    for name in ("a", "b"):
        assert "subscribe" in await bot.command("subscribe", {"channel": name})
    assert (await bot.command("subscribe", {"channel": "c"}))["error"]["code"] == 106
    for name in ("a", "b", "c", "d", "e"):
        assert "subscribe" in await person.command("subscribe", {"channel": name})
    # the bot's burst of 4 is spent by the three subscribes and one more command; the person has no limit
    assert "presence" in await bot.command("presence", {"channel": "a"})
    assert (await bot.command("presence", {"channel": "a"}))["error"]["code"] == 111
    for _ in range(10):
        assert "presence" in await person.command("presence", {"channel": "a"})


# ---------------------------------------------------------------- calls served by bots


async def test_a_person_asks_and_the_bot_answers(make_hub: Any, sdk: Any) -> None:
    hub = await make_hub(bot_config())
    bot, events = await serving_bot(sdk, hub)
    person = sdk(hub, token=token("ann"))
    await person.connect()
    call = asyncio.ensure_future(person.rpc("agent.ask", {"q": "2+2?"}))
    request = await answer(bot, events, {"a": 4})
    assert request["method"] == "agent.ask" and request["user"] == "ann" and request["data"] == {"q": "2+2?"}
    assert (await call).data == {"a": 4}
    # an error of the bot's own reaches the caller as it was sent
    call = asyncio.ensure_future(person.rpc("agent.ask", {}))
    await answer(bot, events, error={"code": 422, "message": "say more"})
    with pytest.raises(ReplyError) as refused:
        await call
    assert (refused.value.code, refused.value.message) == (422, "say more")


async def test_the_caller_goes_on_while_its_call_waits(make_hub: Any, sdk: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config())
    bot, events = await serving_bot(sdk, hub, "agent.slow.")
    person = await raw_client(hub, connect={"token": token("ann")})
    await person.send_raw('{"id": 1, "rpc": {"method": "agent.slow.think", "data": {"n": 1}}}')
    request = await events.next_request()
    # the session answers another command while the call waits for the bot
    assert "presence" in await person.command("presence", {"channel": "room"})
    await bot.rpc("bot.reply", {"id": request["id"], "result": "done"})
    assert (await person.reply(1))["rpc"] == {"data": "done"}


async def test_the_longest_prefix_wins_and_calls_spread_over_its_bots(make_hub: Any, sdk: Any) -> None:
    hub = await make_hub(bot_config())
    general, general_events = await serving_bot(sdk, hub, "agent.", "general")
    weather = [await serving_bot(sdk, hub, "agent.weather.", f"w{i}") for i in range(2)]
    person = sdk(hub, token=token("ann"))
    await person.connect()
    calls = [asyncio.ensure_future(person.rpc("agent.weather.today", {"i": i})) for i in range(2)]
    for client, events in weather:  # one each: the one with fewer calls waiting takes the next
        await answer(client, events, "sunny")
    assert [c.data for c in await asyncio.gather(*calls)] == ["sunny", "sunny"]
    other = asyncio.ensure_future(person.rpc("agent.other", {}))
    await answer(general, general_events, "general")
    assert (await other).data == "general"


async def _error(client: RawClient, method: str, data: Any = None) -> dict[str, Any]:
    reply = await client.command("rpc", {"method": method, "data": data if data is not None else {}})
    assert "error" in reply, reply
    return reply["error"]  # type: ignore[no-any-return]


async def test_no_bot_timeout_and_late_reply(make_hub: Any, sdk: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config(bot_rpc_timeout=0.5))
    person = await raw_client(hub, connect={"token": token("ann")})
    assert await _error(person, "agent.ask") == {
        "code": 108,
        "message": "not available: no bot serves this method",
    }
    assert (await _error(person, "elsewhere.ask"))["code"] == 104  # outside bot_rpc_prefix: no such method
    bot, events = await serving_bot(sdk, hub)
    error = await _error(person, "agent.ask")
    assert error == {"code": 504, "message": "bot timeout: no reply in time", "temporary": True}
    late = await events.next_request()
    with pytest.raises(ReplyError) as refused:
        await bot.rpc("bot.reply", {"id": late["id"], "result": 1})
    assert refused.value.code == 107


async def test_a_bot_that_leaves_fails_its_calls_at_once(make_hub: Any, sdk: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config(bot_rpc_timeout=60.0))
    bot, events = await serving_bot(sdk, hub)
    person = await raw_client(hub, connect={"token": token("ann")})
    await person.send_raw('{"id": 1, "rpc": {"method": "agent.ask", "data": {}}}')
    await events.next_request()
    await bot.disconnect()
    reply = await person.reply(1)  # 503, not 504: at once, not after the minute of bot_rpc_timeout
    assert reply["error"] == {
        "code": 503,
        "message": "bot unavailable: the bot disconnected",
        "temporary": True,
    }
    assert (await _error(person, "agent.ask"))["code"] == 108  # its prefix went with it
    assert hub.sb.bots.routes.size == 0 and hub.sb.bots.pending.count("any") == 0


async def test_every_bound_has_its_error(make_hub: Any, sdk: Any, raw_client: Any) -> None:
    hub = await make_hub(
        bot_config(bot_rpc_max_pending=1, bot_rpc_max_pending_per_user=2, bot_rpc_max_data_size=100,
                   bot_rpc_max_prefixes=2)
    )  # fmt: skip
    bot, events = await serving_bot(sdk, hub)
    ann = await raw_client(hub, connect={"token": token("ann")})
    ann2 = await raw_client(hub, connect={"token": token("ann")})
    error = await _error(ann, "agent.ask", {"text": "x" * 200})
    assert error["code"] == 106 and "bot_rpc_max_data_size" in error["message"]
    await ann.send_raw('{"id": 1, "rpc": {"method": "agent.ask", "data": {}}}')
    first = await events.next_request()
    error = await _error(ann2, "agent.ask")  # the only bot has its one call waiting
    assert error["code"] == 106 and "bot_rpc_max_pending" in error["message"]
    await ann2.send_raw('{"id": 1, "rpc": {"method": "agent.ask", "data": {}}}')  # ann's second call
    error = await _error(ann, "agent.ask")  # a third call of ann's: over the user's bound, refused first
    assert error["code"] == 106 and "bot_rpc_max_pending_per_user" in error["message"]
    with pytest.raises(ReplyError) as refused:  # a result over the size bound: the call still waits
        await bot.rpc("bot.reply", {"id": first["id"], "result": "y" * 200})
    assert refused.value.code == 106
    await bot.rpc("bot.reply", {"id": first["id"], "result": "short"})
    assert (await ann.reply(1))["rpc"] == {"data": "short"}
    assert (await ann2.reply(1))["error"]["code"] == 106  # it found the bot busy with ann's first call
    await bot.rpc("bot.serve", {"prefix": "agent.b."})
    with pytest.raises(ReplyError) as refused:
        await bot.rpc("bot.serve", {"prefix": "agent.c."})
    assert refused.value.code == 106


async def test_only_bots_serve_and_only_under_the_prefix(make_hub: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config())
    person = await raw_client(hub, connect={"token": token("ann")})
    for method in ("bot.serve", "bot.unserve", "bot.reply"):
        assert (await _error(person, method, {"prefix": "agent."}))["code"] == 103
    bot = await raw_client(hub, connect={"token": bot_token("helper")})
    assert (await _error(bot, "bot.serve", {"prefix": "inbox."}))["code"] == 103
    served = await bot.command("rpc", {"method": "bot.serve", "data": {"prefix": "agent.x"}})
    assert served["rpc"]["data"] == {"prefixes": ["agent.x"], "channel": BOT_CHANNEL}
    assert await bot.push("subscribe") == {"channel": BOT_CHANNEL, "subscribe": {}}
    removed = await bot.command("rpc", {"method": "bot.unserve", "data": {"prefix": "agent.x"}})
    assert removed["rpc"]["data"] == {"removed": True}
    off = await make_hub(bot_config(bot_rpc_prefix=""))
    bot = await raw_client(off, connect={"token": bot_token("helper")})
    assert (await _error(bot, "bot.serve", {"prefix": "agent."}))["code"] == 108
    assert (await _error(bot, "agent.ask"))["code"] == 104


def test_the_application_cannot_take_the_bot_methods() -> None:
    from hub.app import Switchboard

    sb = Switchboard(bot_config())
    with pytest.raises(ValueError, match="bot"):
        sb.rpc("bot.serve")
    assert mint_token(BOT_SECRET, "x") != mint_token(SECRET, "x")


async def test_a_bot_serves_its_own_tenant_only(make_hub: Any, raw_client: Any) -> None:
    hub = await make_hub(bot_config())
    bot = await raw_client(hub, connect={"token": bot_token("helper", tenant="acme")})
    served = await bot.command("rpc", {"method": "bot.serve", "data": {"prefix": "agent."}})
    assert "rpc" in served
    other = await raw_client(hub, connect={"token": token("ann")})  # the default tenant
    assert (await _error(other, "agent.ask"))["code"] == 108
    same = await raw_client(hub, connect={"token": token("bea", tenant="acme")})
    await same.send_raw('{"id": 1, "rpc": {"method": "agent.ask", "data": {"q": 1}}}')
    request = (await bot.push("pub"))["pub"]["data"]
    assert request["user"] == "bea"
    await bot.command("rpc", {"method": "bot.reply", "data": {"id": request["id"], "result": "ok"}})
    assert (await same.reply(1))["rpc"] == {"data": "ok"}
