"""How a node notices missed publications (hub.positions), and what its clients see then; and the
per-channel serialization of broker subscriptions (a subscriber never joins before the node receives)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from channels.errors import BrokerUnavailable
from channels.names import ChannelKey
from channels.publication import Publication, StreamPosition
from hub.app import Switchboard
from hub.positions import ChannelPositions
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.conftest import test_config as hub_config

KEY = ("", "chat:room")


# ---------------------------------------------------------------- sans-I/O


def test_untracked_channel_is_never_insufficient() -> None:
    positions = ChannelPositions()
    assert not positions.observe(KEY, 7, "e1")
    assert not positions.observe(KEY, 3, "e1")
    assert KEY not in positions


@given(
    st.integers(0, 50),
    st.lists(st.tuples(st.integers(1, 80), st.sampled_from(["e1", "e2", "e3"])), max_size=30),
)
def test_observe_flags_exactly_the_breaks_in_the_sequence(start: int, pubs: list[tuple[int, str]]) -> None:
    """A break is a skipped or repeated offset, or another epoch (even with the next offset: review R1-3)."""
    positions = ChannelPositions()
    positions.track(KEY, StreamPosition(start, "e1"))
    last, last_epoch = start, "e1"
    for offset, epoch in pubs:
        assert positions.observe(KEY, offset, epoch) is (offset != last + 1 or epoch != last_epoch)
        last, last_epoch = offset, epoch


def test_a_new_stream_that_reached_the_next_offset_is_a_break() -> None:
    """(Review R1-3.) Redis lost the stream while the node was away and the new one grew to the node's old
    offset: its next publication looks consecutive, only the epoch tells. Neither observe nor the check
    takes it for the old stream."""
    positions = ChannelPositions()
    positions.track(KEY, StreamPosition(2, "old"))
    assert positions.observe(KEY, 3, "new")
    assert not positions.observe(KEY, 4, "new")
    assert positions.check(KEY, StreamPosition(2, "newer"))


def test_the_first_publication_starts_the_position_with_its_epoch() -> None:
    positions = ChannelPositions()
    positions.begin(KEY)
    assert not positions.observe(KEY, 6, "e1")
    assert positions.known(KEY)
    assert positions.check(KEY, StreamPosition(6, "e2"))  # another epoch at the same offset


def test_track_keeps_what_the_node_received_since() -> None:
    positions = ChannelPositions()
    positions.track(KEY, StreamPosition(5, "e1"))
    assert not positions.observe(KEY, 6, "e1")
    positions.track(KEY, StreamPosition(5, "e1"))  # a later subscriber read an older top: ignored
    assert not positions.observe(KEY, 7, "e1")


def test_a_publication_between_the_broker_subscription_and_the_read_is_no_gap() -> None:
    positions = ChannelPositions()
    positions.begin(KEY)
    assert not positions.known(KEY)
    assert not positions.observe(KEY, 6, "e1")  # arrived before the subscriber's read returned top 5
    positions.track(KEY, StreamPosition(5, "e1"))
    assert not positions.observe(KEY, 7, "e1")
    assert positions.known(KEY)
    assert positions.check(KEY, StreamPosition(9, "e1"))


def test_check_finds_missed_publications_and_new_epochs() -> None:
    positions = ChannelPositions()
    positions.track(KEY, StreamPosition(5, "e1"))
    assert not positions.check(KEY, StreamPosition(5, "e1"))
    assert positions.check(KEY, StreamPosition(8, "e1"))  # three published while the node was away
    assert not positions.observe(KEY, 9, "e1")  # tracking continues from the checked top
    assert positions.check(KEY, StreamPosition(0, "e2"))  # Redis lost the stream
    assert not positions.check(KEY, StreamPosition(0, "e2"))


def test_restarted_offsets_learn_their_epoch_at_the_next_check() -> None:
    positions = ChannelPositions()
    positions.track(KEY, StreamPosition(5, "e1"))
    assert positions.observe(KEY, 1, "e2")  # offsets restarted: a new stream
    assert not positions.check(KEY, StreamPosition(1, "e2"))  # already reported; e2 is now known
    assert positions.check(KEY, StreamPosition(1, "e3"))


# ---------------------------------------------------------------- a node's clients


async def _subscribe(raw: Any, channel: str) -> dict[str, Any]:
    reply = await raw.command("subscribe", {"channel": channel})
    assert "error" not in reply, reply
    return reply["subscribe"]


async def test_a_gap_makes_positioned_subscribers_resubscribe_and_spares_the_others(
    hub: RunningHub, raw_client: Any
) -> None:
    positioned = await raw_client(hub, connect={"token": token("alice")})
    plain = await raw_client(hub, connect={"token": token("alice")})
    await _subscribe(positioned, "chat:room")  # chat forces recovery: positioned
    await _subscribe(plain, "nohist:room")
    node = hub.sb.node
    top = (await node.broker.history(KEY, limit=0)).position
    # The broker hands the node a publication two past the top: the one in between was missed.
    node.handle_publication(KEY, Publication(b'{"n":2}', offset=top.offset + 2), top.epoch)
    push = await positioned.push("unsubscribe")
    assert push["channel"] == "chat:room"
    assert push["unsubscribe"]["code"] == 2500
    assert (
        node.registry.subscriber_count(KEY) == 0
    )  # out of the fan-out: the gapped publication did not go out
    # It resubscribes with recovery and is told the truth about what it can get back.
    again = await positioned.command(
        "subscribe", {"channel": "chat:room", "recover": True, "offset": top.offset, "epoch": top.epoch}
    )
    assert again["subscribe"]["recovered"] is True
    # The plain subscriber of another channel went on unaffected.
    await node.publish("nohist:room", {"still": "here"})
    assert (await plain.push("pub"))["pub"]["data"] == {"still": "here"}


async def test_a_unidirectional_client_is_disconnected_with_3010(hub: RunningHub) -> None:
    node = hub.sb.node
    async with (
        http_client(timeout=TIMEOUT) as http,
        http.stream("POST", f"{hub.http}/connection/uni_http_stream", json={}) as resp,
    ):
        lines = resp.aiter_lines()
        assert "connect" in await anext(lines)
        await node.subscribe_user("", "chat:room")  # anonymous user ""
        assert "subscribe" in await anext(lines)
        top = (await node.broker.history(KEY, limit=0)).position
        node.handle_publication(KEY, Publication(b"{}", offset=top.offset + 5), top.epoch)
        rest = [line async for line in lines]
    assert any('"code":3010' in line for line in rest), rest


async def test_the_resubscribed_check_finds_what_was_published_meanwhile(
    hub: RunningHub, raw_client: Any
) -> None:
    client = await raw_client(hub, connect={"token": token("alice")})
    await _subscribe(client, "chat:room")
    node = hub.sb.node
    node.handle_resubscribed([KEY])  # nothing was missed: nothing happens
    await node.publish("chat:room", {"n": 1})
    assert (await client.push("pub"))["pub"]["data"] == {"n": 1}
    # Published while this node's broker connection was down: the node never received it.
    broker: Any = node.broker
    handler, broker._handler = broker._handler, None
    try:
        await node.publish("chat:room", {"n": 2})
    finally:
        broker._handler = handler
    node.handle_resubscribed([KEY])
    push = await client.push("unsubscribe")
    assert push["unsubscribe"]["code"] == 2500


class FlakyHistoryBroker(MemoryBroker):
    """``history`` raises BrokerUnavailable ``failures`` more times (Redis flapping again); counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.calls = 0
        self.called = asyncio.Condition()

    async def history(self, key: ChannelKey, **kw: Any) -> Any:
        async with self.called:
            self.calls += 1
            self.called.notify_all()
        if self.failures > 0:
            self.failures -= 1
            raise BrokerUnavailable("redis flapped")
        return await super().history(key, **kw)

    async def calls_made(self, n: int) -> None:
        async with asyncio.timeout(TIMEOUT), self.called:
            await self.called.wait_for(lambda: self.calls >= n)


