"""Attacks on the document endpoint of a real ``switchboard serve`` (a subprocess, tests/nodes.py), as a
hostile y-websocket client would make them. Each attack meets a bound and its close code (or its pause),
leaves one log line (rate-limited), keeps the node's RSS under a stated ceiling (sampled while it runs), and
a well-behaved client beside the attacker keeps working."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pycrdt import Doc, Text

from sync import protocol
from tests.hub.ydocs import RawDocSocket, WsYClient, yclient_at
from tests.nodes import HubNode, NodesFactory, eventually, make_nodes, user_token  # noqa: F401

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


def log_lines(node: HubNode, needle: str) -> list[str]:
    return [line for line in node.log().splitlines() if needle in line]


async def edit_reaches(writer: WsYClient, watcher: WsYClient, text: str) -> None:
    """A well-behaved edit: ``writer`` appends ``text``; ``watcher`` sees it."""
    writer.text.insert(len(writer.text), text)
    await writer.flush()
    await watcher.until(lambda: str(watcher.text).endswith(text))


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
