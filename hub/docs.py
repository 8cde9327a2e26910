"""Collaborative documents over the y-websocket protocol: ``/doc/{name}`` (WebSocket),
``GET /doc/{name}/content`` and ``POST /doc/{name}/edit`` (HTTP, the latter in ``hub.docs_edit``), plus the
server-side API (``Switchboard.documents``, agents' edits and presence in ``sync.agents``).

A connection is one document (the provider's URL is ``<server url>/<room name>?<params>``). The session:

- authorizes before anything else: the ``token`` query parameter is a connection JWT (the hub's keys,
  ``hub.auth``); its ``tenant`` claim is the document's tenant, its ``docs`` claim says what it may open:
  ``{"read": ["notes/*", "faq"], "write": ["notes/alice/*"]}`` (a name, or a prefix ending in ``*``;
  write implies read). A token without a ``docs`` claim gets ``doc_token_access``, a connection without a
  token ``doc_anonymous_access`` (``none``, ``read`` or ``write``; development mode: ``write``).
- refuses with the auth message (permission denied, with the reason) and a close: 4401 for a missing,
  invalid or expired token, 4403 for a document the token may not read. A token's ``exp`` also ends the
  connection later (4401 "token expired", after ``client_expired_close_delay``).
- then hands the connection to the document's ``sync.room.DocRoom``, which speaks the protocol.

Close codes (y-websocket 3 stops reconnecting on 4400-4499 and retries on anything else):
4400 bad message (garbage, unknown type, truncated varint, text frame, bad name), 4401 unauthorized,
4403 forbidden, 4413 update, document or awareness state too large (``doc_max_update_size``,
``doc_max_document_size``, ``doc_max_awareness_state_size``), 4422 update the CRDT rejected, 4500 storage
error, 4529 too many document connections for the user or too many open documents on the node (try later),
3001 shutdown, 3008 slow (what waits for the connection passed ``doc_queue_max_size``, see below), 1009
frame larger than ``doc_max_update_size`` (plus a little room for framing).

Bounds on what a connection can make the node hold (each logged in one line, rate-limited):

- Its outgoing messages: a ``hub.writer_stream.StreamingWriter``. At most ``doc_queue_max_size`` bytes
  wait for it, not counting one large message being streamed (a late joiner's sync step 2 holds the whole
  document), which goes out in parts as the socket drains; past the bound: 3008.
- Its sync step 1: answered one at a time; a step 1 while the last answer is still on its way is coalesced
  into it (``sync.room``), so a burst of them costs one document diff, not one each. Between messages the
  reader yields to the loop every ``READ_BURST`` messages (one TCP read can bring a thousand).
- Its awareness (``sync.awareness``): a state over ``doc_max_awareness_state_size`` closes it with 4413;
  past ``doc_max_awareness_states`` client ids or the document's ``doc_max_awareness_size`` its entries
  are refused (dropped, logged once).
- Its updates: when the store or Redis falls behind by ``doc_write_backlog_max_size`` bytes, the node
  stops reading document connections until it caught up (``sync.rooms``), so a slow disk slows writers
  down.

Read-only connections get sync and awareness. Their updates are never applied or relayed: y-websocket has
no per-message error, so the first refused update gets one auth message ("read-only: ...") and a log line
and the connection stays open (closing would make the provider reconnect and resend the same update).

Fast path: with uvicorn and the hub's protocol class, each outgoing message is framed once
(``ws_frames.FrameCache``: a relay's consecutive pushes of one message share its frame) into the writer,
which writes once per loop tick straight to the socket (large messages as WebSocket fragments). Without it
(``websocket_fast_path = false``, or ``websocket_compression = true``) messages go through ASGI ``send()``.
Either way, under uvicorn (``hub.ws_uvicorn``) a document connection takes frames up to
``doc_max_update_size`` (plus framing) and gets a WebSocket ping every ``doc_ping_interval``, being closed
when it does not answer within as long. The rooms also send an empty awareness update every
``doc_ping_interval``, the sign of life the provider waits for. Under another ASGI server: no pings, and
the server's frame limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from pycrdt import Doc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub import docs_edit, wire
from hub.api import authenticate, presented_key
from hub.auth import TokenExpired, TokenInvalid, TokenVerifier
from hub.config import Config
from hub.logs import bind_session, log_limited, unbind_session
from hub.transport_websocket import AsgiWebSocketTransport
from hub.writer import FlushScheduler
from hub.writer_stream import StreamingWriter
from hub.ws_frames import OP_BINARY, FrameCache, fragment
from hub.ws_uvicorn import OPTIONS_EXTENSION, RAW_EXTENSION
from sync import protocol
from sync.agents import Agent, AgentEdits, AgentSession
from sync.awareness import AwarenessLimits
from sync.content import document_json
from sync.edit import EditResult
from sync.protocol import LimitExceeded, SyncError, UpdateRejected
from sync.relay import DocumentRelay
from sync.room import AWARENESS_REFUSED, COALESCED, DocRoom, RoomLimits, WriteRefused
from sync.rooms import DocumentRooms
from sync.store import DocKey, DocumentStore, StoreError
from sync.version import document_version, tag_of

log = logging.getLogger("switchboard.docs")

T = TypeVar("T")

DOC_PREFIX = "/doc/"
CONTENT_SUFFIX = "/content"
EDIT_SUFFIX = docs_edit.EDIT_SUFFIX
MAX_NAME_LENGTH = 255
FRAME_SLACK = 1024
"""Bytes a frame may exceed ``doc_max_update_size`` by (message type, lengths): larger ones get 1009."""
READ_BURST = 64
"""Messages read from one connection in a row before the reader lets the loop run."""

BAD_MESSAGE = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
TOO_LARGE = 4413
REJECTED = 4422
STORAGE = 4500
TRY_LATER = 4529
SHUTDOWN = 3001
SLOW = 3008


def short_reason(reason: str) -> str:
    """RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the code."""
    raw = reason.encode()
    return reason if len(raw) <= 123 else raw[:123].decode(errors="ignore")


def close_code(error: SyncError) -> int:
    if isinstance(error, LimitExceeded):
        return TOO_LARGE
    if isinstance(error, UpdateRejected):
        return REJECTED
    if isinstance(error, StoreError):
        return STORAGE
    return BAD_MESSAGE


class Denied(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Access:
    tenant: str
    user: str
    write: bool
    exp: int | None = None


def matches(patterns: tuple[str, ...], name: str) -> bool:
    """A name, or a prefix ending in ``*`` (``*`` alone: every document)."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif pattern == name:
            return True
    return False


