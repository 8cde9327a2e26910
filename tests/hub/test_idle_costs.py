"""What an idle connection costs the node (issue 15): no task of its own while it waits for a message, and
the session clock's pass looks only at the sessions due (``hub.wheel``), not at every one every second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import websockets

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
