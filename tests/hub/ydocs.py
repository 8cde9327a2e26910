"""Test support for documents: a y-websocket client over a real WebSocket (the sans-I/O YClient of
tests/sync driven by the ``websockets`` library), and a hub fixture with its own data directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

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
        ws = await websockets.connect(doc_url(hub, name, token), max_size=None, open_timeout=TIMEOUT)
        y = client if client is not None else YClient()
        if awareness is not None:
            y.local_state = awareness
            y.local_clock += 1
        y.on_open()
        conn = WsYClient(ws, y)
        opened.append(conn)
        await conn.flush()
        if synced:
            await conn.until(lambda: y.synced)
        return conn

    yield connect
    for conn in opened:
        with contextlib.suppress(Exception):
            await conn.close()


@pytest.fixture
async def docs_hub(make_hub: HubFactory, tmp_path: Path) -> RunningHub:
    """A hub whose documents live under the test's own directory; anyone may edit any document."""
    return await make_hub(data_dir=str(tmp_path), doc_anonymous_access="write", doc_token_access="write")
