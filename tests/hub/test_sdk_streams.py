"""Streamed replies through the official centrifuge-python SDK, unchanged (JSON and Protobuf): an agent
streams a reply with ``Subscription.publish``; a subscriber that was there before, one that joins
mid-stream and one whose connection drops mid-stream (and recovers) each reassemble exactly the text, and
history holds the message once."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from channels.publication import Publication
from channels.streams import StreamView
from tests.conftest import HubFactory, token
from tests.hub import test_js_sdk
from tests.hub.test_sdk_channels import Rec, connected, subscribed
from tests.hub.test_sdk_recovery import drop_and_hold
from tests.hub.test_streams import chunk, config

centrifuge_js = test_js_sdk.centrifuge_js  # the fixture that installs the SDK

WORDS = ["An ", "agent ", "writes ", "token ", "by ", "token."]


async def reassembled(rec: Rec, stream: str) -> StreamView:
    """Feed a subscriber's publications to a StreamView until ``stream``'s finished message."""
    view = StreamView()
    while stream not in view.finished:
        pub = await rec.pub()
        view.feed(Publication(orjson.dumps(pub.data), offset=pub.offset))
    return view


async def test_subscribers_before_during_and_across_a_reconnect_reassemble_the_reply(
    make_hub: HubFactory, sdk: Any
) -> None:
    hub = await make_hub(config())
    agent, _ = await connected(sdk, hub, token=token("agent"))
    reply_sub, _ = await subscribed(agent, "agent:room")
    before, _ = await connected(sdk, hub, token=token("before"))
    _, before_rec = await subscribed(before, "agent:room")
    dropped, dropped_rec = await connected(sdk, hub, token=token("dropped"))
    _, dropped_sub_rec = await subscribed(dropped, "agent:room")

    await reply_sub.publish({"text": "question?"})  # an ordinary message first: it stays as it is
    half = len(WORDS) // 2
    for seq, word in enumerate(WORDS[:half]):
        await reply_sub.publish(chunk("r1", seq, word, reply_to="q1"))
    await drop_and_hold(hub, dropped, dropped_rec, "server")
    late, _ = await connected(sdk, hub, token=token("late"))
    _, late_rec = await subscribed(late, "agent:room")
    for seq, word in enumerate(WORDS[half:], start=half):
        await reply_sub.publish(chunk("r1", seq, word, final=seq == len(WORDS) - 1, reply_to="q1"))
    dropped_rec.gate.set()  # back after the reply finished: the whole message is recovered from history

    whole = "".join(WORDS)
    for rec in (before_rec, late_rec, dropped_sub_rec):
        view = await reassembled(rec, "r1")
        assert view.texts == {"r1": whole} and view.gaps == 0
    history = await reply_sub.history(limit=10)
    assert [p.data["text"] for p in history.publications] == ["question?", whole]
    assert history.publications[1].data["reply_to"] == "q1"


async def test_a_subscriber_that_recovers_mid_stream_gets_the_text_so_far_then_the_rest(
    make_hub: HubFactory, sdk: Any
) -> None:
    hub = await make_hub(config())
    agent, _ = await connected(sdk, hub, token=token("agent"))
    reply_sub, _ = await subscribed(agent, "agent:room")
    dropped, dropped_rec = await connected(sdk, hub, token=token("dropped"))
    _, sub_rec = await subscribed(dropped, "agent:room")
    await sub_rec.next("subscribed")  # the first subscribe
    await reply_sub.publish(chunk("r2", 0, "Hel"))
    await drop_and_hold(hub, dropped, dropped_rec, "server")
    await reply_sub.publish(chunk("r2", 1, "lo"))
    dropped_rec.gate.set()  # back while the stream is open: recovered, then the text so far
    _, again = await sub_rec.next("subscribed")
    assert (again.was_recovering, again.recovered) == (True, True)
    await reply_sub.publish(chunk("r2", 2, "!", final=True))
    view = await reassembled(sub_rec, "r2")
    assert view.texts == {"r2": "Hello!"} and view.gaps == 0
    history = await reply_sub.history(limit=10)
    assert [p.data["text"] for p in history.publications] == ["Hello!"]


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
async def test_centrifuge_js_subscribers_reassemble_the_reply(
    make_hub: HubFactory, centrifuge_js: Path, protocol: str
) -> None:
    hub = await make_hub(config())
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(centrifuge_js.parent / "streams.mjs"),
        hub.http,
        token("js"),
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (events, stderr.decode()[-2000:])
    whole = "Streamed from an agent, token by token."
    texts = {e["who"]: (e["text"], e["gaps"]) for e in events if e["event"] == "text"}
    assert texts == {"before": (whole, 0), "late": (whole, 0), "dropped": (whole, 0)}, events
    (again,) = [e for e in events if e["event"] == "resubscribed"]
    assert again == {"event": "resubscribed", "wasRecovering": True, "recovered": True}
    (history,) = [e for e in events if e["event"] == "history"]
    assert history["texts"] == [whole]
