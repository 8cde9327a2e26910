"""Who is a bot, and how the others see it.

Policy:

- A connection is a bot when its connection token carries ``"bot": true`` and was signed with
  ``bot_token_hmac_secret_key`` (``hub.auth``: on any other token the claim is an invalid token, 3500).
  A refresh token must say the same (``Client``: a refresh that changes it is an invalid token).
- Presence, join/leave pushes and publications show a bot by its ``conn_info``: a JSON object whose first
  key is ``"bot": true`` (``{"bot":true,...}``: the token's ``info`` object, or what the connect hook
  set, after it; an info the hook set that is not an object goes under ``"info"``). The key is the hub's:
  a person's ``conn_info`` never has it (a ``bot`` key in a person's info is removed at connect), so
  ``conn_info.bot === true`` in any SDK means the hub says this connection is a bot.
- A bot's limits (``bot_client_channel_limit``, ``bot_command_rate_limit``/``_burst``) replace the
  clients' when set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from hub.limits import CommandLimiter

if TYPE_CHECKING:
    from hub.config import Config

BOT_MARK = b'{"bot":true'
"""How every bot's ``conn_info`` begins (orjson writes no spaces, and a dict keeps its order)."""


def shown_info(info: bytes | None, bot: bool) -> bytes | None:
    """The ``conn_info`` others see for a connection with ``info`` (JSON, as the hub wrote it)."""
    if bot:
        value = None if info is None else orjson.loads(info)
        if value is None:
            return b'{"bot":true}'
        if not isinstance(value, dict):
            return orjson.dumps({"bot": True, "info": value})
        return orjson.dumps({"bot": True, **{k: v for k, v in value.items() if k != "bot"}})
    if info is None or b'"bot"' not in info:  # the hub writes JSON without escapes a key could hide in
        return info
    value = orjson.loads(info)
    if isinstance(value, dict) and "bot" in value:
        del value["bot"]
        return orjson.dumps(value)
    return info


def is_bot(conn_info: bytes | None) -> bool:
    """Whether ``conn_info`` (of presence, a join, a publication) is a bot's."""
    return conn_info is not None and conn_info.startswith(BOT_MARK)


def channel_limit(config: Config, bot: bool) -> int:
    if bot and config.bot_client_channel_limit:
        return config.bot_client_channel_limit
    return config.client_channel_limit


def command_limiter(config: Config, bot: bool, now: float) -> CommandLimiter | None:
    """A new connection's command rate limit (None: none); a bot's when ``bot``."""
    rate, burst = config.client_command_rate_limit, config.client_command_rate_burst
    if bot:
        if config.bot_command_rate_limit != -1:
            rate = config.bot_command_rate_limit
        burst = config.bot_command_rate_burst or burst
    return CommandLimiter(rate, burst, now) if rate > 0 else None
