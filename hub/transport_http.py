"""HTTP streaming transports of the client protocol, for clients that cannot hold a WebSocket.

Unidirectional (as Centrifugo serves them; the client only reads, pushes are bare ``Push`` objects):

- ``/connection/uni_http_stream``: POST a connect request (JSON); the response streams one JSON push per line.
- ``/connection/uni_sse``: GET with the connect request in the ``cf_connect`` query parameter (or POST it);
  the response is Server-Sent Events. Every event's ``id`` is the connection's resume point (``hub.sse``): a
  reconnecting ``EventSource`` sends it back as ``Last-Event-ID`` and gets exactly the publications it
  missed, as events, or an ``unrecovered`` event for a channel whose gap is gone from history. The stream
  opens with ``retry:`` and carries heartbeat comments while idle.

Bidirectional emulation (the ``http_stream`` and ``sse`` transports of the official JS SDK): the stream
request carries the first commands (connect), replies and pushes come down the stream, and later commands
are POSTed to ``/emulation`` as ``{"session": ..., "node": ..., "data": "<commands>"}``, addressed by the
node and session ids of the connect result; any node accepts them and forwards them to the named node.

A ``StreamTransport`` only writes and closes (a writer task drains queued chunks through ASGI ``send()``);
the handlers here read the request and feed the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from hub import codec_protobuf, codes, sse, wire
from hub.control import ControlUnavailable
from hub.logs import log_limited
from hub.writer import EventWriter, Writer, limit_send_buffer

if TYPE_CHECKING:
    from hub.client import Client
    from hub.node import Node

log = logging.getLogger("switchboard.stream")

Frame = Callable[[list[bytes]], bytes]
"""How a batch of encoded messages becomes one chunk of the response body."""


def lines(messages: list[bytes]) -> bytes:
    return b"\n".join(messages) + b"\n"


def concat(messages: list[bytes]) -> bytes:
    return b"".join(messages)


def data_events(messages: list[bytes]) -> bytes:
    return b"".join(sse.event(m) for m in messages)


def _drives_synchronously(send: Any) -> bool:
    """Whether ``send`` may be driven outside a task: uvicorn's own (it only writes to the socket and waits
    on flow control). A send wrapped by other middleware (anyio streams, task-bound state) gets a task."""
    owner = getattr(send, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("uvicorn.")


@types.coroutine
def _suspend(waiting: Any) -> Generator[Any, None, None]:
    """Hand what a started coroutine yielded (the future it waits on, already marked as awaited, or None
    for a bare yield) to the running task, exactly as if that coroutine were being awaited by it."""
    yield waiting


class StreamTransport:
    """A streaming HTTP response body.

    A chunk goes out at once: uvicorn's ``send()`` is driven synchronously, and it normally completes
    without waiting (the socket takes the bytes), so a delivery costs no task switch (under another server,
    or behind middleware that wraps ``send``, every chunk goes through a task instead). When a send must wait
    (the peer reads slowly and the server applies flow control), one task finishes it and then every chunk
    queued behind it, in order; those bytes count as unsent for the Writer's slow-consumer bound.
    """

    __slots__ = (
        "name",
        "fmt",
        "unidirectional",
        "emulation",
        "writer_class",
        "_send",
        "_eager",
        "_frame",
        "_queue",
        "_queued",
        "_pending",
        "_closed",
        "closing",
        "_ended",
        "_heartbeat",
        "_wrote",
        "_was_reset",
    )

    def __init__(
        self,
        send: Any,
        *,
        name: str,
        fmt: int,
        frame: Frame,
        unidirectional: bool = False,
        emulation: bool = False,
        writer_class: type[Writer] = Writer,
        heartbeat: float = 0.0,
    ) -> None:
        self.name = name
        self.fmt = fmt
        self.unidirectional = unidirectional
        self.emulation = emulation
        self.writer_class = writer_class
        self._send = send
        self._eager = _drives_synchronously(send)
        self._frame = frame
        self._queue: list[tuple[bytes, bool]] = []
        self._queued = 0
        self._pending: asyncio.Task[None] | None = None
        self._closed = False
        self.closing = asyncio.Event()
        """Set when the session closed the stream (its last chunks may still be on their way)."""
        self._ended = asyncio.Event()
        """Set once the response has ended (the last chunk went out) or the peer is gone."""
        self._heartbeat = heartbeat
        self._wrote = False
        self._was_reset = False

    def write_messages(self, messages: list[bytes]) -> int:
        if self._closed:
            return 0
        self._write(self._frame(messages))
        return self._queued

    def unsent_bytes(self) -> int:
        """Queued chunks, and what uvicorn's socket transport holds of the chunks already sent to it."""
        socket_transport = self._socket_transport()
        held = (
            0
            if socket_transport is None or self._ended.is_set()
            else socket_transport.get_write_buffer_size()
        )
        return self._queued + held

    def limit_send_buffer(self, size: int) -> None:
        """The kernel holds about ``size`` unsent bytes (a stream with conflated subscriptions)."""
        limit_send_buffer(self._socket_transport(), size)

    def close(self, code: int, reason: str) -> None:
        # The code went out as a disconnect push (the session writes it before closing); a stream just ends.
        # A stream closed as slow is one its peer does not read: what it has not read is dropped now and its
        # connection reset, so a node cutting slow streams frees their memory as it cuts them.
        if not self._closed:
            self._closed = True
            self.closing.set()
            if code == codes.SLOW.code:
                self._drop_unsent()
            else:
                self._write(b"", more=False)

    def _drop_unsent(self) -> None:
        self._queued -= sum(len(chunk) for chunk, _ in self._queue)  # a chunk in flight counts until it ends
        self._queue.clear()
        # Reset whether or not a send waits: a stream cut by one burst (before any send had to wait) would
        # otherwise neither end its response nor let its unread bytes go. Reset, the response is over.
        if self._reset():
            self._ended.set()

    def _write(self, chunk: bytes, more: bool = True) -> None:
        self._wrote = True
        if self._ended.is_set():
            return
        if self._pending is not None or not self._eager:
            self._queue.append((chunk, more))
            self._queued += len(chunk)
            if self._pending is None:
                self._pending = asyncio.get_running_loop().create_task(self._finish(None, None, 0, True))
            return
        coro = self._send({"type": "http.response.body", "body": chunk, "more_body": more})
        try:
            waiting = coro.send(None)
        except StopIteration:
            if not more:
                self._ended.set()
            return
        except (OSError, RuntimeError) as exc:
            self._broken(exc)
            return
        self._queued += len(chunk)
        self._pending = asyncio.get_running_loop().create_task(self._finish(coro, waiting, len(chunk), more))

    async def _finish(self, coro: Any, waiting: Any, size: int, more: bool) -> None:
        """Complete a send that had to wait, then send what queued up behind it."""
        try:
            while coro is not None:
                try:
                    await _suspend(waiting)
                except asyncio.CancelledError:
                    coro.close()
                    raise
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    break
            self._queued -= size
            while more and self._queue:
                chunk, more = self._queue.pop(0)
                await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
                self._queued -= len(chunk)
            if not more:
                self._ended.set()
        except (OSError, RuntimeError) as exc:
            self._broken(exc)
        finally:
            self._pending = None

    def _broken(self, exc: BaseException) -> None:
        log_limited(log, logging.INFO, "stream write failed: %r", exc)
        self._closed = True
        self.closing.set()
        self._queue.clear()
        self._ended.set()

    async def run(self, preamble: bytes = b"") -> None:
        """Send ``preamble``, then keep the stream (with heartbeat comments while idle) until it ends."""
        if preamble:
            self._write(preamble)
        while not self._ended.is_set():
            if not self._heartbeat:
                await self._ended.wait()
                return
            self._wrote = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), self._heartbeat)
            if not self._wrote and not self._closed:
                self._write(sse.HEARTBEAT)

    async def stop(self) -> bool:
        """Abandon a send still waiting: the peer is gone, or does not read. Under uvicorn the connection of
        a peer that does not read is reset: the bytes it left unread go at once (a closed socket would keep
        them until it reads), and the response is not reported as left unfinished. True if it was reset
        (now, or when it was closed as slow)."""
        self._ended.set()
        task = self._pending
        if task is None:
            return self._was_reset
        reset = self._reset()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # What never went out goes now: the session, its writer and this transport reference each other and
        # would keep these chunks until the cyclic garbage collector's next full pass.
        self._queue.clear()
        self._queued = 0
        return reset

    def _reset(self) -> bool:
        socket_transport = self._socket_transport()
        if socket_transport is None:
            return False
        socket_transport.abort()
        self._was_reset = True
        return True

    def _socket_transport(self) -> Any:
        """uvicorn's transport of this response's connection (None under another server)."""
        owner = getattr(self._send, "__self__", None) if self._eager else None
        return getattr(owner, "transport", None)


