"""Calls to bots across nodes: two hubs in this process, each with its own connections to one real
redis-server, joined by the control channel (``RedisControl``). A person on one node reaches a bot on the
other; the bot leaving mid-call fails the call at once there too; no bot on any node is 108 at once; the
bot's node enforces the timeout."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningHub, token
from tests.hub.bots.conftest import answer, bot_config, serving_bot
from tests.hub.test_control import Join, join, nodes_of  # noqa: F401 (join: a fixture)


@pytest.fixture
async def pair(make_hub: Any, join: Join) -> tuple[RunningHub, RunningHub]:  # noqa: F811
    hubs = [await make_hub(bot_config(bot_rpc_timeout=1.0)) for _ in range(2)]
    await nodes_of([await join(h) for h in hubs])
    for hub in hubs:
        hub.sb.bots.listen()  # on the control channel the fixture gave it
    return hubs[0], hubs[1]


async def test_a_call_reaches_a_bot_on_another_node(
    pair: tuple[RunningHub, RunningHub], sdk: Any, raw_client: Any
) -> None:
    here, there = pair
    person = await raw_client(here, connect={"token": token("ann")})
    nobody = await person.command("rpc", {"method": "agent.ask", "data": {}})
    assert nobody["error"]["code"] == 108  # no bot on any node

    bot, events = await serving_bot(sdk, there)
    await person.send_raw('{"id": 1, "rpc": {"method": "agent.ask", "data": {"q": "far?"}}}')
    request = await answer(bot, events, {"a": "here"})
    assert request["user"] == "ann" and request["data"] == {"q": "far?"}
    assert (await person.reply(1))["rpc"] == {"data": {"a": "here"}}

    # the bot's node times the call out and says so
    timed_out = await person.command("rpc", {"method": "agent.ask", "data": {}})
    assert timed_out["error"] == {"code": 504, "message": "bot timeout: no reply in time", "temporary": True}
    await events.next_request()

    # the bot leaves mid-call: the caller on the other node hears at once (not at the timeout)
    await person.send_raw('{"id": 2, "rpc": {"method": "agent.ask", "data": {}}}')
    await events.next_request()
    await bot.disconnect()
    reply = await person.reply(2)
    assert reply["error"]["code"] == 503  # not 504: it did not wait for the timeout
    assert (await person.command("rpc", {"method": "agent.ask", "data": {}}))["error"]["code"] == 108
