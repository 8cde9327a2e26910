"""The client session, driven in-process against a real Node + MemoryBroker + MemoryPresence.

A fake Transport collects what the session writes; frames go in through ``Client.handle_frame``; the
test flushes with ``node.scheduler.flush()`` and ends a connection with ``node.end_session``. Nothing
listens on a socket and nothing sleeps.

The properties at the end are the ones that matter: recovery without gaps or duplicates (or an explicit
``recovered: false``), and no delivery to a non-subscriber.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from channels.errors import BrokerUnavailable
from channels.names import ChannelKey
from channels.options import NamespaceOptions
from hub.auth import mint_token
from hub.client import PIPELINE_MAX, Client, State
from hub.config import DEV_CHANNEL_OPTIONS, Config
from hub.hooks import Hooks
from hub.node import Node
from presence.presence_memory import MemoryPresence
from tests.conftest import TIMEOUT

SECRET = "test-secret-of-at-least-32-bytes-length!"

OPEN = dataclasses.replace(
    DEV_CHANNEL_OPTIONS,
    join_leave=False,
    force_push_join_leave=False,
    force_recovery=False,
    allow_user_limited_channels=False,
)


class FakeTransport:
    """Collects written messages; records the close. Writing after the close is a failure of the session."""

    name = "fake"

    def __init__(self, unsent: int = 0) -> None:
        self.writes: list[list[bytes]] = []
        self.closed: tuple[int, str] | None = None
        self.writes_after_close = 0
        self.unsent = unsent
        self._read = 0

    def write_messages(self, messages: list[bytes]) -> int:
        if self.closed is not None:
            self.writes_after_close += 1
        self.writes.append(list(messages))
        return self.unsent

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(m) for call in self.writes for m in call]

    def take(self) -> list[dict[str, Any]]:
        """Messages written since the last take."""
        out = [orjson.loads(m) for call in self.writes[self._read :] for m in call]
        self._read = len(self.writes)
        return out


class GatedBroker(MemoryBroker):
    """The real MemoryBroker with a seam in ``history``: actions run right before and right after the read,
    as other tasks would while a Redis round trip is in flight. ``on_read`` runs at the read itself."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.before: list[Callable[[], Awaitable[None]]] = []
        self.after: list[Callable[[], Awaitable[None]]] = []
        self.on_read: Callable[[], None] | None = None

    async def history(self, key: ChannelKey, **kw: Any):  # type: ignore[no-untyped-def]
        while self.before:
            await self.before.pop(0)()
        result = await super().history(key, **kw)
        if self.on_read is not None:
            self.on_read()
        while self.after:
            await self.after.pop(0)()
        return result


def make_node(
    channel: NamespaceOptions = OPEN,
    broker: MemoryBroker | None = None,
    namespaces: dict[str, NamespaceOptions] | None = None,
    **overrides: Any,
) -> Node:
    cfg = Config(
        token_hmac_secret_key=SECRET,
        allow_anonymous_connect_without_token=True,
        channel=channel,
        namespaces=namespaces or {},
        node_name="test-node",
    )
    cfg = dataclasses.replace(cfg, **overrides)
    return Node(cfg, broker or MemoryBroker(), MemoryPresence(), Hooks())


