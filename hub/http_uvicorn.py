"""A uvicorn HTTP protocol that bounds how long a request may take to arrive, and how many may be arriving.

uvicorn's httptools protocol waits for a request's headers and body as long as the client likes: a client
that trickles one byte a second holds its descriptor (and, mid-body, an ASGI task) forever, and a few
thousand such clients starve a node of descriptors. ``GuardedHttpProtocol`` is that protocol plus three
limits (``HttpGuard``, one per server):

- headers: a request's headers must be complete within ``http_header_timeout`` of the connection being
  accepted (its first request) or of the request's first byte (a later request on a keep-alive
  connection; the idle time between requests is uvicorn's own keep-alive timeout);
- body: the whole body within ``http_body_timeout`` of the headers (a total, not an idle timeout: a
  trickle of one byte a second is exactly what it must stop);
- at most ``http_max_unfinished_requests`` connections of the node in either phase at once: a new
  connection past it cuts the one that has been arriving longest (503 Service Unavailable). Evicting the
  oldest rather than refusing the newest keeps the node reachable under a slow-request flood: a health
  check or a real client delivers its request in milliseconds, while the attacker's connections are the
  old ones.

A breach answers 408 Request Timeout (503 for an eviction) and closes the connection; when a response has
started already it only closes it (a response in progress is never interleaved with another). An
application waiting for the body sees ``http.disconnect``. The close lingers (as nginx's ``lingering_close``):
the answer is written and the sending side shut (FIN), and what the client still sends is read and dropped
for at most ``LINGER`` seconds before the socket is closed. Closing at once while a trickled body is still
arriving would make the kernel answer the unread bytes with a reset, which can destroy the 408 in the
client's receive queue before it reads it. Every refusal is counted (``Metrics.http_refused``,
by reason) and logged as one WARNING line, rate-limited per kind (``hub.logs.log_limited``).
A WebSocket upgrade is an ordinary request until its headers are complete (so a handshake cannot hang
either); from there the WebSocket protocol and the hub's own stale-connection check take over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, ClassVar

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from hub.logs import log_limited

log = logging.getLogger("switchboard.http")

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
UNFINISHED_LIMIT = "unfinished_limit"


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )  # fmt: skip


REQUEST_TIMEOUT = _response(b"408 Request Timeout", b"request not received in time\n")
OVERLOADED = _response(b"503 Service Unavailable", b"too many requests arriving at once\n")
TIMEOUTS = {"headers": HEADER_TIMEOUT, "body": BODY_TIMEOUT}
LINGER = 2.0
"""Seconds a refused connection is still read (and its input dropped) after the answer, before the close."""
ANSWERS = {HEADER_TIMEOUT: REQUEST_TIMEOUT, BODY_TIMEOUT: REQUEST_TIMEOUT, UNFINISHED_LIMIT: OVERLOADED}


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class HttpGuard:
    """The limits of one server and its count of requests still arriving (shared by its connections)."""

    def __init__(
        self,
        *,
        header_timeout: float,
        body_timeout: float,
        max_unfinished: int,
        refused: Counter[str] | None = None,
    ) -> None:
        self.timeouts = {"headers": header_timeout, "body": body_timeout}
        self.max_unfinished = max_unfinished
        self.arriving: dict[GuardedHttpProtocol, None] = {}
        """Connections whose request's headers or body are still arriving, longest-arriving first."""
        self.refused: Counter[str] = refused if refused is not None else Counter()

    def refuse(self, reason: str, client: tuple[str, int] | None, phase: str) -> None:
        """Count and log (throttled) one connection cut for ``reason``."""
        self.refused[reason] += 1
        if reason == UNFINISHED_LIMIT:
            log_limited(
                log,
                logging.WARNING,
                "%d requests arriving at once (http_max_unfinished_requests): the oldest, from %s, "
                "cut with 503",
                len(self.arriving) + 1,
                _peer(client),
            )
        else:
            log_limited(
                log,
                logging.WARNING,
                "request %s from %s not complete within %g s: 408, connection closed",
                phase,
                _peer(client),
                self.timeouts[phase],
            )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``guard`` (see the module docstring). Use
    ``http_protocol(guard)`` for a class bound to one server's guard."""

    guard: ClassVar[HttpGuard]

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: str | None = None
        """"headers" or "body" while this connection's request is arriving (and counted), else None."""
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False
        """The connection was refused: its input is dropped until the peer closes or ``LINGER`` passes."""

    # -- the phases of a request -------------------------------------------------------------------------

    def _begin(self, phase: str) -> None:
        self._end()
        self._phase = phase
        self.guard.arriving[self] = None
        self._deadline = self.loop.call_later(self.guard.timeouts[phase], self._cut, TIMEOUTS[phase])

    def _end(self) -> None:
        if self._phase is not None:
            self._phase = None
            del self.guard.arriving[self]
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut(self, reason: str) -> None:
        """End this connection for ``reason``: answer (unless a response has started) and close."""
        phase = self._phase
        self._end()
        if phase is None or self.transport.is_closing():
            return
        self.guard.refuse(reason, self.client, phase)
        cycle = self.cycle
        answering = cycle is None or cycle.response_complete or not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() answers http.disconnect from now on
            cycle.message_event.set()
        if answering:
            self.transport.write(ANSWERS[reason])
        self._linger()

    def _linger(self) -> None:
        """Shut the sending side once the answer is out, drop input until the peer closes, then close."""
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        transport.write_eof()
        self.loop.call_later(LINGER, transport.close)

    # -- uvicorn's protocol, with the phases -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        arriving = self.guard.arriving
        if len(arriving) >= self.guard.max_unfinished:
            next(iter(arriving))._cut(UNFINISHED_LIMIT)
        self._begin("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            super().data_received(data)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()
            return
        super().eof_received()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:
            # a later request of a keep-alive connection (the first one is timed from the accept)
            self._begin("headers")

    def on_headers_complete(self) -> None:
        self._end()
        super().on_headers_complete()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        if not upgrading and not self.transport.is_closing():
            self._begin("body")

    def on_message_complete(self) -> None:
        self._end()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The connection is the WebSocket protocol's from here on, and this one's ``connection_lost`` (where
        # uvicorn drops the parser) never comes: the parser, which holds bound methods of this protocol,
        # would keep the two (and the handshake's scope) in a cycle until a full collection.
        self.parser = None  # type: ignore[assignment]


def http_protocol(guard: HttpGuard) -> type[GuardedHttpProtocol]:
    """A protocol class for uvicorn's ``http=`` whose connections share ``guard``."""
    return type("SwitchboardHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})
