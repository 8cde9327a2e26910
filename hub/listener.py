"""The listening sockets of ``switchboard serve``: accepting connections, and running out of descriptors.

uvicorn leaves accepting to the event loop's server. Under uvloop that is libuv, which meets a full
descriptor table (EMFILE) with a trick of its own: it closes a spare descriptor, accepts every pending
connection and closes it at once. The clients see a reset, and nothing is logged or counted; the health
checks of the platform fail the same way, so a node holding 20,000 healthy WebSockets looks dead.

``Listener`` accepts by itself (a reader callback on the listening socket, then the loop's
``connect_accepted_socket`` with uvicorn's protocol), so it sees every failure. Policy when accept()
fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM):

- it is counted (``Metrics.accept_errors``, by errno) and logged, one WARNING line per 10 s at most;
- ``RESERVED_DESCRIPTORS`` descriptors are held open for this moment (on /dev/null): one is closed, one
  pending connection accepted in its place and answered from a minimal handler without the application:
  ``GET /health`` 200 (the process serves), ``GET /ready`` 503 with the reason (send new clients
  elsewhere), anything else 503; then the connection is closed and the descriptor taken back. Each such
  connection counts as ``http_refused{reason="descriptors"}``;
- its request head must arrive within ``TRIAGE_TIMEOUT``; when every reserved descriptor is waiting for
  one and more connections are pending, the oldest waiter is answered 503 at once and its descriptor goes
  to the next (a health check sends its head right away; a client that sends nothing cannot hold the
  reserve). Without any descriptor at all, accepting pauses for ``ACCEPT_RETRY_DELAY``: the pending
  connections wait in the kernel's backlog (not reset) until descriptors are free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from hub.logs import log_limited

log = logging.getLogger("switchboard.listener")

RESERVED_DESCRIPTORS = 8
"""Descriptors kept for answering health checks while the table is full."""
ACCEPT_BATCH = 128
"""Connections accepted per readiness callback before the loop gets its turn again."""
ACCEPT_RETRY_DELAY = 0.1
"""Seconds accepting pauses when no descriptor can be had at all."""
TRIAGE_TIMEOUT = 1.0
"""Seconds a connection accepted on a reserved descriptor has to send its request head."""
MAX_HEAD = 8192
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
DESCRIPTORS = "descriptors"
"""The ``http_refused`` reason of a connection answered from a reserved descriptor."""


def _answer(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\nretry-after: 1\r\nconnection: close\r\n\r\n" + body
    )  # fmt: skip


REASON = "out of file descriptors"
HEALTHY = _answer(b"200 OK", orjson.dumps({"status": "ok"}))
NOT_READY = _answer(b"503 Service Unavailable", orjson.dumps({"status": "not ready", "reason": REASON}))
UNAVAILABLE = _answer(b"503 Service Unavailable", REASON.encode() + b"\n", b"text/plain; charset=utf-8")


def triage_answer(head: bytes) -> bytes:
    """What a connection accepted on a reserved descriptor is told, from its request head."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) == 3 and parts[0] == b"GET":
        path = parts[1].split(b"?", 1)[0]
        if path == b"/health":
            return HEALTHY
        if path == b"/ready":
            return NOT_READY
    return UNAVAILABLE