class Conn:
    """One connection: a session and its transport, and a command counter."""

    def __init__(self, node: Node, transport: FakeTransport | None = None) -> None:
        self.node = node
        self.transport = transport or FakeTransport()
        self.client: Client = node.new_session(self.transport, scope={})
        self._next = 0

    async def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        self._next += 1
        await self.client.handle_frame(orjson.dumps({"id": self._next, method: params or {}}))
        return self._next

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command, flush, and return its reply (or error)."""
        cmd_id = await self.send(method, params)
        self.node.scheduler.flush()
        for msg in self.transport.messages():
            if msg.get("id") == cmd_id:
                return msg
        raise AssertionError(f"no reply to {method}")

    async def connect(self, **params: Any) -> dict[str, Any]:
        return await self.call("connect", params)


# ================================================================ the state machine


async def test_command_before_connect_disconnects_with_3501() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.client.handle_frame(b'{"id":1,"subscribe":{"channel":"news"}}')
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501
    node.scheduler.flush()
    assert not any("subscribe" in m for m in conn.transport.messages())
    assert node.registry.channels == {} and node.registry.pending == {}
    await node.end_session(conn.client)
    assert conn.client.state is State.CLOSED


@pytest.mark.parametrize("method", ["publish", "presence", "history", "rpc", "refresh", "unsubscribe"])
async def test_every_method_before_connect_is_refused(method: str) -> None:
    node = make_node()
    conn = Conn(node)
    await conn.send(method, {"channel": "news", "data": 1})
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501
    assert conn.client.state is State.CONNECTING


async def test_later_commands_of_the_frame_are_dropped_after_the_disconnect() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.client.handle_frame(b'{"id":1,"publish":{"channel":"news","data":1}}\n{"id":2,"connect":{}}')
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501
    # disconnect() alone does not move the state: the connection handler ends the session
    assert conn.client.state is State.CONNECTING
    await node.end_session(conn.client)
    node.scheduler.flush()
    assert not any("connect" in m for m in conn.transport.messages())


async def test_pong_before_connect_is_accepted() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.client.handle_frame(b"{}")
    assert conn.transport.closed is None
    reply = await conn.connect()
    assert reply["connect"]["client"] == conn.client.id


async def test_connect_moves_to_connected() -> None:
    node = make_node()
    conn = Conn(node)
    assert conn.client.state is State.CONNECTING
    reply = await conn.connect()
    assert conn.client.state is State.CONNECTED  # type: ignore[comparison-overlap]
    result = reply["connect"]
    assert result["client"] == conn.client.id and result["node"] == "test-node"
    assert result["version"] == node.version and result["pong"] is True
    assert node.registry.clients[conn.client.id] is conn.client


async def test_second_connect_disconnects_with_3501() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    await conn.send("connect")
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501


def test_illegal_transitions_raise() -> None:
    node = make_node()
    client = Conn(node).client
    with pytest.raises(RuntimeError):
        client._move(State.CONNECTING)  # noqa: SLF001
    client._move(State.CONNECTED)  # noqa: SLF001
    for target in (State.CONNECTING, State.CONNECTED):
        with pytest.raises(RuntimeError):
            client._move(target)  # noqa: SLF001
    client._move(State.CLOSED)  # noqa: SLF001
    for target in State:
        with pytest.raises(RuntimeError):
            client._move(target)  # noqa: SLF001
    assert client.state is State.CLOSED


async def test_connecting_may_close_directly() -> None:
    node = make_node()
    conn = Conn(node)
    await node.end_session(conn.client)
    assert conn.client.state is State.CLOSED
    await node.end_session(conn.client)  # idempotent
    assert conn.client not in node.sessions


async def test_a_closed_session_ignores_frames() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    await node.end_session(conn.client)
    before = len(conn.transport.writes)
    await conn.send("publish", {"channel": "news", "data": 1})
    await conn.client.handle_frame(b"not json")
    node.scheduler.flush()
    assert len(conn.transport.writes) == before
    assert conn.transport.closed is None
    assert conn.client.id not in node.registry.clients


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[]",
        b"",
        b'{"id":-1,"connect":{}}',
        b'{"id":"1","connect":{}}',
        b'{"id":true,"connect":{}}',
    ],
)
async def test_broken_frames_disconnect_with_3501(frame: bytes) -> None:
    node = make_node()
    conn = Conn(node)
    await conn.client.handle_frame(frame)
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501


async def test_command_without_id_disconnects_with_3501() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    await conn.client.handle_frame(b'{"subscribe":{"channel":"news"}}')
    assert conn.transport.closed is not None and conn.transport.closed[0] == 3501


async def test_oversized_frame_closes_with_1009() -> None:
    node = make_node(client_max_message_size=100)
    conn = Conn(node)
    await conn.client.handle_frame(b'{"id":1,"connect":{"data":"' + b"x" * 100 + b'"}}')
    assert conn.transport.closed is not None and conn.transport.closed[0] == 1009


async def test_unknown_method_and_bad_params_are_replies_not_disconnects() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    assert (await conn.call("frobnicate"))["error"]["code"] == 104
    await conn.client.handle_frame(b'{"id":50,"publish":[1,2]}')
    node.scheduler.flush()
    assert [m for m in conn.transport.messages() if m.get("id") == 50][0]["error"]["code"] == 107
    assert conn.transport.closed is None


async def test_tokens_on_connect() -> None:
    node = make_node(allow_anonymous_connect_without_token=False)
    anonymous = Conn(node)
    assert (await anonymous.connect())["error"]["code"] == 101
    assert anonymous.client.state is State.CONNECTING

    expired = Conn(node)
    reply = await expired.connect(token=mint_token(SECRET, "alice", ttl=10, now=1_000_000))
    assert reply["error"]["code"] == 109 and expired.transport.closed is None

    invalid = Conn(node)
    await invalid.send("connect", {"token": mint_token("wrong-secret-of-at-least-32-bytes!!", "alice")})
    assert invalid.transport.closed is not None and invalid.transport.closed[0] == 3500

    good = Conn(node)
    result = (await good.connect(token=mint_token(SECRET, "alice", tenant="acme", info={"n": 1})))["connect"]
    assert good.client.state is State.CONNECTED
    assert (good.client.user, good.client.tenant, good.client.conn_info) == ("alice", "acme", b'{"n":1}')
    assert "expires" not in result


async def test_subscribe_reply_precedes_every_push() -> None:
    node = make_node()
    pub = Conn(node)
    await pub.connect()
    sub = Conn(node)
    await sub.connect()
    await pub.send("publish", {"channel": "news", "data": {"n": 1}})
    await sub.send("subscribe", {"channel": "news"})
    await pub.send("publish", {"channel": "news", "data": {"n": 2}})
    node.scheduler.flush()
    msgs = [m for m in sub.transport.messages() if "connect" not in m]
    assert "subscribe" in msgs[0]
    assert [m["push"]["pub"]["data"] for m in msgs[1:]] == [{"n": 2}]
    assert msgs[1]["push"]["pub"]["offset"] == 2


async def test_pushes_of_one_tick_go_out_in_one_write() -> None:
    node = make_node()
    sub = Conn(node)
    await sub.connect()
    await sub.send("subscribe", {"channel": "news"})
    node.scheduler.flush()
    writes = len(sub.transport.writes)
    for n in range(5):
        await node.publish("news", {"n": n})
    node.scheduler.flush()
    assert len(sub.transport.writes) == writes + 1
    assert [orjson.loads(m)["push"]["pub"]["data"]["n"] for m in sub.transport.writes[-1]] == list(range(5))


async def test_slow_consumer_is_closed_with_3008_and_gets_nothing_more() -> None:
    node = make_node(client_queue_max_size=200)
    slow = Conn(node, FakeTransport(unsent=10_000))
    fast = Conn(node)
    for conn in (slow, fast):
        await conn.connect()
        await conn.send("subscribe", {"channel": "news"})
    node.scheduler.flush()
    assert slow.transport.closed == (3008, "slow")
    writes = len(slow.transport.writes)
    for n in range(20):
        await node.publish("news", {"n": n})
        node.scheduler.flush()
    assert len(slow.transport.writes) == writes and slow.transport.writes_after_close == 0
    assert fast.transport.closed is None
    assert sum("push" in m for m in fast.transport.messages()) == 20
    await node.end_session(slow.client)
    assert node.registry.subscriber_count(("", "news")) == 1


async def test_backlog_within_a_tick_is_a_slow_consumer() -> None:
    node = make_node(client_queue_max_size=300)
    sub = Conn(node)
    await sub.connect()
    await sub.send("subscribe", {"channel": "news"})
    node.scheduler.flush()
    for n in range(20):
        await node.publish("news", {"n": n, "pad": "x" * 20})
    assert sub.transport.closed == (3008, "slow")
    node.scheduler.flush()
    assert sub.transport.writes_after_close == 0
    assert not any("push" in m for m in sub.transport.messages())


async def test_tenants_are_separate_channels() -> None:
    node = make_node()
    a = Conn(node)
    await a.connect(token=mint_token(SECRET, "alice", tenant="acme"))
    b = Conn(node)
    await b.connect(token=mint_token(SECRET, "bob", tenant="globex"))
    for conn in (a, b):
        await conn.send("subscribe", {"channel": "news"})
    await a.send("publish", {"channel": "news", "data": "for acme"})
    await node.publish("news", "for globex", tenant="globex")
    await node.publish("news", "for the default tenant")
    node.scheduler.flush()
    assert [m["push"]["pub"]["data"] for m in a.transport.messages() if "push" in m] == ["for acme"]
    assert [m["push"]["pub"]["data"] for m in b.transport.messages() if "push" in m] == ["for globex"]
    presence = await a.call("presence", {"channel": "news"})
    assert list(presence["presence"]["presence"]) == [a.client.id]


async def test_end_session_leaves_every_channel() -> None:
    node = make_node()
    conn = Conn(node)
    await conn.connect()
    for ch in ("a", "b"):
        await conn.send("subscribe", {"channel": ch})
    await node.end_session(conn.client)
    assert node.registry.channels == {} and node.registry.clients == {} and node.registry.users == {}
    for ch in ("a", "b"):
        assert await node.presence.get(("", ch)) == {}


class _Untouchable(dict[str, Any]):
    """A session's ``subs`` that fails the test when the fan-out of a join or leave looks into it."""

    def get(self, *args: Any) -> Any:  # type: ignore[override]
        raise AssertionError("a join/leave looked at a subscriber that did not ask for join/leave pushes")


