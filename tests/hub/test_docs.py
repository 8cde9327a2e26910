"""The document endpoint with real sockets: sync, relay and awareness between Python y-websocket clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pycrdt import Map, Text

from sync import protocol
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.hub.ydocs import RawDocSocket, YConnect, doc_url
from tests.sync.yclient import YClient

pytestmark = pytest.mark.all_websocket_modes


async def test_two_clients_edit_one_document(docs_hub: RunningHub, yconnect: YConnect) -> None:
    alice = await yconnect(docs_hub, "notes")
    bob = await yconnect(docs_hub, "notes")
    alice.text.insert(0, "hello")
    await alice.flush()
    await bob.until(lambda: str(bob.text) == "hello")
    bob.text.insert(5, " world")
    await bob.flush()
    await alice.until(lambda: str(alice.text) == "hello world")


async def test_awareness_appears_for_all_and_vanishes_on_close_and_on_drop(
    docs_hub: RunningHub, yconnect: YConnect
) -> None:
    alice = await yconnect(docs_hub, "room", awareness={"user": "alice"})
    bob = await yconnect(docs_hub, "room", awareness={"user": "bob"})
    carol = await yconnect(docs_hub, "room")
    ids = {alice.y.client_id: {"user": "alice"}, bob.y.client_id: {"user": "bob"}}
    for c in (alice, bob, carol):  # the sender gets its own state echoed too
        await c.until(lambda c=c: c.y.states() == ids)
    await alice.close()  # a clean close
    del ids[alice.y.client_id]
    for c in (bob, carol):
        await c.until(lambda c=c: c.y.states() == ids)
    bob.abort()  # an abrupt TCP close, no closing handshake
    await carol.until(lambda: carol.y.states() == {})


async def test_query_awareness_is_answered_with_every_state(docs_hub: RunningHub, yconnect: YConnect) -> None:
    alice = await yconnect(docs_hub, "q", awareness={"n": 1})
    bob = await yconnect(docs_hub, "q")
    await bob.until(lambda: bob.y.states() == {alice.y.client_id: {"n": 1}})
    bob.y.awareness = type(bob.y.awareness)()  # forget, then ask
    await bob.ws.send(protocol.query_awareness())
    await bob.until(lambda: bob.y.states() == {alice.y.client_id: {"n": 1}})


async def test_updates_are_relayed_once_and_never_echoed(docs_hub: RunningHub, yconnect: YConnect) -> None:
    alice = await yconnect(docs_hub, "echo")
    bob = await yconnect(docs_hub, "echo")
    seen_by_alice = len(alice.received)
    for i in range(20):
        alice.text.insert(len(alice.text), f"{i};")
        await alice.flush()
    expected = "".join(f"{i};" for i in range(20))
    await bob.until(lambda: str(bob.text) == expected)
    updates = [m for m in bob.received if m[:2] == b"\x00\x02"]
    assert len(updates) == 20
    assert not [m for m in alice.received[seen_by_alice:] if m[:2] == b"\x00\x02"]


async def test_restart_serves_the_same_document_and_an_old_client_gets_no_duplicates(
    make_hub: HubFactory, tmp_path: Path, yconnect: YConnect
) -> None:
    settings = dict(data_dir=str(tmp_path), doc_anonymous_access="write", doc_compact_after_updates=5)
    hub = await make_hub(**settings)
    alice = await yconnect(hub, "keep")
    old = YClient()
    old_conn = await yconnect(hub, "keep", client=old)
    alice.text.insert(0, "base.")
    await alice.flush()
    await old_conn.until(lambda: str(old.text) == "base.")
    await old_conn.close()
    for i in range(23):  # several compactions happen meanwhile
        alice.text.insert(len(alice.text), f"{i},")
        await alice.flush()
    expected = "base." + "".join(f"{i}," for i in range(23))
    await alice.close()
    hub.server.should_exit = True
    await hub.sb.stop()
    again = await make_hub(**settings)
    fresh = await yconnect(again, "keep")
    assert str(fresh.text) == expected
    old.text.insert(0, "offline:")
    back = await yconnect(again, "keep", client=old)
    await back.until(lambda: str(old.text) == "offline:" + expected)
    await fresh.until(lambda: str(fresh.text) == "offline:" + expected)


async def test_server_side_edits_reach_clients_and_content_reads_them(
    docs_hub: RunningHub, yconnect: YConnect
) -> None:
    alice = await yconnect(docs_hub, "bot")
    await docs_hub.sb.documents.transact(
        "bot", lambda doc: doc.get("text", type=Text).insert(0, "from a bot")
    )
    await alice.until(lambda: str(alice.text) == "from a bot")
    async with docs_hub.sb.documents.open("bot") as doc:
        with doc.transaction():
            doc.get("meta", type=Map)["title"] = "Bots"
    assert await docs_hub.sb.documents.content("bot") == {"text": "from a bot", "meta": {"title": "Bots"}}
    async with http_client(base_url=docs_hub.http) as http:
        response = await http.get("/doc/bot/content")
    assert response.status_code == 200
    assert response.json() == {"text": "from a bot", "meta": {"title": "Bots"}}


async def test_keepalive_reaches_idle_clients(
    make_hub: HubFactory, tmp_path: Path, yconnect: YConnect
) -> None:
    hub = await make_hub(data_dir=str(tmp_path), doc_anonymous_access="write", doc_ping_interval=0.2)
    alice = await yconnect(hub, "idle")
    empty_awareness = protocol.awareness(protocol.encode_awareness([]))
    await alice.until(lambda: empty_awareness in alice.received)


async def test_document_connections_are_pinged_and_closed_when_silent(
    make_hub: HubFactory, tmp_path: Path, sockets: list[RawDocSocket]
) -> None:
    """In every WebSocket mode (the portable one and permessage-deflate too): a WebSocket ping every
    doc_ping_interval, and a connection that answers none within as long is closed (1011)."""
    hub = await make_hub(data_dir=str(tmp_path), doc_anonymous_access="write", doc_ping_interval=0.3)
    silent = await RawDocSocket.open(doc_url(hub, "pinged"))
    sockets.append(silent)
    seen: list[int] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            opcode, payload = await silent.read_message()
            seen.append(opcode)
            if opcode == 0x8:
                break
    assert 0x9 in seen and int.from_bytes(payload[:2], "big") == 1011, seen


async def test_documents_take_updates_up_to_doc_max_update_size(
    docs_hub: RunningHub, yconnect: YConnect
) -> None:
    """Frames past the channels' client_max_message_size (64 KiB) reach documents in every mode."""
    alice = await yconnect(docs_hub, "large-update")
    bob = await yconnect(docs_hub, "large-update")
    alice.text.insert(0, "u" * 1_000_000)
    await alice.flush()
    await bob.until(lambda: len(str(bob.text)) == 1_000_000)


