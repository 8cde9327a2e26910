"""The bidirectional WebSocket transport of the client protocol (``/connection/websocket``).

The connection handler reads ASGI events and hands frames to the client session; the Transport only
writes and closes. Under the hub's own uvicorn protocol the handler returns once the session exists, and the
protocol calls the session for each message (``serve_messages``): an idle connection holds no task.

Two transports: ``RawWebSocketTransport`` writes pre-built frames through the uvicorn
extension (see ``hub.ws_uvicorn``); ``AsgiWebSocketTransport`` works under any ASGI server with one writer
task per connection awaiting ``send()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from hub import wire
from hub.writer import limit_send_buffer
from hub.ws_frames import OP_BINARY, OP_TEXT, FrameCache
from hub.ws_uvicorn import RAW_EXTENSION

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.websocket")

_frames = FrameCache()

FINISH_WAIT = 1.0
"""Seconds an ended session's writer task gets to send what is queued and the close frame."""


class RawWebSocketTransport:
    __slots__ = ("_raw", "_opcode", "_join", "fmt")
    name = "websocket"

    def __init__(self, raw: Any, fmt: int = wire.JSON) -> None:
        self._raw = raw
        self.fmt = fmt
        self._opcode = OP_BINARY if fmt == wire.PROTOBUF else OP_TEXT
        self._join = wire.CODECS[fmt].join_messages

    def write_messages(self, messages: list[bytes]) -> int:
        return self._raw.write_frame(_frames.frame(self._join(messages), self._opcode))  # type: ignore[no-any-return]

    def close(self, code: int, reason: str) -> None:
        self._raw.close_with(code, reason)

    def unsent_bytes(self) -> int:
        return self._raw.unsent_bytes()  # type: ignore[no-any-return]

    def limit_send_buffer(self, size: int) -> None:
        """The kernel holds about ``size`` unsent bytes (a connection with conflated subscriptions)."""
        limit_send_buffer(self._raw.transport, size)


class AsgiWebSocketTransport:
    """Portable transport: a writer task drains queued frames through ``send()``."""

    __slots__ = ("_send", "_text", "_join", "_queue", "_queued", "_wakeup", "_close", "_task", "fmt")
    name = "websocket"

    def __init__(self, send: Any, fmt: int = wire.JSON) -> None:
        self._send = send
        self.fmt = fmt
        self._text = fmt != wire.PROTOBUF
        self._join = wire.CODECS[fmt].join_messages
        self._queue: list[bytes] = []
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    def write_messages(self, messages: list[bytes]) -> int:
        if self._close is not None:
            return 0
        payload = self._join(messages)
        self._queue.append(payload)
        self._queued += len(payload)
        self._wakeup.set()
        return self._queued

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._wakeup.set()

    def unsent_bytes(self) -> int:
        return self._queued

    async def _run(self) -> None:
        send = self._send
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    batch, self._queue = self._queue, []
                    for payload in batch:
                        if self._text:
                            await send({"type": "websocket.send", "text": payload.decode()})
                        else:
                            await send({"type": "websocket.send", "bytes": payload})
                        self._queued -= len(payload)
                self._drained()
                if self._close is not None:
                    code, reason = self._close
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
        except (OSError, RuntimeError, asyncio.CancelledError) as exc:
            # The peer went away (ASGI servers raise OSError subclasses or RuntimeError after close).
            log.debug("websocket writer stopped: %r", exc)

    def _drained(self) -> None:
        """Everything queued went through ``send()`` (a subclass may want more to send)."""

    async def stop(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def finish(self, code: int, reason: str) -> None:
        """The session ended: close with ``code`` unless a close was sent already, give the writer task up to
        ``FINISH_WAIT`` seconds to send what is queued and the close, then stop it."""
        self.close(code, reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._task), FINISH_WAIT)
        await self.stop()


async def websocket_session(node: Node, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve one client connection from its ``websocket.connect`` to its end."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    # Protobuf as the SDKs ask for it: the subprotocol (Swift, Kotlin, Dart, Python, JS), or ?format=protobuf.
    if wire.PROTOBUF_SUBPROTOCOL in scope.get("subprotocols", ()):
        fmt = wire.PROTOBUF
        await send({"type": "websocket.accept", "subprotocol": wire.PROTOBUF_SUBPROTOCOL})
    else:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        fmt = wire.PROTOBUF if query.get("format") == ["protobuf"] else wire.JSON
        await send({"type": "websocket.accept"})
    raw = scope.get("extensions", {}).get(RAW_EXTENSION) if node.config.websocket_fast_path else None
    transport: RawWebSocketTransport | AsgiWebSocketTransport
    transport = RawWebSocketTransport(raw, fmt) if raw is not None else AsgiWebSocketTransport(send, fmt)
    client = node.new_session(transport, scope)
    serve_messages = getattr(raw, "serve_messages", None)
    if serve_messages is not None:
        # The protocol hands each message to the session from now on: no task, no receive loop, no
        # coroutine frames held while the connection is idle (hub.ws_uvicorn).
        serve_messages(client)
        return
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                await client.handle_frame(data)
            elif kind == "websocket.disconnect":
                break
    finally:
        await node.end_session(client)
        if isinstance(transport, AsgiWebSocketTransport):
            await transport.finish(3000, "connection closed")