async def _flaky_hub(serve_asgi: Any, monkeypatch: Any) -> tuple[RunningHub, FlakyHistoryBroker]:
    import hub.node

    monkeypatch.setattr(hub.node, "POSITION_CHECK_BACKOFF", (0.01, 0.01, 0.01))
    cfg = hub_config()
    broker = FlakyHistoryBroker()
    sb = Switchboard(cfg, broker=broker)
    server, port = await serve_asgi(sb, cfg)
    return RunningHub(sb, server, port), broker


async def test_the_resubscribed_check_is_retried_while_the_broker_is_unavailable(
    serve_asgi: Any, raw_client: Any, monkeypatch: Any
) -> None:
    hub, broker = await _flaky_hub(serve_asgi, monkeypatch)
    client = await raw_client(hub, connect={"token": token("alice")})
    await _subscribe(client, "chat:room")
    before = broker.calls
    broker.failures = 2
    hub.sb.node.handle_resubscribed([KEY])
    await broker.calls_made(before + 3)  # two failures, then the read that succeeds
    await hub.sb.node.publish("chat:room", {"n": 1})
    assert (await client.push())["pub"]["data"] == {"n": 1}  # nothing was missed: no resubscribe


async def test_a_check_that_never_succeeds_makes_positioned_subscribers_recover(
    serve_asgi: Any, raw_client: Any, monkeypatch: Any
) -> None:
    """The node cannot tell what it missed while Redis was away: the safe default is a recovery."""
    hub, broker = await _flaky_hub(serve_asgi, monkeypatch)
    client = await raw_client(hub, connect={"token": token("alice")})
    await _subscribe(client, "chat:room")
    broker.failures = 1000
    hub.sb.node.handle_resubscribed([KEY])
    push = await client.push("unsubscribe")
    assert push["unsubscribe"]["code"] == 2500
    broker.failures = 0
    again = await client.command("subscribe", {"channel": "chat:room", "recover": True, "offset": 0})
    assert "error" not in again, again


