"""``Bots``: the ``bot.*`` RPC methods, and calls of methods under ``bot_rpc_prefix`` routed to a bot
connection on any node.

Wire format (every SDK: ``rpc`` and the ``message`` event):

- A bot (``hub.bots.identity``) calls ``bot.serve`` with ``{"prefix": "agent.weather."}`` (a prefix that
  starts with ``bot_rpc_prefix``) -> ``{"prefixes": [...], "channel": ":bot"}``, every prefix it serves
  now; ``bot.unserve`` with ``{"prefix": ...}`` -> ``{"removed": true|false}``. Its prefixes go when its
  connection does. Before the first ``bot.serve`` reply of a connection the hub sends it a ``subscribe``
  push of the channel ``:bot`` (a name no real channel can have: server-side, never in the broker):
  requests arrive as publications of it, which every SDK hands to its server-side publication handler
  (centrifuge-python 0.7 drops ``message`` pushes, so they cannot carry requests).
- A client calls ``rpc("agent.weather.today", data)``. No hook of the application serves that method, so
  the hub picks a bot of the longest registered prefix: one on this node if any (the one with the fewest
  calls waiting), else it asks every node (survey ``bots.find``) and hands the call to the node with the
  most room (``Control.ask``, ``bots.call``). The bot gets a publication of ``:bot`` with the data::

      {"id": "17", "method": "agent.weather.today", "user": "ann", "client": "<caller's client id>",
       "data": <the caller's data>}

- The bot answers with ``rpc("bot.reply", {"id": "17", "result": <any JSON>})`` or ``{"id": "17", "error":
  {"code": 400-1999, "message": "..."}}`` -> ``{}``; the caller's ``rpc`` resolves with ``result`` as its
  data, or fails with that error.

Policies:

- The caller's session goes on reading while its call waits (``Client.answer_later``): other commands are
  answered meanwhile, the call's reply comes when the bot's does.
- Errors the caller gets: 108 no bot serves the method (at once, on any node); 106 the data is over
  ``bot_rpc_max_data_size``, the user has ``bot_rpc_max_pending_per_user`` calls waiting on this node, or
  every bot of the method has ``bot_rpc_max_pending``; 504 (temporary) no reply within
  ``bot_rpc_timeout``; 503 (temporary) the bot disconnected (every call it had fails at once), or its node
  left or cannot be reached; 100 (temporary) the control channel is down.
- Errors a bot gets: 103 ``bot.*`` from a connection that is not a bot, or a prefix outside
  ``bot_rpc_prefix``; 108 routing is off (``bot_rpc_prefix`` empty); 107 malformed params, or a reply to a
  request it does not have waiting (answered, timed out, or never sent: request ids are per bot); 106
  more than ``bot_rpc_max_prefixes`` prefixes, ``bot_rpc_max_routes`` on the node, or a result over
  ``bot_rpc_max_data_size`` (the call still waits: the bot may send an error instead).
- Bots serve their own tenant's callers only. A bot may call bots (itself too); each call counts against
  the bounds above.
- Not done: delivering a call to a webhook when no bot is connected (the caller gets 108).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from channels.publication import Publication
from hub import codes
from hub.bots.routes import LimitReached, Pending, Routes
from hub.codes import ClientError
from hub.config import BOT_RPC_PREFIX_MAX
from hub.control import ControlUnavailable
from hub.hooks import RPCContext
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.client import Client
    from hub.node import Node

log = logging.getLogger("switchboard.bots")

BOT_CHANNEL = ":bot"
"""The server-side channel a bot gets its requests on (the grammar refuses it: no real channel clashes)."""

RpcHandler = Callable[[RPCContext], Awaitable[Any]]

BOT_PREFIX = "bot."
"""The hub's own methods for bots (``bot.serve``, ``bot.unserve``, ``bot.reply``): never the application's."""
SURVEY_FIND = "bots.find"
SURVEY_CALL = "bots.call"
ASK_MARGIN = 5.0
"""Seconds a caller's node waits for the bot's node beyond ``bot_rpc_timeout`` (that node answers 504 by
itself at the timeout; this covers the control channel's round trip)."""
MESSAGE_MAX = 256
"""Characters of a bot's error message passed on to the caller."""


def error_no_bot() -> ClientError:
    return ClientError(108, "not available: no bot serves this method")


def error_timeout() -> ClientError:
    return ClientError(504, "bot timeout: no reply in time", temporary=True)


def error_bot_gone(why: str = "the bot disconnected") -> ClientError:
    return ClientError(503, f"bot unavailable: {why}", temporary=True)


def _limit(message: str) -> ClientError:
    return ClientError(106, f"limit exceeded: {message}")


def _bad(message: str) -> ClientError:
    return ClientError(107, f"bad request: {message}")


def _params(ctx: RPCContext, fields: set[str]) -> dict[str, Any]:
    data = ctx.data
    if not isinstance(data, dict) or not set(data) <= fields:
        raise _bad(f"{ctx.method} takes an object with {', '.join(sorted(fields))}")
    return data


class Bots:
    def __init__(self, node: Node) -> None:
        cfg = node.config
        self.node = node
        self.prefix = cfg.bot_rpc_prefix
        self.timeout = cfg.bot_rpc_timeout
        self.max_size = cfg.bot_rpc_max_data_size
        self.max_per_user = cfg.bot_rpc_max_pending_per_user
        self.routes = Routes(cfg.bot_rpc_max_prefixes, cfg.bot_rpc_max_routes)
        self.pending: Pending[asyncio.Future[bytes]] = Pending(cfg.bot_rpc_max_pending)
        self.callers: dict[tuple[str, str], int] = {}
        """Calls waiting per caller (tenant, user; an anonymous connection: ``#`` and its client id)."""
        self.told: set[str] = set()
        """Bot connections sent the ``subscribe`` push of ``BOT_CHANNEL``."""

    def listen(self) -> None:
        """Answer the other nodes' surveys (on the node's control channel as set now: call again after
        replacing it)."""
        self.node.control.answer(SURVEY_FIND, self._answer_find)
        self.node.control.answer(SURVEY_CALL, self._answer_call)

    def methods(self) -> dict[str, RpcHandler]:
        """The ``bot.*`` methods, for ``Node.builtin_rpc``."""
        return {"bot.serve": self._serve, "bot.unserve": self._unserve, "bot.reply": self._reply}

    def serves(self, method: str) -> bool:
        """Whether a call of ``method`` that no hook serves goes to a bot."""
        return bool(self.prefix) and method.startswith(self.prefix)

    # ------------------------------------------------------------ callers

    def dispatch(self, client: Client, cmd_id: int, method: str, data: Any) -> None:
        """Start the call ``cmd_id`` of ``client`` to a bot; the session answers it when it is done. The
        bounds are checked here, before anything is started."""
        encoded = orjson.dumps(data)
        if len(encoded) > self.max_size:
            raise _limit(f"data over {self.max_size} bytes (bot_rpc_max_data_size)")
        caller = (client.tenant, client.user or "#" + client.id)
        waiting = self.callers.get(caller, 0)
        if waiting >= self.max_per_user:
            log_limited(log, logging.INFO, "bot calls of one user at the bound", extra=client.log_fields())
            raise _limit(f"{self.max_per_user} calls to bots waiting (bot_rpc_max_pending_per_user)")
        self.callers[caller] = waiting + 1
        task = client.answer_later(cmd_id, "rpc", self._call(client, method, encoded))
        task.add_done_callback(lambda _: self._released(caller))

    def _released(self, caller: tuple[str, str]) -> None:
        left = self.callers[caller] - 1
        if left:
            self.callers[caller] = left
        else:
            del self.callers[caller]

    async def _call(self, client: Client, method: str, data: bytes) -> bytes:
        bots = self.routes.bots_for(client.tenant, method)
        if bots:
            return await self._local(bots, method, data, client.user, client.id)
        return await self._remote(client.tenant, method, data, client.user, client.id)

    async def _local(self, bots: list[str], method: str, data: bytes, user: str, client_id: str) -> bytes:
        """Hand the call to one of ``bots`` (this node's) and wait for its reply."""
        bot_id = self.pending.pick(bots)
        if bot_id is None:
            raise _limit("every bot of this method has bot_rpc_max_pending calls waiting")
        bot = self.node.registry.clients.get(bot_id)
        if bot is None:  # gone this instant: its routes go with its cleanup
            raise error_bot_gone()
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        request = self.pending.open(bot_id, done)
        try:
            body = {"id": request, "method": method, "user": user, "client": client_id}
            body["data"] = orjson.Fragment(data)  # type: ignore[assignment]
            pub = Publication(orjson.dumps(body), time=int(time.time() * 1000))
            bot.writer.push(bot.codec.encode_publication_push(BOT_CHANNEL, pub))
            async with asyncio.timeout(self.timeout):
                return await done
        except TimeoutError:
            log_limited(log, logging.INFO, "bot %s did not answer %s in time", bot_id, method)
            raise error_timeout() from None
        finally:
            self.pending.close(bot_id, request)

    async def _remote(self, tenant: str, method: str, data: bytes, user: str, client_id: str) -> bytes:
        """Find a node with a bot for ``method`` and have it make the call."""
        control = self.node.control
        try:
            found = await control.survey(SURVEY_FIND, [tenant, method])
        except ControlUnavailable as exc:
            log_limited(log, logging.WARNING, "bot lookup failed: %s", exc)
            raise codes.error_internal() from None
        others = {n: a for n, a in found.items() if n != self.node.id and isinstance(a, list) and a[0]}
        if not others:
            raise error_no_bot()
        node_id, (_, room) = max(others.items(), key=lambda item: item[1][1])
        if not room:
            raise _limit("every bot of this method has bot_rpc_max_pending calls waiting")
        args = [tenant, method, data, user, client_id]
        try:
            answer = await control.ask(node_id, SURVEY_CALL, args, self.timeout + ASK_MARGIN)
        except ControlUnavailable as exc:
            log_limited(log, logging.WARNING, "bot call through node %s failed: %s", node_id, exc)
            raise error_bot_gone("its node cannot be reached") from None
        if "e" in answer:
            code, message, temporary = answer["e"]
            raise ClientError(code, message, temporary)
        return answer["r"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------ other nodes

    async def _answer_find(self, args: list[Any]) -> list[int]:
        """[bots of ``method`` here, calls they can still take]."""
        tenant, method = args
        bots = self.routes.bots_for(str(tenant), str(method))
        room = sum(max(0, self.pending.per_bot - self.pending.count(b)) for b in bots)
        return [len(bots), room]

    async def _answer_call(self, args: list[Any]) -> dict[str, Any]:
        tenant, method, data, user, client_id = args
        try:
            bots = self.routes.bots_for(tenant, method)
            if not bots:  # its bot left since it answered bots.find
                raise error_no_bot()
            return {"r": await self._local(bots, method, data, user, client_id)}
        except ClientError as exc:
            return {"e": [exc.code, exc.message, exc.temporary]}

    # ------------------------------------------------------------ bots

    def _bot(self, ctx: RPCContext) -> Client:
        client = self.node.registry.clients.get(ctx.client_id)
        if client is None or not client.bot:
            log_limited(log, logging.INFO, "%s from a connection that is not a bot", ctx.method)
            raise codes.error_permission_denied()
        return client

    def _prefix(self, ctx: RPCContext) -> str:
        if not self.prefix:
            raise codes.error_not_available()
        prefix = _params(ctx, {"prefix"}).get("prefix")
        if not isinstance(prefix, str) or not prefix or len(prefix) > 2 * BOT_RPC_PREFIX_MAX:
            raise _bad(f"prefix must be a string of 1 to {2 * BOT_RPC_PREFIX_MAX} characters")
        if not prefix.startswith(self.prefix):
            log_limited(log, logging.INFO, "bot prefix %r outside bot_rpc_prefix", prefix[:80])
            raise ClientError(103, f"permission denied: a bot serves methods under {self.prefix!r}")
        return prefix

    async def _serve(self, ctx: RPCContext) -> Any:
        bot = self._bot(ctx)
        prefix = self._prefix(ctx)
        try:
            if self.routes.add(bot.tenant, prefix, bot.id):
                log.info("bot serves %s", prefix, extra=bot.log_fields())
        except LimitReached as exc:
            log_limited(log, logging.WARNING, "bot.serve refused: %s", exc, extra=bot.log_fields())
            raise _limit(str(exc)) from None
        if bot.id not in self.told:
            self.told.add(bot.id)
            bot.writer.push(bot.codec.encode_push(BOT_CHANNEL, "subscribe", {}))
        return {"prefixes": self.routes.prefixes(bot.id), "channel": BOT_CHANNEL}

    async def _unserve(self, ctx: RPCContext) -> Any:
        bot = self._bot(ctx)
        return {"removed": self.routes.remove(self._prefix(ctx), bot.id)}

    async def _reply(self, ctx: RPCContext) -> Any:
        bot = self._bot(ctx)
        p = _params(ctx, {"id", "result", "error"})
        request = p.get("id")
        if not isinstance(request, str) or ("result" in p) == ("error" in p):
            raise _bad("bot.reply takes an id (string) and either result or error")
        outcome: bytes | ClientError
        if "error" in p:
            error = p["error"]
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message", "") if isinstance(error, dict) else None
            if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 1999:
                raise _bad("error.code must be an integer from 400 to 1999")
            if not isinstance(message, str) or set(error) - {"code", "message"}:
                raise _bad("error takes code and message (a string)")
            outcome = ClientError(code, message[:MESSAGE_MAX])
        else:
            outcome = orjson.dumps(p["result"])
            if len(outcome) > self.max_size:
                raise _limit(f"result over {self.max_size} bytes (bot_rpc_max_data_size)")
        done = self.pending.close(bot.id, request)
        if done is None:
            raise _bad("no such request waiting (answered, timed out, or never sent)")
        if not done.done():
            if isinstance(outcome, ClientError):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
        return {}

    def gone(self, client: Client) -> None:
        """``client``'s connection has ended: its prefixes go, every call it had fails at once (503)."""
        self.routes.drop(client.id)
        self.told.discard(client.id)
        for done in self.pending.drop(client.id):
            if not done.done():
                done.set_exception(error_bot_gone())
