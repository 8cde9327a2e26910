"""Bad input and limits on the document endpoint: the offender is closed with a reason, the document and
the other clients carry on, and the node stays up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from sync import protocol
from tests.conftest import TIMEOUT, HubFactory, RunningHub, token
from tests.hub.ydocs import YConnect, doc_url

pytestmark = pytest.mark.all_websocket_modes


async def offend(hub: RunningHub, name: str, payload: bytes | str) -> tuple[int, str]:
    async with websockets.connect(doc_url(hub, name), open_timeout=TIMEOUT, max_size=None) as ws:
        await ws.send(payload)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\xde\xad\xbe\xef garbage", 4400, "unknown message type"),
        (b"\x09", 4400, "unknown message type 9"),
        (b"\x00\x02\xff\xff", 4400, "truncated varint"),
        (b"\x00\x02\x10abc", 4400, "length past the end"),
        (b"\x01\x04\x01\x01\x01\x05", 4400, "length past the end"),
        (protocol.awareness(b"\x01\x01\x01\x03{x}"), 4400, "awareness state is not JSON"),
        (protocol.update(b"\x05\x05\x05\x05\x05"), 4422, "invalid update"),
        ("a text frame", 4400, "text frames are not y-websocket messages"),
    ],
)
async def test_bad_messages_close_the_sender_only(
    docs_hub: RunningHub, yconnect: YConnect, payload: bytes | str, code: int, reason: str
) -> None:
    alice = await yconnect(docs_hub, "target")
    alice.text.insert(0, "intact")
    await alice.flush()
    bob = await yconnect(docs_hub, "target")
    await bob.until(lambda: str(bob.text) == "intact")
    got_code, got_reason = await offend(docs_hub, "target", payload)
    assert got_code == code and reason in got_reason
    alice.text.insert(len(alice.text), "!")
    await alice.flush()
    await bob.until(lambda: str(bob.text) == "intact!")
    assert await docs_hub.sb.documents.content("target") == {"text": "intact!"}


async def test_update_and_document_size_limits(
    make_hub: HubFactory, tmp_path: Path, yconnect: YConnect
) -> None:
    hub = await make_hub(
        data_dir=str(tmp_path),
        doc_anonymous_access="write",
        doc_max_update_size=2000,
        doc_max_document_size=5000,
    )
    alice = await yconnect(hub, "small")
    alice.text.insert(0, "x" * 1500)
    await alice.flush()
    watcher = await yconnect(hub, "small")
    await watcher.until(lambda: len(str(watcher.text)) == 1500)

    big = await yconnect(hub, "small")
    big.text.insert(0, "y" * 2500)  # one update over doc_max_update_size (a frame under the frame limit)
    await big.flush()
    code, reason = await big.closed()
    assert code == 4413 and reason.startswith("update too large") and reason.endswith("> 2000 bytes)")

    huge = await yconnect(hub, "small")
    huge.text.insert(0, "z" * 10000)  # a frame over the frame limit: the WebSocket layer refuses it
    await huge.flush()
    assert (await huge.closed())[0] == 1009

    for _ in range(3):
        alice.text.insert(0, "w" * 1200)
        await alice.flush()
    code, reason = await alice.closed()
    assert (code, reason) == (4413, "document too large (limit 5000 bytes)")
    content = await hub.sb.documents.content("small")
    assert 1500 <= len(content["text"]) <= 5000
    await watcher.until(lambda: str(watcher.text) == content["text"])


async def test_connection_limit_per_user(make_hub: HubFactory, tmp_path: Path, yconnect: YConnect) -> None:
    hub = await make_hub(
        data_dir=str(tmp_path),
        doc_token_access="write",
        doc_anonymous_access="write",
        doc_user_connection_limit=2,
    )
    tok = token("alice")
    first = await yconnect(hub, "a", token=tok)
    await yconnect(hub, "b", token=tok)
    third = await yconnect(hub, "c", token=tok, synced=False)
    assert await third.closed() == (4529, "too many document connections")
    await yconnect(hub, "c", token=token("bob"))  # others are not affected
    await first.close()
    await yconnect(hub, "c", token=tok)  # a freed slot can be used again
    for _ in range(3):  # anonymous connections are not counted (one address may be a whole office)
        await yconnect(hub, "c")


async def test_open_documents_limit_per_node(
    make_hub: HubFactory, tmp_path: Path, yconnect: YConnect
) -> None:
    hub = await make_hub(data_dir=str(tmp_path), doc_anonymous_access="write", doc_max_open_documents=2)
    await yconnect(hub, "one")
    await yconnect(hub, "two")
    third = await yconnect(hub, "three", synced=False)
    assert await third.closed() == (4529, "too many open documents on this node (limit 2)")
    await yconnect(hub, "one")  # an open document still takes connections


async def test_bad_document_name(docs_hub: RunningHub) -> None:
    async with websockets.connect(doc_url(docs_hub, "bad\x01name"), open_timeout=TIMEOUT) as ws:
        first = await ws.recv()
        assert isinstance(first, bytes)
        assert protocol.decode(first) == protocol.PermissionDenied("bad document name")
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4400


# From review: updates that make pycrdt panic or raise RuntimeError (found by mutating real updates), and a
# read-only peer's maximal update that must be refused without reading it struct by struct.
_PANIC = bytes.fromhex(
    "0100010004010474657874026865814d010b840103076f20776f726c642701036d6170016b000800010b037c3f80"
    "00007c400000007701780101010202"
)
_RUNTIME = bytes.fromhex("0102020013ae040105025a5a88010e017c406e00000101010202")


def _seed_update() -> bytes:
    from pycrdt import Array, Doc, Map, Text

    base = Doc(client_id=1)
    text = base.get("text", type=Text)
    base.get("map", type=Map)["k"] = Array([1, 2, "x"])
    text.insert(0, "hello world")
    del text[2:4]
    return base.get_update()


@pytest.mark.parametrize("payload", [_PANIC, _RUNTIME], ids=["panic", "runtime-error"])
async def test_updates_that_break_pycrdt_close_with_4422(docs_hub: RunningHub, payload: bytes) -> None:
    import websockets

    from tests.conftest import TIMEOUT
    from tests.hub.ydocs import doc_url

    async with websockets.connect(doc_url(docs_hub, "breaks"), open_timeout=TIMEOUT, max_size=None) as ws:
        await ws.send(protocol.update(_seed_update()))
        await ws.send(protocol.update(payload))
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        assert (ws.close_code, (ws.close_reason or "")[:14]) == (4422, "invalid update")


async def test_a_read_only_peers_huge_update_is_refused_at_once(tmp_path: Path) -> None:
    import time

    from sync.room import RoomLimits, WriteRefused
    from sync.rooms import DocumentRooms
    from sync.store_sqlite import SqliteDocumentStore
    from tests.sync.links import connect, pump
    from tests.sync.yclient import YClient

    rooms = DocumentRooms(SqliteDocumentStore(tmp_path / "d.sqlite3"), unload_delay=60)
    try:
        room = await rooms.acquire(("", "ro"))
        link = connect(room, YClient(3), can_write=False)
        await pump(room, [link])
        n = 2_000_000  # 2 million GC structs in 4 MiB: within the default doc_max_update_size
        update = b"\x01" + protocol.var_uint(n) + b"\x07\x00" + b"\x00\x01" * n + b"\x00"
        assert len(update) <= RoomLimits().max_update_size
        started = time.perf_counter()
        with pytest.raises(WriteRefused):
            room.receive(link, protocol.update(update))
        assert time.perf_counter() - started < 0.5
    finally:
        await rooms.close()
