"""Graceful shutdown: SIGTERM to a real ``switchboard serve`` with 200 WebSocket clients, a publisher in a
loop and an HTTP stream; and, in process, what a drain promises (in-flight commands finish, buffered writes
go out before the close, newcomers are turned away, a hung command does not hold the shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from typing import Any

import orjson
import pytest
import websockets

from channels.publication import Publication
from hub.hooks import Hooks
from tests.conftest import TIMEOUT, HubFactory, RawClient, http_client
from tests.hub.test_cli import server_process  # noqa: F401  (the fixture: a real `switchboard serve`)

SUBSCRIBERS = 200
BATCH = 50
PAUSE = 0.2


async def _pump_lines(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    """Keep reading the server's log (a full pipe would block the server) into parsed JSON records."""
    while line := await stream.readline():
        into.append(json.loads(line))


async def _subscriber(url: str) -> tuple[RawClient, str]:
    ws = await websockets.connect(url, open_timeout=TIMEOUT, max_size=None)
    c = RawClient(ws)
    client_id = (await c.command("connect", {}))["connect"]["client"]
    assert "subscribe" in await c.command("subscribe", {"channel": "lobby"})
    return c, client_id


async def test_sigterm_disconnects_everyone_with_3001_in_batches_and_exits_0(
    server_process: Any,  # noqa: F811
) -> None:
    proc, port = await server_process(
        SWITCHBOARD_LOG_FORMAT="json",
        SWITCHBOARD_SHUTDOWN_BATCH_SIZE=str(BATCH),
        SWITCHBOARD_SHUTDOWN_BATCH_PAUSE=str(PAUSE),
        SWITCHBOARD_SHUTDOWN_TIMEOUT="10",
    )
    logs: list[dict[str, Any]] = []
    pump = asyncio.get_running_loop().create_task(_pump_lines(proc.stdout, logs))
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    subscribers = await asyncio.gather(*(_subscriber(url) for _ in range(SUBSCRIBERS)))
    publisher, _ = await _subscriber(url)

    published = 0

    async def publish_forever() -> None:
        nonlocal published
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                reply = await publisher.command("publish", {"channel": "lobby", "data": {"n": published}})
                assert "publish" in reply, reply
                published += 1

    got_traffic: set[str] = set()
    everyone_got_traffic = asyncio.Event()

    async def read_until_closed(c: RawClient, client_id: str) -> tuple[int, str]:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await c._read()
                if c._inbox and client_id not in got_traffic:
                    got_traffic.add(client_id)
                    if len(got_traffic) == SUBSCRIBERS:
                        everyone_got_traffic.set()
                c._inbox.clear()
        assert c.ws.close_code is not None
        return c.ws.close_code, c.ws.close_reason or ""

    stream_messages: list[dict[str, Any]] = []
    stream_open = asyncio.Event()

    async def read_stream() -> None:
        async with (
            http_client(timeout=TIMEOUT) as http,
            http.stream("POST", f"http://127.0.0.1:{port}/connection/uni_http_stream", json={}) as response,
        ):
            async for line in response.aiter_lines():
                if line.strip() and line != "{}":
                    stream_messages.append(json.loads(line))
                    stream_open.set()

    publishing = asyncio.get_running_loop().create_task(publish_forever())
    readers = [asyncio.get_running_loop().create_task(read_until_closed(c, cid)) for c, cid in subscribers]
    streaming = asyncio.get_running_loop().create_task(read_stream())
    await asyncio.wait_for(everyone_got_traffic.wait(), TIMEOUT * 3)  # traffic flows to every subscriber
    await asyncio.wait_for(stream_open.wait(), TIMEOUT)

    proc.send_signal(signal.SIGTERM)
    sigterm_at = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*readers), TIMEOUT * 2)
    assert await asyncio.wait_for(proc.wait(), TIMEOUT * 2) == 0
    assert time.monotonic() - sigterm_at < 10 + 2  # within shutdown_timeout (plus process exit)
    await asyncio.wait_for(asyncio.gather(publishing, streaming, pump), TIMEOUT)

    assert results == [(3001, "shutdown")] * SUBSCRIBERS
    assert publisher.ws.close_code == 3001
    assert published > 0
    assert stream_messages[0].get("connect") and stream_messages[-1] == {
        "disconnect": {"code": 3001, "reason": "shutdown"}
    }

    # The batches, from the server's own log: sizes, order, spacing, and which client went in which.
    sessions = SUBSCRIBERS + 2  # the publisher and the HTTP stream
    batches = [r for r in logs if r["message"].startswith("shutdown: batch ")]
    expected = [min(BATCH, sessions - i) for i in range(0, sessions, BATCH)]
    assert [int(r["message"].split(": ")[2].split()[0]) for r in batches] == expected
    assert len(batches) == 5
    times = [_seconds(r["time"]) for r in batches]
    assert all(b - a >= PAUSE - 0.002 for a, b in zip(times, times[1:], strict=False)), times
    group_of: dict[str, int] = {}
    group = 0
    for r in logs:
        if r["message"] == "disconnect 3001 shutdown":
            group_of[r["client"]] = group
        elif r["message"].startswith("shutdown: batch "):
            group += 1
    ids = [cid for _, cid in subscribers]
    assert all(cid in group_of for cid in ids)
    sizes = [sum(1 for cid in ids if group_of[cid] == g) for g in range(len(batches))]
    assert all(size <= BATCH for size in sizes) and sum(1 for s in sizes if s) >= 4, sizes
    assert not [r for r in logs if r["level"] in ("error", "critical")]


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- the drain, in process


