"""Channels through the official centrifuge-python SDK against a running hub: connect, publish and
receive, history, presence, join/leave, RPC, and tenant isolation.

``Rec`` and the ``connected``/``subscribed`` helpers are shared with test_sdk_auth and test_sdk_recovery.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from centrifuge import (
    ClientEventHandler,
    ClientInfo,
    ReplyError,
    StreamPosition,
    SubscriptionEventHandler,
)

from hub.codes import ClientError
from hub.hooks import Hooks, RPCContext
from tests.conftest import TIMEOUT, token

pytestmark = pytest.mark.all_websocket_modes


class Rec(ClientEventHandler, SubscriptionEventHandler):
    """Records every SDK event (client or subscription level) as ``(kind, ctx)``, in order.

    ``gate``: while cleared, a reconnect after a lost connection is held in ``on_connecting`` (the SDK
    awaits that handler before it schedules the reconnect), so a test can act while the client is away.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def _put(self, kind: str, ctx: Any) -> None:
        self.seen.append((kind, ctx))
        self.queue.put_nowait((kind, ctx))

    async def on_connecting(self, ctx: Any) -> None:
        self._put("connecting", ctx)
        await self.gate.wait()

    async def on_connected(self, ctx: Any) -> None:
        self._put("connected", ctx)

    async def on_disconnected(self, ctx: Any) -> None:
        self._put("disconnected", ctx)

    async def on_error(self, ctx: Any) -> None:
        self._put("error", ctx)

    async def on_subscribing(self, ctx: Any) -> None:
        self._put("subscribing", ctx)

    async def on_subscribed(self, ctx: Any) -> None:
        self._put("subscribed", ctx)

    async def on_unsubscribed(self, ctx: Any) -> None:
        self._put("unsubscribed", ctx)

    async def on_publication(self, ctx: Any) -> None:
        self._put("publication", ctx)

    async def on_join(self, ctx: Any) -> None:
        self._put("join", ctx)

    async def on_leave(self, ctx: Any) -> None:
        self._put("leave", ctx)

    async def next(self, *kinds: str) -> tuple[str, Any]:
        """The next event of one of ``kinds`` (any kind if none given); others are skipped."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                kind, ctx = await self.queue.get()
                if not kinds or kind in kinds:
                    return kind, ctx

    async def pub(self) -> Any:
        """The next publication."""
        return (await self.next("publication"))[1].pub

    def errors(self) -> list[Any]:
        return [ctx.error for kind, ctx in self.seen if kind == "error"]


async def connected(sdk: Any, hub: Any, **kw: Any) -> tuple[Any, Rec]:
    rec = Rec()
    client = sdk(hub, events=rec, **kw)
    await client.connect()
    await client.ready(TIMEOUT)
    return client, rec


async def subscribed(client: Any, channel: str, **kw: Any) -> tuple[Any, Rec]:
    rec = Rec()
    sub = client.new_subscription(channel, events=rec, **kw)
    await sub.subscribe()
    await sub.ready(TIMEOUT)
    return sub, rec


# ---------------------------------------------------------------- connect, publish, receive


async def test_anonymous_and_token_clients_show_in_presence(hub, sdk):
    anon, anon_rec = await connected(sdk, hub)
    alice, alice_rec = await connected(sdk, hub, token=token("alice", info={"name": "Alice"}))
    assert (await anon_rec.next("connected"))[1].client == anon.client_id
    assert (await alice_rec.next("connected"))[1].client == alice.client_id
    assert anon.client_id != alice.client_id

    sub, _ = await subscribed(anon, "lobby")
    await subscribed(alice, "lobby")
    clients = (await sub.presence()).clients
    assert clients == {
        anon.client_id: ClientInfo(client=anon.client_id, user="", conn_info=None, chan_info=None),
        alice.client_id: ClientInfo(alice.client_id, "alice", conn_info={"name": "Alice"}, chan_info=None),
    }


async def test_publication_reaches_every_subscriber_with_publisher_info(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice", info={"name": "Alice"}))
    bob, _ = await connected(sdk, hub, token=token("bob"))
    sub_b, rec_b = await subscribed(bob, "chat:room")
    sub_a, rec_a = await subscribed(alice, "chat:room")

    await sub_a.publish({"text": "hi"})
    alice_info = ClientInfo(client=alice.client_id, user="alice", conn_info={"name": "Alice"}, chan_info=None)
    for rec in (rec_a, rec_b):
        pub = await rec.pub()
        assert (pub.data, pub.offset, pub.info) == ({"text": "hi"}, 1, alice_info)

    await sub_b.publish("second")
    for rec in (rec_a, rec_b):
        pub = await rec.pub()
        assert (pub.data, pub.offset, pub.info.user, pub.info.client) == ("second", 2, "bob", bob.client_id)

    await hub.sb.publish("chat:room", [3])  # from the server: no publisher info
    for rec in (rec_a, rec_b):
        pub = await rec.pub()
        assert (pub.data, pub.offset, pub.info) == ([3], 3, None)


async def test_history_limit_since_and_reverse(hub, sdk):
    alice, _ = await connected(sdk, hub, token=token("alice"))
    sub, _ = await subscribed(alice, "chat:hist")
    for n in range(1, 6):
        await sub.publish({"n": n})

    def ns(result: Any) -> list[int]:
        assert [p.offset for p in result.publications] == [p.data["n"] for p in result.publications]
        return [p.data["n"] for p in result.publications]

    top = await sub.history(limit=0)
    assert (top.publications, top.offset) == ([], 5)
    assert top.epoch
    epoch = top.epoch

    everything = await sub.history(limit=-1)
    assert ns(everything) == [1, 2, 3, 4, 5]
    assert (everything.offset, everything.epoch) == (5, epoch)
    assert all(p.info is not None and p.info.user == "alice" for p in everything.publications)
    assert ns(await sub.history(limit=2)) == [1, 2]
    assert ns(await sub.history(limit=-1, since=StreamPosition(2, epoch))) == [3, 4, 5]
    assert ns(await sub.history(limit=2, since=StreamPosition(2, epoch))) == [3, 4]
    assert ns(await sub.history(limit=-1, since=StreamPosition(5, epoch))) == []
    assert ns(await sub.history(limit=2, reverse=True)) == [5, 4]
    assert ns(await sub.history(limit=-1, since=StreamPosition(4, epoch), reverse=True)) == [3, 2, 1]

    with pytest.raises(ReplyError) as err:
        await sub.history(limit=-1, since=StreamPosition(2, epoch + "-other"))
    assert err.value.code == 112  # unrecoverable position: another epoch


async def test_history_not_available_without_history(hub, sdk):
    client, _ = await connected(sdk, hub, token=token("alice"))
    sub, _ = await subscribed(client, "nohist:x")
    with pytest.raises(ReplyError) as err:
        await sub.history(limit=-1)
    assert err.value.code == 108


# ---------------------------------------------------------------- presence, join/leave


async def test_presence_and_stats_two_users_three_connections(hub, sdk):
    a1, _ = await connected(sdk, hub, token=token("alice"))
    a2, _ = await connected(sdk, hub, token=token("alice"))
    b, _ = await connected(sdk, hub, token=token("bob"))
    _, rec_a1 = await subscribed(a1, "chat:p", join_leave=True)
    await subscribed(a2, "chat:p")
    sub_b, _ = await subscribed(b, "chat:p")

    clients = (await sub_b.presence()).clients
    assert {cid: (info.client, info.user) for cid, info in clients.items()} == {
        a1.client_id: (a1.client_id, "alice"),
        a2.client_id: (a2.client_id, "alice"),
        b.client_id: (b.client_id, "bob"),
    }
    stats = await sub_b.presence_stats()
    assert (stats.num_clients, stats.num_users) == (3, 2)

    await a2.disconnect()
    _, leave = await rec_a1.next("leave")  # the hub removes presence before it announces the leave
    assert (leave.info.client, leave.info.user) == (a2.client_id, "alice")
    stats = await sub_b.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)

    await sub_b.unsubscribe()
    _, leave = await rec_a1.next("leave")
    assert (leave.info.client, leave.info.user) == (b.client_id, "bob")
    stats = await a1.presence_stats("chat:p")
    assert (stats.num_clients, stats.num_users) == (1, 1)
    assert set((await a1.presence("chat:p")).clients) == {a1.client_id}


async def test_chat_join_leave_only_for_subscriptions_that_ask(hub, sdk):
    watcher, _ = await connected(sdk, hub, token=token("watcher"))
    quiet, _ = await connected(sdk, hub, token=token("quiet"))
    bob, _ = await connected(sdk, hub, token=token("bob", info={"n": 1}))
    _, rec_w = await subscribed(watcher, "chat:jl", join_leave=True)
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.client) == ("join", watcher.client_id)  # its own join, as Centrifugo sends it
    _, rec_q = await subscribed(quiet, "chat:jl")

    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.user, ctx.info.client) == ("join", "quiet", quiet.client_id)

    sub_b, _ = await subscribed(bob, "chat:jl", join_leave=True)
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.user, ctx.info.client) == ("join", "bob", bob.client_id)
    assert ctx.info.conn_info == {"n": 1}
    await sub_b.unsubscribe()
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.user, ctx.info.client) == ("leave", "bob", bob.client_id)

    await hub.sb.publish("chat:jl", "after")
    for rec in (rec_w, rec_q):
        kind, ctx = await rec.next("join", "leave", "publication")
        assert (kind, ctx.pub.data) == ("publication", "after")  # quiet saw no join or leave before it


async def test_unnamed_namespace_forces_join_leave(hub, sdk):
    watcher, _ = await connected(sdk, hub, token=token("watcher"))
    bob, _ = await connected(sdk, hub, token=token("bob"))
    _, rec_w = await subscribed(watcher, "jl-room")  # join_leave not asked for
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.client) == ("join", watcher.client_id)
    sub_b, _ = await subscribed(bob, "jl-room")
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.user, ctx.info.client) == ("join", "bob", bob.client_id)
    await sub_b.unsubscribe()
    kind, ctx = await rec_w.next("join", "leave", "publication")
    assert (kind, ctx.info.user, ctx.info.client) == ("leave", "bob", bob.client_id)


# ---------------------------------------------------------------- RPC


async def test_rpc_echo_errors_and_unknown_method(make_hub, sdk):
    async def echo(ctx: RPCContext) -> Any:
        return {"echo": ctx.data, "user": ctx.user, "client": ctx.client_id}

    async def refuse(ctx: RPCContext) -> Any:
        raise ClientError(1000, "not today")

    hub = await make_hub(hooks=Hooks(rpc={"echo": echo, "refuse": refuse}))
    client, rec = await connected(sdk, hub, token=token("alice"))

    result = await client.rpc("echo", {"x": [1, 2], "s": "ü"})
    assert result.data == {"echo": {"x": [1, 2], "s": "ü"}, "user": "alice", "client": client.client_id}

    with pytest.raises(ReplyError) as err:
        await client.rpc("no-such-method", {})
    assert err.value.code == 104
    with pytest.raises(ReplyError) as err:
        await client.rpc("refuse", None)
    assert (err.value.code, err.value.message) == (1000, "not today")

    assert (await client.rpc("echo", "again")).data["echo"] == "again"  # errors did not end the connection
    assert [kind for kind, _ in rec.seen] == ["connecting", "connected"]


# ---------------------------------------------------------------- tenants


async def test_tenants_never_cross(hub, sdk):
    # The same user name and the same channel name in two tenants.
    a, _ = await connected(sdk, hub, token=token("alice", tenant="a"))
    b, _ = await connected(sdk, hub, token=token("alice", tenant="b"))
    sub_a, rec_a = await subscribed(a, "chat:shared", join_leave=True)
    assert (await rec_a.next("join", "leave", "publication"))[1].info.client == a.client_id  # its own
    sub_b, rec_b = await subscribed(b, "chat:shared", join_leave=True)
    assert (await rec_b.next("join", "leave", "publication"))[1].info.client == b.client_id

    await sub_a.publish("from-a")
    kind, ctx = await rec_a.next("publication", "join", "leave")
    assert (kind, ctx.pub.data, ctx.pub.offset) == ("publication", "from-a", 1)  # b's join did not reach a
    await sub_b.publish("from-b")
    kind, ctx = await rec_b.next("publication", "join", "leave")
    assert (kind, ctx.pub.data, ctx.pub.offset) == ("publication", "from-b", 1)  # nor a's publication b

    await hub.sb.publish("chat:shared", "server-a", tenant="a")
    await hub.sb.publish("chat:shared", "server-b", tenant="b")
    assert (await rec_a.pub()).data == "server-a"
    assert (await rec_b.pub()).data == "server-b"

    a2, _ = await connected(sdk, hub, token=token("carol", tenant="a"))
    await subscribed(a2, "chat:shared")
    kind, ctx = await rec_a.next("publication", "join", "leave")
    assert (kind, ctx.info.client) == ("join", a2.client_id)

    assert set((await sub_a.presence()).clients) == {a.client_id, a2.client_id}
    assert set((await sub_b.presence()).clients) == {b.client_id}
    stats = await sub_b.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)
    assert [p.data for p in (await sub_a.history(limit=-1)).publications] == ["from-a", "server-a"]
    assert [p.data for p in (await sub_b.history(limit=-1)).publications] == ["from-b", "server-b"]

    await hub.sb.publish("chat:shared", "default tenant")  # a third channel: the tenant-less one
    await sub_b.publish("last-b")
    assert (await rec_b.pub()).data == "last-b"