def valid_name(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and not name.startswith("/")
        and all(unicodedata.category(ch)[0] != "C" for ch in name)
    )


def authorize(config: Config, verifier: TokenVerifier, token: str, name: str) -> Access:
    """Who opens ``name`` and whether it may write. Raises ``Denied``."""
    if not token:
        level = config.doc_anonymous_access
        if level == "none":
            raise Denied(UNAUTHORIZED, "token required")
        return Access("", "", level == "write")
    try:
        claims = verifier.verify_document(token)
    except TokenExpired:
        raise Denied(UNAUTHORIZED, "token expired") from None
    except TokenInvalid as exc:
        raise Denied(UNAUTHORIZED, f"invalid token: {exc}") from None
    if claims.read is None or claims.write is None:
        level = config.doc_token_access
        read, write = level != "none", level == "write"
    else:
        write = matches(claims.write, name)
        read = write or matches(claims.read, name)
    if not read:
        raise Denied(FORBIDDEN, f"permission denied for document {name!r}")
    return Access(claims.tenant, claims.user, write, claims.exp)


class RawDocTransport:
    """The fast path: pre-built frames written straight to the socket; a large message as fragments."""

    __slots__ = ("_raw",)
    name = "doc"
    fragments = True

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def unsent(self) -> int:
        return self._raw.write_buffer_size()  # type: ignore[no-any-return]

    def write_messages(self, messages: list[bytes]) -> None:
        self._raw.write_frame(messages[0] if len(messages) == 1 else b"".join(messages))

    def write_part(self, payload: bytes, first: bool, last: bool) -> None:
        self._raw.write_frame(fragment(payload, OP_BINARY, first, last))

    def watch_drain(self, callback: Callable[[], None], high: int) -> None:
        self._raw.limit_write_buffer(high)
        self._raw.on_drain = callback

    def close(self, code: int, reason: str) -> None:
        self._raw.close_with(code, reason)

    def unsent_bytes(self) -> int:
        return self._raw.unsent_bytes()  # type: ignore[no-any-return]


