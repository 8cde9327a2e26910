"""What a connection that has gone costs the node (issue 15 soak): nothing, as soon as it has gone. Every
object of a closed session or document connection must be freed by reference counting; the cycle collector
frees cycles only at a full collection, which a node under a steady load (few allocations) makes once in
several minutes, so a cycle per connection grows the heap by hundreds of connections' objects meanwhile
(bench/soak.py measured 0.6-1.6 MB/min of RSS with the soak's clients coming and going)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import weakref
from collections.abc import Iterator
from typing import Any

import websockets

from tests.conftest import TIMEOUT, HubFactory, RawClient, RunningHub, http_client, token
from tests.hub.ydocs import YConnect


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
    """A WebSocket session (subscribed, with join/leave and presence), then an SSE stream. The cycles they
    were in: the writer's callbacks, the log binding of the connection's task (and copies of its context in
    timer handles), the WebSocket protocol's relay, the upgraded HTTP protocol's parser, websockets' parser
    generator."""
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
    """As sessions: the document connection's writer held it in a cycle (its callbacks), the journal's
    writer task kept the last batch's callbacks (holding the connection) until the next batch, and the
    WebSocket protocol was in a cycle with its ASGI scope (whose extensions are the protocol)."""
    with _no_cycle_collector():
        alice = await yconnect(docs_hub, "notes")
        (gone,) = docs_hub.sb.documents.peers
        ref = weakref.ref(gone)
        protocol = weakref.ref(gone.transport._raw)  # uvicorn's WebSocket protocol (ours)
        del gone
        bob = await yconnect(docs_hub, "notes")
        alice.text.insert(0, "hi")
        await alice.flush()
        await bob.until(lambda: str(bob.text) == "hi")
        await alice.close()
        await _freed(ref)
        await _freed(protocol)
