"""Documents across nodes when Redis misbehaves (review R2): error replies instead of a lost connection,
a failed store write that closes a room which is reloaded at once, Redis lost in the middle of a load.

Error replies are made deterministic with ACLs: ``ACL SETUSER default -publish`` makes every connection of
the nodes (they all log in as ``default``) get ``-NOPERM`` for PUBLISH at once, as a -BUSY (someone's long
script), -OOM or -READONLY (a failover) would, and ``+publish`` ends it. The nodes and clients come from
``tests.sync.test_relay_redis``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from pycrdt import Text

from channels.redis_shards import RedisShards
from sync.relay_redis import RedisDocumentRelay
from sync.rooms import DocumentRooms
from sync.store import StoreError, StoreOp
from sync.store_redis import RedisDocumentStore
from tests.redis_servers import RedisServer
from tests.sync.test_relay_redis import LEASE_TTL, Cluster, Node, fresh_key
from tests.sync.yclient import YClient


class FlakyStore(RedisDocumentStore):
    """A RedisDocumentStore whose next write fails once (as a Redis blip would)."""

    fail_next = False

    async def write(self, ops: Sequence[StoreOp]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("injected: Redis write failed")
        await super().write(ops)


async def flaky_node(group: Cluster) -> tuple[Node, FlakyStore]:
    shards = RedisShards(group.urls, cluster=group.cluster, connect_timeout=2.0)
    await shards.start()
    relay = RedisDocumentRelay(shards, lease_ttl=LEASE_TTL, sync_timeout=5.0)
    store = FlakyStore(shards)
    rooms = DocumentRooms(store, relay=relay, unload_delay=60.0)
    node = Node(shards, store, relay, rooms)
    group.nodes.append(node)
    return node, store


@pytest.fixture
async def standalone(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    group = Cluster([redis_server.url], cluster=False)
    yield group
    await group.close()


def deny(server: RedisServer, *commands: str) -> None:
    server.command("ACL", "SETUSER", "default", *(f"-{c}" for c in commands))


def allow(server: RedisServer, *commands: str) -> None:
    server.command("ACL", "SETUSER", "default", *(f"+{c}" for c in commands))


def subscribed(node: Node, channel: str) -> bool:
    return any(channel.encode() in c.handlers for c in node.shards.shards[0]._conns.values())


# ---------------------------------------------------------------- a room closed by a failed write


async def test_a_failed_rooms_old_link_never_unsubscribes_the_reloaded_room(standalone: Cluster) -> None:
    """The writer's store write fails: the room closes and its link closes in the background (release the
    lease, publish RELEASED, unsubscribe). The document is acquired again at once (a provider reconnects):
    the reloaded room's link must stay subscribed and hear the other node."""
    group = standalone
    a, store = await flaky_node(group)
    b = await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    assert ra.writer and not rb.writer
    alice, bob = YClient(1), YClient(2)
    group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    await group.settle(lambda: alice.synced and bob.synced, "synced")

    reloaded: list[asyncio.Task[object]] = []
    original = a.rooms.journal.on_failure

    def on_failure(keys: set[tuple[str, str]], error: StoreError) -> None:
        original(keys, error)
        reloaded.append(asyncio.ensure_future(a.rooms.acquire(key)))  # at once, before the old link closed

    a.rooms.journal.on_failure = on_failure
    store.fail_next = True
    alice.text.insert(0, "x")
    await group.settle(lambda: bool(reloaded), "a's write failed and a reloads the document")
    ra2 = await reloaded[0]
    assert ra.link is not None and ra.link.closed, "the reload waited for the old link to close"
    assert ra2.link is not None and a.relay.links.get(key) is ra2.link
    assert subscribed(a, ra2.link.channel), "the reloaded room's channel is subscribed"
    carol = YClient(3)
    group.connect(a, ra2, carol)
    bob.text.insert(0, "from bob ")
    await group.settle(lambda: "from bob" in str(carol.text), "carol (reloaded room on a) sees bob's edit")


async def test_awareness_of_a_room_closed_by_a_failed_write_is_removed_on_other_nodes(
    standalone: Cluster,
) -> None:
    """The failed room's peers leave only after its link closed; their cursors must not linger on the
    other nodes until the awareness timeout: the removals are published before the link closes."""
    group = standalone
    a, store = await flaky_node(group)
    b = await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    alice, bob = YClient(1), YClient(2)
    la = group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    alice.set_awareness({"name": "alice"})
    await group.settle(lambda: bob.states().get(1) == {"name": "alice"}, "bob sees alice")
    store.fail_next = True
    alice.text.insert(0, "x")
    await group.settle(lambda: la.terminated is not None, "alice's connection terminated")
    link = ra.link
    assert link is not None
    await group.settle(lambda: link.closed, "the failed room's link closed")  # before alice's transport ends
    ra.leave(la)  # the transport ends: hub/docs.py calls room.leave(peer) in its finally
    a.rooms.release(ra)
    a.links = []
    await group.settle(lambda: 1 not in bob.states(), "alice's cursor removed on b")


# ---------------------------------------------------------------- error replies


