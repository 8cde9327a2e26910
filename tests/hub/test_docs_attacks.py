"""Attacks on the document endpoint of a real ``switchboard serve`` (a subprocess, tests/nodes.py), as a
hostile y-websocket client would make them. Each attack meets a bound and its close code (or its pause),
leaves one log line (rate-limited), keeps the node's RSS under a stated ceiling (sampled while it runs), and
a well-behaved client beside the attacker keeps working."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

import tests.nodes as harness
from hub.logs import LIMITED_BURST
from sync import protocol
from sync.protocol import AwarenessEntry
from tests.conftest import TIMEOUT
from tests.hub.ydocs import RawDocSocket, WsYClient, flood, text_update, yclient_at
from tests.nodes import HubNode, NodesFactory, eventually, user_token
from tests.redis_servers import RedisServer
from tests.sync.yclient import YClient

make_nodes = harness.make_nodes  # the fixture, defined in tests/nodes.py

MB = 1024 * 1024


@pytest.fixture
async def clients() -> AsyncIterator[list[WsYClient]]:
    """Well-behaved clients opened by a test (closed at its end)."""
    opened: list[WsYClient] = []
    yield opened
    for conn in opened:
        with contextlib.suppress(Exception):
            await conn.close()


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
        attacker.send(
            *[protocol.awareness(protocol.encode_awareness(entries[i : i + 4])) for i in range(0, 32, 4)]
        )
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
        for _ in range(60):
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


class SlowStoreNode(HubNode):
    """A node whose SQLite store waits ``delay`` seconds before every write
    (tests/hub/slow_store_serve.py)."""

    delay = 0.5

    def command(self) -> list[str]:
        serve = super().command()
        assert serve[1:4] == ["-m", "hub", "serve"], serve
        return [sys.executable, "-m", "tests.hub.slow_store_serve", str(self.delay), *serve[3:]]


async def test_a_slow_store_slows_writers_down_instead_of_growing_the_journal(
    tmp_path: Path, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """A store that takes 0.5 s per write and a client writing as fast as it can: before, the journal took
    every update (and its relay) into memory, as fast as the socket brought them. Now past
    doc_write_backlog_max_size (16 MiB) the node stops reading document connections until the store
    caught up: the writer is slowed down to the store's pace, and the node's memory stays flat."""
    from tests.nodes import write_config

    config = write_config(tmp_path / "hub.toml")
    node = SlowStoreNode("slow", tmp_path, config)
    await node.start()
    try:
        other = await yclient_at(node.doc_url("other"), opened=clients)
        watcher = await yclient_at(node.doc_url("other"), opened=clients)
        attacker = await RawDocSocket.open(node.doc_url("flooded"))
        sockets.append(attacker)
        with node.sample_rss() as rss:
            await flood(attacker, for_seconds=4.0)
            await edit_reaches(other, watcher, "still written")  # slowly, at the store's pace
        assert rss.peak - rss.start < 40 * MB, rss
        assert len(log_lines(node, "document store is behind")) == 1, node.log()
    finally:
        await node.kill()


async def test_a_stopped_redis_slows_writers_down_instead_of_growing_the_queues(
    make_nodes: NodesFactory, redis_server: RedisServer, clients: list[WsYClient], sockets: list[RawDocSocket]
) -> None:
    """Documents in Redis (store and relay) and Redis stopped (SIGSTOP: connections open, nothing answers)
    while a client writes as fast as it can: before, the journal and the relay's queue took every update
    until the commands timed out. Now both stop at doc_write_backlog_max_size and the node stops reading;
    the writes that timed out close their documents (4500, the clients resync), and once Redis is back a
    well-behaved client works again."""
    (node,) = await make_nodes(1, redis=[redis_server.url], redis_connect_timeout=3.0)
    url = node.doc_url("flooded")
    attacker = await RawDocSocket.open(url)
    sockets.append(attacker)
    assert (await attacker.read_message())[1][:2] == b"\x00\x00"  # joined: the document is loaded
    assert redis_server.proc is not None
    with node.sample_rss() as rss:
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            await flood(attacker, for_seconds=4.0)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        other = await yclient_at(node.doc_url("other"), opened=clients)
        watcher = await yclient_at(node.doc_url("other"), opened=clients)
        await edit_reaches(other, watcher, "back")
    assert rss.peak - rss.start < 60 * MB, rss