def bind_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host`` and ``port``, one per address it resolves to (as the event loop's
    ``create_server`` binds them: SO_REUSEADDR, IPv6 sockets IPv6 only), non-blocking."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts connections on one listening socket for ``protocol_factory`` (see the module docstring).

    ``close()`` stops accepting and closes the socket; ``wait_closed()`` is there for uvicorn's shutdown,
    which treats a Listener as one of its servers. ``accept_errors`` and ``refused`` are the node's
    counters (``Metrics``)."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        accept_errors: Counter[str] | None = None,
        refused: Counter[str] | None = None,
        reserved: int = RESERVED_DESCRIPTORS,
    ) -> None:
        self.socket = sock
        self.protocol_factory = protocol_factory
        self.accept_errors: Counter[str] = accept_errors if accept_errors is not None else Counter()
        self.refused: Counter[str] = refused if refused is not None else Counter()
        self._wanted = reserved
        self._reserve: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._triaging: dict[asyncio.Task[None], socket.socket] = {}
        """Connections being answered from reserved descriptors, oldest first."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._refill()

    @property
    def sockets(self) -> list[socket.socket]:
        return [self.socket]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._resume()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
        self.socket.close()
        for fd in self._reserve:
            os.close(fd)
        self._reserve.clear()

    async def wait_closed(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    # -- accepting ---------------------------------------------------------------------------------------

    def _resume(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._closed or self._reading or self._loop is None:
            return
        self._refill()
        self._reading = True
        self._loop.add_reader(self.socket.fileno(), self._accept)

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._reading = False
            self._loop.remove_reader(self.socket.fileno())

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while in the backlog
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    if self._out_of_descriptors(exc):
                        continue
                    return
                log_limited(
                    log,
                    logging.WARNING,
                    "accept() failed: %r; accepting again in %g s",
                    exc,
                    ACCEPT_RETRY_DELAY,
                )
                self._pause()
                self._retry_later()
                return
            self._spawn(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        assert self._loop is not None
        conn.setblocking(False)
        try:
            await self._loop.connect_accepted_socket(self.protocol_factory, conn)
        except OSError as exc:  # reset before the protocol could start
            log.debug("accepted connection lost at once: %r", exc)
            conn.close()
        except Exception:
            log.exception("an accepted connection could not be started")
            conn.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- out of descriptors ------------------------------------------------------------------------------

    def _out_of_descriptors(self, exc: OSError) -> bool:
        """Count and log the failure; answer one pending connection from a reserved descriptor, if there is
        one (True: try the next), else pause accepting (False) until one comes back."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.accept_errors[name] += 1
        log_limited(
            log,
            logging.WARNING,
            "accept() failed with %s (descriptor limit %d): new connections get 503; /health and /ready are "
            "answered from reserved descriptors",
            name,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        if self._reserve:
            os.close(self._reserve.pop())
            try:
                conn, _ = self.socket.accept()
            except OSError:
                self._refill()
            else:
                self.refused[DESCRIPTORS] += 1
                conn.setblocking(False)
                task = self._spawn(self._triage(conn))
                self._triaging[task] = conn
                task.add_done_callback(self._triaged)
                return True
        self._pause()
        if self._triaging:
            # Every reserve waits for a request head: the oldest waiter is cut (503) for the next in line.
            # A health check sends its head at once; a client that sends nothing does not hold a reserve.
            next(iter(self._triaging)).cancel()
        else:
            self._retry_later()
        return False

    def _retry_later(self) -> None:
        if self._retry is None and not self._closed and self._loop is not None:
            self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)

    async def _triage(self, conn: socket.socket) -> None:
        """Read the head of a connection accepted on a reserved descriptor and send its answer
        (``triage_answer``); ``_triaged`` closes it, whatever happened."""
        assert self._loop is not None
        loop = self._loop
        head = b""
        try:
            async with asyncio.timeout(TRIAGE_TIMEOUT):
                while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                    chunk = await loop.sock_recv(conn, 4096)
                    if not chunk:
                        break
                    head += chunk
        except (TimeoutError, OSError) as exc:
            log.debug("connection on a reserved descriptor not read: %r", exc)
            head = b""
        with contextlib.suppress(OSError):
            conn.send(triage_answer(head))  # a few hundred bytes into an empty socket buffer: never blocks

    def _triaged(self, task: asyncio.Task[None]) -> None:
        """A triage ended (answered, or cut for the next in line: then it is answered 503 here, even if it
        was cut before it ran): close the connection, take the descriptor back, go on accepting."""
        conn = self._triaging.pop(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("answering a connection on a reserved descriptor failed: %r", task.exception())
        with contextlib.suppress(OSError):
            if task.cancelled():
                conn.send(UNAVAILABLE)
            conn.shutdown(socket.SHUT_WR)
        conn.close()
        self._refill()
        self._resume()

    def _refill(self) -> None:
        while len(self._reserve) < self._wanted and not self._closed:
            try:
                self._reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return  # the table is still full: the next closed triage connection tries again