async def test_an_error_reply_to_a_relay_publish_is_repaired_by_a_resync(
    redis_server: RedisServer, standalone: Cluster
) -> None:
    """A PUBLISH answered with an error (not a lost connection) drops its batch: the link must resync, so
    the writer still gets the edit (and every later edit, which depends on it)."""
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    assert ra.writer and not rb.writer and rb.link is not None
    link = rb.link
    bob = YClient(2)
    group.connect(b, rb, bob)
    await group.settle(lambda: bob.synced, "bob synced")
    deny(redis_server, "publish")
    try:
        published = link.published
        bob.text.insert(0, "during the error. ")
        await group.settle(lambda: link._sender is None and link._out == [], "b's publish was answered")
        assert link.published == published, "the publish failed"
        assert link._resync is not None and not link._resync.done(), "a resync is retrying"
    finally:
        allow(redis_server, "publish")
    bob.text.insert(0, "after. ")
    text_a = lambda: str(ra.doc.get("text", type=Text))  # noqa: E731
    await group.settle(lambda: text_a() == str(bob.text) == "after. during the error. ", "a converges")
    await link.close()  # a failed sender left nothing that makes close raise
    assert link.closed and not subscribed(b, link.channel)


async def test_an_error_reply_to_the_lease_claim_keeps_upkeep_alive_and_one_writer(
    redis_server: RedisServer, standalone: Cluster
) -> None:
    """Lease claims answered with an error (-BUSY, -OOM, -READONLY, -NOPERM) count as "unknown": the
    upkeep loop goes on, the writer stops writing by its own clock (before the lease can expire and go to
    another node), and once Redis answers again exactly one node writes, a new one included."""
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    assert ra.writer and not rb.writer
    deny(redis_server, "eval", "evalsha")
    try:
        await group.settle(lambda: not ra.writer, "the writer stops writing by its clock")
        assert not rb.writer
    finally:
        allow(redis_server, "eval", "evalsha")
    for node in (a, b):
        assert node.relay._upkeep is not None and not node.relay._upkeep.done(), "upkeep is alive"
    await group.settle(lambda: ra.writer or rb.writer, "a node writes again")
    c = await group.node()
    rc = await c.rooms.acquire(key)
    assert sum(r.writer for r in (ra, rb, rc)) == 1, "exactly one node writes the document"


# ---------------------------------------------------------------- loads and the server-side API


async def test_redis_lost_during_a_load_fails_the_acquire_with_a_store_error(
    redis_two: list[RedisServer],
) -> None:
    """attach succeeded, then the relay's Redis dies before the load's sync request goes out: acquire
    raises StoreError (hub/docs.py closes the connection with the storage code), not ShardUnavailable."""
    relay_server, store_server = redis_two
    group = Cluster([relay_server.url], cluster=False)
    store_shards = RedisShards([store_server.url], connect_timeout=2.0)
    await store_shards.start()
    group.extra_shards.append(store_shards)

    class DyingRelayStore(RedisDocumentStore):
        async def load(self, key: tuple[str, str]) -> object:  # type: ignore[override]
            doc = await super().load(key)
            relay_server.kill()  # the relay's Redis crashes while the document loads
            return doc

    shards = RedisShards(group.urls, connect_timeout=2.0)
    await shards.start()
    relay = RedisDocumentRelay(shards, lease_ttl=LEASE_TTL, sync_timeout=1.0)
    rooms = DocumentRooms(DyingRelayStore(store_shards), relay=relay, unload_delay=60.0)
    group.nodes.append(Node(shards, rooms.store, relay, rooms))  # type: ignore[arg-type]
    key = fresh_key()
    try:
        with pytest.raises(StoreError):
            await rooms.acquire(key)
        assert key not in rooms.rooms and key not in relay.links
    finally:
        await group.close()


async def test_an_error_reply_to_a_loads_sync_request_fails_the_acquire_with_a_store_error(
    redis_server: RedisServer, standalone: Cluster
) -> None:
    node = await standalone.node()
    key = fresh_key()
    deny(redis_server, "publish")
    try:
        with pytest.raises(StoreError):
            await node.rooms.acquire(key)
    finally:
        allow(redis_server, "publish")
    assert key not in node.rooms.rooms and key not in node.relay.links
    room = await node.rooms.acquire(key)  # and it loads once Redis answers again
    node.rooms.release(room)


async def test_server_side_transact_on_a_non_writer_returns_once_the_edit_was_published(
    standalone: Cluster,
) -> None:
    """On a node that is not the writer nothing is journaled: transact returns once the edit left the node
    for the writer (its link's queue is flushed), not while it still waits in the queue."""
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    assert ra.writer and not rb.writer and rb.link is not None
    published = rb.link.published
    await b.rooms.transact(key, lambda doc: doc.get("text", type=Text).insert(0, "server edit"))
    assert rb.link.published == published + 1 and rb.link._out == [], "published when transact returned"
    await group.settle(lambda: str(ra.doc.get("text", type=Text)) == "server edit", "the writer has it")
    b.rooms.release(rb)
    a.rooms.release(ra)


async def test_a_relay_started_again_after_close_watches_each_shard_once(standalone: Cluster) -> None:
    node = await standalone.node()
    relay, shard = node.relay, node.shards.shards[0]
    before = len(shard._callbacks)
    await relay.start()
    upkeep = relay._upkeep
    await relay.start()
    assert relay._upkeep is upkeep and len(shard._callbacks) == before + 1
    await relay.close()
    await relay.start()
    assert len(shard._callbacks) == before + 1, "one reconnect callback for the relay's life"
    assert relay._upkeep is not None and relay._upkeep is not upkeep and not relay._upkeep.done()
    await relay.close()