async def test_joins_and_leaves_reach_those_who_asked_and_cost_nothing_per_other_subscriber() -> None:
    """Issue 15: a join walked every subscriber of the room to find those who asked for join/leave pushes,
    so a subscribe cost grew with the room (2.2 ms each at 18,000). Now the pushes go to the subscribers
    who asked, out of a table of their own: the others are never looked at."""
    node = make_node(dataclasses.replace(OPEN, join_leave=True))
    room = [Conn(node) for _ in range(20)]
    for conn in room:
        await conn.connect()
        await conn.send("subscribe", {"channel": "room"})
        conn.client.subs = _Untouchable(conn.client.subs)
    watcher = Conn(node)
    await watcher.connect()
    await watcher.send("subscribe", {"channel": "room", "join_leave": True})
    newcomer = Conn(node)
    await newcomer.connect()
    await newcomer.send("subscribe", {"channel": "room"})
    await newcomer.send("unsubscribe", {"channel": "room"})
    await watcher.send("unsubscribe", {"channel": "room"})
    await newcomer.send("subscribe", {"channel": "room"})  # nobody asks any more
    node.scheduler.flush()
    seen = [m["push"] for m in watcher.transport.take() if "push" in m]
    events = [(k, p["channel"], p[k]["info"]["client"]) for p in seen for k in ("join", "leave") if k in p]
    me, other = watcher.client.id, newcomer.client.id
    assert events == [("join", "room", me), ("join", "room", other), ("leave", "room", other)]
    for conn in room:
        assert not [m for m in conn.transport.take() if "push" in m]
    assert ("", "room") not in node.registry.join_leave  # the watcher left: its table went with it


