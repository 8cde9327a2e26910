"""examples/agent_assistant.py against a real hub in development mode (no configuration: the public bot key
of ``hub.config.DEV_BOT_SECRET``), with the official clients as the people beside it:

- a centrifuge-python person sees the agent as a bot (join push and presence), mentions it and reassembles
  its streamed reply exactly (``channels.streams.StreamView``), calls its RPC methods (and gets their
  errors for bad data and unknown methods);
- a yjs + y-websocket person (tests/js/client.mjs, as y-codemirror.next decodes cursors) sees the agent's
  lines arrive in the document, its cursor at the last line written, then its removal;
- a centrifuge-js person (tests/hub/js_sdk/agent_person.mjs) sees it in presence as a bot, mentions it,
  reassembles the streamed reply, calls ``agent.assistant.ask``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from centrifuge import Client, JoinContext, PublicationContext, SubscriptionEventHandler
from centrifuge.exceptions import ReplyError

from channels.publication import Publication
from channels.streams import StreamView
from examples.agent_assistant import Assistant, Model, tokens
from hub.auth import mint_token
from hub.config import DEV_SECRET, Config, load_config
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client
from tests.hub.test_docs_js import NodeFactory, node, node_clients  # noqa: F401  (fixtures)
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401 (the fixture that installs the SDK)

ROOM = "chat.general"
PERSON_JS = Path(__file__).parents[1] / "hub" / "js_sdk" / "agent_person.mjs"


def dev_config(data_dir: Path) -> Config:
    """What ``make run`` starts with, but an agent's presence lingers 0.3 s after its edit, not 2 s."""
    dev = load_config(None, env={}, allow_dev_mode=True)
    return dataclasses.replace(dev, data_dir=str(data_dir), doc_edit_presence_linger=0.3)


def person_token(name: str) -> str:
    """What the demo pages get from POST /demo/token."""
    return mint_token(DEV_SECRET, name.lower(), info={"name": name})


@pytest.fixture
async def dev_hub(make_hub: HubFactory, tmp_path: Path) -> RunningHub:
    return await make_hub(dev_config(tmp_path))


@pytest.fixture
async def agent(dev_hub: RunningHub) -> AsyncIterator[Assistant]:
    # no token, no key: the development bot key, as `python -m examples.agent_assistant` beside `make run`
    assistant = Assistant(dev_hub.url, pace=0.0, line_pace=0.0, timeout=TIMEOUT)
    await assistant.start()
    async with asyncio.timeout(TIMEOUT):
        await assistant.ready()
    yield assistant
    await assistant.close()


