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
  never will).

Under any other ASGI server the extensions are absent and the hub falls back to plain ``send()`` (frame
limit and keepalive the server's). Keepalive: uvicorn's pings are off unless an endpoint asks
(documents do); the Centrifuge protocol pings itself.

A peer's protocol error (a text frame that is not UTF-8, a bad frame) closes its connection (1007, 1002,
1009) with one rate-limited line (``hub.logs.log_limited``), not uvicorn's ERROR traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from hub.logs import log_limited

RAW_EXTENSION = "switchboard.raw_websocket"
OPTIONS_EXTENSION = "switchboard.websocket_options"
SLOW_ABORT_AFTER = 2.0
"""Seconds a closing connection with a backlog of unsent bytes gets before its socket is aborted."""

log = logging.getLogger("switchboard.websocket")


class SwitchboardWebSocketProtocol(WebSocketsSansIOProtocol):
    shutdown_code = 3001
    shutdown_reason = "shutdown"
    on_drain: Callable[[], None] | None = None
    """Called when the socket's write buffer drained below its low-water mark (``limit_write_buffer``)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][OPTIONS_EXTENSION] = self
            if not self.config.ws_per_message_deflate:
                scope["extensions"][RAW_EXTENSION] = self

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