# ---------------------------------------------------------------- request reading


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


async def _read_body(receive: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _BadRequest(499, "client went away")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _BadRequest(413, f"body over {limit} bytes")
        parts.append(body)
        if not message.get("more_body", False):
            return b"".join(parts)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _request_data(scope: dict[str, Any], receive: Any, limit: int, methods: tuple[str, ...]) -> bytes:
    """The connect request (or first commands): the ``cf_connect`` query parameter of a GET, a POST body;
    405 for a method not in ``methods``."""
    method = scope.get("method", "GET")
    if method not in methods:
        raise _BadRequest(405, f"method {method} not allowed")
    if method == "GET":
        query: bytes = scope.get("query_string", b"")
        values = parse_qs(query.decode("latin-1")).get("cf_connect")
        if not values:
            raise _BadRequest(400, "no cf_connect parameter")
        data: bytes = values[0].encode()
        if len(data) > limit:
            raise _BadRequest(413, f"cf_connect over {limit} bytes")
        return data
    return await _read_body(receive, limit)


async def _respond(
    send: Any,
    status: int,
    body: bytes = b"",
    content_type: bytes = b"text/plain",
    allow: tuple[str, ...] = (),
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if allow:  # a 405 names the methods the endpoint takes (RFC 9110 15.5.6)
        headers.append((b"allow", ", ".join((*allow, "OPTIONS")).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_NO_CACHE = [
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-accel-buffering", b"no"),
]


# ---------------------------------------------------------------- the endpoints


STREAM_PATHS = {
    "/connection/uni_http_stream": "uni_http_stream",
    "/connection/uni_sse": "uni_sse",
    "/connection/http_stream": "http_stream",
    "/connection/sse": "sse",
}
EMULATION_PATH = "/emulation"
STREAM_METHODS = {
    "uni_http_stream": ("POST",),
    "http_stream": ("POST",),
    "uni_sse": ("GET", "POST"),
    "sse": ("GET", "POST"),
}
"""What each stream takes besides OPTIONS: the HTTP streams are POST only (as Centrifugo's); SSE is read by
``EventSource`` (GET, the connect request in ``cf_connect``), or POSTed to."""


async def stream_session(node: Node, kind: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve one streaming connection of ``kind`` (a value of ``STREAM_PATHS``) from request to end."""
    if scope.get("method") == "OPTIONS":
        await _respond(send, 204)
        return
    limit = node.config.client_max_message_size
    try:
        data = await _request_data(scope, receive, limit, STREAM_METHODS[kind])
    except _BadRequest as exc:
        log_limited(log, logging.INFO, "%s request refused: %s", kind, exc, extra={"transport": kind})
        if exc.status != 499:
            allow = STREAM_METHODS[kind] if exc.status == 405 else ()
            await _respond(send, exc.status, str(exc).encode(), allow=allow)
        return
    protobuf = kind == "http_stream" and _header(scope, b"content-type") == "application/octet-stream"
    params: dict[str, Any] = {}
    last_event_id = ""
    if kind.startswith("uni_"):
        try:
            parsed = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            log_limited(
                log, logging.INFO, "%s: connect request is not a JSON object", kind, extra={"transport": kind}
            )
            await _respond(send, 400, b"connect request must be a JSON object")
            return
        params = parsed
        if kind == "uni_sse":
            last_event_id = _header(scope, b"last-event-id")
    transport = _transport(node, kind, send, protobuf)
    if kind in ("uni_sse", "sse"):
        content_type = b"text/event-stream; charset=utf-8"
    elif protobuf:
        content_type = b"application/octet-stream"
    else:
        content_type = b"application/json"
    headers = [(b"content-type", content_type), *_NO_CACHE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    client = node.new_session(transport, scope)
    preamble = sse.retry(node.config.sse_retry_ms) if kind == "uni_sse" else b""
    writing = asyncio.get_running_loop().create_task(transport.run(preamble))
    watching = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
    try:
        if kind.startswith("uni_"):
            if last_event_id:
                _resume_from(client, last_event_id)
            await client.connect_unidirectional(params)
        else:
            await client.handle_emulated(data)  # in order with the /emulation requests that follow
        # Until the stream ends, the peer goes away, or the session closes it: then the last chunks get a
        # second to go out, and a peer that does not read them (a slow consumer) is let go.
        closing = asyncio.get_running_loop().create_task(transport.closing.wait())
        try:
            await asyncio.wait({writing, watching, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
    finally:
        await node.end_session(client)
        transport.close(codes.CONNECTION_CLOSED.code, codes.CONNECTION_CLOSED.reason)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(writing), 1.0)
        if await transport.stop():
            log.debug("%s stream not read: connection reset", kind)  # its 3008 was the line that counts
            with contextlib.suppress(TimeoutError):  # the server sees the reset: the response is over
                await asyncio.wait_for(_wait_disconnect(receive), 1.0)
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing


def _transport(node: Node, kind: str, send: Any, protobuf: bool) -> StreamTransport:
    heartbeat = node.config.sse_heartbeat_interval
    if kind == "uni_http_stream":
        return StreamTransport(send, name=kind, fmt=wire.JSON_UNI, frame=lines, unidirectional=True)
    if kind == "uni_sse":
        return StreamTransport(
            send,
            name=kind,
            fmt=wire.JSON_EVENTS,
            frame=concat,  # the EventWriter frames every message as an event with its resume id
            unidirectional=True,
            writer_class=EventWriter,
            heartbeat=heartbeat,
        )
    if kind == "sse":
        return StreamTransport(
            send, name=kind, fmt=wire.JSON, frame=data_events, emulation=True, heartbeat=heartbeat
        )
    if protobuf:
        return StreamTransport(send, name=kind, fmt=wire.PROTOBUF, frame=concat, emulation=True)
    return StreamTransport(send, name=kind, fmt=wire.JSON, frame=lines, emulation=True)


def _resume_from(client: Client, last_event_id: str) -> None:
    """Recover the server-side subscriptions from an EventSource's ``Last-Event-ID``; the recovered
    publications go out as events (the client resumes an event stream, it does not parse a connect result)."""
    client.resume_as_events = True
    try:
        client.resume_point = sse.decode_resume_id(last_event_id)
    except sse.BadResumeId as exc:
        # Not silently fresh: every recoverable channel is reported unrecovered.
        log_limited(
            log, logging.WARNING, "a Last-Event-ID that is not ours: %s", exc, extra=client._log_extra()
        )
        client.resume_point = sse.LOST


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def emulation(node: Node, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /emulation``: commands of a bidirectional-emulation session. 204 once handled; 404 for an
    unknown node or session; 400 for a body that is not an emulation request.

    A request naming another node (behind a load balancer without sticky sessions) goes to that node over
    the control channel and is answered once that node handled it; 503 when it cannot be reached."""
    if scope.get("method") == "OPTIONS":
        await _respond(send, 204)
        return
    if scope.get("method") != "POST":
        await _respond(send, 405, allow=("POST",))
        return
    try:
        body = await _read_body(receive, node.config.client_max_message_size)
    except _BadRequest as exc:
        log_limited(log, logging.INFO, "emulation request refused: %s", exc)
        if exc.status != 499:
            await _respond(send, exc.status, str(exc).encode())
        return
    try:
        if _header(scope, b"content-type") == "application/octet-stream":
            target, session, data = codec_protobuf.decode_emulation_request(body)
        else:
            target, session, data = _json_emulation_request(body)
    except ValueError as exc:
        log_limited(log, logging.INFO, "bad emulation request: %s", exc)
        await _respond(send, 400, b"bad emulation request")
        return
    client = node.streams.get(session) if target == node.id else None
    if client is not None:
        await client.handle_emulated(data)
        await _respond(send, 204)
        return
    if target == node.id:
        await _respond(send, 404, b"unknown session")
        return
    # Another node holds the session (a load balancer sent this request here): hand it over.
    try:
        found = await node.control.emulate(target, session, data)
    except ControlUnavailable as exc:
        log_limited(log, logging.WARNING, "emulation request for node %s not delivered: %s", target, exc)
        await _respond(send, 503, b"node not reachable")
        return
    if found:
        await _respond(send, 204)
    else:
        await _respond(send, 404, b"unknown node or session")


def _json_emulation_request(body: bytes) -> tuple[str, str, bytes]:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(req, dict):
        raise ValueError("not an object")
    target, session, data = req.get("node", ""), req.get("session", ""), req.get("data", "")
    if not isinstance(target, str) or not isinstance(session, str) or not isinstance(data, str):
        raise ValueError("node, session and data must be strings")
    return target, session, data.encode()
