"""A uvicorn WebSocket protocol that lets the hub write pre-built frames straight to the socket.

It is uvicorn's sans-I/O implementation (``websockets-sansio``) plus two ASGI scope extensions, both the
protocol object itself. ``switchboard.websocket_options`` is always offered (``switchboard serve`` uses this
class whatever ``websocket_fast_path`` and ``websocket_compression`` say), for what differs per endpoint:

- ``limit_message_size(n)``: the largest message this connection may receive (uvicorn's ``ws_max_size``
  is the channels' ``client_max_message_size``; documents take larger updates); past it: close 1009;
- ``keep_alive(interval)``: a WebSocket ping every ``interval`` seconds; no pong within as long: close.

``switchboard.raw_websocket`` is offered only without permessage-deflate (a compressed frame depends on the
connection's compression context, so frames could not be built once and shared):

- ``write_frame(frame) -> int``: write complete server frames now (no ``await``, no per-message ASGI
  ``send``); returns the bytes the socket transport still holds unsent, the hub's measure of a slow reader
  (``unsent_bytes()`` tells it again later);
- ``write_buffer_size()``, ``limit_write_buffer(high)`` and ``on_drain``: a writer that streams a large
  message hands it over in parts, ``on_drain()`` being called when the socket took what it had;
- ``close_with(code, reason)``: start the closing handshake with a protocol code, as ``websocket.close``
  would, and abort the socket if the peer has not finished it in time (a client that does not read
  never will);
- ``serve_messages(handler)``: from now on the connection's messages go to ``handler`` instead of the
  ASGI ``receive`` queue, and the app may return without the connection being closed (see
  ``MessageHandler``). An idle connection then holds no task, no coroutine frames, no queue and no
  handshake leftovers (request, response, scope): about half of what it held (bench/memory.py).

Under any other ASGI server the extensions are absent and the hub falls back to plain ``send()`` (frame
limit and keepalive the server's). Keepalive: uvicorn's pings are off unless an endpoint asks
(documents do); the Centrifuge protocol pings itself.

A peer's protocol error (a text frame that is not UTF-8, a bad frame) closes its connection (1007, 1002,
1009) with one rate-limited line (``hub.logs.log_limited``), not uvicorn's ERROR traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol as FrameParser
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from hub.logs import log_limited

RAW_EXTENSION = "switchboard.raw_websocket"
OPTIONS_EXTENSION = "switchboard.websocket_options"
SLOW_ABORT_AFTER = 2.0
"""Seconds a closing connection with a backlog of unsent bytes gets before its socket is aborted."""

log = logging.getLogger("switchboard.websocket")


class MessageHandler(Protocol):
    """Who serves a connection's messages once ``serve_messages`` was called.

    Policy: one coroutine at a time, in the order the messages arrived: ``message(data)`` for each
    message (``str`` for a text message, ``bytes`` for a binary one), then ``ended()`` once, after the last
    message's coroutine, when the connection is closing or gone. Reading stays paused while a message is
    being handled (as it does while the ASGI app has not asked ``receive`` for the next one), so a client
    cannot queue more than what one read holds. A coroutine that raises is logged and closes the
    connection, as an ASGI app that raises does."""

    def message(self, data: str | bytes) -> Coroutine[Any, Any, None]: ...

    def ended(self) -> Coroutine[Any, Any, None]: ...


class _Relay:
    """Stands in for the ASGI receive queue of a connection served by callbacks: uvicorn's code puts its
    events here (``put_nowait``) and they go to the protocol's ``_relay``."""

    __slots__ = ("put_nowait",)

    def __init__(self, protocol: SwitchboardWebSocketProtocol) -> None:
        self.put_nowait = protocol._relay

    def empty(self) -> bool:
        return True


class _NoWait:
    """Stands in for ``writable`` once the app no longer calls ``send`` (``serve_messages``): nobody waits."""

    __slots__ = ()

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


_NO_WAIT = _NoWait()


class _Ended:
    """Stands in for the relay once the session is over: events that still come (a disconnect after the one
    that ended it) go nowhere, and the protocol is no longer in a cycle with a bound method of its own."""

    __slots__ = ()

    def put_nowait(self, event: Any) -> None:
        pass

    def empty(self) -> bool:
        return True


