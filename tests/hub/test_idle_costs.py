"""What an idle connection costs the node (issue 15): no task of its own while it waits for a message, and
the session clock's pass looks only at the sessions due (``hub.wheel``), not at every one every second;
and what a connection that has gone costs: nothing, as soon as it has gone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
import weakref
from collections.abc import Iterator
from typing import Any

import websockets

from tests.conftest import TIMEOUT, HubFactory, RawClient, RunningHub, http_client, token
from tests.hub.ydocs import YConnect

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


@contextlib.contextmanager
def _no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _freed(ref: weakref.ref[Any]) -> None:
    """Wait (bounded) for a session that has gone to be freed. The session clock's wheel may hold it until
    the seconds it was due at have passed (its ping, its handshake deadline: the test sets them short)."""
    async with asyncio.timeout(TIMEOUT):
        while ref() is not None:  # noqa: ASYNC110 - freeing is seen from outside, bounded
            await asyncio.sleep(0.05)


async def test_a_session_that_has_gone_is_freed_without_the_cycle_collector(make_hub: HubFactory) -> None:
    """The soak (bench/soak.py) saw RSS grow with clients coming and going: every session that ended stayed
    in reference cycles (its writer's callbacks, the log binding of its task, the WebSocket protocol's relay,
    the upgraded HTTP protocol's parser), freed only by a full collection, which this load made once in
    several minutes: hundreds of sessions' objects at a time. Reference counting alone frees them now."""
    hub = await make_hub(client_ping_interval=1.0, client_pong_timeout=0.5, client_stale_close_delay=1.0)
    node = hub.sb.node
    with _no_cycle_collector():
        c = RawClient(await websockets.connect(hub.url, open_timeout=TIMEOUT))
        assert "connect" in await c.command("connect", {"token": token("alice")})
        assert "subscribe" in await c.command("subscribe", {"channel": "chat:x", "join_leave": True})
        assert "presence" in await c.command("presence", {"channel": "chat:x"})
        (session,) = node.registry.clients.values()
        ref = weakref.ref(session)
        parser = weakref.ref(session.transport._raw.conn)  # websockets' protocol, under uvicorn's
        del session
        await c.ws.close()
        await _freed(ref)
        await _freed(parser)

        params = {"cf_connect": json.dumps({"token": token("bob", channels=["chat:x"])})}
        async with http_client() as http:
            async with http.stream("GET", hub.http + "/connection/uni_sse", params=params) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:") and "connect" in line:
                        break
                (session,) = node.registry.clients.values()
                ref = weakref.ref(session)
                del session
        await _freed(ref)


async def test_a_document_connection_that_has_gone_is_freed_without_the_cycle_collector(
    docs_hub: RunningHub, yconnect: YConnect
) -> None:
    """As sessions: the document connection's writer held it in a cycle (its callbacks), and the journal's
    writer task kept the last batch's callbacks (holding the connection) until the next batch."""
    with _no_cycle_collector():
        alice = await yconnect(docs_hub, "notes")
        (gone,) = docs_hub.sb.documents.peers
        ref = weakref.ref(gone)
        del gone
        bob = await yconnect(docs_hub, "notes")
        alice.text.insert(0, "hi")
        await alice.flush()
        await bob.until(lambda: str(bob.text) == "hi")
        await alice.close()
        await _freed(ref)
