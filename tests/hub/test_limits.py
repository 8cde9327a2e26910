"""Limits and the session clock, at the protocol level against a real hub.

- client_channel_limit: one subscription too many is error 106, and the connection stays usable;
- client_queue_max_size: a client that stops reading while its channel is flooded is disconnected with 3008
  (slow), and a normal subscriber of the same channel receives every publication;
- ping/pong: a client that answers pings stays, one that does not is closed with 3012 (no pong);
- staleness: a WebSocket that never sends ``connect`` is closed with 3502 (stale).

Sleeps appear only where time itself is the subject (pings, staleness); everything else waits on events,
bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import websockets

from tests.conftest import TIMEOUT, RawClient, RunningHub


async def wait_for(predicate: Any, what: str) -> None:
    """Poll a server-side condition (the hub offers no event for it), bounded by TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
    assert predicate(), what


async def connected(raw_client: Any, hub: RunningHub, **kw: Any) -> tuple[RawClient, str]:
    """A connected raw client and its client id."""
    c = await raw_client(hub, **kw)
    reply = await c.command("connect", {})
    assert "connect" in reply, reply
    return c, reply["connect"]["client"]


def session_of(hub: RunningHub, client_id: str) -> Any:
    return next((s for s in hub.sb.node.sessions if s.id == client_id), None)


# ---------------------------------------------------------------- channel limit


async def test_channel_limit_exceeded_is_error_106_and_the_connection_stays(make_hub, raw_client):
    hub = await make_hub(client_channel_limit=3)
    c, _ = await connected(raw_client, hub)
    for name in ("one", "two", "three"):
        assert "subscribe" in await c.command("subscribe", {"channel": name})
    reply = await c.command("subscribe", {"channel": "four"})
    assert reply["error"]["code"] == 106, reply
    # The refused subscription left nothing behind: the channel has no subscriber on the node.
    assert hub.sb.node.registry.subscriber_count(("", "four")) == 0
    # The connection is still usable, and the limit counts current subscriptions, not attempts.
    assert (await c.command("unsubscribe", {"channel": "one"}))["unsubscribe"] == {}
    reply = await c.command("subscribe", {"channel": "four"})
    assert "subscribe" in reply, reply
    await c.command("publish", {"channel": "four", "data": {"n": 1}})
    assert (await c.push("pub"))["pub"]["data"] == {"n": 1}
    reply = await c.command("subscribe", {"channel": "five"})
    assert reply["error"]["code"] == 106, reply


# ---------------------------------------------------------------- slow consumer

BIG = "x" * 30_000
"""One publication's payload: under client_queue_max_size, so one alone never makes anybody slow."""


async def test_slow_consumer_is_disconnected_with_3008_and_others_get_everything(
    make_hub, raw_client, caplog
):
    caplog.set_level(logging.INFO, logger="switchboard")
    hub = await make_hub(client_queue_max_size=65536)
    node = hub.sb.node
    # max_queue=None: websockets itself never pauses reading, so only our pause_reading() stops it.
    slow, slow_id = await connected(raw_client, hub, max_queue=None)
    normal, normal_id = await connected(raw_client, hub, max_queue=None)
    assert "subscribe" in await slow.command("subscribe", {"channel": "flood"})
    assert "subscribe" in await normal.command("subscribe", {"channel": "flood"})
    members = (await normal.command("presence", {"channel": "flood"}))["presence"]["presence"]
    assert set(members) == {slow_id, normal_id}

    received: list[int] = []
    total: list[int] = []
    done = asyncio.Event()

    async def read_normal() -> None:
        while True:
            push = await normal.push("pub")
            received.append(push["pub"]["data"]["n"])
            if total and len(received) >= total[0]:
                done.set()

    reader = asyncio.get_running_loop().create_task(read_normal())
    try:
        slow.ws.transport.pause_reading()
        before = node.metrics.slow_disconnects
        n = 0
        async with asyncio.timeout(TIMEOUT):
            while node.metrics.slow_disconnects == before:
                n += 1
                await node.publish("flood", {"n": n, "pad": BIG})
                # One publication per loop tick: the flush runs before the next publication, so a reader
                # that keeps up never has more than one publication queued.
                await asyncio.sleep(0)
        assert n > 1, "one publication alone must not make a reader slow"
        for _ in range(5):  # the channel goes on for the others
            n += 1
            await node.publish("flood", {"n": n, "pad": BIG})
            await asyncio.sleep(0)
        total.append(n)
        if len(received) >= n:
            done.set()
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    # The normal subscriber got every publication, in order, and was never taken for a slow one.
    assert received == list(range(1, n + 1))
    assert node.metrics.slow_disconnects == before + 1
    # Server side: the slow session is gone, with its subscription; the normal one stays, fully usable.
    await wait_for(lambda: session_of(hub, slow_id) is None, "the slow session ended")
    assert session_of(hub, normal_id) is not None
    assert [c.id for c in node.registry.channels[("", "flood")]] == [normal_id]
    members = (await normal.command("presence", {"channel": "flood"}))["presence"]["presence"]
    assert set(members) == {normal_id}
    assert any(r.name.startswith("switchboard") and "slow" in r.getMessage() for r in caplog.records)
    # Reading again, the slow client finds the close frame behind its backlog: 3008, slow (reconnect).
    slow.ws.transport.resume_reading()
    code, reason = await slow.closed()
    assert (code, reason) == (3008, "slow")


