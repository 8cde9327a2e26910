"""(From review R1.) A real TCP proxy in front of a redis-server, able to hold back what Redis sends to
pub/sub connections (a connection becomes 'pubsub' once the client sent a (S)SUBSCRIBE through it). Used to
make a node's pub/sub stream lag behind its command connection, as a backlog under load does; or, the other
way round (``hold_commands``), to make its command replies (a history read) slow while publications flow."""

from __future__ import annotations

import asyncio
import contextlib
import re

SUBSCRIBE = re.compile(rb"\*\d+\r\n\$\d+\r\n[ps]?subscribe\r\n", re.IGNORECASE)
"""A (S/P)SUBSCRIBE command as the client writes it (RESP): the word itself anywhere in what a connection
sends (a Lua script's text, loaded on a command connection, may hold it) does not make it a pub/sub one."""


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.commands_flowing = asyncio.Event()
        self.commands_flowing.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.accepting = True
        self.conns: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if not self.accepting:
            cw.close()  # as a refused connection
            return
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.close()
            return
        self.writers += [cw, sw]
        self.conns.append((cw, sw))
        state = {"pubsub": False}

        async def up() -> None:
            while data := await cr.read(65536):
                if SUBSCRIBE.search(data):
                    state["pubsub"] = True
                sw.write(data)
                await sw.drain()
            sw.close()

        async def down() -> None:
            while data := await sr.read(65536):
                if state["pubsub"]:
                    await self.flowing.wait()
                else:
                    await self.commands_flowing.wait()
                cw.write(data)
                await cw.drain()
            cw.close()

        for coro in (up(), down()):
            t = asyncio.create_task(coro)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    def hold_commands(self) -> None:
        self.commands_flowing.clear()

    def release_commands(self) -> None:
        self.commands_flowing.set()

    async def close(self) -> None:
        self.release()
        self.release_commands()
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.close()
        for t in list(self._tasks):
            t.cancel()
        if self.server is not None:
            self.server.close()
