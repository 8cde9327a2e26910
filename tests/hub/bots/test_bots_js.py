"""A person on the official centrifuge-js SDK (tests/hub/js_sdk/bots.mjs) beside a bot on centrifuge-python:
the join push and presence show the bot's ``connInfo.bot``, the person's ``rpc`` reaches the bot and
resolves with its answer, a method no bot serves fails with 108. JSON and Protobuf builds."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIMEOUT, token
from tests.hub.bots.conftest import answer, bot_config, serving_bot
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401 (the fixture that installs the SDK)

SCRIPT = Path(__file__).parents[1] / "js_sdk" / "bots.mjs"


@pytest.mark.usefixtures("centrifuge_js")
async def test_js_person_sees_and_asks_a_python_bot(make_hub: Any, sdk: Any, request: Any) -> None:
    protocol = request.node.callspec.params["sdk"]  # both SDKs speak JSON, then both Protobuf
    hub = await make_hub(bot_config())
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        hub.url,
        token("ann", info={"name": "Ann"}),
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []

    async def next_event() -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        assert line, (events, (await proc.stderr.read()).decode()[-2000:] if proc.stderr else "")
        events.append(json.loads(line))
        return events[-1]

    try:
        async with asyncio.timeout(TIMEOUT * 3):
            assert (await next_event())["event"] == "subscribed"
            bot, bot_events = await serving_bot(sdk, hub, "agent.helper.")
            await bot.new_subscription("room").subscribe()
            assert await next_event() == {
                "event": "join",
                "user": "helper",
                "connInfo": {"bot": True, "name": "Helper"},
            }
            presence = await next_event()
            shown = sorted((c["user"], c["connInfo"]) for c in presence["clients"])
            assert shown == [("ann", {"name": "Ann"}), ("helper", {"bot": True, "name": "Helper"})]
            request = await answer(bot, bot_events, {"text": "hello, Ann"})
            assert request["data"] == {"q": "hello?"} and request["user"] == "ann"
            assert request["method"] == "agent.helper.ask"
            assert await next_event() == {"event": "answer", "data": {"text": "hello, Ann"}}
            refused = await next_event()
            assert refused["event"] == "refused" and refused["code"] == 108
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
