"""One client session of the Centrifuge client protocol v2, whatever the transport.

The session reads commands (``handle_frame``), answers through its Writer and ends with a disconnect code.
It is transport-agnostic: a WebSocket, an SSE stream or an HTTP stream hands it frames and gives it a
Transport to write to.

States (an illegal transition raises, loudly)::

    CONNECTING --connect ok--> CONNECTED --disconnect--> CLOSED
         \\________________disconnect_________________/

Before ``connect`` only ``connect`` (and pongs) are accepted: anything else ends the connection with 3501.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from channels.errors import BrokerUnavailable, InvalidChannel, UnknownNamespace, UnrecoverablePosition
from channels.feeds import BadRate, granted_rate
from channels.names import ChannelKey, ChannelName, parse_channel
from channels.options import DELTA_TYPES, NamespaceOptions
from channels.publication import ClientInfo, Publication, StreamPosition
from channels.streams import after_snapshot
from hub import codec_json, codes, sse
from hub.auth import ConnectClaims, SubscriptionClaims, TokenExpired, TokenInvalid
from hub.bots.identity import channel_limit, command_limiter, shown_info
from hub.codes import ClientError, Disconnect
from hub.feeds import DELTA_FORMATS, FeedItem, FeedSubscription, delta_chain
from hub.hooks import ConnectingContext, MessageContext, PublishContext, RPCContext, SubscribeContext
from hub.limits import Verdict
from hub.logs import bind_session, log_limited, unbind_session
from hub.recovery import Recovery, after_position, publications_size, recover, recovery_room
from hub.wheel import NEVER
from hub.wire import CODECS, JSON, JSON_EVENTS, PROTOBUF, BadData, binary_data, json_view
from hub.writer import EventWriter, Transport, Writer
from presence.presence import PresenceUnavailable

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.client")

DEFAULT_TENANT = ""
HISTORY_MAX_LIMIT = 300
"""Most publications one client history call returns (Centrifugo: client_history_max_publication_limit)."""

FLAG_REJECT_UNRECOVERED = 2
"""SubscribeRequest.flag bit: reply 112 instead of ``recovered: false`` (centrifuge-python's get_state)."""

PIPELINE_MAX = 64
"""Publishes one session may have in flight at once on a broker that pipelines them (``Broker.pipelined``);
with as many, or with client_max_message_size bytes of their data in flight, the next one waits for the
oldest (and the session reads nothing meanwhile)."""

_METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "rpc",
    "send",
    "refresh",
    "sub_refresh",
)


_UNI_DISCONNECTS = {
    109: codes.EXPIRED,
    110: codes.EXPIRED,
    111: codes.TOO_MANY_REQUESTS,
    103: codes.PERMISSION_DENIED,
    101: codes.INVALID_TOKEN,
    107: codes.BAD_REQUEST,
}
"""How a refused unidirectional connect ends (Centrifuge's defaults, plus 101 -> 3500 invalid token and
107 -> 3501 bad request: Centrifuge sends 3004, which tells the client to retry the same request forever)."""


class _StopFrame(Exception):
    """Drop the rest of the frame being handled (after a failed connect)."""


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_TRANSITIONS = {
    State.CONNECTING: {State.CONNECTED, State.CLOSED},
    State.CONNECTED: {State.CLOSED},
    State.CLOSED: set(),
}


@dataclass(slots=True)
class Subscription:
    channel: ChannelName
    key: ChannelKey
    options: NamespaceOptions
    info: ClientInfo
    recoverable: bool = False
    positioned: bool = False
    push_join_leave: bool = False
    expires_at: float = 0.0
    """Wall-clock second at which the subscription token expires (0: never)."""
    server_side: bool = False
    active: bool = False
    missed: bool = False
    """The node missed publications of the channel while this (positioned) subscription was being set up:
    it is told to resubscribe as soon as its reply is out."""
    feed: FeedSubscription | None = None
    """How a conflated or delta-encoded subscription is delivered (``hub.feeds``), once active."""


@dataclass(frozen=True, slots=True)
class _FeedPlan:
    """What a subscription gets besides the plain fan-out: delta compression, conflation at ``rate``."""

    delta: bool
    rate: float
    """Publications a second per key (0: not conflated)."""


@dataclass(slots=True)
class _Prepared:
    sub: Subscription
    result: dict[str, Any]
    offset: int
    recovered: list[Publication] = field(default_factory=list)
    """Recovered publications to push as publications (``resume_as_events``, or through a conflated
    subscription's slots), not inside the result."""
    plan: _FeedPlan | None = None
    base: FeedItem | None = None
    """The last publication of a delta chain in the result: the subscription's delta base."""
    snapshot: list[Publication] = field(default_factory=list)
    """The text so far of the channel's open streams (``hub.streams``), pushed before what was buffered."""


_NO_INFLIGHT: collections.deque[Any] = collections.deque(maxlen=0)
"""``Client._inflight`` of a session that has not published: empty, and (maxlen 0) nothing appended to it
could stay."""


@dataclass(slots=True)
class _Reply:
    """A command's reply in its place while publishes are in flight (``Client._inflight``): ``frame`` once
    known (b"": the command answers nothing); ``task``, the publish a pipelined publish waits for."""

    frame: bytes | None = None
    task: asyncio.Task[Any] | None = None
    size: int = 0


def _method_of(cmd: dict[str, Any]) -> str | None:
    return next((m for m in _METHODS if m in cmd), None)


def _recovery_request(raw: Any) -> dict[str, Any]:
    """The recovery part of a connect's ``subs`` entry; anything malformed means "no recovery"."""
    if not isinstance(raw, dict) or raw.get("recover") is not True:
        return {}
    offset, epoch = raw.get("offset", 0), raw.get("epoch", "")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or not isinstance(epoch, str):
        return {}
    return {"recover": True, "offset": offset, "epoch": epoch}


def _ttl(expires_at: float) -> int:
    """Seconds until ``expires_at``, at least 1 and at most what the protocol's uint32 holds (a token that
    expires "never", e.g. exp 9999999999, must still encode)."""
    return min(max(1, int(expires_at - time.time())), 2**32 - 1)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise codes.error_bad_request()
    return value


def _label(params: dict[str, Any], name: str) -> str:
    """The client's ``name`` or ``version``: a string, or absent (null too). Anything else is 107: the
    protocol says string, and turning any JSON value into one (``str``) recurses as deep as it nests."""
    value = params.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise codes.error_bad_request()
    return value


def _str(params: dict[str, Any], name: str, required: bool = True) -> str:
    value = params.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise codes.error_bad_request()
    return value