def _slow_rpc_hooks() -> tuple[Hooks, asyncio.Event, asyncio.Event]:
    hooks = Hooks()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: Any) -> Any:
        entered.set()
        await release.wait()
        return {"done": True}

    hooks.rpc["slow"] = slow
    return hooks, entered, release


async def test_drain_finishes_the_command_in_flight_and_flushes_buffered_writes(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hooks, entered, release = _slow_rpc_hooks()
    hub = await make_hub(hooks=hooks, shutdown_timeout=30.0)
    node = hub.sb.node
    busy = await raw_client(hub, connect={})
    idle = await raw_client(hub, connect={})
    assert "subscribe" in await idle.command("subscribe", {"channel": "lobby"})
    frame = "\n".join(
        [
            orjson.dumps({"id": 10, "rpc": {"method": "slow"}}).decode(),
            orjson.dumps({"id": 11, "presence_stats": {"channel": "lobby"}}).decode(),
        ]
    )
    await busy.send_raw(frame)
    await asyncio.wait_for(entered.wait(), TIMEOUT)

    drain = asyncio.get_running_loop().create_task(node.drain())
    # Pushed in the same loop tick: the publication is still in the idle client's buffer when the drain
    # closes it, so it must be flushed before the close frame.
    node.handle_publication(("", "lobby"), Publication(data=b'{"n":1}', time=int(time.time() * 1000)))
    assert (await idle.push("pub"))["pub"]["data"] == {"n": 1}
    assert await idle.closed() == (3001, "shutdown")

    # While draining: /ready says so, and a newcomer is turned away with 3001.
    async with http_client(timeout=TIMEOUT) as http:
        assert (await http.get(hub.http + "/ready")).status_code == 503
    late = await raw_client(hub)  # closed right after the handshake, before any command
    assert await late.closed() == (3001, "shutdown")

    # The busy connection is still there, waiting for its command.
    assert not drain.done()
    assert any(s.busy for s in node.sessions)
    release.set()
    assert (await busy.reply(10))["rpc"]["data"] == {"done": True}
    assert await busy.closed() == (3001, "shutdown")
    assert not any(m.get("id") == 11 for m in busy._inbox)  # the rest of the frame was dropped
    await asyncio.wait_for(drain, TIMEOUT)
    assert not node.sessions


async def test_a_hung_command_does_not_hold_the_shutdown(
    make_hub: HubFactory, raw_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    hooks, entered, release = _slow_rpc_hooks()  # never released
    hub = await make_hub(hooks=hooks, shutdown_timeout=1.0)
    hung = await raw_client(hub, connect={})
    await hung.send_raw(orjson.dumps({"id": 5, "rpc": {"method": "slow"}}).decode())
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    started = time.monotonic()
    await asyncio.wait_for(hub.sb.node.drain(), TIMEOUT)
    assert time.monotonic() - started < 1.0 + 0.5  # gave up at 3/4 of shutdown_timeout
    assert await hung.closed() == (3001, "shutdown")
    assert any("still open; closing them now" in r.getMessage() for r in caplog.records)
    release.set()


async def test_batches_are_spread_within_the_timeout(make_hub: HubFactory, raw_client: Any, caplog) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    # 12 sessions in batches of 2, 10 s apart, would take 50 s: the pause shrinks to fit half the timeout.
    hub = await make_hub(shutdown_batch_size=2, shutdown_batch_pause=10.0, shutdown_timeout=2.0)
    clients = [await raw_client(hub, connect={}) for _ in range(12)]
    started = time.monotonic()
    await asyncio.wait_for(hub.sb.node.drain(), TIMEOUT)
    assert time.monotonic() - started < 2.0
    for c in clients:
        assert await c.closed() == (3001, "shutdown")
    batches = [r.getMessage() for r in caplog.records if r.getMessage().startswith("shutdown: batch ")]
    assert len(batches) == 6
