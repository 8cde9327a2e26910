"""Events out across real processes: ``channel.occupied``/``vacated`` across two ``switchboard serve``
nodes on one fresh Redis (the first subscriber in the hub, the last one to leave it, and a killed node's
channels), and a ``switchboard worker`` killed mid-delivery that loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

import tests.nodes as harness
from hub.outbound.routes import Routes, webhook_id
from hub.outbound.settings import parse_webhooks
from inbox.inbox import InboxOptions
from inbox.inbox_sqlite import SqliteInbox
from inbox.outbox import OutboxEvent, TaskState, Topic
from tests.conftest import TIMEOUT, RawClient, token
from tests.nodes import ROOT, HubNode, write_config
from tests.redis_servers import RedisServer
from tests.workers.conftest import SECRET
from tests.workers.receiver import Receiver

make_nodes = harness.make_nodes  # the fixture, defined in tests/nodes.py


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRET).start()
    yield r
    await r.stop()


async def subscriber(node: HubNode, user: str, channel: str) -> RawClient:
    ws = await websockets.connect(node.url, open_timeout=TIMEOUT)
    client = RawClient(ws)
    assert "connect" in await client.command("connect", {"token": token(user)})
    assert "subscribe" in await client.command("subscribe", {"channel": channel})
    return client


def occupancy(receiver: Receiver) -> list[tuple[str, str]]:
    """(type, channel) of each occupied/vacated event, once per webhook-id, in arrival order."""
    seen: dict[str, tuple[str, str]] = {}
    for r in receiver.requests:
        if r.mode == "ok" and r.body["type"].startswith("channel.") and r.webhook_id not in seen:
            seen[r.webhook_id] = (r.body["type"], r.body["data"]["channel"])
    return list(seen.values())


async def test_occupied_and_vacated_across_two_nodes_once_each_and_a_killed_nodes_channel_is_vacated(
    make_nodes: Any,
    redis_server: RedisServer,
    receiver: Receiver,  # noqa: F811
) -> None:
    hook = {
        "name": "crm",
        "url": receiver.url,
        "secret": SECRET,
        "events": ["channel.occupied", "channel.vacated"],
    }
    one, two = await make_nodes(2, redis=[redis_server.url], webhooks=[hook])
    a = await subscriber(one, "alice", "chat:room")  # the first in the hub: occupied
    await receiver.wait_for(lambda: occupancy(receiver) == [("channel.occupied", "chat:room")])
    b = await subscriber(two, "bob", "chat:room")  # not the first: nothing
    await a.command("unsubscribe", {"channel": "chat:room"})  # not the last: nothing
    await b.command("unsubscribe", {"channel": "chat:room"})  # the last in the hub: vacated
    await receiver.wait_for(lambda: len(occupancy(receiver)) == 2)
    assert occupancy(receiver) == [("channel.occupied", "chat:room"), ("channel.vacated", "chat:room")]
    # a node killed while it held the only subscriber: a surviving node reports the channel vacated
    await subscriber(two, "carol", "chat:lonely")
    await receiver.wait_for(lambda: len(occupancy(receiver)) == 3)
    await a.command("subscribe", {"channel": "chat:room"})  # node one holds chat:room again
    await receiver.wait_for(lambda: len(occupancy(receiver)) == 4)
    await two.kill()
    await receiver.wait_for(lambda: len(occupancy(receiver)) == 5)
    assert occupancy(receiver)[2:] == [
        ("channel.occupied", "chat:lonely"),
        ("channel.occupied", "chat:room"),
        ("channel.vacated", "chat:lonely"),
    ]
    await asyncio.sleep(1.0)  # a second report would come within this (three node_info_intervals)
    assert len(occupancy(receiver)) == 5


def worker_command(config: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "hub", "worker", "--config", str(config), "--data-dir", str(data_dir)]


async def test_a_worker_process_killed_mid_delivery_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    hook = {"name": "main", "url": receiver.url, "secret": SECRET, "events": ["publication"], "timeout": "1s"}
    config = write_config(tmp_path / "hub.toml", webhooks=[hook], workers_in_process=False)
    data = tmp_path / "data"
    # the test plays the node: it appends to the outbox the worker reads (one SQLite file, two processes)
    store = SqliteInbox(data / "inbox.sqlite3", InboxOptions(route=Routes(parse_webhooks([hook])).route))
    await store.open()
    stalled = True
    receiver.plan = lambda _id, _n: "stall" if stalled else "ok"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    log = (tmp_path / "worker.log").open("ab")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await store.append(
            [OutboxEvent("", Topic.PUBLICATION, {"channel": "chat:a", "n": n}) for n in range(20)]
        )
        first = subprocess.Popen(  # noqa: ASYNC220 - starting a worker process returns at once
            worker_command(config, data), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        procs.append(first)
        await receiver.wait_for(lambda: receiver.in_flight >= 8, timeout=30)  # mid-delivery: 8 in flight
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait)
        stalled = False
        second = subprocess.Popen(  # noqa: ASYNC220 - starting a worker process returns at once
            worker_command(config, data), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        procs.append(second)
        expected = {webhook_id(store.origin, t.event_id) for t in await store.tasks(limit=100)}
        # the killed worker's 8 leases run out (1 s timeout + 5 s margin), then they are delivered too
        await receiver.wait_for(lambda: set(receiver.processed()) == expected, timeout=40)
        async with asyncio.timeout(TIMEOUT):
            while await store.tasks(state=TaskState.PENDING, limit=1):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)  # the second worker records the last attempts: poll the store
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=TIMEOUT) == 0
        assert len(receiver.processed()) == 20
        stalled_ids = {r.webhook_id for r in receiver.requests if r.mode == "stall"}
        assert len(stalled_ids) == 8  # the killed worker's deliveries, redelivered with the same ids
        assert stalled_ids <= set(receiver.processed())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
        await store.close()