async def test_disconnect_while_subscribing_leaves_no_presence_behind() -> None:
    """The connection ends while the subscription is being set up (its history read in flight)."""
    broker = GatedBroker()
    node = make_node(broker=broker)
    conn = Conn(node)
    await conn.connect()

    async def drop_connection() -> None:
        await node.end_session(conn.client)

    broker.before.append(drop_connection)
    await conn.send("subscribe", {"channel": "news", "recoverable": True})
    assert conn.client.state is State.CLOSED
    assert not node.registry.has_local(("", "news"))
    assert await node.presence.get(("", "news")) == {}


async def test_unsubscribe_while_subscribing_leaves_no_presence_behind() -> None:
    broker = GatedBroker()
    node = make_node(broker=broker)
    conn = Conn(node)
    await conn.connect()

    async def unsubscribe() -> None:
        await conn.client.handle_frame(b'{"id":99,"unsubscribe":{"channel":"news"}}')

    broker.before.append(unsubscribe)
    await conn.send("subscribe", {"channel": "news", "recoverable": True})
    assert "news" not in conn.client.subs
    assert not node.registry.has_local(("", "news"))
    assert await node.presence.get(("", "news")) == {}


class PipelinedBroker(MemoryBroker):
    """The real MemoryBroker behaving as Redis does with pipelined publishes: a publish takes its place at
    once (offset, delivery), and is answered later, when the test opens its gate. Publishes numbered in
    ``refuse`` (0-based, in call order) fail before taking a place, as one whose Redis is away."""

    pipelined = True

    def __init__(self, refuse: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.gates: list[asyncio.Future[None]] = []
        self.refuse = refuse
        self.calls = 0

    async def publish(self, key: ChannelKey, data: bytes, **kw: Any):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls - 1 in self.refuse:
            raise BrokerUnavailable("refused")
        result = await super().publish(key, data, **kw)
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        return result

    async def open(self, *indexes: int) -> None:
        """Answer these publishes (their gates), and let the session write what follows."""
        for i in indexes:
            self.gates[i].set_result(None)
        for _ in range(5):  # the publish's task, then its done callback
            await asyncio.sleep(0)


async def _publisher_and_subscriber(node: Node) -> tuple[Conn, Conn]:
    pub, sub = Conn(node), Conn(node)
    for conn in (pub, sub):
        await conn.connect()
    await sub.send("subscribe", {"channel": "room"})
    node.scheduler.flush()
    pub.transport.take(), sub.transport.take()
    return pub, sub


async def _publish(conn: Conn, n: int | None) -> None:
    """Send a publish (without data when ``n`` is None) and return once the session reads on: at once on
    a broker that pipelines (bounded: a session that awaits the gated broker would hang here)."""
    params: dict[str, Any] = {"channel": "room"} if n is None else {"channel": "room", "data": {"n": n}}
    async with asyncio.timeout(TIMEOUT):
        await conn.send("publish", params)


def _replies(conn: Conn) -> list[tuple[int, str]]:
    return [(m["id"], "ok" if "publish" in m else str(m["error"]["code"])) for m in conn.transport.take()]


async def test_pipelined_publishes_are_answered_in_command_order() -> None:
    """A session goes on reading while its publishes are in flight on a broker that pipelines them; the
    replies go out in command order, whatever order the broker answers in; a command refused at once (bad
    request) is answered in its place too."""
    broker = PipelinedBroker()
    node = make_node(broker=broker)
    pub, sub = await _publisher_and_subscriber(node)
    for n in range(3):
        await _publish(pub, n)  # returns with the publish in flight
    await _publish(pub, None)  # no data: 107 at once, but behind the three
    await _publish(pub, 3)
    await asyncio.sleep(0)  # the publishes start (the transport awaits its next frame meanwhile)
    assert len(broker.gates) == 4  # every publish with data was handed to the broker: none waited
    node.scheduler.flush()
    pubs = [(m["push"]["pub"]["data"]["n"], m["push"]["pub"]["offset"]) for m in sub.transport.take()]
    assert pubs == [(0, 1), (1, 2), (2, 3), (3, 4)]  # accepted and delivered in command order
    assert _replies(pub) == []
    await broker.open(3, 2, 1)  # the broker answers the later ones first: nothing may overtake the first
    node.scheduler.flush()
    assert _replies(pub) == []
    await broker.open(0)
    node.scheduler.flush()
    assert _replies(pub) == [(2, "ok"), (3, "ok"), (4, "ok"), (5, "107"), (6, "ok")]
    assert not pub.client.busy


async def test_a_publish_failing_in_the_middle_of_a_pipeline_takes_no_place() -> None:
    broker = PipelinedBroker(refuse=(2,))
    node = make_node(broker=broker)
    pub, sub = await _publisher_and_subscriber(node)
    for n in range(5):
        await _publish(pub, n)
    await asyncio.sleep(0)
    await broker.open(*range(len(broker.gates)))
    node.scheduler.flush()
    assert _replies(pub) == [(2, "ok"), (3, "ok"), (4, "100"), (5, "ok"), (6, "ok")]
    pubs = [(m["push"]["pub"]["data"]["n"], m["push"]["pub"]["offset"]) for m in sub.transport.take()]
    assert pubs == [(0, 1), (1, 2), (3, 3), (4, 4)]


async def test_a_command_after_pipelined_publishes_waits_for_their_answers() -> None:
    """A history read (any command but a publish) after publishes in flight runs once they are answered,
    and its reply follows theirs: the client sees its publishes in it, as if it had awaited each."""
    broker = PipelinedBroker()
    node = make_node(broker=broker)
    pub, _ = await _publisher_and_subscriber(node)
    for n in range(2):
        await _publish(pub, n)
    history = asyncio.ensure_future(pub.send("history", {"channel": "room", "limit": 10}))
    for _ in range(20):
        await asyncio.sleep(0)  # give the history command every chance to overtake (it must not)
    assert not history.done()
    await broker.open(0, 1)
    await history
    node.scheduler.flush()
    out = pub.transport.take()
    assert [m["id"] for m in out] == [2, 3, 4]
    assert [p["data"]["n"] for p in out[2]["history"]["publications"]] == [0, 1]


async def test_publishes_in_flight_are_bounded() -> None:
    broker = PipelinedBroker()
    node = make_node(broker=broker)
    pub, _ = await _publisher_and_subscriber(node)
    for n in range(PIPELINE_MAX):
        await _publish(pub, n)
    await asyncio.sleep(0)
    late = asyncio.ensure_future(pub.send("publish", {"channel": "room", "data": {"n": PIPELINE_MAX}}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not late.done() and len(broker.gates) == PIPELINE_MAX  # it waits: the session reads no more
    await broker.open(0)
    await late
    assert len(broker.gates) == PIPELINE_MAX + 1
    await broker.open(*range(1, PIPELINE_MAX + 1))
    node.scheduler.flush()
    assert _replies(pub) == [(2 + n, "ok") for n in range(PIPELINE_MAX + 1)]


async def test_a_session_ends_once_its_publishes_in_flight_are_settled() -> None:
    broker = PipelinedBroker()
    node = make_node(broker=broker)
    pub, _ = await _publisher_and_subscriber(node)
    await _publish(pub, 0)
    await asyncio.sleep(0)
    ended = asyncio.ensure_future(node.end_session(pub.client))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not ended.done()
    await broker.open(0)
    await ended
    assert pub.transport.writes_after_close == 0


async def test_publications_during_the_history_read_are_delivered_once() -> None:
    broker = GatedBroker()
    node = make_node(broker=broker)
    conn = Conn(node)
    await conn.connect()
    await node.publish("news", {"n": 0})

    def publisher(n: int) -> Callable[[], Awaitable[None]]:
        async def publish() -> None:
            await node.publish("news", {"n": n})

        return publish

    broker.before += [publisher(1), publisher(2)]
    broker.after += [publisher(3), publisher(4)]
    await conn.send("subscribe", {"channel": "news", "recoverable": True})
    node.scheduler.flush()
    msgs = [m for m in conn.transport.messages() if "connect" not in m]
    reply = msgs[0]["subscribe"]
    assert reply["offset"] == 3
    assert [m["push"]["pub"]["offset"] for m in msgs[1:]] == [4, 5]


# ================================================================ property: recovery without gaps


CH = "feed"
KEY: ChannelKey = ("", CH)
TTL = 100.0
META_TTL = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Truth:
    epoch: str
    offset: int
    time: float


@dataclasses.dataclass
class PendingSubscribe:
    requested: tuple[int, str] | None
    cursor: int | None
    read_len: int
    read_clock: float


class SdkSubscriber:
    """A subscriber as the SDK models it: position (offset, epoch) from the subscribe result and from each
    publication; on reconnect it subscribes with ``recover`` from that position. ``cursor`` is the index
    (in publish order) of the next publication it expects: every delivery must be exactly that one."""

    def __init__(self, node: Node, truth: list[Truth], size: int) -> None:
        self.node = node
        self.truth = truth
        self.size = size
        self.conn: Conn | None = None
        self.state = "idle"  # idle | subscribing | subscribed
        self.dropping_old = False  # between our unsubscribe and its reply: the SDK drops the old sub's pushes
        self.position: tuple[int, str] | None = None
        self.cursor: int | None = None
        self.start: int | None = None
        self.received: list[int] = []
        self.recovered_pubs = 0
        self.losses = 0
        self.pending: dict[int, PendingSubscribe] = {}

    async def ensure_connected(self) -> Conn:
        if self.conn is None:
            self.conn = Conn(self.node)
            await self.conn.send("connect")
        return self.conn

    async def subscribe(self, reads: list[tuple[int, float]]) -> None:
        conn = await self.ensure_connected()
        req: dict[str, Any] = {"channel": CH, "recoverable": True}
        if self.position is not None:
            req.update(recover=True, offset=self.position[0], epoch=self.position[1])
        reads.clear()
        self.state = "subscribing"
        cmd_id = await conn.send("subscribe", req)
        assert reads, "a positioned subscribe reads the stream"
        read_len, read_clock = reads[-1]
        self.pending[cmd_id] = PendingSubscribe(self.position, self.cursor, read_len, read_clock)

    async def resubscribe(self, reads: list[tuple[int, float]]) -> None:
        assert self.conn is not None and self.state == "subscribed"
        await self.conn.send("unsubscribe", {"channel": CH})
        self.dropping_old = True
        await self.subscribe(reads)

    async def disconnect(self) -> None:
        assert self.conn is not None
        self.consume()  # what the transport wrote was delivered; what the writer held is lost
        await self.node.end_session(self.conn.client)
        self.conn = None
        self.state = "idle"
        self.dropping_old = False
        self.pending.clear()

    def consume(self) -> None:
        if self.conn is None:
            return
        for msg in self.conn.transport.take():
            assert "error" not in msg, msg
            if "id" in msg:
                if "subscribe" in msg:
                    self._on_subscribed(self.pending.pop(msg["id"]), msg["subscribe"])
                elif "unsubscribe" in msg:
                    self.dropping_old = False
                continue
            assert msg["push"]["channel"] == CH
            if self.dropping_old:
                continue
            if "unsubscribe" in msg["push"]:
                # The node saw the stream restart (a new epoch) under the subscription: insufficient
                # state. The SDK resubscribes with recovery from its position (the next "sub" op).
                assert msg["push"]["unsubscribe"]["code"] == 2500, msg
                assert self.state == "subscribed"
                self.state = "idle"
                continue
            pub = msg["push"]["pub"]
            assert self.state == "subscribed", f"publication before the subscribe reply: {msg}"
            index = pub["data"]["id"]
            assert index == self.cursor, f"expected publication #{self.cursor}, got #{index}"
            assert pub["offset"] == self.truth[index].offset
            assert self.position is not None and self.cursor is not None
            self.position = (pub["offset"], self.position[1])
            self.cursor += 1
            self.received.append(index)

    def _on_subscribed(self, p: PendingSubscribe, r: dict[str, Any]) -> None:
        epoch, top = r["epoch"], r.get("offset", 0)
        assert r.get("recoverable") is True and r.get("positioned") is True
        # the reply's position is the stream's at the read
        last = self.truth[p.read_len - 1] if p.read_len else None
        if last is not None and last.epoch == epoch:
            assert top == last.offset
        else:
            assert top == 0
        if p.requested is None:
            assert "recovered" not in r and "publications" not in r
            if self.start is None:
                self.start = p.read_len
        else:
            assert r["was_recovering"] is True
            assert p.cursor is not None
            if r["recovered"]:
                assert epoch == p.requested[1]
                got = [pub["data"]["id"] for pub in r.get("publications", [])]
                assert got == list(range(p.cursor, p.read_len)), "recovered must mean exactly the missed ones"
                for pub in r.get("publications", []):
                    assert pub["offset"] == self.truth[pub["data"]["id"]].offset
                self.received.extend(got)
                self.recovered_pubs += len(got)
            else:
                assert "publications" not in r
                assert self._loss_justified(p, epoch, top), "recovered=false although history held the gap"
                self.losses += 1
        self.position = (top, epoch)
        self.cursor = p.read_len
        self.state = "subscribed"

    def _loss_justified(self, p: PendingSubscribe, epoch: str, top: int) -> bool:
        assert p.requested is not None and p.cursor is not None
        if epoch != p.requested[1]:
            return True
        for t in self.truth[p.cursor : p.read_len]:
            if t.epoch != epoch or t.offset <= top - self.size or t.time + TTL <= p.read_clock:
                return True
        return False


_race = st.tuples(st.integers(0, 2), st.integers(0, 2))
_op = st.sampled_from(
    [
        "pub",
        "pub",
        "flush",
        "flush",
        "disconnect",
        "disconnect",
        "subscribe",
        "subscribe",
        "resubscribe",
        "advance",
    ]
)
_ops = st.lists(
    _op.flatmap(
        lambda kind: (
            st.tuples(st.just(kind), st.integers(1, 4))
            if kind == "pub"
            else st.tuples(st.just(kind), _race)
            if kind in ("subscribe", "resubscribe")
            else st.tuples(st.just(kind), st.sampled_from([1.0, 30.0, TTL + 1, META_TTL + 1]))
            if kind == "advance"
            else st.tuples(st.just(kind), st.booleans())
            if kind == "disconnect"
            else st.just((kind,))
        )
    ),
    min_size=3,
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from([1, 2, 3, 50, 50]), ops=_ops)
async def test_recovery_delivers_every_publication_once_in_order_or_says_so(
    size: int, ops: list[tuple[Any, ...]]
) -> None:
    """For any interleaving of publishes, disconnects (abrupt or after a flush), resubscribes with recovery
    from the last seen position, clock steps past the history ttl or the stream's meta ttl, and publishes
    racing the subscribe's history read: the subscriber ends with every publication exactly once and in
    order, or was told ``recovered: false`` (and only when history really lacked the gap)."""
    clock = Clock()
    broker = GatedBroker(clock=clock)
    opts = dataclasses.replace(OPEN, history_size=size, history_ttl=TTL, history_meta_ttl=META_TTL)
    node = make_node(opts, broker=broker)
    truth: list[Truth] = []
    reads: list[tuple[int, float]] = []
    broker.on_read = lambda: reads.append((len(truth), clock.now))
    sub = SdkSubscriber(node, truth, size)

    async def publish() -> None:
        index = len(truth)
        pos = (await node.publish(CH, {"id": index})).position
        assert pos.offset and pos.epoch
        truth.append(Truth(pos.epoch, pos.offset, clock.now))

    def race(before: int, after: int) -> None:
        broker.before[:] = [publish] * before
        broker.after[:] = [publish] * after

    for op in ops:
        kind = op[0]
        if kind == "pub":
            for _ in range(op[1]):
                await publish()
        elif kind == "flush":
            node.scheduler.flush()
            sub.consume()
        elif kind == "disconnect":
            if sub.conn is not None:
                if op[1]:  # the writer got its tick before the connection dropped
                    node.scheduler.flush()
                await sub.disconnect()
        elif kind == "advance":
            clock.now += op[1]
        elif sub.state == "idle":
            race(*op[1])
            await sub.subscribe(reads)
        elif sub.state == "subscribed" and kind == "resubscribe":
            race(*op[1])
            await sub.resubscribe(reads)
        broker.before.clear()
        broker.after.clear()

    for _ in range(3):  # a last insufficient-state push makes it resubscribe once more
        if sub.state == "idle":
            await sub.subscribe(reads)
        node.scheduler.flush()
        sub.consume()
    assert sub.state == "subscribed"

    # ends at the top, having had every publication exactly once and in order, or having been told
    assert sub.cursor == len(truth)
    assert sub.position is not None
    if truth and sub.position[1] == truth[-1].epoch:
        assert sub.position[0] == truth[-1].offset
    assert sub.received == sorted(set(sub.received))
    assert sub.start is not None
    if sub.losses == 0:
        assert sub.received == list(range(sub.start, len(truth)))
    event(f"recovered=false seen: {sub.losses > 0}")
    event(f"recovered publications: {sub.recovered_pubs > 0}")

    # and the node forgets the connection entirely when it ends
    await sub.disconnect()
    assert not node.registry.has_local(KEY) and node.registry.clients == {}
    assert await node.presence.get(KEY) == {}


async def test_recovery_example_with_a_trimmed_gap() -> None:
    """One scripted run of the property: a gap within history recovers, a longer one says so."""
    clock = Clock()
    broker = GatedBroker(clock=clock)
    node = make_node(dataclasses.replace(OPEN, history_size=3, history_ttl=TTL), broker=broker)
    sub = Conn(node)
    await sub.connect()
    reply = await sub.call("subscribe", {"channel": CH, "recoverable": True})
    epoch = reply["subscribe"]["epoch"]
    await node.end_session(sub.client)
    for n in range(3):
        await node.publish(CH, n)
    again = Conn(node)
    await again.connect()
    rec = (
        await again.call(
            "subscribe", {"channel": CH, "recoverable": True, "recover": True, "offset": 0, "epoch": epoch}
        )
    )["subscribe"]
    assert rec["recovered"] is True and [p["data"] for p in rec["publications"]] == [0, 1, 2]
    await node.end_session(again.client)
    for n in range(3, 7):
        await node.publish(CH, n)
    third = Conn(node)
    await third.connect()
    lost = (
        await third.call(
            "subscribe", {"channel": CH, "recoverable": True, "recover": True, "offset": 3, "epoch": epoch}
        )
    )["subscribe"]
    assert lost["recovered"] is False and "publications" not in lost and lost["offset"] == 7


# ================================================================ property: no delivery to a non-subscriber


TENANTS = ("t1", "t2")
CHANNELS = ("a", "b", "c")
SLOTS = 4


def tenant_of(slot: int) -> str:
    return TENANTS[slot % 2]


_fanout_ops = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.integers(0, SLOTS - 1), st.sampled_from(CHANNELS)),
        # unsubscribe from the k-th channel the slot is subscribed to (a no-op when it has none)
        st.tuples(st.just("unsub"), st.integers(0, SLOTS - 1), st.integers(0, len(CHANNELS) - 1)),
        st.tuples(st.just("pub"), st.sampled_from(TENANTS), st.sampled_from(CHANNELS)),
        st.tuples(st.just("cpub"), st.integers(0, SLOTS - 1), st.sampled_from(CHANNELS)),
        st.tuples(st.just("reconnect"), st.integers(0, SLOTS - 1)),
        st.just(("flush",)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_fanout_ops, join_leave=st.booleans())
@example(
    ops=[("sub", 0, "a"), ("sub", 2, "a"), ("unsub", 0, 0), ("pub", "t1", "a"), ("flush",)], join_leave=True
)
@example(
    ops=[("sub", 0, "a"), ("sub", 1, "a"), ("cpub", 1, "a"), ("pub", "t1", "a"), ("flush",)], join_leave=False
)
async def test_no_delivery_to_a_non_subscriber(ops: list[tuple[Any, ...]], join_leave: bool) -> None:
    opts = dataclasses.replace(OPEN, join_leave=join_leave, force_push_join_leave=join_leave)
    node = make_node(opts)
    conns: list[Conn] = []
    gens = [0] * SLOTS
    subs: list[set[str]] = [set() for _ in range(SLOTS)]
    # what each (slot, generation) may receive: publication numbers, and join/leave events
    may_get: dict[tuple[int, int], list[int]] = {}
    jl_expected: dict[tuple[int, int], Counter[tuple[str, str, str]]] = {}
    got: dict[tuple[int, int], list[int]] = {}
    jl_got: dict[tuple[int, int], Counter[tuple[str, str, str]]] = {}
    pub_where: list[tuple[str, str]] = []

    async def open_slot(slot: int) -> Conn:
        conn = Conn(node)
        reply = await conn.connect(token=mint_token(SECRET, f"u{slot}", tenant=tenant_of(slot)))
        assert "connect" in reply
        conn.transport.take()
        key = (slot, gens[slot])
        may_get[key], got[key], jl_expected[key], jl_got[key] = [], [], Counter(), Counter()
        return conn

    for slot in range(SLOTS):
        conns.append(await open_slot(slot))

    def audience(tenant: str, channel: str) -> list[tuple[int, int]]:
        return [(s, gens[s]) for s in range(SLOTS) if tenant_of(s) == tenant and channel in subs[s]]

    def consume(slot: int) -> None:
        key = (slot, gens[slot])
        for msg in conns[slot].transport.take():
            if "id" in msg:
                assert "error" not in msg, msg
                continue
            push = msg["push"]
            channel = push["channel"]
            if "pub" in push:
                n = push["pub"]["data"]["n"]
                tenant, where = pub_where[n]
                assert tenant == tenant_of(slot), "a publication crossed tenants"
                assert channel == where
                got[key].append(n)
            else:
                kind = "join" if "join" in push else "leave"
                jl_got[key][(kind, channel, push[kind]["info"]["client"])] += 1

    def announce(kind: str, slot: int, channel: str) -> None:
        if not join_leave:
            return
        for member in audience(tenant_of(slot), channel):
            jl_expected[member][(kind, channel, conns[slot].client.id)] += 1

    def flush() -> None:
        node.scheduler.flush()
        for slot in range(SLOTS):
            consume(slot)

    for op in ops:
        kind = op[0]
        if kind == "sub":
            slot, channel = op[1], op[2]
            if channel in subs[slot]:
                continue
            await conns[slot].send("subscribe", {"channel": channel})
            subs[slot].add(channel)
            announce("join", slot, channel)
        elif kind == "unsub":
            slot = op[1]
            if not subs[slot]:
                continue
            channel = sorted(subs[slot])[op[2] % len(subs[slot])]
            await conns[slot].send("unsubscribe", {"channel": channel})
            subs[slot].discard(channel)
            announce("leave", slot, channel)
        elif kind in ("pub", "cpub"):
            n = len(pub_where)
            tenant = op[1] if kind == "pub" else tenant_of(op[1])
            channel = op[2]
            pub_where.append((tenant, channel))
            for member in audience(tenant, channel):
                may_get[member].append(n)
            if kind == "pub":
                await node.publish(channel, {"n": n}, tenant=tenant)
            else:
                await conns[op[1]].send("publish", {"channel": channel, "data": {"n": n}})
        elif kind == "reconnect":
            slot = op[1]
            consume(slot)
            await node.end_session(conns[slot].client)
            for channel in sorted(subs[slot]):
                subs[slot].discard(channel)
                announce("leave", slot, channel)
            gens[slot] += 1
            conns[slot] = await open_slot(slot)
        else:
            flush()
        # presence follows the subscriptions exactly, per tenant
        for tenant in TENANTS:
            for channel in CHANNELS:
                members = await node.presence.get((tenant, channel))
                assert set(members) == {conns[s].client.id for s, _ in audience(tenant, channel)}

    flush()
    for key, numbers in got.items():
        allowed = may_get[key]
        assert len(numbers) == len(set(numbers)), "a publication delivered twice"
        assert set(numbers) <= set(allowed), "delivered to a non-subscriber"
        assert numbers == sorted(numbers)
        assert not (jl_got[key] - jl_expected[key]), "join/leave delivered to a non-subscriber"
        if key[1] == gens[key[0]]:  # still connected: everything it was owed arrived
            assert numbers == allowed
            assert jl_got[key] == jl_expected[key]
