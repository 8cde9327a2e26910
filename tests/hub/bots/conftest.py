"""Shared by the bot tests: the bot key, bot tokens, and a bot on the official centrifuge-python SDK."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
from centrifuge import ClientEventHandler

from hub.auth import mint_token
from hub.bots.service import BOT_CHANNEL
from hub.config import Config
from tests.conftest import TIMEOUT
from tests.conftest import test_config as base_config
from tests.fuzz.strategies import json_values

BOT_SECRET = "bot-secret-of-at-least-32-bytes-length!!"


def _writable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


writable_json = json_values.filter(_writable)
"""JSON values a client can send (the fuzz strategy's integers past 64 bits left out: no frame holds them)."""


def bot_token(user: str, **kw: Any) -> str:
    kw.setdefault("bot", True)
    return mint_token(BOT_SECRET, user, **kw)


def bot_config(**overrides: Any) -> Config:
    return dataclasses.replace(base_config(bot_token_hmac_secret_key=BOT_SECRET), **overrides)


class BotEvents(ClientEventHandler):  # type: ignore[misc]
    """A bot's side of the SDK: the requests that arrive on ``:bot`` (its server-side subscription)."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self.joins: asyncio.Queue[Any] = asyncio.Queue()

    async def on_subscribed(self, ctx: Any) -> None:
        if ctx.channel == BOT_CHANNEL:
            self.subscribed.set()

    async def on_publication(self, ctx: Any) -> None:
        if ctx.channel == BOT_CHANNEL:
            await self.requests.put(ctx.pub.data)

    async def next_request(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.requests.get()


async def serving_bot(
    sdk: Any, hub: Any, prefix: str = "agent.", user: str = "helper"
) -> tuple[Any, BotEvents]:
    """A connected centrifuge-python bot that serves ``prefix``."""
    events = BotEvents()
    client = sdk(hub, token=bot_token(user, info={"name": user.title()}), events=events)
    await client.connect()
    await client.ready(TIMEOUT)
    reply = await client.rpc("bot.serve", {"prefix": prefix})
    assert reply.data == {"prefixes": [prefix], "channel": BOT_CHANNEL}
    async with asyncio.timeout(TIMEOUT):
        await events.subscribed.wait()
    return client, events


async def answer(bot: Any, events: BotEvents, result: Any = None, **reply: Any) -> dict[str, Any]:
    """Take the bot's next request and answer it (``result``, or ``error=...``); return the request."""
    request = await events.next_request()
    body = {"id": request["id"], **(reply or {"result": result})}
    await bot.rpc("bot.reply", body)
    return request