class Person(SubscriptionEventHandler):  # type: ignore[misc]
    """A person in the room: the streams it reassembles and the joins it sees."""

    def __init__(self) -> None:
        self.view = StreamView()
        self.chunks: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.joins: list[Any] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        if isinstance(ctx.pub.data, dict) and "stream" in ctx.pub.data:
            assert ctx.pub.info.conn_info == {"bot": True, "name": "Assistant"}
            self.chunks.append(ctx.pub.data)
            self.view.feed(Publication(orjson.dumps(ctx.pub.data)))
            async with self.changed:
                self.changed.notify_all()

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info)

    async def reply(self, after: int = 0) -> str:
        """The text of the next finished stream, the ``after``-th finished one counted from 0."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.view.finished) > after), TIMEOUT)
        stream = [c["stream"]["id"] for c in self.chunks if c["stream"].get("final")][after]
        return self.view.texts[stream]


async def person(hub: RunningHub, name: str) -> tuple[Client, Any, Person]:
    events = Person()
    client = Client(hub.url, token=person_token(name), timeout=TIMEOUT)
    sub = client.new_subscription(ROOM, events=events, join_leave=True)
    await client.connect()
    await sub.subscribe()
    await sub.ready(TIMEOUT)
    return client, sub, events


async def test_a_python_person_mentions_the_agent_and_calls_it(dev_hub: RunningHub, agent: Assistant) -> None:
    ann, room, seen = await person(dev_hub, "Ann")
    try:
        presence = await room.presence()
        shown = sorted((c.user, c.conn_info) for c in presence.clients.values())
        assert shown == [("ann", {"name": "Ann"}), ("assistant", {"bot": True, "name": "Assistant"})]

        await room.publish({"text": "the build is green"})  # heard, not answered
        await room.publish({"text": "@assistant how are you?"})
        reply = await seen.reply()
        assert reply == Model().answer("Ann", "@assistant how are you?")
        # streamed: chunks (coalesced per write by the namespace's streams option), then the whole message
        first = [c for c in seen.chunks if c["stream"]["id"] == seen.chunks[0]["stream"]["id"]]
        assert len(first) >= 2 and first[-1]["stream"]["final"] and first[-1]["stream"].get("from") == 0
        assert first[-1]["reply_to"] == "ann" and seen.view.gaps == seen.view.duplicates == 0
        history = await room.history(limit=10)  # the finished reply once, not its chunks
        assert [p.data["text"] for p in history.publications] == [
            "the build is green",
            "@assistant how are you?",
            reply,
        ]

        summary = (await ann.rpc("agent.assistant.summarise", {})).data["text"]
        assert summary.splitlines() == [
            "Summary of 3 messages from Ann, Assistant:",
            "- Ann: the build is green",
            "- Ann: @assistant how are you?",
            f"- Assistant: {reply[:79]}…",
        ]
        asked = await ann.rpc("agent.assistant.ask", {"text": "ping"})
        assert asked.data == {"text": Model().answer("ann", "ping")}
        for method, data, code in [
            ("agent.assistant.ask", {"text": 5}, 400),
            ("agent.assistant.summarise", [1], 400),
            ("agent.assistant.nothing", {}, 404),
        ]:
            with pytest.raises(ReplyError) as refused:
                await ann.rpc(method, data)
            assert refused.value.code == code
    finally:
        await ann.disconnect()


async def test_a_yjs_person_sees_the_agent_write_and_its_cursor_move(
    dev_hub: RunningHub,
    agent: Assistant,
    node: NodeFactory,  # noqa: F811
) -> None:
    watcher = await node("watch", f"ws://127.0.0.1:{dev_hub.port}/doc", "notes", "")
    await watcher.event("synced")
    ann, room, seen = await person(dev_hub, "Ann")
    try:
        await room.publish({"text": "ship it on Friday"})
        await room.publish({"text": "@assistant write this into notes"})
        assert await seen.reply() == "Writing the summary into “notes”: open /demo/editor?doc=notes"
        lines = [
            "Summary of 2 messages from Ann:",
            "- Ann: ship it on Friday",
            "- Ann: @assistant write this into notes",
        ]
        assert await seen.reply(1) == "Done: 3 lines written into “notes”."
        written = "".join(line + "\n" for line in lines)
        try:
            await watcher.event("text", lambda e: e["text"] == written)
        except TimeoutError:
            raise AssertionError(watcher.events) from None

        def agents(event: dict[str, Any]) -> list[dict[str, Any]]:
            return [s for s in event["states"] if s["state"].get("bot")]

        ranges, start = [], 0  # each line's range, as written: the cursor of each edit (ASCII: UTF-16)
        for line in lines:
            ranges.append({"anchor": start, "head": start + len(line) + 1})
            start += len(line) + 1
        try:
            shown = await watcher.event(
                "awareness", lambda e: any(a["cursor"] == ranges[-1] for a in agents(e))
            )
        except TimeoutError:
            raise AssertionError([e for e in watcher.events if e["event"] == "awareness"]) from None
        assert agents(shown)[0]["state"]["user"]["name"] == "Assistant"
        cursors = [a["cursor"] for e in watcher.events if e["event"] == "awareness" for a in agents(e)]
        moves = [c for i, c in enumerate(cursors) if c and c != cursors[i - 1]]
        assert moves and all(c in ranges for c in moves), (moves, ranges)  # down the lines, in order
        assert [ranges.index(c) for c in moves] == sorted(ranges.index(c) for c in moves)
        later = len(watcher.events)
        await watcher.event("awareness", lambda e: watcher.events.index(e) >= later and not agents(e))
    finally:
        await ann.disconnect()


@pytest.mark.usefixtures("centrifuge_js")
async def test_a_js_person_mentions_the_agent_and_calls_it(dev_hub: RunningHub, agent: Assistant) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(PERSON_JS),
        dev_hub.url,
        person_token("Bea"),
        ROOM,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            out, err = await proc.communicate()
        events = [json.loads(line) for line in out.decode().splitlines()]
        assert proc.returncode == 0, (events, err.decode()[-2000:])
        presence, reply, answer = events
        shown = sorted((c["user"], c["connInfo"]) for c in presence["clients"])
        assert shown == [("assistant", {"bot": True, "name": "Assistant"}), ("bea", {"name": "Bea"})]
        expected = Model().answer("Bea", "@assistant hello from JS")
        assert reply == {
            "event": "reply",
            "text": expected,
            "replyTo": "bea",
            "bot": True,
            "gaps": 0,
            "chunks": reply["chunks"],
        }
        assert reply["chunks"] >= 2  # chunks, then the finished message
        assert answer == {"event": "answer", "data": {"text": Model().answer("bea", "are you there?")}}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_a_reply_is_cut_into_tokens_that_join_into_it() -> None:
    for text in ["", "one", "  two  words ", "Ann, you said: “é 🙂”.\nnext line"]:
        parts = tokens(text)
        assert "".join(parts) == text and all(len(p.split()) <= 1 for p in parts)


async def test_when_someone_types_meanwhile_the_agent_appends_at_the_new_end(
    dev_hub: RunningHub, agent: Assistant
) -> None:
    """The agent's edit carries the version it read; a person's edit between its read and its write makes
    it stale (409), and the agent appends after what the person wrote instead of inside it."""
    person = http_client(base_url=dev_hub.http, timeout=TIMEOUT)
    typed = []

    async def someone_types_first(request: httpx.Request) -> None:
        if request.url.path.endswith("/edit") and not typed:
            typed.append(request)
            op = {"op": "text.insert", "path": ["text"], "index": 0, "text": "Agenda\n"}
            assert (await person.post("/doc/race/edit", json={"ops": [op]})).status_code == 200

    agent.http.event_hooks["request"].append(someone_types_first)
    answers: list[int] = []
    agent.http.event_hooks["response"].append(lambda r: _record(answers, r))
    try:
        await agent.write_lines("race", ["one", "two"])
        content = (await person.get("/doc/race/content")).json()
        assert content == {"text": "Agenda\none\ntwo\n"}
        assert answers == [200, 409, 200, 200]  # content, the stale edit, the rebased one, the next line
    finally:
        await person.aclose()


async def _record(answers: list[int], response: httpx.Response) -> None:
    answers.append(response.status_code)