# ---------------------------------------------------------------- ping / pong (time is the subject here)


def pings_in(frame: str | bytes) -> int:
    text = frame if isinstance(frame, str) else frame.decode()
    return sum(1 for line in text.splitlines() if line.strip() and orjson.loads(line) == {})


async def test_a_client_that_answers_pings_stays_and_one_that_does_not_is_closed_with_3012(
    make_hub, raw_client
):
    hub = await make_hub(client_ping_interval=1, client_pong_timeout=1)
    alive, alive_id = await connected(raw_client, hub)
    mute, mute_id = await connected(raw_client, hub)
    loop = asyncio.get_running_loop()

    async def answer_pings(want: int) -> int:
        pings = 0
        while pings < want:
            got = pings_in(await alive.ws.recv())
            for _ in range(got):
                await alive.ws.send("{}")  # the pong: an empty command
            pings += got
        return pings

    async def never_answer() -> tuple[list[float], float]:
        """Read every frame, answer nothing; return when each ping came and when the close came."""
        seen: list[float] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await mute.ws.recv()
                seen.extend([loop.time()] * pings_in(frame))
        return seen, loop.time()

    async with asyncio.timeout(2 * TIMEOUT):
        answered, (mute_pings, mute_closed) = await asyncio.gather(answer_pings(3), never_answer())
    # The mute client got one ping, and was closed for want of a pong no sooner than the pong timeout.
    assert len(mute_pings) == 1
    assert mute_closed - mute_pings[0] >= 0.8
    assert (mute.ws.close_code, mute.ws.close_reason) == (3012, "no pong")
    await wait_for(lambda: session_of(hub, mute_id) is None, "the mute session ended")
    # The answering client lived through several pings (each one past a pong timeout) and still works.
    assert answered >= 3
    assert session_of(hub, alive_id) is not None
    assert "subscribe" in await alive.command("subscribe", {"channel": "still-here"})


async def test_connect_reply_announces_the_ping_interval(make_hub, raw_client):
    hub = await make_hub(client_ping_interval=7, client_pong_timeout=1)
    c = await raw_client(hub)
    reply = await c.command("connect", {})
    assert reply["connect"]["ping"] == 7
    assert reply["connect"]["pong"] is True


# ---------------------------------------------------------------- staleness (time is the subject here)


async def test_a_websocket_that_never_connects_is_closed_with_3502(make_hub, raw_client):
    hub = await make_hub(client_stale_close_delay=1)
    connected_client, connected_id = await connected(raw_client, hub)
    loop = asyncio.get_running_loop()
    started = loop.time()
    idle = await raw_client(hub)
    code, reason = await idle.closed()
    assert (code, reason) == (3502, "stale")
    assert loop.time() - started >= 0.9, "closed before client_stale_close_delay"
    # A connected client on the same node is not stale, however old.
    await wait_for(lambda: len(hub.sb.node.sessions) == 1, "the stale session ended")
    assert session_of(hub, connected_id) is not None
    assert "subscribe" in await connected_client.command("subscribe", {"channel": "fresh"})
