"""An AI agent in a chat room and a shared document, on the hub's agent features (README "Agents").

Run it beside ``make run`` (development mode: no configuration), then open http://127.0.0.1:8000/demo/chat
and write "@assistant hello", then "@assistant write this into notes" and open /demo/editor?doc=notes::

    python -m examples.agent_assistant
    python -m examples.agent_assistant --url ws://hub:8000/connection/websocket --bot-key "$BOT_KEY" \\
        --api-key "$API_KEY" --room chat.support

What it does (the "model" is deterministic and needs no network: it echoes and summarises; a real agent
calls its LLM in ``Model.answer``):

- connects with the official centrifuge-python SDK as a bot: its token carries ``"bot": true`` and is
  signed with the hub's ``bot_token_hmac_secret_key`` (development mode's is public), so presence lists
  show it with ``conn_info.bot`` (README "Agents: bots");
- answers each message of the room that mentions ``@assistant`` with a reply streamed token by token:
  chunk publications ``{"stream": {"id", "seq", "final"}, "text", "reply_to"}`` (channels/streams.py; a
  namespace with ``streams = true`` coalesces them and keeps only the finished reply in history);
- on "@assistant write this into <doc>" appends a summary of the conversation to the document, one line
  per ``POST /doc/<doc>/edit`` (README "Agents: editing documents"): people in the editor see the lines
  arrive and the agent's cursor move down with them. Each edit carries ``if_version``; when someone typed
  meanwhile (409) it appends at the new end;
- serves RPC methods through ``bot.serve``: ``agent.assistant.summarise`` (data ``{}``) answers
  ``{"text": summary}``, ``agent.assistant.ask`` (``{"text": question}``) the reply, whole.

Bounds: at most ``MAX_TASKS`` replies and calls at once (more are dropped with a log line), messages
remembered: the last ``MEMORY``, each cut to ``MAX_HEARD`` characters. Messages of bots (its own
included) are never answered, so two agents in one room do not talk to each other forever.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    PublicationContext,
    ServerPublicationContext,
    Subscription,
    SubscriptionEventHandler,
)

from hub.auth import mint_token
from hub.config import DEV_BOT_SECRET

log = logging.getLogger("agent_assistant")

DEFAULT_URL = "ws://127.0.0.1:8000/connection/websocket"  # make run's
NAME = "Assistant"
USER = "assistant"
MENTION = "@assistant"
RPC_PREFIX = "agent.assistant."  # under the hub's bot_rpc_prefix ("agent.")
BOT_CHANNEL = ":bot"  # where the hub delivers calls of the methods a bot serves
MEMORY = 50
MAX_HEARD = 500
MAX_TASKS = 16
TOKEN_TTL = 3600
WRITE_INTO = re.compile(r"\bwrite\b.*?\b(?:in|into|to)\s+([A-Za-z0-9][A-Za-z0-9._/-]{0,99})", re.IGNORECASE)


# ---------------------------------------------------------------- the "model" (pure, no I/O)


@dataclass(frozen=True, slots=True)
class Said:
    name: str
    text: str


class Model:
    """A deterministic stand-in for an LLM: it remembers the room's last messages, echoes and summarises."""

    def __init__(self, memory: int = MEMORY) -> None:
        self.recent: deque[Said] = deque(maxlen=memory)

    def heard(self, name: str, text: str) -> None:
        self.recent.append(Said(name[:64], text[:MAX_HEARD]))

    def summary(self) -> list[str]:
        """The conversation in a few lines: who spoke, then the last five messages."""
        if not self.recent:
            return ["Nothing has been said here yet."]
        people = sorted({said.name for said in self.recent})
        lines = [f"Summary of {len(self.recent)} messages from {', '.join(people)}:"]
        lines += [f"- {said.name}: {_shorten(said.text)}" for said in list(self.recent)[-5:]]
        return lines

    def answer(self, name: str, text: str) -> str:
        question = re.sub(re.escape(MENTION), "", text, flags=re.IGNORECASE).strip()
        if re.search(r"summar", question, re.IGNORECASE):
            return " ".join(self.summary())
        return (
            f"{name}, you said: “{_shorten(question) or '…'}”. I can summarise this room "
            "(@assistant summarise) or write the summary into a document (@assistant write this into notes)."
        )


