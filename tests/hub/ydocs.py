"""Test support for documents: a y-websocket client over a real WebSocket (the sans-I/O YClient of
tests/sync driven by the ``websockets`` library), and a hub fixture with its own data directory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import websockets
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection
from websockets.utils import apply_mask

from sync import protocol
from tests.conftest import TIMEOUT, HubFactory, RunningHub
from tests.sync.yclient import YClient


def doc_url(hub: RunningHub, name: str, token: str | None = None) -> str:
    url = f"ws://127.0.0.1:{hub.port}/doc/{quote(name)}"
    return url + (f"?token={token}" if token is not None else "")


class WsYClient:
    """A YClient on a real socket: a reader task applies what arrives and sends what the client owes."""

    def __init__(self, ws: ClientConnection, client: YClient) -> None:
        self.ws = ws
        self.y = client
        self.received: list[bytes] = []
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @property
    def text(self) -> Any:
        return self.y.text

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                assert isinstance(data, bytes), data
                self.received.append(data)
                self.y.handle(data)
                await self.flush()
                self._changed.set()
        self._changed.set()

    async def flush(self) -> None:
        """Send what the client owes (nothing happens once the server closed the connection)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            for message in self.y.take():
                await self.ws.send(message)

    async def until(self, predicate: Callable[[], bool], within: float = TIMEOUT) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                if self._task.done() and not predicate():
                    raise AssertionError("connection closed before the condition held")
                await self._changed.wait()

    async def closed(self) -> tuple[int, str]:
        async with asyncio.timeout(TIMEOUT):
            await self._task
        assert self.ws.close_code is not None
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._task

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.ws.transport.abort()


async def settle(conns: list[WsYClient], predicate: Callable[[], bool], *events: asyncio.Event) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever any of the clients receives something or
    any of ``events`` is set (e.g. by an observer of the server's document)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            waiters = [c._changed for c in conns] + list(events)
            for event in waiters:
                event.clear()
            if predicate():
                return
            tasks = [asyncio.ensure_future(event.wait()) for event in waiters]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()


YConnect = Callable[..., Awaitable[WsYClient]]


async def yclient_at(
    url: str,
    *,
    client: YClient | None = None,
    synced: bool = True,
    awareness: Any = None,
    opened: list[WsYClient] | None = None,
) -> WsYClient:
    """A YClient connected to the document at ``url`` (synced first, unless told not to wait); it is added
    to ``opened`` before it syncs, so a caller can close it whatever happens."""
    ws = await websockets.connect(url, max_size=None, open_timeout=TIMEOUT)
    y = client if client is not None else YClient()
    if awareness is not None:
        y.local_state = awareness
        y.local_clock += 1
    y.on_open()
    conn = WsYClient(ws, y)
    if opened is not None:
        opened.append(conn)
    await conn.flush()
    if synced:
        await conn.until(lambda: y.synced)
    return conn


@pytest.fixture
async def yconnect() -> AsyncIterator[YConnect]:
    opened: list[WsYClient] = []

    async def connect(
        hub: RunningHub,
        name: str,
        *,
        token: str | None = None,
        client: YClient | None = None,
        synced: bool = True,
        awareness: Any = None,
    ) -> WsYClient:
        conn = await yclient_at(
            doc_url(hub, name, token), client=client, synced=synced, awareness=awareness, opened=opened
        )
        return conn

    yield connect
    for conn in opened:
        with contextlib.suppress(Exception):
            await conn.close()


@pytest.fixture
async def docs_hub(make_hub: HubFactory, tmp_path: Path) -> RunningHub:
    """A hub whose documents live under the test's own directory; anyone may edit any document."""
    return await make_hub(data_dir=str(tmp_path), doc_anonymous_access="write", doc_token_access="write")


class RawDocSocket:
    """A document connection at the byte level, for attacks: the handshake, messages written as masked
    binary frames in ONE write (so the server reads them in one go), frames read one at a time (fragments
    reassembled). With ``rcvbuf`` set small and nothing read, it is a client that does not read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, *, rcvbuf: int | None = None) -> RawDocSocket:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: the TCP window is chosen at the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**26)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x2) -> bytes:
        """A client frame (RFC 6455 5.3: masked)."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = apply_mask(payload, mask)
        return header + mask + masked

    def send(self, *messages: bytes) -> None:
        """Write ``messages`` as binary frames in one write (without waiting for the socket to take them)."""
        self.writer.write(b"".join(self.frame(m) for m in messages))

    async def read_frame(self) -> tuple[int, bool, bytes]:
        """The next frame: opcode, FIN, payload."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, bool(b0 & 0x80), await self.reader.readexactly(n)

    async def read_message(self) -> tuple[int, bytes]:
        """The next message or control frame (opcode, payload); a close frame is (8, payload)."""
        opcode, fin, payload = await self.read_frame()
        parts = [payload]
        while not fin and opcode not in (0x8, 0x9, 0xA):
            more, fin, payload = await self.read_frame()
            if more == 0x0:
                parts.append(payload)
        return opcode, b"".join(parts)

    async def close_code(self) -> int | None:
        """Read (and drop) everything until the server's close frame: its code; None if the connection ended
        without one (a server gives up the closing handshake of a client that does not read)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    opcode, payload = await self.read_message()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

    def abort(self) -> None:
        self.writer.transport.abort()


@pytest.fixture
async def sockets() -> AsyncIterator[list[RawDocSocket]]:
    """Raw document connections a test opens (attackers, mostly): aborted at its end."""
    opened: list[RawDocSocket] = []
    yield opened
    for sock in opened:
        sock.abort()


def text_update(text: str, client_id: int = 7) -> bytes:
    """A Yjs update inserting ``text`` into the root text ``text`` of an empty document."""
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


async def flood(
    sock: RawDocSocket, for_seconds: float, update_size: int = 50_000, client_id: int = 4242
) -> int:
    """Send updates (insert ``update_size`` bytes, then delete them) for ``for_seconds``, waiting whenever
    the socket does not take more; return the bytes sent. (Another flood of the same document takes another
    ``client_id``.)"""
    doc: Doc[Any] = Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=Text)
    sent = 0
    deadline = time.monotonic() + for_seconds
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(for_seconds):
            while time.monotonic() < deadline:
                text.insert(0, "f" * update_size)
                del text[0:update_size]
                messages = [protocol.update(u) for u in updates]
                updates.clear()
                sock.send(*messages)
                sent += sum(len(m) for m in messages)
                await sock.writer.drain()  # blocks while the node does not read (TCP backpressure)
    return sent