class AsgiDocTransport(AsgiWebSocketTransport):
    """The portable transport, one binary WebSocket message per y-websocket message (never joined). ASGI has
    no fragments: a large message goes to the server whole, the next once the server wrote it."""

    __slots__ = ("_on_drain",)
    name = "doc"
    fragments = False

    def __init__(self, send: Any) -> None:
        super().__init__(send, wire.PROTOBUF)  # binary frames
        self._on_drain: Callable[[], None] | None = None

    def unsent(self) -> int:
        return self._queued

    def write_messages(self, messages: list[bytes]) -> None:  # type: ignore[override]
        if self._close is not None:
            return
        for message in messages:
            self._queue.append(message)
            self._queued += len(message)
        self._wakeup.set()

    def write_part(self, payload: bytes, first: bool, last: bool) -> None:
        raise NotImplementedError("the portable transport sends whole messages")

    def watch_drain(self, callback: Callable[[], None], high: int) -> None:
        self._on_drain = callback

    def _drained(self) -> None:
        if self._on_drain is not None:
            self._on_drain()


_frames = FrameCache()
_ids = itertools.count(1)

NOTICES = {
    COALESCED: "a sync step 1 was coalesced into the step 2 still on its way (document %r)",
    AWARENESS_REFUSED: "awareness entries refused: one connection's or the document's bound (document %r)",
}


class DocPeer:
    """One document connection: the room's ``Peer``."""

    __slots__ = (
        "id",
        "document",
        "access",
        "remote",
        "writer",
        "transport",
        "framed",
        "closed",
        "refused",
        "noticed",
        "reply_at",
        "__weakref__",
    )

    def __init__(
        self,
        document: str,
        access: Access,
        remote: str,
        transport: RawDocTransport | AsgiDocTransport,
        scheduler: FlushScheduler,
        max_bytes: int,
    ) -> None:
        self.id = f"doc-{next(_ids)}"
        self.document = document
        self.access = access
        self.remote = remote
        self.transport = transport
        self.framed = isinstance(transport, RawDocTransport)
        self.closed = False
        self.refused = 0
        self.noticed: set[str] = set()
        self.reply_at = 0
        """The writer's message count once the last sync step 2 was queued."""
        self.writer = StreamingWriter(transport, scheduler, max_bytes, self._slow, self._write_error)

    def log_fields(self) -> dict[str, Any]:
        return {"client": self.id, "user": self.access.user, "tenant": self.access.tenant, "transport": "doc"}

    def send(self, message: bytes, shared: bool = False) -> None:
        if len(message) > self.writer.chunk:
            self.writer.push_large(message, shared)
        else:
            self.writer.push(_frames.frame(message, OP_BINARY) if self.framed else message)

    def send_reply(self, message: bytes, shared: bool = False) -> None:
        self.send(message, shared)
        self.reply_at = self.writer.pushed

    @property
    def replying(self) -> bool:
        return self.writer.written < self.reply_at

    def notice(self, what: str) -> None:
        if what not in self.noticed:
            self.noticed.add(what)
            log_limited(log, logging.INFO, NOTICES.get(what, what + " (document %r)"), self.document)

    def terminate(self, error: SyncError) -> None:
        self.close(close_code(error), error.reason)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.writer.close()  # hand over what is queued (e.g. the auth message), take no more
        self.transport.close(code, short_reason(reason))

    def _slow(self) -> None:
        log_limited(log, logging.WARNING, "document connection too slow, closing", extra=self.log_fields())
        self.closed = True
        self.transport.close(SLOW, "slow")

    def _write_error(self) -> None:
        self.closed = True
        self.transport.close(STORAGE, "write error")


