"""Documents across nodes: several DocumentRooms ("nodes") on one Redis, each with its own RedisShards,
relay and store, and pycrdt clients (tests/sync/yclient.py) linked to the rooms in memory.

Waiting is a bounded condition wait: ``settle`` pumps until the condition holds, waiting between rounds
for the event every message to a client sets (or POLL seconds, for conditions no client sees), at most
``TIMEOUT`` in all."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from channels.redis_shards import RedisShards
from sync.relay_redis import RedisDocumentRelay
from sync.room import DocRoom, decode_state_vector
from sync.rooms import DocumentRooms
from sync.store import DocKey
from sync.store_redis import RedisDocumentStore
from tests.redis_servers import RedisCluster, RedisServer
from tests.sync.links import Link
from tests.sync.yclient import YClient

TIMEOUT = 10.0
LEASE_TTL = 0.6
POLL = 0.02
_docs = itertools.count()


def fresh_key() -> DocKey:
    return ("acme", f"doc-{next(_docs)}")


class Wakeup:
    """One event for every message any room sends to any client."""

    def __init__(self) -> None:
        self.event = asyncio.Event()


class EventLink(Link):
    def __init__(self, client: YClient, wakeup: Wakeup) -> None:
        super().__init__(client)
        self.wakeup = wakeup

    def send(self, message: bytes, shared: bool = False) -> None:
        super().send(message, shared)
        self.wakeup.event.set()


@dataclass
class Node:
    shards: RedisShards
    store: RedisDocumentStore
    relay: RedisDocumentRelay
    rooms: DocumentRooms
    links: list[tuple[DocRoom, EventLink]] = field(default_factory=list)
    dead: bool = False

    def writer_of(self, key: DocKey) -> bool:
        room = self.rooms.rooms.get(key)
        return room is not None and room.writer


@dataclass
class Cluster:
    urls: list[str]
    cluster: bool
    store_urls: list[str] | None = None
    """Where the nodes' stores live (default: the relay's Redis)."""
    nodes: list[Node] = field(default_factory=list)
    wakeup: Wakeup = field(default_factory=Wakeup)
    extra_shards: list[RedisShards] = field(default_factory=list)

    async def node(self, *, own_store: RedisShards | None = None) -> Node:
        shards = RedisShards(self.urls, cluster=self.cluster, connect_timeout=2.0)
        await shards.start()
        store_shards = own_store if own_store is not None else shards
        relay = RedisDocumentRelay(shards, lease_ttl=LEASE_TTL, sync_timeout=5.0)
        rooms = DocumentRooms(RedisDocumentStore(store_shards), relay=relay, unload_delay=60.0)
        node = Node(shards, rooms.store, relay, rooms)  # type: ignore[arg-type]
        self.nodes.append(node)
        return node

    def connect(self, node: Node, room: DocRoom, client: YClient) -> EventLink:
        link = EventLink(client, self.wakeup)
        room.join(link, True)
        client.on_open()
        node.links.append((room, link))
        return link

    def pump_once(self) -> bool:
        moved = False
        for node in self.nodes:
            if node.dead:
                continue
            for room, link in node.links:
                for message in link.client.take():
                    room.receive(link, message)
                    moved = True
                inbox, link.inbox = link.inbox, []
                for message in inbox:
                    link.client.handle(message)
                    moved = True
        return moved

    async def settle(self, condition: Callable[[], bool], what: str = "condition") -> None:
        """Pump messages until ``condition()`` holds; fail after TIMEOUT."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    self.wakeup.event.clear()
                    while self.pump_once():
                        pass
                    if condition():
                        return
                    # A message to a client wakes us at once; conditions no client sees (a lease taken,
                    # a room's store state) are re-checked every POLL seconds.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL):
                            await self.wakeup.event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for: {what}") from None

    async def reconnect_terminated(self) -> int:
        """Clients whose room closed them (a failed store write) reconnect, as a provider does."""
        count = 0
        for node in self.nodes:
            for i, (room, link) in enumerate(node.links):
                if link.terminated is None:
                    continue
                room.leave(link)
                node.rooms.release(room)
                fresh = await node.rooms.acquire(room.key)
                again = EventLink(link.client, self.wakeup)
                fresh.join(again, True)
                link.client.on_open()
                node.links[i] = (fresh, again)
                count += 1
        return count

    async def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.rooms.close()
            await node.shards.close()
        for shards in self.extra_shards:
            await shards.close()