class Client:
    __slots__ = (
        "node",
        "id",
        "transport",
        "writer",
        "state",
        "user",
        "tenant",
        "conn_info",
        "expires_at",
        "subs",
        "_leaving",
        "created",
        "last_ping",
        "awaiting_pong",
        "remote",
        "headers",
        "name",
        "version",
        "_closing",
        "_unusable",
        "_identity",
        "busy",
        "codec",
        "fmt",
        "unidirectional",
        "emulation",
        "session",
        "events",
        "resume_as_events",
        "resume_point",
        "_emulated",
        "limiter",
        "_graceful",
        "_ended",
        "_inflight",
        "_inflight_bytes",
        "_in_frame",
        "_recovering",
        "bot",
        "_later",
        "clock_due",
        "__weakref__",
    )

    def __init__(
        self, node: Node, transport: Transport, *, remote: str = "", headers: dict[str, str] | None = None
    ):
        self.node = node
        self.id = str(uuid.uuid4())
        self.transport = transport
        self.fmt: int = getattr(transport, "fmt", JSON)
        self.codec = CODECS[self.fmt]
        self.unidirectional: bool = getattr(transport, "unidirectional", False)
        """The client only reads: no commands after connect, no pongs, pushes only."""
        self.emulation: bool = getattr(transport, "emulation", False)
        """Commands arrive out of band (``/emulation``), addressed by ``session``."""
        self.session = uuid.uuid4().hex if self.unidirectional or self.emulation else ""
        writer_class: type[Writer] = getattr(transport, "writer_class", Writer)
        self.writer = writer_class(
            transport, node.scheduler, node.config.client_queue_max_size, self._on_slow, self._on_write_error
        )
        self.events = self.writer if isinstance(self.writer, EventWriter) else None
        """The writer of an SSE stream whose every event carries the resume point (stream positions of the
        recoverable subscriptions); None on other transports."""
        self._emulated = asyncio.Lock() if self.emulation else None
        self.limiter = command_limiter(node.config, False, time.monotonic())
        """The command rate limit (``hub.limits``); None when it is off. A bot's, once it is one."""
        self._graceful: Disconnect | None = None
        """A disconnect waiting for the command in progress to finish (``disconnect_gracefully``)."""
        self._ended: Disconnect | None = None
        """Why the hub closed the connection (None: the client went away)."""
        self.resume_as_events = False
        """Recovered publications go out as publication pushes rather than inside the connect result."""
        self.resume_point: sse.ResumePoint | None = None
        """Where an SSE stream resumes from (its ``Last-Event-ID``; ``sse.LOST`` for one the hub cannot
        read): it takes precedence over the connect request's ``subs``."""
        self.state = State.CONNECTING
        self.user = ""
        self.tenant = DEFAULT_TENANT
        self.conn_info: bytes | None = None
        self.expires_at = 0.0
        self.subs: dict[str, Subscription] = {}
        self._leaving: set[asyncio.Task[None]] | None = None
        """Subscriptions left synchronously (insufficient state) whose backend cleanup is still running
        (None until the first: an idle connection holds no empty set)."""
        self.created = time.monotonic()
        self.last_ping = 0.0
        self.awaiting_pong = False
        self.remote = remote
        self.headers = headers or {}
        self.name = ""
        self.version = ""
        self._closing = False
        self._unusable = False
        self._identity = ("", DEFAULT_TENANT)
        self.busy = False
        """A frame's commands are being handled, or publishes of the session are in flight (pongs wait
        behind them; a graceful disconnect waits for their replies)."""
        self._in_frame = False
        self._recovering = 0
        """Bytes of recovered publications granted to subscriptions not yet activated (a connect's, whose
        one reply carries them all), counted with the writer's backlog against ``recovery_room``."""
        self._inflight: collections.deque[_Reply] = _NO_INFLIGHT
        """Pipelined publishes not yet answered and the replies behind them, in command order (see
        ``_pipeline_publish``). A shared empty deque, never appended to, until the first publish: an empty
        deque takes 760 bytes, and most connections never publish."""
        self._inflight_bytes = 0
        self.bot = False
        """The connection token's ``bot`` claim (``hub.bots``)."""
        self._later: set[asyncio.Task[Any]] | None = None
        """Commands answered when their work is done (``answer_later``); made at the first (most
        connections never call a bot)."""
        self.clock_due = NEVER
        """The second the session clock looks at this session next (``hub.wheel``)."""

    def __repr__(self) -> str:
        return f"<Client {self.id} user={self.user!r} tenant={self.tenant!r} {self.state.value}>"

    def _data(self, p: dict[str, Any]) -> Any:
        """A command's ``data`` as a JSON value. Protobuf carries it as bytes, which must hold JSON: hooks
        see the same values whatever the protocol, and JSON subscribers of the channel can read it (a
        binary payload would break their frames), so anything else is refused with 107. So is data nested
        deeper than the hub can write back (orjson writes 254 levels, reads 1024), whatever the protocol:
        a hook may hand it back (an echo RPC), and a reply that cannot be written is a crash, no answer.
        (A namespace with ``data_format = "binary"`` takes any bytes: ``_cmd_publish`` reads its data with
        ``_binary_data``.)"""
        raw = p.get("data")
        if raw is None:
            return raw
        value = raw
        if self.fmt == PROTOBUF:
            try:
                value = orjson.loads(raw)
            except (orjson.JSONDecodeError, TypeError):
                raise codes.error_bad_request() from None
        try:
            codec_json.data_bytes(value)
        except codec_json.DecodeError:
            raise codes.error_bad_request() from None
        return value

    @staticmethod
    def _binary_data(value: Any) -> bytes:
        try:
            return binary_data(value)
        except BadData as exc:
            raise codes.error_invalid_data(str(exc)) from None

    def _log_extra(self) -> dict[str, Any]:
        return {"client": self.id, "user": self.user, "tenant": self.tenant, "transport": self.transport.name}

    log_fields = _log_extra
    """The session's fields for log lines (``hub.logs``)."""

    def _move(self, state: State) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal client state transition {self.state.value} -> {state.value}")
        self.state = state

    # ---------------------------------------------------------------- input

    async def handle_frame(self, data: str | bytes) -> None:
        """Process one transport frame: one or more commands. Never raises for bad client input."""
        if self._closing:
            return
        if len(data) > self.node.config.client_max_message_size:
            log_limited(
                log, logging.WARNING, "message of %d bytes over the limit", len(data), extra=self._log_extra()
            )
            self.disconnect(codes.MESSAGE_TOO_BIG.error())
            return
        try:
            commands = self.codec.decode_commands(data)
        except self.codec.DecodeError as exc:
            log_limited(log, logging.WARNING, "bad frame: %s", exc, extra=self._log_extra())
            self.disconnect(codes.BAD_REQUEST.error())
            return
        self.busy = self._in_frame = True
        try:
            for cmd in commands:
                if self._closing or self._graceful is not None:
                    return
                if self._inflight and _method_of(cmd) not in (None, "publish"):
                    # Any other command waits for the publishes in flight to be answered, so it sees their
                    # effects (history, presence, a subscribe's recovery) as if each had been awaited.
                    await self._settle()
                    if self._closing or self._graceful is not None:
                        return
                try:
                    await self._handle_command(cmd)
                except Disconnect as exc:
                    self.disconnect(exc)
                    return
                except _StopFrame:
                    return
        finally:
            self._in_frame = False
            if not self._inflight:
                self._answered()

    def _answered(self) -> None:
        """Every command read so far is answered: a disconnect waiting for that goes ahead."""
        self.busy = False
        if self._graceful is not None:
            self.disconnect(self._graceful)
        if self.awaiting_pong:
            # A slow command kept the client's pong waiting behind it: the pong timeout starts now.
            self.last_ping = time.monotonic()

    async def handle_emulated(self, data: str | bytes) -> None:
        """Commands of an emulation session, POSTed beside its stream: handled one request at a time, in
        the order they arrive."""
        assert self._emulated is not None
        bound = bind_session(self.log_fields)  # this POST's task logs as the session
        try:
            async with self._emulated:
                await self.handle_frame(data)
        finally:
            unbind_session(bound)

    async def message(self, data: str | bytes) -> None:
        """One message of a transport that reads by callbacks (``hub.ws_uvicorn.MessageHandler``), handled
        in a task of its own that logs as the session."""
        bound = bind_session(self.log_fields)
        try:
            await self.handle_frame(data)
        finally:
            unbind_session(bound)

    async def ended(self) -> None:
        """The connection of a transport that reads by callbacks is closing or gone: end the session."""
        bound = bind_session(self.log_fields)
        try:
            await self.node.end_session(self)
        finally:
            unbind_session(bound)

    async def _handle_command(self, cmd: dict[str, Any]) -> None:
        self.awaiting_pong = False  # any command proves the client alive
        cmd_id = cmd.get("id", 0)
        if isinstance(cmd_id, bool) or not isinstance(cmd_id, int) or cmd_id < 0:
            log_limited(log, logging.WARNING, "bad command id %r", cmd_id, extra=self._log_extra())
            raise codes.BAD_REQUEST.error()
        method = _method_of(cmd)
        if method is None and cmd_id == 0:
            return  # an empty command is the pong to our ping
        if self.limiter is not None and self._over_rate(cmd_id, method or "unknown"):
            return
        if method != "connect" and self.state is State.CONNECTING:
            log_limited(
                log,
                logging.WARNING,
                "%s before connect",
                method or "unknown command",
                extra=self._log_extra(),
            )
            raise codes.BAD_REQUEST.error()
        if method is None:
            log_limited(log, logging.INFO, "unknown method in command %d", cmd_id, extra=self._log_extra())
            self.node.metrics.command_error("unknown", 104)
            self._reply(self.codec.encode_error(cmd_id, 104, "method not found"))
            return
        if cmd_id == 0 and method != "send":
            log_limited(log, logging.WARNING, "%s without id", method, extra=self._log_extra())
            raise codes.BAD_REQUEST.error()
        if self._unusable:
            log_limited(log, logging.WARNING, "connect after a failed connect", extra=self._log_extra())
            raise codes.BAD_REQUEST.error()
        params = cmd[method]
        if params is None:
            params = {}
        self.node.metrics.command(method)
        try:
            if not isinstance(params, dict):
                raise codes.error_bad_request()
            result = await getattr(self, "_cmd_" + method)(cmd_id, params)
        except Disconnect as exc:
            self.node.metrics.command_error(method, exc.code)
            raise
        except Exception as exc:
            if reply := self._failure(method, cmd_id, exc):
                self._reply(reply)
            if method == "connect" and isinstance(exc, ClientError):
                # As Centrifuge: a connection whose connect failed takes no more commands; the SDKs open
                # a new one (after getting a new token, for 109).
                self._unusable = True
                raise _StopFrame from None
            return
        if cmd_id and result is not None:
            self._reply(self.codec.encode_reply(cmd_id, method, result))

    def _failure(self, method: str, cmd_id: int, exc: BaseException) -> bytes:
        """The error reply of a command that raised ``exc`` (b"" for a command without id), logged and
        counted as its kind deserves."""
        if isinstance(exc, ClientError):
            log_limited(
                log, logging.INFO, "%s failed: %d %s", method, exc.code, exc.message, extra=self._log_extra()
            )
            code, message, temporary = exc.code, exc.message, exc.temporary
        elif isinstance(exc, (BrokerUnavailable, PresenceUnavailable)):
            # Redis is away: the command fails, temporarily (the SDKs retry), and nothing claims success.
            log_limited(
                log,
                logging.WARNING,
                "%s failed: %s",
                method,
                exc or type(exc).__name__,
                extra=self._log_extra(),
            )
            code, message, temporary = 100, "internal server error", True
        else:
            log.error("%s crashed", method, exc_info=exc, extra=self._log_extra())
            code, message, temporary = 100, "internal server error", True
        self.node.metrics.command_error(method, code)
        return self.codec.encode_error(cmd_id, code, message, temporary) if cmd_id else b""

    def _reply(self, frame: bytes) -> None:
        """Write a reply in command order: behind the replies of the publishes still in flight, if any."""
        if self._inflight:
            self._inflight.append(_Reply(frame))
        else:
            self.writer.push(frame)

    def _over_rate(self, cmd_id: int, method: str) -> bool:
        """Spend a token on this command (``hub.limits``): False to go on; True when it was refused (111);
        raises 3013 when the connection keeps flooding."""
        assert self.limiter is not None
        verdict = self.limiter.admit(time.monotonic())
        if verdict is Verdict.ADMIT:
            return False
        refusal = codes.error_too_many_requests()
        self.node.metrics.rate_limited += 1
        self.node.metrics.command_error(method, refusal.code)
        if verdict is Verdict.FLOOD:
            refused = self.limiter.refused
            log_limited(
                log,
                logging.WARNING,
                "command flood: %d commands refused in a row",
                refused,
                extra=self._log_extra(),
            )
            raise codes.TOO_MANY_REQUESTS.error()
        if self.limiter.refused == 1:  # one line per streak, not one per refused command
            log_limited(log, logging.INFO, "command rate limit exceeded", extra=self._log_extra())
        if cmd_id:
            self._reply(self.codec.encode_error(cmd_id, refusal.code, refusal.message, refusal.temporary))
        return True

    # ---------------------------------------------------------------- connect / refresh

    async def _cmd_connect(self, cmd_id: int, p: dict[str, Any]) -> None:
        if self.state is not State.CONNECTING:
            raise codes.BAD_REQUEST.error("already connected")
        node = self.node
        token = p.get("token", "")
        if not isinstance(token, str):
            raise codes.BAD_REQUEST.error()
        name, version = _label(p, "name"), _label(p, "version")
        claims: ConnectClaims | None = None
        user, info, tenant = "", None, DEFAULT_TENANT
        channels: tuple[str, ...] = ()
        expires_at = 0.0
        if token:
            claims = self._verify_connect_token(token)
            user, info, channels, tenant = claims.user, claims.info, claims.channels, claims.tenant
            expires_at = float(claims.exp or 0)
        authenticated = claims is not None
        reply_data: Any = None
        hook = node.hooks.on_connecting
        if hook is not None:
            ctx = ConnectingContext(
                client_id=self.id,
                transport=self.transport.name,
                claims=claims,
                data=self._data(p),
                headers=self.headers,
                remote=self.remote,
                name=name,
                version=version,
            )
            res = await hook(ctx)
            if res is not None:
                if res.user is not None:
                    user, authenticated = res.user, True
                if res.info is not None:
                    info = orjson.dumps(res.info)
                if res.channels is not None:
                    channels = tuple(res.channels)
                if res.tenant is not None:
                    tenant = res.tenant
                reply_data = res.data
        if not authenticated and not node.config.allow_anonymous_connect_without_token:
            raise codes.error_unauthorized()
        self.bot = claims is not None and claims.bot
        info = shown_info(info, self.bot)
        self.user, self.conn_info, self.tenant, self.expires_at = user, info, tenant, expires_at
        # Refresh tokens must name whom the connection token named (a hook may have changed user/tenant).
        self._identity = (claims.user, claims.tenant) if claims is not None else (user, tenant)
        self.name = name[:64]
        self.version = version[:64]
        limit = channel_limit(node.config, self.bot)
        if len(set(channels)) > limit:
            # As Centrifuge: a connection is never set up holding more channels than the limit (3505, final:
            # a reconnect with the same token would be refused the same way).
            log.warning(
                "connect names %d channels, over client_channel_limit %d",
                len(set(channels)),
                limit,
                extra=self._log_extra(),
            )
            raise codes.CHANNEL_LIMIT.error()
        channels = node.personal.at_connect(user, channels)
        # Server-side subscriptions (the token's channels claim) are trusted: no permission checks. They are
        # all prepared before the connection goes live; if one fails, every one is undone.
        raw_subs = p.get("subs")
        recover_req: dict[str, Any] = raw_subs if isinstance(raw_subs, dict) else {}
        prepared: list[_Prepared] = []
        try:
            for name in channels:
                try:
                    channel = parse_channel(name)
                    opts = node.namespaces.options_for(channel)
                except (InvalidChannel, UnknownNamespace):
                    log_limited(
                        log, logging.WARNING, "token names bad channel %r", name, extra=self._log_extra()
                    )
                    continue
                if name in self.subs:
                    continue
                prep = await self._prepare(
                    channel,
                    opts,
                    self._resume_position(name) or _recovery_request(recover_req.get(name)),
                    chan_info=None,
                    expires_at=0.0,
                    server_side=True,
                    reject_unrecovered=False,
                )
                prepared.append(prep)
            # Checked last, with no await before the registry takes this connection: two connects of
            # one user cannot both slip under the limit. Anonymous connections are not counted.
            # The reply is encoded before the connection goes live: if it cannot be (a hook's data that
            # is not JSON), nothing is left half set up.
            result: dict[str, Any] = {
                "client": self.id,
                "version": node.version,
                "ping": int(node.config.client_ping_interval),
                "node": node.id,
            }
            if not self.unidirectional:
                result["pong"] = True
            if self.session:
                result["session"] = self.session
            if expires_at:
                result["expires"] = True
                result["ttl"] = _ttl(expires_at)
            if reply_data is not None:
                result["data"] = self.codec.Fragment(orjson.dumps(reply_data))
            if prepared:
                result["subs"] = {prep.sub.channel.raw: prep.result for prep in prepared}
            reply = self.codec.encode_reply(cmd_id, "connect", result)
            limit = node.config.client_user_connection_limit
            if limit and user and len(node.registry.user_clients(tenant, user)) >= limit:
                log_limited(
                    log, logging.INFO, "user connection limit %d reached", limit, extra=self._log_extra()
                )
                raise codes.CONNECTION_LIMIT.error()
        except BaseException:
            for prep in prepared:
                await self._rollback_async(prep.sub)
            raise
        self._move(State.CONNECTED)
        self.last_ping = time.monotonic()
        if self.bot:
            self.limiter = command_limiter(node.config, True, self.last_ping)
        node.clock_session(self)  # its first ping, or its token's expiry if sooner
        node.registry.add_client(self)
        self.writer.push(reply)
        for prep in prepared:
            await self._activate(prep)
        node.metrics.connect(self.transport.name)
        if node.events is not None:
            node.events.connected(self)
        log.info("connected", extra=self._log_extra())
        await node.personal.claim(node, self)

    async def connect_unidirectional(self, params: dict[str, Any]) -> None:
        """The one command of a unidirectional client (its connect request, from the URL or the body).

        The client cannot read replies: the result goes out as a ``connect`` push, and a refusal as a
        disconnect (Centrifuge's mapping: 109/110 -> 3005, 111 -> 3013, 103 -> 3507, others -> 3004; ours
        also 101 -> 3500 and 107 -> 3501)."""
        self.node.metrics.command("connect")
        try:
            await self._cmd_connect(0, params)
        except ClientError as exc:
            self.node.metrics.command_error("connect", exc.code)
            log_limited(
                log, logging.INFO, "connect failed: %d %s", exc.code, exc.message, extra=self._log_extra()
            )
            self.disconnect(_UNI_DISCONNECTS.get(exc.code, codes.SERVER_ERROR).error())
        except Disconnect as exc:
            self.node.metrics.command_error("connect", exc.code)
            self.disconnect(exc)
        except (BrokerUnavailable, PresenceUnavailable) as exc:
            # Redis is away (as for a bidirectional command): 3004, the client reconnects; no traceback.
            log_limited(
                log, logging.WARNING, "connect failed: %s", exc or type(exc).__name__, extra=self._log_extra()
            )
            self.disconnect(codes.SERVER_ERROR.error())
        except Exception:
            log.exception("connect crashed", extra=self._log_extra())
            self.disconnect(codes.SERVER_ERROR.error())

    def _resume_position(self, name: str) -> dict[str, Any]:
        """The recovery request of a resuming stream's channel (``resume_point``): from its position in the
        id, or, when the id cannot say (a damaged id, or a partial one without it), from a position no
        stream has, so the channel answers ``recovered: false`` instead of a silent gap."""
        found = None if self.resume_point is None else self.resume_point.position(name)
        return {} if found is None else {"recover": True, "offset": found[0], "epoch": found[1]}

    def _verify_connect_token(self, token: str) -> ConnectClaims:
        try:
            return self.node.verifier.verify_connect(token)
        except TokenExpired:
            raise codes.error_token_expired() from None
        except TokenInvalid as exc:
            log_limited(log, logging.WARNING, "invalid connection token: %s", exc, extra=self._log_extra())
            raise codes.INVALID_TOKEN.error() from None

    async def _cmd_refresh(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        claims = self._verify_connect_token(_str(p, "token"))
        if (claims.user, claims.tenant) != self._identity or claims.bot != self.bot:
            log_limited(log, logging.WARNING, "refresh token for another user", extra=self._log_extra())
            raise codes.INVALID_TOKEN.error()
        self.expires_at = float(claims.exp or 0)
        self.node.clock_session(self)
        result: dict[str, Any] = {"client": self.id, "version": self.node.version}
        if self.expires_at:
            result["expires"] = True
            result["ttl"] = _ttl(self.expires_at)
        return result

    # ---------------------------------------------------------------- subscriptions

    async def _cmd_subscribe(self, cmd_id: int, p: dict[str, Any]) -> None:
        name = _str(p, "channel")
        node = self.node
        try:
            channel = parse_channel(name)
        except InvalidChannel:
            raise codes.error_bad_request() from None
        try:
            opts = node.namespaces.options_for(channel)
        except UnknownNamespace:
            raise codes.error_unknown_channel() from None
        if name in self.subs:
            raise codes.error_already_subscribed()
        if len(self.subs) >= channel_limit(node.config, self.bot):
            raise codes.error_limit_exceeded()
        chan_info: bytes | None = None
        expires_at = 0.0
        reply_data: Any = None
        token = p.get("token", "")
        if not isinstance(token, str):
            raise codes.error_bad_request()
        if token:
            claims = self._verify_subscription_token(token, name)
            chan_info = claims.info
            expires_at = float(claims.exp or 0)
        else:
            allowed = self._may_subscribe(channel, opts)
            hook = node.hooks.on_subscribe
            if hook is not None:
                ctx = SubscribeContext(self.id, self.user, self.tenant, name, self._data(p), allowed)
                res = await hook(ctx)
                if res is not None:
                    allowed = True
                    chan_info = orjson.dumps(res.info) if res.info is not None else None
                    reply_data = res.data
            if not allowed:
                raise codes.error_permission_denied()
            if name in self.subs:  # subscribed meanwhile by a concurrent command
                raise codes.error_already_subscribed()
        flag = p.get("flag", 0)
        prep = await self._prepare(
            channel,
            opts,
            p,
            chan_info=chan_info,
            expires_at=expires_at,
            server_side=False,
            reject_unrecovered=isinstance(flag, int) and bool(flag & FLAG_REJECT_UNRECOVERED),
        )
        try:
            if reply_data is not None:
                prep.result["data"] = self.codec.Fragment(orjson.dumps(reply_data))
            reply = self.codec.encode_reply(cmd_id, "subscribe", prep.result)
        except BaseException:
            await self._rollback_async(prep.sub)  # nothing stays half set up (the buffer in pending)
            raise
        # The reply must precede every push of the channel: write it, then join the fan-out.
        self.writer.push(reply)
        await self._activate(prep)
        return None

    def _verify_subscription_token(self, token: str, channel: str) -> SubscriptionClaims:
        """A subscription token good for this channel, this user and this tenant, or 109/103."""
        try:
            claims = self.node.verifier.verify_subscription(token)
        except TokenExpired:
            raise codes.error_token_expired() from None
        except TokenInvalid as exc:
            log_limited(log, logging.WARNING, "invalid subscription token: %s", exc, extra=self._log_extra())
            raise codes.error_permission_denied() from None
        if (claims.channel, claims.user, claims.tenant) != (channel, self.user, self.tenant):
            log_limited(
                log,
                logging.WARNING,
                "subscription token for another channel, user or tenant",
                extra=self._log_extra(),
            )
            raise codes.error_permission_denied()
        return claims

    def _may_subscribe(self, channel: ChannelName, opts: NamespaceOptions) -> bool:
        if channel.private:
            return False
        if channel.allowed_users is not None:
            return opts.allow_user_limited_channels and bool(self.user) and channel.user_allowed(self.user)
        if not self.user:
            return opts.allow_subscribe_for_client and opts.allow_subscribe_for_anonymous
        return opts.allow_subscribe_for_client

    async def _prepare(
        self,
        channel: ChannelName,
        opts: NamespaceOptions,
        req: dict[str, Any],
        *,
        chan_info: bytes | None,
        expires_at: float,
        server_side: bool,
        reject_unrecovered: bool,
    ) -> _Prepared:
        """Set a subscription up to the point where only its activation is left.

        From here until ``_activate`` publications of the channel are buffered for this client, so the
        history read here and the live stream after it join without a gap or a duplicate.
        """
        node = self.node
        key = (self.tenant, channel.raw)
        history = opts.history_enabled
        cache = opts.force_recovery_mode == "cache"
        recoverable = history and (
            cache or opts.force_recovery or req.get("recoverable") is True or server_side
        )
        positioned = history and (opts.force_positioning or req.get("positioned") is True or recoverable)
        push_join_leave = opts.join_leave and (opts.force_push_join_leave or req.get("join_leave") is True)
        plan = self._feed_plan(opts, req)
        conflated = plan is not None and plan.rate > 0
        base: FeedItem | None = None
        info = ClientInfo(self.user, self.id, self.conn_info, chan_info)
        sub = Subscription(
            channel, key, opts, info, recoverable, positioned, push_join_leave, expires_at, server_side
        )
        self.subs[channel.raw] = sub
        if expires_at:
            node.clock_session(self)
        node.registry.begin_subscribe(key, self)
        try:
            await node.acquire_channel(key)
            await node.occupy(key)
        except BaseException:
            self._rollback(sub)
            await node.release_channel(key)
            raise
        result: dict[str, Any] = {}
        offset = 0
        recovered: list[Publication] = []
        snapshot: list[Publication] = []
        adding = False
        """The presence add was sent (it may have landed even if it failed)."""
        try:
            if positioned:
                # Cache mode: every subscribe recovers (Centrifuge's AutoCacheRecover), so a dashboard shows
                # the latest values at once whether or not its SDK can ask (centrifuge-js ``since: {}``).
                want_recover = req.get("recover") is True or cache
                if want_recover:
                    since = StreamPosition(_int(req.get("offset", 0), "offset"), _str(req, "epoch", False))
                    if cache:
                        rec = await self._recover_cache(key, since, opts, conflated=conflated)
                    else:
                        rec = await self._recover(key, since, opts)
                    result["was_recovering"] = True
                    result["recovered"] = rec.recovered
                    if rec.publications and (self.resume_as_events or conflated):
                        recovered = rec.publications
                    elif rec.publications and plan is not None and plan.delta:
                        result["publications"], base = delta_chain(self.fmt, rec.publications)
                    elif rec.publications:
                        shown = [self._shown(channel.raw, pub) for pub in rec.publications]
                        result["publications"] = [self.codec.publication_dict(pub) for pub in shown]
                    if not rec.recovered:
                        node.metrics.recovery(False)
                        if reject_unrecovered and not cache:  # as Centrifuge: the flag is stream recovery's
                            raise codes.error_unrecoverable_position()
                    else:
                        node.metrics.recovery(True)
                    top = rec.position
                else:
                    top = (await node.broker.history(key, limit=0, meta_ttl=opts.history_meta_ttl)).position
                # Publications up to ``top`` may still be in flight to this node (the read went over
                # another connection): after the barrier they have reached the pending buffer, where
                # ``after_position`` drops them, so none reaches this subscriber twice.
                await node.broker.barrier(key)
                if node.positions.track(key, top):
                    node.insufficient_state(key)  # the node missed some: its other subscribers resubscribe
                offset = top.offset
                result["epoch"] = top.epoch
                if self.events is not None and recoverable:
                    start = since.offset if recovered else top.offset
                    self.events.set_position(channel.raw, start, top.epoch)
                if top.offset:
                    result["offset"] = top.offset
                if recoverable:
                    result["recoverable"] = True
                result["positioned"] = True
            if opts.streams:  # read after the history, while live chunks are buffered: see hub.streams
                snapshot = await node.open_streams.snapshot(key)
            if self._abandoned(sub):
                raise codes.error_internal()
            if opts.presence:
                adding = True
                await node.presence.add(key, info)
                if self._abandoned(sub):
                    raise codes.error_internal()  # the rollback takes the presence entry out again
        except BaseException:
            await self._rollback_async(sub, presence=adding)
            raise
        if expires_at:
            result["expires"] = True
            result["ttl"] = _ttl(expires_at)
        if plan is not None and plan.delta:
            result["delta"] = True
        return _Prepared(sub, result, offset, recovered, plan, base, snapshot)

    def _feed_plan(self, opts: NamespaceOptions, req: dict[str, Any]) -> _FeedPlan | None:
        """Delta compression (the request's ``delta``, granted where the namespace's
        ``allowed_delta_types`` has it, over JSON or Protobuf) and conflation (the namespace's rate, or
        the lower ``max_rate`` the request's ``data`` asks for); None for a plain subscription. An unknown
        delta type ends the connection (3501), as Centrifuge does; a bad ``max_rate`` is refused (107)."""
        asked = req.get("delta", "")
        delta = False
        if asked != "":
            if not isinstance(asked, str) or asked not in DELTA_TYPES:
                log_limited(log, logging.WARNING, "unknown delta type %.40r", asked, extra=self._log_extra())
                raise codes.BAD_REQUEST.error()
            delta = asked in opts.allowed_delta_types and self.fmt in DELTA_FORMATS
        rate = 0.0
        if opts.conflation:
            data = req.get("data")
            if self.fmt == PROTOBUF and data is not None:
                try:
                    data = orjson.loads(data)
                except (orjson.JSONDecodeError, TypeError):
                    data = None  # the application's own bytes: they ask for no rate
            try:
                rate = granted_rate(data, opts.max_rate)
            except BadRate as exc:
                refusal = codes.error_bad_request()
                raise ClientError(refusal.code, f"{refusal.message}: {exc}") from None
        return _FeedPlan(delta, rate) if delta or rate else None

    async def _recover_cache(
        self, key: ChannelKey, since: StreamPosition, opts: NamespaceOptions, *, conflated: bool
    ) -> Recovery:
        """Cache recovery (``force_recovery_mode = "cache"``): the latest publication of each key, in
        offset order, ``recovered: true``; ``recovered: false`` when there is none. A subscriber already
        at the stream's top gets nothing (it holds the latest), except a conflated one of a keyed channel:
        its position can be past another key's publication it was not sent. Not conflated, more keys than
        ``client_recovery_max_publication_limit`` are not recovered (the reply would outgrow the queue);
        a conflated subscription takes any number (its slots send them at its rate)."""
        latest = await self.node.broker.latest(key, meta_ttl=opts.history_meta_ttl)
        top, pubs = latest.position, latest.publications
        at_top = 0 < since.offset == top.offset and since.epoch == top.epoch
        if not pubs or (at_top and not (conflated and opts.key_field)):
            return Recovery([], at_top, top)
        if not conflated and len(pubs) > self.node.config.client_recovery_max_publication_limit:
            return Recovery([], False, top)
        return Recovery(pubs, True, top) if conflated else self._within_room(Recovery(pubs, True, top))

    async def _recover(self, key: ChannelKey, since: StreamPosition, opts: NamespaceOptions) -> Recovery:
        broker = self.node.broker
        # At most client_recovery_max_publication_limit publications: a longer gap is not recovered (the
        # reply would be too large for the client's queue, and it would retry the same recovery forever).
        limit = self.node.config.client_recovery_max_publication_limit
        try:
            hist = await broker.history(key, since=since, limit=limit, meta_ttl=opts.history_meta_ttl)
        except UnrecoverablePosition:
            top = (await broker.history(key, limit=0, meta_ttl=opts.history_meta_ttl)).position
            return recover(since, None, top)
        return self._within_room(recover(since, hist.publications, hist.position))

    def _within_room(self, rec: Recovery) -> Recovery:
        """``rec``, or ``recovered: false`` when its publications would not fit the room left under the
        write bound (``recovery_room``): a reply the writer refuses would close the client with 3008, and
        it would come back for the same recovery, forever."""
        if not rec.publications:
            return rec
        size = publications_size(rec.publications)
        room = recovery_room(self.writer.max_bytes, self.writer.backlog() + self._recovering)
        if size > room:
            log_limited(
                log,
                logging.WARNING,
                "recovery of %d publications (%d bytes) over the %d bytes left under client_queue_max_size:"
                " not recovered",
                len(rec.publications),
                size,
                room,
                extra=self._log_extra(),
            )
            return Recovery([], False, rec.position)
        self._recovering += size
        return rec

    def _abandoned(self, sub: Subscription) -> bool:
        """The connection ended, or the subscription was removed, while it was being set up."""
        return self._closing or self.subs.get(sub.channel.raw) is not sub

    def _rollback(self, sub: Subscription) -> None:
        if self.subs.get(sub.channel.raw) is sub:
            del self.subs[sub.channel.raw]
            if self.events is not None:
                self.events.forget(sub.channel.raw)
        self.node.registry.cancel_subscribe(sub.key, self)

    async def _rollback_async(self, sub: Subscription, *, presence: bool = True) -> None:
        """Undo a subscription being set up, and its presence entry if ``presence`` (its add was sent).
        With Redis away this is best effort, as leaving is (``_after_detach``): a warning, and the entry
        expires by itself; anything else is a bug (an error with its traceback). Issue 15: in a connect
        storm every subscribe refused for a Redis timeout logged an ERROR with a traceback here, and waited
        another Redis timeout for a remove of an entry it had never added."""
        self._rollback(sub)
        try:
            # if that was the node's last subscriber of the channel
            await self._best_effort(self.node.release_channel(sub.key), "broker unsubscribe")
        except Exception:
            log.exception("broker unsubscribe failed during rollback", extra=self._log_extra())
        if presence and sub.options.presence:
            try:
                await self._best_effort(self.node.presence.remove(sub.key, self.id), "presence remove")
            except Exception:
                log.exception("presence remove failed during rollback", extra=self._log_extra())

    async def _activate(self, prep: _Prepared) -> None:
        """Join the fan-out (synchronously, right after the reply was written) and announce the join."""
        sub = prep.sub
        self._recovering = 0  # the reply holding the recovered publications is in the writer now
        if self.state is State.CLOSED or self.subs.get(sub.channel.raw) is not sub:
            return
        name = sub.channel.raw
        node = self.node
        push: Any = self.writer.push if self.fmt != JSON_EVENTS else partial(self.deliver_event, name)
        plan = prep.plan
        feed: FeedSubscription | None = None
        if plan is not None:
            memo = node.registry.memo(sub.key) if plan.delta else None
            feed = sub.feed = push = FeedSubscription(self, name, delta=plan.delta, memo=memo)
            feed.base = prep.base
            if plan.rate:
                feed.conflate(plan.rate, sub.options.max_keys, node.slot_clock)
        if sub.missed:
            # What it buffered has a gap: nothing of it goes out; it resubscribes and recovers.
            node.registry.finish_subscribe(sub.key, self, push, feed=feed is not None)
            self.insufficient_state(name)
            return
        sub.active = True
        buffered = node.registry.finish_subscribe(
            sub.key, self, push, join_leave=sub.push_join_leave, feed=feed is not None
        )
        live = after_position(buffered, prep.offset)
        pubs = [*prep.recovered, *prep.snapshot, *after_snapshot(prep.snapshot, live)]
        if feed is not None:
            now = node.slot_clock.now()
            for pub in pubs:
                feed.offer(FeedItem(pub), now)
        else:
            for pub in pubs:
                self.push_publication(name, pub)
        cache = sub.options.force_recovery_mode == "cache"  # there, not recovered means "no value yet"
        if self.events is not None and prep.result.get("recovered") is False and not cache:
            notice = {"channel": name, "epoch": prep.result["epoch"]}
            self.events.push_event(b"unrecovered", orjson.dumps(notice))
        if sub.options.join_leave:
            # after the reply: a join that cannot be announced does not undo the subscription
            await self._best_effort(self.node.broker.publish_join(sub.key, sub.info), "join")

    async def _cmd_unsubscribe(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        name = _str(p, "channel")
        sub = self.subs.get(name)
        if sub is not None:
            await self._remove_subscription(sub)
        return {}

    async def _remove_subscription(self, sub: Subscription) -> None:
        """Leave a channel. Only the caller that takes ``sub`` out of ``subs`` does the rest, once."""
        if self._detach(sub):
            await self._after_detach(sub)

    def _detach(self, sub: Subscription) -> bool:
        """The synchronous half of leaving: out of ``subs`` and the fan-out. False if someone else did."""
        if self.subs.get(sub.channel.raw) is not sub:
            return False
        del self.subs[sub.channel.raw]
        if self.events is not None:
            self.events.forget(sub.channel.raw)
        self.node.registry.remove_subscriber(sub.key, self)
        if sub.feed is not None:
            sub.feed.close()
        return True

    async def _after_detach(self, sub: Subscription) -> None:
        """What leaving tells the backends. Each step is attempted even if one before failed: with Redis
        away the client has left all the same (its presence entry expires, its leave is not announced)."""
        node = self.node
        await self._best_effort(node.release_channel(sub.key), "broker unsubscribe")
        if sub.options.presence:
            await self._best_effort(node.presence.remove(sub.key, self.id), "presence remove")
        if sub.options.join_leave and sub.active:
            await self._best_effort(node.broker.publish_leave(sub.key, sub.info), "leave")

    async def _best_effort(self, step: Awaitable[None], what: str) -> None:
        try:
            await step
        except (BrokerUnavailable, PresenceUnavailable) as exc:
            log_limited(
                log,
                logging.WARNING,
                "%s skipped: %s",
                what,
                exc or type(exc).__name__,
                extra=self._log_extra(),
            )

    async def _cmd_sub_refresh(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        name = _str(p, "channel")
        sub = self.subs.get(name)
        if sub is None:
            raise codes.error_permission_denied()
        claims = self._verify_subscription_token(_str(p, "token"), name)
        sub.expires_at = float(claims.exp or 0)
        self.node.clock_session(self)
        result: dict[str, Any] = {}
        if sub.expires_at:
            result["expires"] = True
            result["ttl"] = _ttl(sub.expires_at)
        return result

    # ---------------------------------------------------------------- channel operations

    def _channel(self, p: dict[str, Any]) -> tuple[ChannelName, NamespaceOptions, ChannelKey]:
        name = _str(p, "channel")
        try:
            channel = parse_channel(name)
        except InvalidChannel:
            raise codes.error_bad_request() from None
        try:
            opts = self.node.namespaces.options_for(channel)
        except UnknownNamespace:
            raise codes.error_unknown_channel() from None
        return channel, opts, (self.tenant, name)

    def _may_reach(self, channel: ChannelName, opts: NamespaceOptions) -> bool:
        """Private (``$name``) and user-limited (``name#alice,bob``) channels are for those who may subscribe
        to them: ``allow_{publish,history,presence}_for_client`` opens them only to a connection subscribed
        to the channel, or (user-limited, not private) one of the users it lists. Other channels: True."""
        if not channel.private and channel.allowed_users is None:
            return True
        return channel.raw in self.subs or self._may_subscribe(channel, opts)

    def _permitted(self, channel: str, for_subscriber: bool, for_client: bool, for_anonymous: bool) -> bool:
        if for_subscriber and channel in self.subs:
            return True
        if not for_client:
            return False
        return bool(self.user) or for_anonymous

    async def _cmd_publish(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any] | None:
        if "data" not in p:
            raise codes.error_bad_request()
        channel, opts, _ = self._guarded(p, "publish")
        # A binary namespace's data is bytes for everyone (hooks too): raw from Protobuf, base64 from JSON.
        data = self._binary_data(p["data"]) if opts.binary else self._data(p)
        hook = self.node.hooks.on_publish
        if hook is not None:
            res = await hook(PublishContext(self.id, self.user, self.tenant, channel.raw, data))
            if res is not None and res.replaces_data:
                data = self._binary_data(res.data) if opts.binary else res.data
        sub = self.subs.get(channel.raw)
        info = sub.info if sub is not None else ClientInfo(self.user, self.id, self.conn_info)
        if opts.binary:
            encoded = data
        else:
            try:
                encoded = codec_json.data_bytes(data)
            except codec_json.DecodeError:
                raise codes.error_bad_request() from None
        if self.node.broker.pipelined and cmd_id:
            await self._pipeline_publish(cmd_id, channel, opts, encoded, info)
            return None  # answered in its place once the broker has (``_published``)
        await self.node.publish_to(self.tenant, channel, opts, encoded, info=info)
        return {}

    async def _pipeline_publish(
        self, cmd_id: int, channel: ChannelName, opts: NamespaceOptions, data: bytes, info: ClientInfo
    ) -> None:
        """Start a publish and go on with the next command without waiting for the broker (each publish
        would otherwise cost the session a Redis round trip, and a publisher could not go faster than one
        publication per round trip).

        Order: the broker accepts publishes in the order they start (``Broker.pipelined``), and they start
        in command order (tasks run their first step in creation order, and ``Node.publish_to`` hands the
        publication to the broker before its first suspension): one client's publications of a channel are
        accepted, delivered and numbered in the order it sent them, whatever fails in between (a failed one
        is answered with its error and takes no place). Replies go out in command order (``_reply``), and
        any other command waits until the publishes before it are answered (``handle_frame``), so a history
        or presence read after a publish sees it, as it would had the session awaited each.

        Bounds: PIPELINE_MAX publishes and client_max_message_size bytes of their data in flight; past
        either, this waits for the oldest.
        """
        inflight, size = self._inflight, len(data)
        if inflight is _NO_INFLIGHT:
            inflight = self._inflight = collections.deque()
        limit = self.node.config.client_max_message_size
        while inflight and (len(inflight) >= PIPELINE_MAX or self._inflight_bytes + size > limit):
            await self._settle_one()
        if self._closing:
            return  # the connection is going: nothing to answer, nothing started on its behalf
        task = asyncio.get_running_loop().create_task(
            self.node.publish_to(self.tenant, channel, opts, data, info=info)
        )
        entry = _Reply(task=task, size=size)
        inflight.append(entry)
        self._inflight_bytes += size
        task.add_done_callback(partial(self._published, entry, cmd_id))

    def _published(self, entry: _Reply, cmd_id: int, task: asyncio.Task[Any]) -> None:
        """A pipelined publish is done: its reply takes its place; the replies now at the head go out."""
        self._inflight_bytes -= entry.size
        if task.cancelled():  # the loop is going away: the publish may or may not have been accepted
            entry.frame = self.codec.encode_error(cmd_id, 100, "internal server error", True)
        elif (exc := task.exception()) is None:
            entry.frame = self.codec.encode_reply(cmd_id, "publish", {})
        elif isinstance(exc, Disconnect):
            entry.frame = b""
            self.node.metrics.command_error("publish", exc.code)
            self.disconnect(exc)
        else:
            entry.frame = self._failure("publish", cmd_id, exc)
        inflight = self._inflight
        while inflight and inflight[0].frame is not None:
            frame = inflight.popleft().frame
            if frame:
                self.writer.push(frame)
        if not inflight and not self._in_frame:
            self._answered()

    async def _settle_one(self) -> None:
        """Wait until the oldest publish in flight is answered (with the replies behind it, up to the next
        one in flight)."""
        head = self._inflight[0].task
        assert head is not None  # a ready reply never stays at the head
        # its done callback (``_published``) was added first, so it has run when this wait returns
        await asyncio.wait((head,))

    async def _settle(self) -> None:
        """Wait until every publish in flight is answered."""
        while self._inflight:
            await self._settle_one()

    def _guarded(self, p: dict[str, Any], feature: str) -> tuple[ChannelName, NamespaceOptions, ChannelKey]:
        """The channel of a publish/presence/history command, checked against its namespace: the feature is
        on (108 if not), a private or user-limited channel is within this connection's reach
        (``_may_reach``, 103 if not), and Centrifugo's ``allow_<feature>_for_{subscriber,client,anonymous}``
        let this connection use it (103 if not)."""
        channel, opts, key = self._channel(p)
        if (feature == "presence" and not opts.presence) or (
            feature == "history" and not opts.history_enabled
        ):
            raise codes.error_not_available()
        if not self._may_reach(channel, opts):
            raise codes.error_permission_denied()
        if not self._permitted(
            channel.raw,
            getattr(opts, f"allow_{feature}_for_subscriber"),
            getattr(opts, f"allow_{feature}_for_client"),
            getattr(opts, f"allow_{feature}_for_anonymous"),
        ):
            raise codes.error_permission_denied()
        return channel, opts, key

    async def _cmd_presence(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        _, _, key = self._guarded(p, "presence")
        members = await self.node.presence.get(key)
        return {"presence": {cid: self.codec.info_dict(info) for cid, info in members.items()}}

    async def _cmd_presence_stats(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        _, _, key = self._guarded(p, "presence")
        stats = await self.node.presence.stats(key)
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _cmd_history(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any]:
        _, opts, key = self._guarded(p, "history")
        limit = _int(p.get("limit", 0), "limit")
        limit = HISTORY_MAX_LIMIT if limit < 0 else min(limit, HISTORY_MAX_LIMIT)
        reverse = p.get("reverse", False) is True
        since: StreamPosition | None = None
        raw_since = p.get("since")
        if raw_since is not None:
            if not isinstance(raw_since, dict):
                raise codes.error_bad_request()
            since = StreamPosition(
                _int(raw_since.get("offset", 0), "offset"), _str(raw_since, "epoch", False)
            )
        try:
            hist = await self.node.broker.history(
                key, since=since, limit=limit, reverse=reverse, meta_ttl=opts.history_meta_ttl
            )
        except UnrecoverablePosition:
            raise codes.error_unrecoverable_position() from None
        out: dict[str, Any] = {"epoch": hist.position.epoch}
        if hist.position.offset:
            out["offset"] = hist.position.offset
        if hist.publications:
            shown = [self._shown(key[1], pub) for pub in hist.publications]
            out["publications"] = [self.codec.publication_dict(pub) for pub in shown]
        return out

    async def _cmd_rpc(self, cmd_id: int, p: dict[str, Any]) -> dict[str, Any] | None:
        method = p.get("method", "")
        if not isinstance(method, str):
            raise codes.error_bad_request()
        handler = self.node.builtin_rpc.get(method) or self.node.hooks.rpc.get(method)
        if handler is None:
            bots = self.node.bots
            if bots is not None and bots.serves(method):
                bots.dispatch(self, cmd_id, method, self._data(p))
                return None  # answered when its bot replies (``answer_later``)
            raise codes.error_method_not_found()
        value = await handler(RPCContext(self.id, self.user, self.tenant, method, self._data(p)))
        if value is None:
            return {}
        return {"data": self.codec.Fragment(orjson.dumps(value))}

    def answer_later(
        self, cmd_id: int, method: str, work: Coroutine[Any, Any, bytes | None]
    ) -> asyncio.Task[bytes | None]:
        """Answer command ``cmd_id`` when ``work`` is done (its JSON result as the reply's data) and go on
        reading meanwhile: a call to a bot may wait for seconds, and the session's other commands do not
        wait behind it. The reply goes out when it is ready, out of command order (the protocol matches
        replies by id). Work still running when the connection ends is cancelled. Whoever calls this
        bounds how much work a connection may start (``hub.bots``: per user); it learns that the work is
        over from the task returned (a task cancelled before it started never runs its ``finally``)."""
        task = asyncio.get_running_loop().create_task(work)
        if self._later is None:
            self._later = set()
        self._later.add(task)
        task.add_done_callback(partial(self._answered_later, cmd_id, method))
        return task

    def _answered_later(self, cmd_id: int, method: str, task: asyncio.Task[bytes | None]) -> None:
        if self._later is not None:
            self._later.discard(task)
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if exc is None:
            value = task.result()
            result = {} if value is None else {"data": self.codec.Fragment(value)}
            self._reply(self.codec.encode_reply(cmd_id, method, result))
        elif isinstance(exc, Disconnect):
            self.node.metrics.command_error(method, exc.code)
            self.disconnect(exc)
        else:
            self._reply(self._failure(method, cmd_id, exc))

    async def _cmd_send(self, cmd_id: int, p: dict[str, Any]) -> None:
        hook = self.node.hooks.on_message
        if hook is None:
            log_limited(log, logging.INFO, "send without an on_message hook", extra=self._log_extra())
            raise codes.NOT_AVAILABLE.error()
        await hook(MessageContext(self.id, self.user, self.tenant, self._data(p)))
        return None

    # ---------------------------------------------------------------- output and end

    def push_publication(self, channel: str, pub: Publication) -> None:
        """One publication outside the fan-out (recovery, the subscription's buffer)."""
        frame = self.codec.encode_publication_push(channel, self._shown(channel, pub))
        if self.events is not None:
            self.deliver_event(channel, frame, pub)
        else:
            self.writer.push(frame)

    def _shown(self, channel: str, pub: Publication) -> Publication:
        """``pub`` as this connection's format shows it: a binary namespace's data as base64 to JSON."""
        if self.fmt != PROTOBUF and self.node.namespaces.binary(channel):
            return json_view(pub)
        return pub

    def deliver_event(self, channel: str, frame: bytes, pub: Publication | None = None) -> None:
        """The fan-out's push for an SSE stream: the publication moves the resume point first."""
        events = self.events
        assert events is not None
        if pub is not None and pub.offset:
            events.advance(channel, pub.offset)
        events.push(frame)

    def push_message(self, data: bytes) -> None:
        """An asynchronous message from the server (the ``message`` push)."""
        self.writer.push(self.codec.encode({"push": {"message": {"data": self.codec.Fragment(data)}}}))

    async def server_subscribe(self, name: str) -> bool:
        """Subscribe this connection to ``name`` from the server side (the ``subscribe`` push). A connection
        at its ``client_channel_limit`` is left as it is (as Centrifuge's ``Client.Subscribe`` refuses it)."""
        if self.state is not State.CONNECTED or self._closing or name in self.subs:
            return False
        limit = channel_limit(self.node.config, self.bot)
        if len(self.subs) >= limit:
            log_limited(
                log,
                logging.WARNING,
                "server-side subscribe to %r refused: client_channel_limit %d reached",
                name,
                limit,
                extra=self._log_extra(),
            )
            return False
        channel = parse_channel(name)
        opts = self.node.namespaces.options_for(channel)
        prep = await self._prepare(
            channel, opts, {}, chan_info=None, expires_at=0.0, server_side=True, reject_unrecovered=False
        )
        self.writer.push(self.codec.encode_push(name, "subscribe", prep.result))
        await self._activate(prep)
        return True

    async def server_unsubscribe(
        self, name: str, code: int = 2000, reason: str = "server unsubscribe"
    ) -> bool:
        """Unsubscribe from the server side (the ``unsubscribe`` push). Codes below 2500 are final for the
        client; 2500 and above make it resubscribe."""
        sub = self.subs.get(name)
        if sub is None:
            return False
        await self._remove_subscription(sub)
        self.writer.push(self.codec.encode_push(name, "unsubscribe", {"code": code, "reason": reason}))
        return True

    def insufficient_state(self, name: str) -> None:
        """The node missed publications of ``name``: a positioned subscription must resubscribe and
        recover (unsubscribe push 2500, as Centrifuge sends); a client that cannot resubscribe by itself
        (unidirectional) is disconnected with 3010 and recovers on reconnect. Synchronous: the client is
        out of the fan-out before the next publication is delivered."""
        sub = self.subs.get(name)
        if sub is None or not sub.positioned:
            return
        if self.unidirectional:
            self.disconnect(codes.INSUFFICIENT_STATE.error())
            return
        if self._detach(sub):
            body = {"code": codes.UNSUBSCRIBE_INSUFFICIENT, "reason": "insufficient state"}
            self.writer.push(self.codec.encode_push(name, "unsubscribe", body))
            task = asyncio.get_running_loop().create_task(self._after_detach(sub))
            if self._leaving is None:
                self._leaving = set()
            self._leaving.add(task)
            task.add_done_callback(self._left)

    def _left(self, task: asyncio.Task[None]) -> None:
        if self._leaving is not None:
            self._leaving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("leaving a channel failed: %r", task.exception(), extra=self._log_extra())

    def missed_while_pending(self, name: str) -> None:
        """The node missed publications of ``name`` while this connection's subscription was being set up."""
        sub = self.subs.get(name)
        if sub is not None and sub.positioned and not sub.active:
            sub.missed = True

    def send_ping(self, now: float) -> None:
        self.last_ping = now
        self.awaiting_pong = not self.unidirectional  # a unidirectional client cannot answer
        self.writer.push(self.codec.PING)

    def _on_write_error(self) -> None:
        self.disconnect(codes.WRITE_ERROR.error(), flush=False)

    def _on_slow(self) -> None:
        log_limited(
            log,
            logging.WARNING,
            "slow consumer: outbound buffer over %d bytes",
            self.writer.max_bytes,
            extra=self._log_extra(),
        )
        self.node.metrics.slow_disconnect()
        self.disconnect(codes.SLOW.error(), flush=False)

    def disconnect_gracefully(self, exc: Disconnect) -> None:
        """Disconnect now, or, while a frame is being handled, as soon as its command in progress has
        finished and written its reply (the frame's remaining commands are dropped)."""
        if self.busy and not self._closing:
            self._graceful = exc
        else:
            self.disconnect(exc)

    def disconnect(self, exc: Disconnect, *, flush: bool = True) -> None:
        """End the connection with ``exc``'s code. Idempotent; cleanup runs in ``closed``."""
        if self._closing:
            return
        self._closing = True
        self._ended = exc
        self.node.metrics.disconnect(exc.code)
        log.info("disconnect %d %s", exc.code, exc.reason, extra=self._log_extra())
        if flush:
            if (self.unidirectional or self.emulation) and exc.code != codes.CONNECTION_CLOSED.code:
                # A stream has no close frame: the code travels as a disconnect push (as Centrifuge does).
                disconnect = {"code": exc.code, "reason": exc.reason}
                self.writer.push(self.codec.encode({"push": {"disconnect": disconnect}}))
            self.writer.close()
        self.transport.close(exc.code, exc.reason)

    async def closed(self) -> None:
        """The transport is gone: leave every channel and forget the connection."""
        if self.state is State.CLOSED:
            return
        self._closing = True
        self.writer.discard()
        was_connected = self.state is State.CONNECTED
        self._move(State.CLOSED)
        if self._inflight:  # the session ends once its publishes are settled, as when it awaited each
            await asyncio.wait([e.task for e in self._inflight if e.task is not None])
        node = self.node
        node.registry.remove_client(self)
        for task in self._later or ():
            task.cancel()
        if self.bot and node.bots is not None:
            node.bots.gone(self)  # its callers fail now, not at their timeout
        for sub in list(self.subs.values()):
            try:
                await self._remove_subscription(sub)
            except Exception:
                log.exception("cleanup of %s failed", sub.channel.raw, extra=self._log_extra())
        self.subs.clear()
        if self._leaving:  # the session has ended only once every channel it left is cleaned up
            await asyncio.gather(*self._leaving, return_exceptions=True)
        if was_connected and node.events is not None:
            ended = self._ended or codes.CONNECTION_CLOSED.error()
            node.events.disconnected(self, ended.code, ended.reason)
