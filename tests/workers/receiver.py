"""A webhook receiver for tests: a real HTTP/1.1 server on a free loopback port (asyncio streams, so it
can fail in ways a framework would not let it: stall, close in the middle of its answer, cut the
connection). Every request is checked with the ``standardwebhooks`` package's verifier (the one receivers
use) and recorded; ``plan(webhook_id, attempt)`` decides how each is answered:

- ``ok``: 200; ``fail``: 500; ``refuse``: 400 (not to be retried); ``late``: 408 (retried); ``busy``: 429
  with ``Retry-After: <retry_after>``; ``stall``: no answer until the client gives up; ``cut``: the
  connection is closed without an answer; ``half``: 200 with a Content-Length of 100 and 10 bytes, then
  closed.

``processed`` holds the ids of requests the receiver took in (``ok`` and ``half``: an answer lost on the
way back is the duplicate case of at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks import Webhook as Verifier

from tests.conftest import TIMEOUT

Plan = Callable[[str, int], str]


@dataclass
class Received:
    webhook_id: str
    attempt: int
    mode: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    secret: str
    plan: Plan = field(default=lambda _id, _n: "ok")
    retry_after: int = 1
    requests: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self.verifier = Verifier(self.secret)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def processed(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for r in self.requests:
            if r.mode in ("ok", "half"):
                out.setdefault(r.webhook_id, []).append(r)
        return out

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The ``data`` of every processed event of ``kind``, once per webhook-id, in arrival order."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            if r.mode in ("ok", "half") and r.body["type"] == kind and r.webhook_id not in seen:
                seen[r.webhook_id] = r.body["data"]
        return list(seen.values())

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = TIMEOUT,  # noqa: ASYNC109 - the bound of this wait, as asyncio.wait_for's
    ) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(reader, writer, headers, body):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str], body: bytes
    ) -> bool:
        """Answer one request; False when the connection must end."""
        self.verifier.verify(body, headers)  # raises (and fails the test through its log) if unsigned
        msg_id = headers["webhook-id"]
        self.attempts[msg_id] += 1
        mode = self.plan(msg_id, self.attempts[msg_id])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self._changed:
            self._changed.notify_all()  # a request arrived (in_flight rose)
        try:
            self.requests.append(
                Received(msg_id, self.attempts[msg_id], mode, orjson.loads(body), headers, time.monotonic())
            )
            if mode == "stall":
                await reader.read(1)  # until the client gives up and closes (b"")
                return False
            if mode == "cut":
                return False
            status, extra, payload = {
                "ok": (b"200 OK", b"", b"ok"),
                "fail": (b"500 Internal Server Error", b"", b"broken on purpose"),
                "refuse": (b"400 Bad Request", b"", b"no thanks"),
                "late": (b"408 Request Timeout", b"", b"too late"),
                "busy": (
                    b"429 Too Many Requests",
                    f"Retry-After: {self.retry_after}\r\n".encode(),
                    b"slow down",
                ),
                "half": (b"200 OK", b"", b"x" * 10),
            }[mode]
            length = 100 if mode == "half" else len(payload)
            writer.write(
                b"HTTP/1.1 " + status + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % length + payload
            )
            await writer.drain()
            return mode != "half"
        finally:
            self.in_flight -= 1
            async with self._changed:
                self._changed.notify_all()