def same_state(docs: list[Doc[Any]]) -> bool:
    states = [decode_state_vector(doc.get_state()) for doc in docs]
    texts = {str(doc.get("text", type=Text)) for doc in docs}
    return all(state == states[0] for state in states) and len(texts) == 1


@pytest.fixture(params=["standalone", "cluster"])
async def nodes(request: Any) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Factory of a node group on one Redis (a fresh server, or the session's 3-master cluster)."""
    made: list[Cluster] = []

    async def make() -> Cluster:
        if request.param == "cluster":
            cl: RedisCluster = request.getfixturevalue("redis_cluster")
            group = Cluster(cl.urls, cluster=True)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            group = Cluster([server.url], cluster=False)
        made.append(group)
        return group

    yield make
    for group in made:
        await group.close()


@pytest.fixture
async def standalone(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    group = Cluster([redis_server.url], cluster=False)
    yield group
    await group.close()


# ---------------------------------------------------------------- convergence


async def test_clients_on_different_nodes_converge(nodes: Callable[..., Awaitable[Cluster]]) -> None:
    group = await nodes()
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    alice, bob = YClient(1), YClient(2)
    group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    alice.text.insert(0, "hello")
    await group.settle(lambda: str(bob.text) == "hello", "bob sees alice's edit")
    bob.text.insert(5, " world")
    alice.text.insert(0, ">")
    docs = [alice.doc, bob.doc, ra.doc, rb.doc]
    await group.settle(lambda: same_state(docs), "all converge")
    assert str(alice.text) == str(bob.text) == ">hello world"


edit = st.tuples(
    st.integers(0, 5),  # which client (two per node)
    st.sampled_from(["insert", "delete", "deliver"]),
    st.integers(0, 1000),
    st.text(alphabet="abcxyz", min_size=1, max_size=4),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(edit, min_size=1, max_size=30))
async def test_property_concurrent_edits_across_three_nodes_converge(
    standalone: Cluster, script: list[tuple[int, str, int, str]]
) -> None:
    """Six clients on three nodes edit one text concurrently, in any interleaving of local edits and
    partial deliveries; once everything is delivered every client and every room holds the same state."""
    group = standalone
    while len(group.nodes) < 3:
        await group.node()
    key = fresh_key()
    rooms = [await node.rooms.acquire(key) for node in group.nodes]
    clients = [YClient(100 + i) for i in range(6)]
    for i, client in enumerate(clients):
        group.connect(group.nodes[i // 2], rooms[i // 2], client)
    await group.settle(lambda: all(c.synced for c in clients), "all synced")
    for who, action, at, text in script:
        t = clients[who].text
        if action == "insert":
            t.insert(at % (len(t) + 1), text)
        elif action == "delete" and len(t):
            start = at % len(t)
            del t[start : min(len(t), start + len(text))]
        else:
            group.pump_once()
            await asyncio.sleep(0)  # let the relay's reader run between edits: any interleaving
    docs = [c.doc for c in clients] + [r.doc for r in rooms]
    await group.settle(lambda: same_state(docs), "all converge")
    for node, room in zip(group.nodes, rooms, strict=True):
        node.links = [(r, link) for r, link in node.links if r is not room]
        for peer in list(room.peers):
            room.leave(peer)
        node.rooms.release(room)


# ---------------------------------------------------------------- late joiner


async def test_a_late_joiner_on_a_fresh_node_gets_the_full_state_at_its_first_sync(
    nodes: Callable[..., Awaitable[Cluster]], redis_two: list[RedisServer]
) -> None:
    """Every node stores into its OWN Redis here, so the fresh node's store is empty: the full state can
    only come from the other holders, during the load."""
    group = await nodes()
    stores = []
    for server in redis_two:
        s = RedisShards([server.url], connect_timeout=2.0)
        await s.start()
        stores.append(s)
    group.extra_shards += stores
    a, b = await group.node(own_store=stores[0]), await group.node(own_store=stores[0])
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    alice, bob = YClient(1), YClient(2)
    group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    alice.text.insert(0, "from alice. ")
    bob.text.insert(0, "from bob. ")
    await group.settle(lambda: same_state([alice.doc, bob.doc, ra.doc, rb.doc]), "a and b converge")
    c = await group.node(own_store=stores[1])
    rc = await c.rooms.acquire(key)  # returns after the sync exchange with a and b
    carol = YClient(3)
    link = EventLink(carol, Wakeup())
    rc.join(link, True)
    carol.on_open()
    for message in carol.take():  # carol's step 1 (and step 2): answered from what rc holds now
        rc.receive(link, message)
    await rc.journal.flush()
    for message in link.inbox:
        carol.handle(message)
    assert carol.synced
    assert str(carol.text) == str(alice.text)
    assert same_state([carol.doc, alice.doc])


# ---------------------------------------------------------------- one writer


async def test_exactly_one_node_writes_and_the_document_survives_a_full_restart(
    nodes: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await nodes()
    trio = [await group.node() for _ in range(3)]
    key = fresh_key()
    rooms = [await n.rooms.acquire(key) for n in trio]
    clients = [YClient(10 + i) for i in range(3)]
    for n, r, c in zip(trio, rooms, clients, strict=True):
        group.connect(n, r, c)
    for round_ in range(5):
        for i, c in enumerate(clients):
            c.text.insert(0, f"{i}.{round_} ")
    docs = [c.doc for c in clients] + [r.doc for r in rooms]
    await group.settle(lambda: same_state(docs), "converge")
    for r in rooms:
        await r.journal.flush()
    writers = [n for n in trio if n.writer_of(key)]
    assert len(writers) == 1
    assert [n.store.writes > 0 for n in trio] == [n is writers[0] for n in trio]
    expected = str(clients[0].text)
    for n in trio:
        await n.rooms.close()
    # a full restart: a brand-new node reads everything back from Redis
    fresh = await group.node()
    room = await fresh.rooms.acquire(key)
    assert str(room.doc.get("text", type=Text)) == expected


async def test_when_the_writer_closes_another_node_takes_over(standalone: Cluster) -> None:
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra = await a.rooms.acquire(key)
    rb = await b.rooms.acquire(key)
    assert ra.writer and not rb.writer
    bob = YClient(2)
    group.connect(b, rb, bob)
    bob.text.insert(0, "before. ")
    await group.settle(lambda: str(ra.doc.get("text", type=Text)) == "before. ", "a has it")
    a.rooms.release(ra)
    await a.rooms.close()  # releases the lease and says so: b takes over at once, not after the TTL
    await group.settle(lambda: rb.writer, "b is the writer")
    writes = b.store.writes
    bob.text.insert(0, "after. ")
    await group.settle(lambda: b.store.writes > writes, "b writes")
    await b.rooms.close()
    fresh = await group.node()
    room = await fresh.rooms.acquire(key)
    assert str(room.doc.get("text", type=Text)) == "after. before. "


async def test_when_the_writer_dies_another_takes_over_and_nothing_held_elsewhere_is_lost(
    standalone: Cluster,
) -> None:
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra = await a.rooms.acquire(key)
    rb = await b.rooms.acquire(key)
    assert ra.writer
    # a dies: no lease release, no flush; its connections to Redis just end
    a.dead = True
    await a.relay.close()
    await a.shards.close()
    bob = YClient(2)
    group.connect(b, rb, bob)
    bob.text.insert(0, "typed while nobody could write. ")
    await group.settle(lambda: rb.writer, "b takes the lease once a's expired")
    bob.text.insert(0, "and after. ")
    await group.settle(lambda: not rb.unstored, "b stored its whole state")
    await rb.journal.flush()
    await b.rooms.close()
    fresh = await group.node()
    room = await fresh.rooms.acquire(key)
    assert str(room.doc.get("text", type=Text)) == "and after. typed while nobody could write. "
    with contextlib.suppress(Exception):
        await a.rooms.close()


# ---------------------------------------------------------------- awareness


async def test_awareness_crosses_nodes_and_a_leaving_client_is_removed_everywhere(
    nodes: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await nodes()
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    alice, bob = YClient(1), YClient(2)
    la = group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    alice.set_awareness({"name": "alice"})
    await group.settle(lambda: bob.states().get(1) == {"name": "alice"}, "bob sees alice")
    # a node loading later gets the states of the others' connections in the sync exchange
    c = await group.node()
    rc = await c.rooms.acquire(key)
    carol = YClient(3)
    group.connect(c, rc, carol)
    await group.settle(lambda: carol.states().get(1) == {"name": "alice"}, "carol sees alice")
    ra.leave(la)
    a.links = []
    await group.settle(lambda: 1 not in bob.states() and 1 not in carol.states(), "alice gone everywhere")


# ---------------------------------------------------------------- Redis restarts


async def test_updates_missed_while_redis_was_down_are_exchanged_after_it_is_back(
    redis_server: RedisServer, standalone: Cluster
) -> None:
    """Redis restarts empty (no persistence): edits made meanwhile on both nodes could not be published,
    the lease and the stored document are gone. The writer's failed store write closed its clients (they
    reconnect, as providers do, with their offline edits). After the reconnect the nodes sync, one takes the
    lease and stores its whole state, so a fresh node reads everything."""
    group = standalone
    a, b = await group.node(), await group.node()
    key = fresh_key()
    ra, rb = await a.rooms.acquire(key), await b.rooms.acquire(key)
    alice, bob = YClient(1), YClient(2)
    group.connect(a, ra, alice)
    group.connect(b, rb, bob)
    alice.text.insert(0, "one. ")
    await group.settle(lambda: str(bob.text) == "one. ", "bob has it")
    redis_server.stop()
    await asyncio.wait_for(a.shards.shards[0].wait_connected(False), TIMEOUT)
    alice.text.insert(0, "alice offline. ")
    bob.text.insert(0, "bob offline. ")
    group.pump_once()
    await ra.journal.flush()
    redis_server.start()
    await asyncio.wait_for(a.shards.shards[0].wait_connected(True), TIMEOUT)
    await group.reconnect_terminated()
    rooms = [room for node in group.nodes for room, _ in node.links]
    docs = [alice.doc, bob.doc, *(r.doc for r in rooms)]
    await group.settle(lambda: same_state(docs), "converge after the restart")
    await group.settle(lambda: any(r.writer and not r.unstored for r in rooms), "stored by a writer")
    for r in rooms:
        await r.journal.flush()
    expected = str(alice.text)
    assert "alice offline" in expected and "bob offline" in expected
    fresh = await group.node()
    room = await fresh.rooms.acquire(key)
    assert str(room.doc.get("text", type=Text)) == expected


def test_the_relay_joins_queued_updates_up_to_a_bound_and_keeps_one_sync_reply_per_node() -> None:
    """Sans-I/O: what ``_next_batch`` takes off a link's queue, and the backlog it counts."""
    from sync.relay_redis import MAX_BATCH_BYTES, SYNC_REPLY, UPDATE, RedisDocLink

    relay = RedisDocumentRelay(RedisShards(["redis://127.0.0.1:1"]), node_id="me", max_backlog=10 * 2**20)
    link = RedisDocLink(relay, ("t", "d"))
    update = b"u" * (MAX_BATCH_BYTES // 4)
    link._out = [(UPDATE, update, len(update))] * 10
    relay.backlog = 10 * len(update)
    data, size = link._next_batch()
    assert (
        size == 4 * len(update) and len(link._out) == 6
    )  # a PUBLISH of about MAX_BATCH_BYTES, not 10 of them
    reply = [SYNC_REPLY, "me", "other", 1, b"diff", b"sv", []]
    link._out = [(SYNC_REPLY, reply, 4), (UPDATE, update, len(update))]
    relay.backlog = 4 + len(update)
    link._drop_queued_replies("other")
    assert link._out == [(UPDATE, update, len(update))] and relay.backlog == len(update)
