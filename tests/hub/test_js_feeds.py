"""Live feeds through the official centrifuge-js SDK (npm ``centrifuge``, run by Node) over WebSocket,
JSON and Protobuf: ``delta: 'fossil'`` decodes to what was published (and says how much it saved), a
subscriber opening mid-stream shows the latest value of every sensor at once (cache recovery, asked for
with ``since: {}`` or not at all), and one rendering slowly stays connected and ends current."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests import conftest
from tests.conftest import RunningHub
from tests.hub import test_feeds
from tests.hub.test_feeds import FEEDS, sensors
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401 - the fixture that installs the SDK

feeds = test_feeds.feeds
"""A hub with the feed namespaces of test_feeds."""

pytestmark = pytest.mark.usefixtures("centrifuge_js")

SCRIPT = Path(__file__).parent / "js_sdk" / "feeds.mjs"


class Node:
    """The script's process and its JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = await self.proc.stdout.readline()
                assert line, f"the script ended: {self.events[-3:]}"
                self.events.append(json.loads(line))
                if "error" in self.events[-1]:
                    raise AssertionError(self.events[-1])
                if self.events[-1].get("event") == event:
                    return self.events[-1]

    def publications(self) -> list[Any]:
        return [e["data"] for e in self.events if e.get("event") == "publication"]


async def run(hub: RunningHub, protocol: str, channel: str, options: dict[str, Any]) -> Node:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        hub.url,
        protocol,
        channel,
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    return Node(proc)


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
async def test_js_sdk_decodes_fossil_deltas(feeds: RunningHub, protocol: str) -> None:
    node = await run(feeds, protocol, "alarms:js", {"delta": "fossil"})
    await node.next("subscribed")
    for n in range(20):
        await feeds.sb.node.publish("alarms:js", sensors(n))
    await feeds.sb.node.publish("alarms:js", {**sensors(20), "stop": True})
    stats = await node.next("stats")
    assert node.publications() == [sensors(n) for n in range(20)] + [{**sensors(20), "stop": True}]
    assert stats["numFullPayloads"] == 1 and stats["numDeltaPayloads"] == 20
    assert stats["compressionRatio"] > 0.8, stats  # 30 fields, two change per reading
    assert await node.proc.wait() == 0


@pytest.mark.parametrize(
    ("protocol", "options"), [("json", {"since": {}, "delta": "fossil"}), ("protobuf", {})]
)
async def test_js_sdk_opened_mid_stream_shows_every_sensor_at_once(
    feeds: RunningHub, protocol: str, options: dict[str, Any]
) -> None:
    for n in range(40):
        await feeds.sb.node.publish("feed:js", {"sensor": f"t{n % 8}", "value": n})
    node = await run(feeds, protocol, "feed:js", options)
    subscribed = await node.next("subscribed")
    assert subscribed["wasRecovering"] and subscribed["recovered"]
    while len({p["sensor"] for p in node.publications()}) < 8:
        await node.next("publication")
    assert {p["sensor"]: p["value"] for p in node.publications()} == {f"t{i}": 32 + i for i in range(8)}
    await feeds.sb.node.publish("feed:js", {"sensor": "stop", "stop": True})
    await node.next("stats")
    assert await node.proc.wait() == 0


async def test_js_sdk_rendering_slowly_stays_current(make_hub: Any) -> None:
    """A dashboard that blocks 100 ms on every publication while 8 sensors publish 25 a second each, over
    the namespace's 10: it is never disconnected, each sensor's values arrive in order, and it ends with
    the newest, having been sent fewer than were published. (Node reads the socket in large chunks between
    handlers, so what it holds is decoded late, not refused: the raw WebSocket test in test_feeds shows the
    hub skipping for a reader that does not read the socket.)"""
    cfg = conftest.test_config(client_conflation_backlog=8192)
    cfg.namespaces = {**cfg.namespaces, **FEEDS}
    feeds: RunningHub = await make_hub(cfg)
    node = await run(feeds, "json", "feed:slowjs", {"delta": "fossil", "readDelayMs": 100})
    await node.next("subscribed")
    latest: dict[str, int] = {}
    for n in range(80):
        sensor = f"t{n % 8}"
        latest[sensor] = n
        await feeds.sb.node.publish("feed:slowjs", {**sensors(n), "sensor": sensor})
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.5)  # the last readings flushed before the stop (another key: its own slot)
    await feeds.sb.node.publish("feed:slowjs", {"sensor": "stop", "stop": True})
    await node.next("stats")
    assert not [e for e in node.events if e.get("event") == "disconnected"]
    seen: dict[str, list[int]] = {}
    for data in node.publications()[:-1]:
        seen.setdefault(data["sensor"], []).append(data["n"])
    for values in seen.values():
        assert values == sorted(set(values))
    assert {k: v[-1] for k, v in seen.items()} == latest
    assert len(node.publications()) < 80