# ---------------------------------------------------------------- broker subscriptions


class SlowBroker(MemoryBroker):
    """Subscribing takes until the test says so; counts the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls: list[tuple[str, ChannelKey]] = []
        self.called = asyncio.Condition()

    async def _record(self, what: str, key: ChannelKey) -> None:
        async with self.called:
            self.calls.append((what, key))
            self.called.notify_all()
        await self.gate.wait()

    async def calls_made(self, n: int) -> None:
        async with asyncio.timeout(TIMEOUT), self.called:
            await self.called.wait_for(lambda: len(self.calls) >= n)

    async def subscribe(self, key: ChannelKey) -> None:
        await self._record("subscribe", key)

    async def unsubscribe(self, key: ChannelKey) -> None:
        await self._record("unsubscribe", key)


async def test_a_second_subscriber_waits_for_the_broker_subscription(
    serve_asgi: Any, raw_client: Any
) -> None:
    cfg = hub_config()
    broker = SlowBroker()
    sb = Switchboard(cfg, broker=broker)
    server, port = await serve_asgi(sb, cfg)
    hub = RunningHub(sb, server, port)
    first, second = (
        await raw_client(hub, connect={"token": token("alice")}),
        await raw_client(hub, connect={"token": token("alice")}),
    )
    one = asyncio.ensure_future(first.command("subscribe", {"channel": "nohist:x"}))
    await broker.calls_made(1)
    two = asyncio.ensure_future(second.command("subscribe", {"channel": "nohist:x"}))
    done, _ = await asyncio.wait([two], timeout=0.3)
    assert not done, "the second subscriber was answered before the node received the channel"
    broker.gate.set()
    assert "error" not in await asyncio.wait_for(one, TIMEOUT)
    assert "error" not in await asyncio.wait_for(two, TIMEOUT)
    assert broker.calls == [("subscribe", ("", "nohist:x"))]


async def test_a_subscribe_during_the_last_unsubscribe_resubscribes(serve_asgi: Any, raw_client: Any) -> None:
    cfg = hub_config()
    broker = SlowBroker()
    broker.gate.set()
    sb = Switchboard(cfg, broker=broker)
    server, port = await serve_asgi(sb, cfg)
    hub = RunningHub(sb, server, port)
    first, second = (
        await raw_client(hub, connect={"token": token("alice")}),
        await raw_client(hub, connect={"token": token("alice")}),
    )
    assert "error" not in await first.command("subscribe", {"channel": "nohist:x"})
    broker.gate.clear()
    leaving = asyncio.ensure_future(first.command("unsubscribe", {"channel": "nohist:x"}))
    await broker.calls_made(2)
    joining = asyncio.ensure_future(second.command("subscribe", {"channel": "nohist:x"}))
    broker.gate.set()
    await asyncio.wait_for(leaving, TIMEOUT)
    assert "error" not in await asyncio.wait_for(joining, TIMEOUT)
    key = ("", "nohist:x")
    assert broker.calls == [("subscribe", key), ("unsubscribe", key), ("subscribe", key)]
    await sb.node.publish("nohist:x", {"after": 1})
    assert (await second.push("pub"))["pub"]["data"] == {"after": 1}


class GapWhilePending(MemoryBroker):
    """Hands the node a publication two past the top while a subscription is being set up (between its
    read of the top and its activation): the node missed one, and the subscriber's buffer holds the gap."""

    node: Any = None
    armed = False

    async def barrier(self, key: ChannelKey) -> None:
        if not self.armed:
            return
        top = (await self.history(key, limit=0)).position
        self.node.handle_publication(key, Publication(b'{"after":"gap"}', offset=top.offset + 2), top.epoch)


async def test_a_gap_while_a_subscription_is_set_up_makes_it_resubscribe_at_once(
    serve_asgi: Any, raw_client: Any
) -> None:
    cfg = hub_config()
    broker = GapWhilePending()
    sb = Switchboard(cfg, broker=broker)
    broker.node = sb.node
    server, port = await serve_asgi(sb, cfg)
    hub = RunningHub(sb, server, port)
    bob = await raw_client(hub, connect={"token": token("bob")})
    assert "error" not in await bob.command("subscribe", {"channel": "chat:room"})  # the node knows the top
    broker.armed = True
    client = await raw_client(hub, connect={"token": token("alice")})
    reply = await client.command("subscribe", {"channel": "chat:room"})
    assert reply["subscribe"]["positioned"] is True
    assert (await bob.push())["unsubscribe"]["code"] == 2500  # active: told at once
    push = await client.push()
    assert "pub" not in push, f"the publication after the gap went out: {push}"
    assert push["unsubscribe"]["code"] == 2500
    assert sb.node.registry.subscriber_count(KEY) == 0