async def test_documents_of_two_tenants_are_separate(docs_hub: RunningHub, yconnect: YConnect) -> None:
    acme = await yconnect(docs_hub, "plan", token=token("u1", tenant="acme"))
    acme_watcher = await yconnect(docs_hub, "plan", token=token("u3", tenant="acme"))
    globex = await yconnect(docs_hub, "plan", token=token("u2", tenant="globex"))
    acme.text.insert(0, "acme only")
    await acme.flush()
    await acme_watcher.until(lambda: str(acme_watcher.text) == "acme only")
    assert await docs_hub.sb.documents.content("plan", tenant="acme") == {"text": "acme only"}
    assert await docs_hub.sb.documents.content("plan", tenant="globex") == {}
    assert str(globex.text) == ""


async def test_a_late_joiner_syncs_a_document_larger_than_the_outbound_buffer(
    make_hub: HubFactory, tmp_path: Path, yconnect: YConnect
) -> None:
    """The full state goes out in one sync step 2, streamed: a document bigger than ``doc_queue_max_size``
    must still reach a new client (the bound is for what waits, not for the one message being streamed)."""
    hub = await make_hub(data_dir=str(tmp_path), doc_queue_max_size=256 * 1024, doc_anonymous_access="write")
    big = "x" * (600 * 1024)
    await hub.sb.documents.transact("large", lambda doc: doc.get("text", type=Text).insert(0, big))
    late = await yconnect(hub, "large")
    await late.until(lambda: len(str(late.text)) == len(big))