_ENDED = _Ended()


def _fresh_parser(conn: ServerProtocol) -> None:
    """websockets' ``ServerProtocol.parse`` keeps the handshake request (a local of its generator's frame,
    2-3 KB with its headers) for the connection's life, since it goes on to parse frames. Waiting at a frame
    boundary with nothing buffered, the connection gets the base class's frame parser instead, which holds
    nothing else. Anywhere else (a frame half read), or if websockets changed, it keeps its parser."""
    inner = getattr(conn.parser, "gi_yieldfrom", None)
    waiting = getattr(inner, "gi_yieldfrom", None)
    if (
        getattr(inner, "gi_code", None) is not FrameParser.parse.__code__
        or getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__
        or conn.reader.buffer
        or conn.reader.eof
    ):
        return
    parser = FrameParser.parse(conn)
    next(parser)  # to its first wait for data, as websockets starts its own
    conn.parser = parser


class SwitchboardWebSocketProtocol(WebSocketsSansIOProtocol):
    # Every attribute uvicorn's class sets, and ours, in slots: uvicorn's instance dict outgrows the shared
    # keys of a split dict (over 30 names) and then takes 1.6 KB a connection.
    __slots__ = (
        *(
            "config",
            "app",
            "loop",
            "logger",
            "root_path",
            "asgi_version",
            "app_state",
            "connections",
            "tasks",
        ),
        *("default_headers", "transport", "server", "client", "scheme", "queue", "handshake_initiated"),
        *(
            "handshake_complete",
            "close_sent",
            "disconnected",
            "close_timer",
            "close_timeout",
            "initial_response",
        ),
        *("conn", "read_paused", "writable", "ping_interval", "ping_timeout", "ping_timer", "pong_timer"),
        *("pending_ping_payload", "ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type"),
        *("request", "response", "scope"),
        *("on_drain", "_handler", "_handling", "_held", "_ending"),
    )
    shutdown_code = 3001
    shutdown_reason = "shutdown"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.on_drain: Callable[[], None] | None = None
        """Called when the socket's write buffer drained below its low-water mark (``limit_write_buffer``)."""
        self._handler: MessageHandler | None = None
        """Serves the messages after ``serve_messages`` (None: the ASGI app reads them with ``receive``)."""
        self._handling: asyncio.Task[None] | None = None
        """The coroutine of the message (or of the end) being handled, as a task."""
        self._held: list[Any] | None = None
        """Events that arrived while one was being handled, in order (None when there are none)."""
        self._ending = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][OPTIONS_EXTENSION] = self
            if not self.config.ws_per_message_deflate:
                scope["extensions"][RAW_EXTENSION] = self

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        # The application has returned (a document connection; a session hands over earlier, in
        # ``serve_messages``, and drops the scope there): the scope's extensions, this protocol itself, would
        # keep it in a cycle with its scope until a full collection.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(OPTIONS_EXTENSION, None)
            scope["extensions"].pop(RAW_EXTENSION, None)

    def limit_message_size(self, max_size: int) -> None:
        self.conn.max_message_size = max_size

    def keep_alive(self, interval: float) -> None:
        self.stop_keepalive()
        self.ping_interval = interval
        self.ping_timeout = interval
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.start_keepalive()  # else uvicorn starts it when the app accepts

    def write_frame(self, frame: bytes) -> int:
        if self.close_sent or self.disconnected:
            return 0
        transport = self.transport
        transport.write(frame)
        return transport.get_write_buffer_size()

    def unsent_bytes(self) -> int:
        """The bytes the socket transport still holds unsent (0 once the connection is gone)."""
        if self.disconnected:
            return 0
        return self.transport.get_write_buffer_size()

    def write_buffer_size(self) -> int:
        if self.close_sent or self.disconnected:
            return 0
        return self.transport.get_write_buffer_size()

    def limit_write_buffer(self, high: int) -> None:
        """Past ``high`` unsent bytes the transport pauses this protocol; below a quarter of it, it resumes
        it (and ``on_drain`` is called)."""
        self.transport.set_write_buffer_limits(high=high)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None and not self.close_sent:
            self.on_drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_drain = None
        super().connection_lost(exc)
        # Nothing is parsed any more: websockets' parser is a generator whose frame holds its protocol (a
        # cycle, with the reader and its buffer, that only a full collection would free).
        self.conn.parser.close()

    def close_with(self, code: int, reason: str) -> None:
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        backlog = self.transport.get_write_buffer_size()
        delay = SLOW_ABORT_AFTER if backlog > 65536 else self.close_timeout
        self.close_timer = self.loop.call_later(delay, self.transport.abort)

    def serve_messages(self, handler: MessageHandler) -> None:
        """Hand this connection's messages to ``handler`` from now on (see ``MessageHandler``); what the ASGI
        queue holds already goes first. The app's ``send`` and ``receive`` must not be used after this."""
        queued = self.queue
        self._handler = handler
        self.queue = _Relay(self)  # type: ignore[assignment]
        self.writable = _NO_WAIT  # type: ignore[assignment]
        # The handshake is over: what only it needed goes (uvicorn keeps them for the connection's life).
        self.request = self.response = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        self.default_headers = []  # the Date header list current when it connected
        _fresh_parser(self.conn)
        while not queued.empty():
            self._relay(queued.get_nowait())

    def _relay(self, event: Any) -> None:
        if self._handling is not None:
            if self._held is None:
                self._held = []
            self._held.append(event)
            return
        self._handle(event)

    def _handle(self, event: Any) -> None:
        if self._handler is None:
            return  # the session has ended (a disconnect event after the one that ended it)
        task = self._handling = self.loop.create_task(self._serve(event))
        self.tasks.add(task)  # uvicorn's shutdown waits for these
        task.add_done_callback(self._handled)

    async def _serve(self, event: Any) -> None:
        """Hand ``event`` over, then what arrived meanwhile, in order, in this one task: the messages of
        one read are handled in one loop tick, so what they make the node write to its connections goes
        out in one frame per connection (a task per message would flush after each)."""
        while True:
            handler = self._handler
            if handler is None:
                return
            if event["type"] == "websocket.receive":
                data = event.get("text")
                if data is None:
                    data = event.get("bytes") or b""
                await handler.message(data)
            elif not self._ending:
                self._ending = True
                await handler.ended()
            held = self._held
            if not held:
                return
            event = held.pop(0)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._handling = None
        if not task.cancelled() and task.exception() is not None:
            log.error("websocket session failed", exc_info=task.exception())
            if not self.transport.is_closing():
                self.transport.close()
        held = self._held
        while held:
            event = held.pop(0)
            if not held:
                self._held = None
            self._handle(event)
            if self._handling is not None:
                return
        self._held = None
        if self._ending:
            self._handler = None  # the session is over: no cycle through it
            self.queue = _ENDED  # type: ignore[assignment]  # nor through the relay's bound method
            if self.close_timer is None:
                self.transport.close()  # as uvicorn does once the app returned
        elif self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    async def run_asgi(self) -> None:
        """uvicorn's, except that an app that handed its connection to ``serve_messages`` may return
        without the connection being closed."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self._handler is None and self.close_timer is None:
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        """A complete message for the app. A text message that is not UTF-8 closes the connection with 1007
        (RFC 6455 8.1: "the endpoint MUST _Fail the WebSocket Connection_"), logged as the peer's error."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.frames = []
                log_limited(
                    log, logging.INFO, "websocket text message from %s is not UTF-8: closed 1007", self.client
                )
                self.conn.send_close(1007, "invalid UTF-8")
                WebSocketsSansIOProtocol.handle_parser_exception(self)
                return
            self.frames = []
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        sent = self.conn.close_sent
        log_limited(
            log,
            logging.WARNING,
            "websocket protocol error from %s: %s",
            self.client,
            f"{sent.code} {sent.reason}" if sent is not None else self.conn.parser_exc,
        )
        super().handle_parser_exception()

    def shutdown(self) -> None:
        """Server shutdown: close with the Centrifuge "shutdown" code (reconnect), not uvicorn's 1012.

        Under ``switchboard serve`` the node has already disconnected its sessions in batches
        (``Node.drain``) by the time uvicorn calls this; it closes only what is left (a connection still in
        its handshake), or every connection at once under a plain ``uvicorn`` run."""
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.stop_keepalive()
            self.close_with(self.shutdown_code, self.shutdown_reason)
            return
        super().shutdown()
