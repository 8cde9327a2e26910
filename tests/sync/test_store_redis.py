"""sync.store_redis against real redis-server processes: the log/snapshot model, atomic compaction,
key separation of tenants and odd names, a down Redis, cluster mode, and documents surviving a restart."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Text

from channels.redis_shards import RedisShards
from sync.rooms import DocumentRooms
from sync.store import Append, Compact, DocKey, StoreError, StoreOp
from sync.store_redis import RedisDocumentStore
from tests.redis_servers import RedisCluster, RedisServer
from tests.sync.links import connect, pump
from tests.sync.yclient import YClient

KEY: DocKey = ("acme", "notes")


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisDocumentStore]:
    shards = RedisShards([redis_server.url], connect_timeout=2.0)
    await shards.start()
    s = RedisDocumentStore(shards)
    await s.open()
    yield s
    await s.close()
    await shards.close()


async def test_a_document_never_written_loads_empty(store: RedisDocumentStore) -> None:
    doc = await store.load(KEY)
    assert doc.updates == [] and doc.snapshot_bytes == doc.log_rows == doc.log_bytes == 0


async def test_appends_then_compact_then_appends(store: RedisDocumentStore) -> None:
    await store.write([Append(KEY, b"u1"), Append(KEY, b"u22")])
    doc = await store.load(KEY)
    assert doc.updates == [b"u1", b"u22"] and doc.log_rows == 2 and doc.log_bytes == 5
    await store.write([Append(KEY, b"u3"), Compact(KEY, b"SNAP"), Append(KEY, b"u4")])
    doc = await store.load(KEY)
    assert doc.updates == [b"SNAP", b"u4"]
    assert (doc.snapshot_bytes, doc.log_rows, doc.log_bytes) == (4, 1, 2)


async def test_tenants_and_odd_names_never_share_keys(store: RedisDocumentStore) -> None:
    keys: list[DocKey] = [("a", "b:c"), ("a:b", "c"), ("", "a:b:c"), ("x", "}{"), ("x", "%7D%7B"), ("x", "é")]
    await store.write([Append(k, f"{i}".encode()) for i, k in enumerate(keys)])
    for i, k in enumerate(keys):
        assert (await store.load(k)).updates == [f"{i}".encode()]


_runs = itertools.count()

ops_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "c"]), st.integers(0, 2), st.binary(min_size=1, max_size=8)),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(ops_strategy, max_size=4))
async def test_the_store_matches_the_log_model(
    store: RedisDocumentStore, batches: list[list[tuple[str, int, bytes]]]
) -> None:
    """Any batches of appends and compactions over three documents load as the model says: the last
    snapshot first, then every append after it, in order."""
    run = next(_runs)
    docs: list[DocKey] = [("model", f"d{i}-{run}") for i in range(3)]
    model: dict[DocKey, list[bytes]] = {d: [] for d in docs}
    for batch in batches:
        ops: list[StoreOp] = []
        for kind, which, data in batch:
            key = docs[which]
            if kind == "a":
                ops.append(Append(key, data))
                model[key].append(data)
            else:
                ops.append(Compact(key, data))
                model[key] = [data]
        await store.write(ops)
    for key in docs:
        assert (await store.load(key)).updates == model[key]


async def test_a_down_redis_is_a_store_error(redis_server: RedisServer) -> None:
    shards = RedisShards([redis_server.url], connect_timeout=1.0)
    await shards.start()
    store = RedisDocumentStore(shards)
    try:
        await store.write([Append(KEY, b"x")])
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.write([Append(KEY, b"y")])
        with pytest.raises(StoreError):
            await store.load(KEY)
    finally:
        await shards.close()


async def test_cluster_mode(redis_cluster: RedisCluster) -> None:
    shards = RedisShards(redis_cluster.urls, cluster=True, connect_timeout=2.0)
    await shards.start()
    store = RedisDocumentStore(shards)
    try:
        keys: list[DocKey] = [("t", f"doc-{i}") for i in range(20)]  # spread over the three masters
        await store.write([Append(k, b"a") for k in keys] + [Compact(keys[0], b"S")])
        await store.write([Append(k, b"b") for k in keys])
        assert (await store.load(keys[0])).updates == [b"S", b"b"]
        for k in keys[1:]:
            assert (await store.load(k)).updates == [b"a", b"b"]
    finally:
        await shards.close()


async def test_documents_survive_a_restart_of_the_node(redis_server: RedisServer) -> None:
    """Rooms over the Redis store: edits, compaction on unload, a new DocumentRooms reads them back."""
    for attempt in range(2):
        shards = RedisShards([redis_server.url], connect_timeout=2.0)
        await shards.start()
        rooms = DocumentRooms(RedisDocumentStore(shards), unload_delay=60.0)
        try:
            room = await rooms.acquire(KEY)
            client = YClient(attempt + 1)
            link = connect(room, client)
            await pump(room, [link])
            if attempt == 0:
                client.text.insert(0, "kept across restarts")
                await pump(room, [link])
            else:
                assert str(client.text) == "kept across restarts"
                assert isinstance(room.doc.get("text", type=Text), Text)
            room.leave(link)
            rooms.release(room)
        finally:
            await rooms.close()
            await shards.close()
