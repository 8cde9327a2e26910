"""What an idle connection costs the node (issue 15): no task of its own while it waits for a message, and
the session clock's pass looks only at the sessions due (``hub.wheel``), not at every one every second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import websockets

from channels.names import ChannelKey
from channels.publication import ClientInfo
from tests.conftest import TIMEOUT, HubFactory, RawClient

N = 20


async def _connected(hub: Any, n: int) -> list[RawClient]:
    clients = []
    for i in range(n):
        ws = await websockets.connect(hub.url, open_timeout=TIMEOUT)
        c = RawClient(ws)
        assert "connect" in await c.command("connect", {})
        # a channel each: no join pushes to the others (a client that leaves them unread cannot close quickly)
        assert "subscribe" in await c.command("subscribe", {"channel": f"room{i}"})
        clients.append(c)
    return clients


async def test_an_idle_connection_holds_no_task(make_hub: HubFactory) -> None:
    hub = await make_hub()
    clients = await _connected(hub, N)
    assert len(hub.sb.node.sessions) == N
    assert len(hub.server.server_state.connections) == N
    assert not hub.server.server_state.tasks  # uvicorn's per-connection ASGI tasks: none left running
    # ... and each still answers, and ends its session when it goes
    assert "publish" in await clients[0].command("publish", {"channel": "room0", "data": {"x": 1}})
    for c in clients:
        await c.ws.close()
    async with asyncio.timeout(TIMEOUT):
        while hub.sb.node.sessions:  # noqa: ASYNC110 - node state seen from outside, bounded
            await asyncio.sleep(0.01)


async def test_a_clock_pass_looks_only_at_the_sessions_due(make_hub: HubFactory, monkeypatch: Any) -> None:
    hub = await make_hub(client_ping_interval=25.0)
    node = hub.sb.node
    clients = await _connected(hub, N)
    looked: list[Any] = []
    check = node._check_session

    def counting(client: Any, now: float, wall: float) -> Any:
        looked.append(client)
        return check(client, now, wall)

    monkeypatch.setattr(node, "_check_session", counting)
    now = time.monotonic()
    node.tick(now + 2.0, time.time() + 2.0)
    assert looked == []  # nobody is due two seconds after connecting
    node.tick(now + 26.0, time.time() + 26.0)
    assert len(looked) == N  # each pinged at its interval, once
    assert all(c.awaiting_pong for c in node.sessions)

    async def read_forever(c: RawClient) -> None:
        while True:
            await c._read()  # answers pings

    readers = [asyncio.get_running_loop().create_task(read_forever(c)) for c in clients]
    try:
        async with asyncio.timeout(TIMEOUT):  # each answers its ping, and the server sees the pong
            while any(c.awaiting_pong for c in node.sessions):  # noqa: ASYNC110 - bounded poll
                await asyncio.sleep(0.01)
    finally:
        for r in readers:
            r.cancel()


async def test_a_refresh_skipped_because_the_last_one_still_runs_is_not_put_off_a_whole_interval(
    make_hub: HubFactory,
) -> None:
    """With the defaults a refresh that meets a stalled Redis runs up to its budget (ttl / 3 = 20 s) plus a
    last try (a backoff up to 2 s and a round trip up to redis_connect_timeout = 5 s), ~27 s, while the next
    one falls due after 22.5-25 s (the jitter): that one is skipped, and the one after must not come a whole
    interval later (45-50 s after the failed one), past the entries' ttl (60 s after the refresh before).
    Before (review of the issue-15 rework) the one after came a whole interval later; now it runs at the
    first tick after the long one ended."""
    hub = await make_hub()
    node = hub.sb.node
    interval = node.config.presence_update_interval
    started: list[int] = []
    gate = asyncio.Event()

    async def slow_refresh(entries: Iterable[tuple[ChannelKey, ClientInfo]]) -> None:
        started.append(1)
        await gate.wait()  # Redis stalled: this refresh still retries when the next one is due

    node.presence.refresh = slow_refresh  # type: ignore[method-assign]
    t0 = time.monotonic() + 1000.0  # past anything the node's own clock scheduled
    node.tick(t0, time.time())
    await asyncio.sleep(0)
    assert len(started) == 1
    node.tick(t0 + interval, time.time())  # due again; the first still runs: skipped
    await asyncio.sleep(0)
    gate.set()
    assert node._presence_refresh is not None  # noqa: SLF001
    await node._presence_refresh  # noqa: SLF001
    node.tick(t0 + interval + 1.0, time.time())  # the next tick after the long refresh ended
    await asyncio.sleep(0)
    assert len(started) == 2, "the skipped refresh waits another whole interval"