def _shorten(text: str, size: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def tokens(text: str) -> list[str]:
    """What an LLM would stream: words with the spaces after them (joined, the text again)."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def utf16_length(text: str) -> int:
    """A text's length in UTF-16 code units: the edit API's (and JavaScript's) index unit."""
    return len(text.encode("utf-16-le")) // 2


# ---------------------------------------------------------------- the agent


class Assistant:
    """The agent: a centrifuge-python bot connection in one room, and an HTTP client for documents."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        bot_key: str = DEV_BOT_SECRET,
        room: str = "chat.general",
        http_url: str | None = None,
        api_key: str | None = None,
        pace: float = 0.05,
        line_pace: float = 0.4,
        timeout: float = 10.0,
    ) -> None:
        self.model = Model()
        self.room_channel = room
        self.pace = pace  # seconds between streamed tokens (a real model's own pace)
        self.line_pace = line_pace  # seconds between the lines written into a document
        self.tasks: set[asyncio.Task[None]] = set()
        self.serving = asyncio.Event()  # set once the hub routes the agent's RPC methods to it
        get_token = None if token else self._token(bot_key)
        events = _ClientEvents(self)
        self.client = Client(url, token=token or "", get_token=get_token, events=events, timeout=timeout)
        self.room: Subscription = self.client.new_subscription(room, events=_RoomEvents(self))
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.AsyncClient(base_url=http_url or http_base(url), headers=headers, timeout=timeout)

    @staticmethod
    def _token(bot_key: str) -> Callable[[], Awaitable[str]]:
        async def get_token() -> str:
            return mint_token(bot_key, USER, ttl=TOKEN_TTL, info={"name": NAME}, bot=True)

        return get_token

    async def start(self) -> None:
        """Connect and join the room; the SDK reconnects and resubscribes by itself from then on."""
        await self.client.connect()
        await self.room.subscribe()

    async def ready(self) -> None:
        """Wait until the agent is in its room and serves its methods."""
        await self.room.ready()
        await self.serving.wait()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.client.disconnect()
        await self.http.aclose()

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` beside the SDK's read loop (a handler that awaited a publish would wait for a reply
        that loop has yet to read), at most MAX_TASKS at once."""
        if len(self.tasks) >= MAX_TASKS:
            log.warning("busy: %d replies and calls under way, one more dropped", len(self.tasks))
            if asyncio.iscoroutine(work):
                work.close()
            return
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a reply or call failed: %r", task.exception())

    # ------------------------------------------------------------ the room

    def heard(self, pub: Any) -> None:
        """A publication of the room: remembered, and answered when it mentions the agent."""
        data, info = pub.data, pub.info
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or "stream" in data:
            return  # typing signals, streamed replies (the agent remembers its own when it finishes)
        conn_info = info.conn_info if info is not None and isinstance(info.conn_info, dict) else {}
        if conn_info.get("bot") is True:
            return  # a bot's message, its own included: never answered
        name = str(conn_info.get("name") or (info.user if info else "") or "someone")
        text = data["text"]
        self.model.heard(name, text)
        if MENTION in text.lower():
            self.spawn(self.respond(name, info.user if info else "", text))

    async def respond(self, name: str, user: str, text: str) -> None:
        target = WRITE_INTO.search(text)
        if target is None:
            await self.stream_reply(self.model.answer(name, text), user)
            return
        doc = target.group(1).rstrip(".")
        lines = self.model.summary()
        await self.stream_reply(f"Writing the summary into “{doc}”: open /demo/editor?doc={doc}", user)
        try:
            await self.write_lines(doc, lines)
        except (httpx.HTTPError, DocumentRefused) as exc:
            await self.stream_reply(f"I could not write into “{doc}”: {exc}", user)
            return
        await self.stream_reply(f"Done: {len(lines)} lines written into “{doc}”.", user)

    async def stream_reply(self, text: str, reply_to: str) -> None:
        """Publish ``text`` token by token as one stream: chunk ``seq`` 0, 1, ..., the last one ``final``."""
        stream = f"{USER}-{uuid.uuid4().hex[:16]}"
        parts = tokens(text)
        for seq, part in enumerate(parts):
            fields: dict[str, Any] = {"id": stream, "seq": seq}
            if seq == len(parts) - 1:
                fields["final"] = True
            await self.room.publish({"stream": fields, "text": part, "reply_to": reply_to})
            if self.pace and seq < len(parts) - 1:
                await asyncio.sleep(self.pace)
        self.model.heard(NAME, text)

    # ------------------------------------------------------------ documents

    async def write_lines(self, doc: str, lines: list[str]) -> None:
        """Append ``lines`` to the document's ``text`` root, one edit each, so the cursor moves with them."""
        content = await self.http.get(f"/doc/{doc}/content")
        _check(content)
        version = content.headers["ETag"].strip('"')
        text = content.json().get("text", "")
        if not isinstance(text, str):
            raise DocumentRefused("its 'text' is not a text")
        end = utf16_length(text)
        if text and not text.endswith("\n"):
            lines = ["", *lines]
        for line in lines:
            while True:
                op = {"op": "text.insert", "path": ["text"], "index": end, "text": line + "\n"}
                body = {"ops": [op], "if_version": version, "agent": {"name": NAME}}
                answer = await self.http.post(f"/doc/{doc}/edit", json=body)
                if answer.status_code != 409:
                    break
                current = answer.json()  # someone typed meanwhile: append at the new end
                version, end = current["version"], utf16_length(current["content"].get("text", ""))
            _check(answer)
            version, end = answer.json()["version"], answer.json()["ranges"][-1]["end"]
            if self.line_pace:
                await asyncio.sleep(self.line_pace)

    # ------------------------------------------------------------ RPC methods served by this bot

    async def serve_methods(self) -> None:
        await self.client.rpc("bot.serve", {"prefix": RPC_PREFIX})
        self.serving.set()

    async def call(self, request: dict[str, Any]) -> None:
        """A person's ``rpc("agent.assistant.<method>", data)``: answered with ``bot.reply``."""
        method = METHODS.get(str(request.get("method", "")).removeprefix(RPC_PREFIX))
        reply: dict[str, Any] = {"id": request.get("id")}
        if method is None:
            reply["error"] = {"code": 404, "message": f"unknown method; try {', '.join(METHODS)}"}
        else:
            try:
                reply["result"] = method(self, str(request.get("user") or "someone"), request.get("data"))
            except ValueError as exc:
                reply["error"] = {"code": 400, "message": str(exc)}
        await self.client.rpc("bot.reply", reply)


def _summarise(agent: Assistant, user: str, data: Any) -> dict[str, Any]:
    if data not in (None, {}):
        raise ValueError("summarise takes {}")
    return {"text": "\n".join(agent.model.summary())}


def _ask(agent: Assistant, user: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or len(data["text"]) > MAX_HEARD:
        raise ValueError(f'ask takes {{"text": question}} of at most {MAX_HEARD} characters')
    return {"text": agent.model.answer(user, data["text"])}


METHODS: dict[str, Callable[[Assistant, str, Any], dict[str, Any]]] = {"summarise": _summarise, "ask": _ask}


class DocumentRefused(Exception):
    """The hub refused to read or edit the document (its answer's status and error)."""


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        try:
            error = response.json().get("error", response.text)
        except ValueError:
            error = response.text
        raise DocumentRefused(f"HTTP {response.status_code}: {error}")


def http_base(url: str) -> str:
    """The hub's HTTP address from its WebSocket endpoint (``ws://h:8000/connection/websocket``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.removesuffix("/connection/websocket")
    return f"{scheme}://{parts.netloc}{path}"


class _ClientEvents(ClientEventHandler):  # type: ignore[misc]
    def __init__(self, agent: Assistant) -> None:
        self.agent = agent

    async def on_connected(self, ctx: ConnectedContext) -> None:
        log.info("connected as a bot (client %s)", ctx.client)
        self.agent.spawn(self.agent.serve_methods())  # again after every reconnect: the hub forgets it

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        if ctx.channel == BOT_CHANNEL and isinstance(ctx.pub.data, dict):
            self.agent.spawn(self.agent.call(ctx.pub.data))


class _RoomEvents(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self, agent: Assistant) -> None:
        self.agent = agent

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.agent.heard(ctx.pub)


async def run(args: argparse.Namespace) -> None:
    agent = Assistant(
        args.url,
        token=args.token,
        bot_key=args.bot_key,
        room=args.room,
        http_url=args.http_url,
        api_key=args.api_key,
        pace=args.pace,
        line_pace=args.line_pace,
    )
    await agent.start()
    log.info("in %s: mention %s there; methods %s*", args.room, MENTION, RPC_PREFIX)
    try:
        await asyncio.Event().wait()
    finally:
        await agent.close()


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the hub's WebSocket endpoint ({DEFAULT_URL})")
    parser.add_argument("--http-url", default=None, help="the hub's HTTP address (default: from --url)")
    parser.add_argument("--room", default="chat.general", help="the chat channel to join")
    parser.add_argument("--token", default=env("AGENT_TOKEN"), help="a bot token (else one is signed)")
    parser.add_argument(
        "--bot-key",
        default=env("SWITCHBOARD_BOT_TOKEN_HMAC_SECRET_KEY", DEV_BOT_SECRET),
        help="the hub's bot_token_hmac_secret_key (default: development mode's)",
    )
    parser.add_argument("--api-key", default=env("SWITCHBOARD_API_KEY"), help="server API key for edits")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between streamed tokens")
    parser.add_argument("--line-pace", type=float, default=0.4, help="seconds between written lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