def _encoded_content(doc: Doc[Any]) -> tuple[bytes, str, str]:
    """A document's JSON content, its version and the version's tag (``Documents.read_encoded``, kept by
    ``DocRoom.derived``)."""
    version = document_version(doc).encode()
    return orjson.dumps(document_json(doc)), version, tag_of(version)


def _etags(if_none_match: str) -> set[str]:
    """The entity tags an ``If-None-Match`` names, weak ones as strong: RFC 9110 13.1.2 compares them
    weakly. ``*`` matches any current content."""
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


def doc_name(path: str) -> str:
    return path[len(DOC_PREFIX) :]


class Documents:
    """The hub's document service: endpoint sessions, the content endpoint, and the server-side API."""

    def __init__(
        self,
        config: Config,
        verifier: TokenVerifier,
        scheduler: FlushScheduler,
        store: DocumentStore,
        relay: DocumentRelay | None = None,
    ) -> None:
        """``relay``: how documents reach the other nodes (``sync.relay_redis.RedisDocumentRelay`` when
        Redis is configured); None: this node is alone, every document is written by it."""
        self.config = config
        self.verifier = verifier
        self.scheduler = scheduler
        self.rooms = DocumentRooms(
            store,
            limits=RoomLimits(
                max_update_size=config.doc_max_update_size,
                max_document_size=config.doc_max_document_size,
                compact_after_updates=config.doc_compact_after_updates,
                compact_after_bytes=config.doc_compact_after_bytes,
                awareness=AwarenessLimits(
                    max_state_size=config.doc_max_awareness_state_size,
                    max_ids_per_owner=config.doc_max_awareness_states,
                    max_bytes=config.doc_max_awareness_size,
                ),
            ),
            unload_delay=config.doc_unload_delay,
            max_open=config.doc_max_open_documents,
            keepalive_interval=config.doc_ping_interval,
            relay=relay,
            write_backlog=config.doc_write_backlog_max_size,
        )
        self.agent_edits = AgentEdits(self.rooms, config.doc_edit_presence_linger)
        """Edits of agents that hold no session (``edit``, ``POST /doc/{name}/edit``)."""
        self.peers: set[DocPeer] = set()
        self._per_user: Counter[tuple[str, str]] = Counter()
        self._stopping = False
        self._drained = asyncio.Event()

    @staticmethod
    def default_store_path(config: Config) -> Path:
        return Path(config.data_dir) / "documents.sqlite3"

    # ---------------------------------------------------------------- the WebSocket endpoint

    async def websocket(self, scope: dict[str, Any], path: str, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        extensions = scope.get("extensions", {})
        options = extensions.get(OPTIONS_EXTENSION)
        if options is not None:  # documents take larger messages than channels (uvicorn's ws_max_size)
            options.limit_message_size(self.config.doc_max_update_size + FRAME_SLACK)
        await send({"type": "websocket.accept"})
        raw = extensions.get(RAW_EXTENSION) if self.config.websocket_fast_path else None
        transport: RawDocTransport | AsgiDocTransport
        transport = RawDocTransport(raw) if raw is not None else AsgiDocTransport(send)
        remote = scope.get("client")
        remote_host = remote[0] if remote else ""
        name = doc_name(path)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        try:
            if not valid_name(name):
                raise Denied(BAD_MESSAGE, "bad document name")
            access = authorize(self.config, self.verifier, token, name)
        except Denied as denied:
            log_limited(log, logging.INFO, "document %r refused: %s", name[:MAX_NAME_LENGTH], denied.reason)
            transport.write_messages([self._wire(transport, protocol.permission_denied(denied.reason))])
            transport.close(denied.code, short_reason(denied.reason))
            if isinstance(transport, AsgiDocTransport):
                await transport.finish(denied.code, denied.reason)
            return
        if options is not None:
            options.keep_alive(self.config.doc_ping_interval)
        peer = DocPeer(name, access, remote_host, transport, self.scheduler, self.config.doc_queue_max_size)
        bound = bind_session(peer.log_fields)
        try:
            await self._serve(peer, name, receive)
        finally:
            unbind_session(bound)
            if isinstance(transport, AsgiDocTransport):
                await transport.finish(1000, "")

    @staticmethod
    def _wire(transport: RawDocTransport | AsgiDocTransport, message: bytes) -> bytes:
        return _frames.frame(message, OP_BINARY) if isinstance(transport, RawDocTransport) else message

    async def _serve(self, peer: DocPeer, name: str, receive: Any) -> None:
        access = peer.access
        key: DocKey = (access.tenant, name)
        # Per user and tenant, as client_user_connection_limit; anonymous connections are not counted
        # (behind one address there may be a whole office, or a benchmark).
        user_key = (access.tenant, access.user) if access.user else None
        if self._stopping:
            peer.close(SHUTDOWN, "shutdown")
            return
        limit = self.config.doc_user_connection_limit
        if user_key is not None and self._per_user[user_key] >= limit:
            log_limited(
                log,
                logging.WARNING,
                "too many document connections for one user (limit %d)",
                limit,
            )
            peer.close(TRY_LATER, "too many document connections")
            return
        if user_key is not None:
            self._per_user[user_key] += 1
        self.peers.add(peer)
        expiry: asyncio.TimerHandle | None = None
        try:
            try:
                room = await self.rooms.acquire(key)
            except SyncError as exc:
                code = TRY_LATER if isinstance(exc, LimitExceeded) else STORAGE
                log_limited(log, logging.WARNING, "document %r not opened: %s", name, exc.reason)
                peer.close(code, exc.reason)
                return
            if access.exp is not None:
                delay = max(0.0, access.exp - time.time()) + self.config.client_expired_close_delay
                expiry = asyncio.get_running_loop().call_later(
                    delay, peer.close, UNAUTHORIZED, "token expired"
                )
            try:
                room.join(peer, access.write)
                await self._read(peer, room, receive)
            finally:
                room.leave(peer)
                self.rooms.release(room)
        finally:
            if expiry is not None:
                expiry.cancel()
            self.peers.discard(peer)
            if user_key is not None:
                self._per_user[user_key] -= 1
                if self._per_user[user_key] <= 0:
                    del self._per_user[user_key]
            peer.writer.close()
            if self._stopping and not self.peers:
                self._drained.set()

    async def _read(self, peer: DocPeer, room: DocRoom, receive: Any) -> None:
        rooms = self.rooms
        burst = 0
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive" or peer.closed:
                continue
            data = message.get("bytes")
            if data is None:
                log_limited(log, logging.WARNING, "text frame on a document connection")
                peer.close(BAD_MESSAGE, "text frames are not y-websocket messages")
                continue
            try:
                room.receive(peer, data)
            except WriteRefused as refused:
                peer.refused += 1
                if peer.refused == 1:
                    log_limited(
                        log,
                        logging.WARNING,
                        "update from a read-only connection dropped (document %r)",
                        room.key[1],
                    )
                    peer.send(protocol.permission_denied(refused.reason))
            except SyncError as exc:
                log_limited(
                    log,
                    logging.WARNING,
                    "document %r: closing a connection: %s",
                    room.key[1],
                    exc.reason,
                )
                peer.close(close_code(exc), exc.reason)
            except Exception:
                log.exception("document %r: unexpected error handling a message", room.key[1])
                peer.close(STORAGE, "internal error")
            if rooms.backlog_full:
                # The store or Redis is behind: read nothing more (the socket's TCP window closes, so the
                # client slows down) until it caught up.
                await rooms.has_room()
                burst = 0
            else:
                burst += 1
                if burst >= READ_BURST:
                    # The server hands over every message of one TCP read without a pause: let the journal
                    # commit and the writers flush between a client's messages.
                    burst = 0
                    await asyncio.sleep(0)

    # ---------------------------------------------------------------- the HTTP content endpoint

    async def content_endpoint(self, scope: dict[str, Any], path: str, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        name = path[len(DOC_PREFIX) : -len(CONTENT_SUFFIX)]
        response = await self._content_response(request, name)
        await response(scope, receive, send)

    async def _content_response(self, request: Request, name: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"error": "method not allowed"}, status_code=405)
        access = self.http_access(request, name)
        if isinstance(access, JSONResponse):
            return access
        try:
            body, _, tag = await self.read_encoded(name, tenant=access.tenant)
        except SyncError as exc:
            log_limited(
                log,
                logging.WARNING,
                "content of document %r not served: %s",
                name,
                exc.reason,
            )
            return JSONResponse({"error": exc.reason}, status_code=503)
        etag = f'"{tag}"'  # the version's tag: a version grows with every editor, a header must not
        # Per user and tenant (the token or key may come in the query or X-API-Key): no shared cache keeps it.
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        asked = _etags(",".join(request.headers.getlist("if-none-match")))  # RFC 9110 5.3: lines are a list
        if etag in asked or "*" in asked:
            return Response(status_code=304, headers=headers)  # RFC 9110 15.4.5: unchanged since that read
        return Response(body, media_type="application/json", headers=headers)

    def http_access(self, request: Request, name: str, write: bool = False) -> Access | JSONResponse:
        """Who a document's HTTP request is (``/content``, ``/edit``), or the refusal to answer: the token
        (``?token=`` or ``Authorization: Bearer``) as a document connection's, or the server API key for any
        document of its tenant (an unbound key: ``?tenant=``, default ""). ``write``: write access needed."""
        if not valid_name(name):
            return JSONResponse({"error": "bad document name"}, status_code=400)
        what = "edit" if write else "content"
        token = request.query_params.get("token", "")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if not token and scheme.lower() == "bearer":
            token = value.strip()
        key = authenticate(presented_key(request.headers), self.config.server_api_keys())
        if not token and key is not None:
            named = request.query_params.get("tenant")
            if key.tenant is not None and named is not None and named != key.tenant:
                log_limited(log, logging.INFO, "%s of document %r refused: key of another tenant", what, name)
                return JSONResponse({"error": "the API key is bound to another tenant"}, status_code=403)
            return Access(key.tenant if key.tenant is not None else (named or ""), "", True)
        try:
            access = authorize(self.config, self.verifier, token, name)
            if write and not access.write:
                raise Denied(FORBIDDEN, f"read-only: no write access to document {name!r}")
        except Denied as denied:
            log_limited(log, logging.INFO, "%s of document %r refused: %s", what, name, denied.reason)
            status = 401 if denied.code == UNAUTHORIZED else 403
            return JSONResponse({"error": denied.reason}, status_code=status)
        return access

    # ---------------------------------------------------------------- the HTTP edit endpoint (agents)

    async def edit_endpoint(self, scope: dict[str, Any], path: str, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        name = path[len(DOC_PREFIX) : -len(EDIT_SUFFIX)]
        response = await docs_edit.serve(self, request, name)
        await response(scope, receive, send)

    # ---------------------------------------------------------------- server-side API

    @contextlib.asynccontextmanager
    async def open(self, name: str, *, tenant: str = "") -> AsyncIterator[Doc[Any]]:
        """The live pycrdt document ``name`` of ``tenant``. Edit it in transactions (``with
        doc.transaction(): ...``): every transaction reaches the connected clients (after it is stored)
        and the store. Leaving the block waits until the edits are durable if this node is the document's
        writer; on another node (several nodes over Redis), until they were published to the other nodes
        (the writer stores them within a batch; see ``sync.rooms``)."""
        async with self.rooms.open((tenant, name)) as doc:
            yield doc

    async def transact(self, name: str, fn: Callable[[Doc[Any]], T], *, tenant: str = "") -> T:
        """Run ``fn(doc)`` in one transaction on the live document; return its result once durable on the
        document's writer node, or, on another node, once published to the other nodes (see ``open``)."""
        return await self.rooms.transact((tenant, name), fn)

    async def content(self, name: str, *, tenant: str = "") -> dict[str, Any]:
        """The document's current content as JSON (``sync.content``)."""
        content, _ = await self.read(name, tenant=tenant)
        return content

    async def read(self, name: str, *, tenant: str = "") -> tuple[dict[str, Any], str]:
        """The document's current content as JSON (``sync.content``) and its version (``sync.version``),
        read together: the version is exactly that content's."""
        body, version, _ = await self.read_encoded(name, tenant=tenant)
        return orjson.loads(body), version

    async def read_encoded(self, name: str, *, tenant: str = "") -> tuple[bytes, str, str]:
        """``read``'s content as JSON bytes, its version, and the version's fixed-size tag (``sync.version``:
        what ``/content`` sends as its ETag). Computed once per state of the document
        (``DocRoom.derived``) while it is open on this node: agents polling ``/content`` of a large
        document that nobody edits cost no encoding of it while someone has it open (or the polls come
        within ``doc_unload_delay`` of each other; else each one loads it from the store)."""
        room = await self.rooms.acquire((tenant, name))
        try:
            return room.derived(_encoded_content)
        finally:
            self.rooms.release(room)

    async def edit(
        self,
        name: str,
        ops: Any,
        *,
        tenant: str = "",
        if_version: str | None = None,
        agent: Agent | str | None = None,
        unit: str = "utf16",
    ) -> EditResult:
        """Apply ``ops`` (``sync.edit``'s JSON operations) to the live document in one transaction; return
        once settled, as ``transact``. ``if_version``: only if the document is still at that version (else
        ``StaleVersion``, with the ``current`` one). ``agent`` (a name, or an ``Agent`` with a colour): shown
        in the document while it works, its cursor at what it edited, until ``doc_edit_presence_linger``
        seconds after its last edit (``sync.agents.AgentEdits``). Raises ``EditRejected`` (nothing applied),
        ``ValueError`` for a bad agent name or colour, ``SyncError`` when the document cannot be opened."""
        if isinstance(agent, str):
            agent = Agent(agent)
        return await self.agent_edits.edit((tenant, name), ops, agent=agent, if_version=if_version, unit=unit)

    def agent(self, name: str, agent: Agent | str, *, tenant: str = "", unit: str = "utf16") -> AgentSession:
        """An agent's session in the document (``sync.agents.AgentSession``), for a server-side agent that
        works a while: ``async with sb.documents.agent("notes", "Summarizer") as session:`` shows the agent
        (awareness, ``bot: true``) until the block ends; ``await session.edit(ops)`` moves its cursor to
        what each edit changed, ``session.move(anchor, head)`` anywhere. Raises ``ValueError`` for a bad
        agent name or colour."""
        if isinstance(agent, str):
            agent = Agent(agent)
        return AgentSession(self.rooms, (tenant, name), agent, unit=unit, limits=self.agent_edits.limits)

    # ---------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close every document connection (3001), wait up to ``shutdown_timeout`` for them to end, then
        compact, flush and close the store."""
        self._stopping = True
        self._drained.clear()
        for peer in list(self.peers):
            peer.close(SHUTDOWN, "shutdown")
        if self.peers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.config.shutdown_timeout)
        self.agent_edits.close()
        await self.rooms.close()
        self._stopping = False
