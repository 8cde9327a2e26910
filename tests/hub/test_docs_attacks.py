"""Attacks on the document endpoint of a real ``switchboard serve`` (a subprocess, tests/nodes.py), as a
hostile y-websocket client would make them. Each attack meets a bound and its close code (or its pause),
leaves one log line (rate-limited), keeps the node's RSS under a stated ceiling (sampled while it runs), and
a well-behaved client beside the attacker keeps working."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pycrdt import Doc, Text

from hub.logs import LIMITED_BURST
from sync import protocol
from sync.protocol import AwarenessEntry
from tests.conftest import TIMEOUT
from tests.hub.ydocs import RawDocSocket, WsYClient, yclient_at
from tests.nodes import HubNode, NodesFactory, eventually, make_nodes, user_token  # noqa: F401
from tests.sync.yclient import YClient

MB = 1024 * 1024


@pytest.fixture
async def clients() -> AsyncIterator[list[WsYClient]]:
    """Well-behaved clients opened by a test (closed at its end)."""
    opened: list[WsYClient] = []
    yield opened
    for conn in opened:
        with contextlib.suppress(Exception):
            await conn.close()


def text_update(text: str, client_id: int = 7) -> bytes:
    """A Yjs update inserting ``text`` into the root text ``text`` of an empty document."""
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


async def seeded(url: str, size: int, sockets: list[RawDocSocket], clients: list[WsYClient]) -> WsYClient:
    """Write a text of ``size`` characters into the (new) document at ``url`` in one update; return a
    well-behaved client that synced it."""
    seed = await RawDocSocket.open(url)
    sockets.append(seed)
    seed.send(protocol.update(text_update("s" * size)))
    reader = await yclient_at(url, opened=clients)
    await reader.until(lambda: len(str(reader.text)) == size)
    return reader


def log_lines(node: HubNode, needle: str) -> list[str]:
    return [line for line in node.log().splitlines() if needle in line]


async def edit_reaches(writer: WsYClient, watcher: WsYClient, text: str) -> None:
    """A well-behaved edit: ``writer`` appends ``text``; ``watcher`` sees it."""
    writer.text.insert(len(writer.text), text)
    await writer.flush()
    await watcher.until(lambda: str(watcher.text).endswith(text))


async def test_a_burst_of_sync_step_1_costs_one_document_diff(
    make_nodes: NodesFactory, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """1,000 tiny sync step 1 messages (10 KB) in one TCP write, behind an update that makes them wait for
    the journal, on a 2 MB document: before, each computed and parked a 2 MB diff (about 2 GB). Now one
    step 2 at a time per connection; the others are coalesced into it."""
    (node,) = await make_nodes(1)
    url = node.doc_url("big")
    reader = await seeded(url, 2_000_000, sockets, clients)
    editor = await yclient_at(url, opened=clients)

    attacker = await RawDocSocket.open(url)
    sockets.append(attacker)
    burst = [protocol.update(text_update("!", client_id=99))]
    burst += [protocol.sync_step1(b"\x01\x05\x00")] * 1000  # "I have nothing of client 5": a 2 MB diff
    burst.append(protocol.query_awareness())
    with node.sample_rss() as rss:
        attacker.send(*burst)
        answers: list[bytes] = []
        async with asyncio.timeout(TIMEOUT):
            while not any(m[:2] == b"\x00\x01" for m in answers):  # its first step 2
                opcode, payload = await attacker.read_message()
                assert opcode == 0x2, (opcode, payload[:40])
                answers.append(payload)
            attacker.send(protocol.query_awareness())  # answered after everything before it was handled
            while True:
                opcode, payload = await attacker.read_message()
                assert opcode == 0x2, (opcode, payload[:40])
                answers.append(payload)
                if payload[:1] == b"\x01" and len([m for m in answers if m[:1] == b"\x01"]) == 2:
                    break
        await edit_reaches(editor, reader, "still editable")
    step2 = [m for m in answers if m[:2] == b"\x00\x01"]
    # One at a time: the attacker gets another step 2 only once it took the last; the rest are coalesced.
    assert len(step2) < 100, len(step2)
    assert rss.peak - rss.start < 120 * MB, rss
    assert len(log_lines(node, "coalesced")) == 1, node.log()


async def test_awareness_cannot_crowd_out_a_document(
    make_nodes: NodesFactory, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """A read-only anonymous connection announcing 32 states of 200 KB: before, every later joiner got
    6.4 MB of awareness at once and was cut as slow (3008), for as long as the attacker renewed them. Now a
    state over doc_max_awareness_state_size closes its connection (4413); states within it are capped per
    connection and per document (refused past that), and joiners keep joining."""
    (node,) = await make_nodes(1, doc_anonymous_access="read", doc_max_document_size=4 * MB)
    url = node.doc_url("crowd")
    writer_url = f"{url}?token={user_token('alice')}"
    honest = await yclient_at(writer_url, awareness={"user": "alice"}, opened=clients)
    await honest.until(lambda: honest.y.states() == {honest.y.client_id: {"user": "alice"}})

    big = orjson.dumps({"name": "x" * 200_000})
    entries = [AwarenessEntry(1000 + i, 1, big) for i in range(32)]
    with node.sample_rss() as rss:
        attacker = await RawDocSocket.open(url)
        sockets.append(attacker)
        attacker.send(*[protocol.awareness(protocol.encode_awareness(entries[i : i + 4])) for i in range(0, 32, 4)])
        assert await attacker.close_code() == 4413

        # Within the per-state bound: 40 connections x 8 states x 16,000 bytes (5 MB) against the
        # document's 512 KiB.
        crowd = []
        for c in range(40):
            sock = await RawDocSocket.open(url)
            sockets.append(sock)
            states = [AwarenessEntry(10_000 + c * 100 + i, 1, orjson.dumps("y" * 15_990)) for i in range(8)]
            sock.send(protocol.awareness(protocol.encode_awareness(states)))
            crowd.append(sock)
        joiner = await yclient_at(writer_url, opened=clients)
        await joiner.until(lambda: joiner.y.states().get(honest.y.client_id) == {"user": "alice"})
        await edit_reaches(joiner, honest, "joined")
    snapshot = max(len(m) for m in joiner.received if m[:1] == b"\x01")
    assert snapshot <= 512 * 1024 + 4096, snapshot
    assert rss.peak - rss.start < 64 * MB, rss
    assert len(log_lines(node, "awareness state too large")) == 1, node.log()
    refused = log_lines(node, "awareness entries refused")
    # rate-limited: one kind of line, many connections (a burst, then a few a second)
    assert 1 <= len(refused) <= LIMITED_BURST + 10, node.log()


async def test_connections_that_do_not_read_hold_at_most_doc_queue_max_size(
    make_nodes: NodesFactory, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """Eight connections that never read, on a document someone pastes 512 KB into 60 times (and deletes it
    again): before, each buffered up to client_queue_max_size + doc_max_document_size (33 MiB) before it
    was cut. Now what waits for one connection stays within doc_queue_max_size (1 MiB): past it, 3008."""
    (node,) = await make_nodes(1)
    url = node.doc_url("busy")
    editor = await yclient_at(url, opened=clients)
    watcher = await yclient_at(url, opened=clients)
    for _ in range(8):
        sockets.append(await RawDocSocket.open(url, rcvbuf=4096))
    with node.sample_rss() as rss:
        for i in range(60):
            editor.text.insert(0, "p" * 512_000)
            await editor.flush()
            del editor.text[0:512_000]
            await editor.flush()
        editor.text.insert(0, "done")
        await editor.flush()
        await watcher.until(lambda: str(watcher.text) == "done")
        await eventually(lambda: asyncio.sleep(0, len(log_lines(node, "document connection too slow")) == 8))
        # Closed with 3008 (the node's log says so); a connection this far behind may see the socket end
        # before the close frame reaches it.
        assert {await sock.close_code() for sock in sockets} <= {3008, None}
    assert rss.peak - rss.start < 80 * MB, rss


async def test_late_joiners_that_do_not_read_share_one_copy_of_a_large_document(
    make_nodes: NodesFactory, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """Twenty joiners of a 4 MB document that ask for it (sync step 1) and never read: before, each got its
    own 4 MB diff written whole into its socket buffer. Now the full state is built once and streamed to each
    in parts as its socket drains, so the node holds one copy; and a well-behaved late joiner still syncs a
    document four times larger than doc_queue_max_size (1 MiB)."""
    (node,) = await make_nodes(1)
    url = node.doc_url("large")
    first = await seeded(url, 4_000_000, sockets, clients)
    with node.sample_rss() as rss:
        for _ in range(20):
            joiner = await RawDocSocket.open(url, rcvbuf=4096)
            sockets.append(joiner)
            joiner.send(protocol.sync_step1(b"\x00"))
        late = await yclient_at(url, opened=clients, client=YClient())
        await late.until(lambda: len(str(late.text)) == 4_000_000)
        await edit_reaches(late, first, "hello")
    assert rss.peak - rss.start < 16 * MB, rss
