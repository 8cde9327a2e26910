"""The server API: backends, bots and agents act on the hub over HTTP, as with Centrifugo's HTTP API.

Endpoints (all ``POST``, JSON bodies)::

    /api/<method>  the method's params -> {"result": {...}} | {"error": {...}}
    /api/batch     {"commands": [{"<method>": {params}}, ...], "parallel"?: bool}
                   -> {"replies": [{"<method>": {...}} | {"error": {...}}, ...]}
    /api           the /api/batch body, or Centrifugo's older form: {"method": ..., "params": {...}}
                   objects, one per line -> one {"result": ...} | {"error": ...} per line, in order

Methods: publish, broadcast, subscribe, unsubscribe, disconnect, refresh, presence, presence_stats, history,
history_remove, channels, info (and batch); and those other parts register (``register``: the inbox's,
``hub.inbox.api``).

Policy, as Centrifugo's:

- a call that fails answers HTTP 200 with ``{"error": {"code", "message"}}``: 100 internal, 102 unknown
  channel (namespace), 103 permission denied (another tenant), 104 method not found, 107 bad request
  (missing or mistyped field, bad channel name), 108 not available (no history/presence in the namespace),
  112 unrecoverable position;
- a body that is not JSON (or not an object) is HTTP 400 with error 107; a body over ``api_max_body_size``
  is HTTP 413; a missing or wrong key is HTTP 401; with no key configured (outside development mode) the
  API does not exist: HTTP 404. None of them touches the node; each is logged;
- a client that goes away before its body ended is one INFO line, and every line a caller can make the
  node repeat (a refused key, a bad body, a failed call) is rate-limited (``hub.logs.log_limited``);
- a ``parallel`` batch runs at most ``api_batch_max_parallel`` of its commands at once (a 1 MiB body holds
  some 30,000 of them).

Keys (``X-API-Key: <key>`` or ``Authorization: apikey <key>``) are compared in constant time. An unbound key
acts on the tenant a call names in its ``tenant`` field (default ``""``); a key bound to a tenant confines
every call to that tenant: naming another is 103, and ``channels``/``info`` count only its share.

Across nodes (``hub.control``): subscribe, unsubscribe, disconnect and refresh act on the user's connections
on every node; ``info`` lists every live node and ``channels`` sums every node's subscribers. When the other
nodes cannot be reached (the control channel's Redis is down, a node does not answer in time), such a call
answers 100, never a success it cannot vouch for.

The request handling is sans-I/O (``authenticate``, ``decode_*``, the params readers); ``ServerAPI`` runs
the calls against the Node and its control channel (``node.control``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from channels.errors import BrokerUnavailable, InvalidChannel, UnknownNamespace, UnrecoverablePosition
from channels.names import ChannelName, parse_channel
from channels.options import NamespaceOptions
from channels.pattern import BadPattern, compile_pattern
from channels.publication import PublishResult, StreamPosition
from hub import codec_json, codes
from hub.codes import ClientError
from hub.config import ApiKey
from hub.control import ControlUnavailable, Target
from hub.logs import log_limited
from hub.node import Node
from hub.wire import BadData, binary_data, json_view
from presence.presence import PresenceUnavailable

log = logging.getLogger("switchboard.api")

METHODS = (
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
)
"""Methods a batch may hold; ``batch`` itself only at the top."""

DEV_KEY = ApiKey("", None)
"""The principal of every call in development mode with no key configured: unbound."""

# ---------------------------------------------------------------- sans-I/O: authentication


def presented_key(headers: Mapping[str, str], schemes: Sequence[str] = ("apikey",)) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: <scheme> <key>`` for one of
    ``schemes`` (``apikey``; ingest also takes InfluxDB's ``token``, what Telegraf's influxdb_v2 sends)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() in schemes and value.strip():
        return value.strip()
    return None


def authenticate(presented: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The configured key equal to ``presented``, compared in constant time against every key (no early
    exit: the time taken does not tell which key, or how much of one, matched)."""
    if presented is None:
        return None
    candidate = presented.encode()
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(candidate, key.key.encode()):
            found = key
    return found


# ---------------------------------------------------------------- sans-I/O: bodies


class BadBody(ValueError):
    """The body cannot be read as the endpoint's JSON (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    params: Any
    id: Any = None
    """The ``id`` of an old-style command, echoed in its reply."""


def _load(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"malformed JSON: {exc}") from None


def decode_params(body: bytes) -> dict[str, Any]:
    """The body of ``/api/<method>``: one JSON object (an empty body is ``{}``, as for ``info``)."""
    if not body.strip():
        return {}
    value = _load(body)
    if not isinstance(value, dict):
        raise BadBody("the body must be a JSON object")
    return value


def decode_root(body: bytes) -> tuple[bool, list[dict[str, Any]]]:
    """The body of ``/api``: (True, [batch body]) for ``{"commands": ...}``, else (False, commands) for
    old-style ``{"method", "params"}`` objects, one per line (or one object spread over several lines)."""
    if not body.strip():
        raise BadBody("empty body")
    try:
        whole = orjson.loads(body)
    except orjson.JSONDecodeError:
        objects = [_load(line) for line in body.split(b"\n") if line.strip()]
    else:
        objects = [whole]
    if not all(isinstance(obj, dict) for obj in objects):
        raise BadBody("every command must be a JSON object")
    if len(objects) == 1 and "commands" in objects[0]:
        return True, objects
    return False, objects


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# ---------------------------------------------------------------- sans-I/O: params


def _str(p: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = p.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise codes.error_bad_request()
    return value


def _bool(p: Mapping[str, Any], name: str) -> bool:
    value = p.get(name, False)
    if not isinstance(value, bool):
        raise codes.error_bad_request()
    return value


def _int(p: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = p.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise codes.error_bad_request()
    return value


def _optional_str(p: Mapping[str, Any], name: str) -> str | None:
    value = p.get(name)
    if value is not None and not isinstance(value, str):
        raise codes.error_bad_request()
    return value or None


def _tags(p: Mapping[str, Any]) -> dict[str, str] | None:
    tags = p.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise codes.error_bad_request()
    return tags or None


def _payload(p: Mapping[str, Any], binary: bool = False) -> bytes:
    """``data`` (any JSON) or ``b64data``. In a JSON namespace JSON subscribers must be able to read every
    publication, so ``b64data`` must decode to JSON text. In a binary namespace (``binary``) the data is
    bytes: ``b64data``, or ``data`` as a base64 string (how every JSON surface writes binary data)."""
    if binary:
        raw = p.get("b64data") if p.get("b64data") not in (None, "") else p.get("data")
        try:
            return binary_data(raw)
        except BadData as exc:
            raise codes.error_invalid_data(str(exc)) from None
    if "b64data" in p and p["b64data"] not in (None, ""):
        raw = p["b64data"]
        if not isinstance(raw, str):
            raise codes.error_bad_request()
        try:
            # Re-encoded compact: the JSON's own line breaks would split SSE events and the line-delimited
            # frames of every other transport.
            return codec_json.data_bytes(orjson.loads(base64.b64decode(raw, validate=True)))
        except (binascii.Error, ValueError):  # codec_json.DecodeError is a ValueError
            raise codes.error_bad_request() from None
    if "data" not in p:
        raise codes.error_bad_request()
    try:
        return codec_json.data_bytes(p["data"])
    except codec_json.DecodeError:
        raise codes.error_bad_request() from None


def _position(raw: Any) -> StreamPosition | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise codes.error_bad_request()
    offset = _int(raw, "offset")
    if offset < 0:
        raise codes.error_bad_request()
    return StreamPosition(offset, _str(raw, "epoch", required=False))


def _result_of_publish(res: PublishResult) -> dict[str, Any]:
    pos = res.position
    return {"offset": pos.offset, "epoch": pos.epoch} if pos.epoch else {}


# ---------------------------------------------------------------- running calls


Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ServerAPI:
    """The server API of one node: Starlette endpoints and the calls they run."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.keys = node.config.server_api_keys()
        self._handlers: dict[str, Handler] = {m: getattr(self, "_" + m) for m in METHODS}

    def register(self, method: str, handler: Handler) -> None:
        """Serve ``method`` with ``handler(tenant, params)`` (the tenant as for every method), in batches
        too. A name already served is an error."""
        if method in self._handlers or method == "batch":
            raise ValueError(f"server API method {method!r} exists already")
        self._handlers[method] = handler

    def add_methods(self, handlers: Mapping[str, Handler]) -> None:
        """Serve more methods (another part of the hub's): each takes the call's tenant and params; it
        raises ``ClientError`` for the caller's mistakes. A batch may hold them too (``register`` each)."""
        for method, handler in handlers.items():
            self.register(method, handler)

    # ------------------------------------------------------------ one call

    def _tenant(self, principal: ApiKey, p: Mapping[str, Any]) -> str:
        """The tenant a call acts on: the key's, or for an unbound key the call's ``tenant`` field."""
        named = p.get("tenant")
        if named is not None and not isinstance(named, str):
            raise codes.error_bad_request()
        if principal.tenant is not None:
            if named is not None and named != principal.tenant:
                raise codes.error_permission_denied()
            return principal.tenant
        return named or ""

    def _channel(self, p: Mapping[str, Any], name: str | None = None) -> tuple[ChannelName, NamespaceOptions]:
        try:
            channel = parse_channel(name if name is not None else _str(p, "channel"))
        except InvalidChannel:
            raise codes.error_bad_request() from None
        return channel, self.node.namespaces.options_for(channel)

    async def call(self, principal: ApiKey, method: str, params: Any) -> dict[str, Any]:
        """Run one call; its result, or ClientError (every other failure becomes 100, logged)."""
        handler = self._handlers.get(method)
        if handler is None:
            raise codes.error_method_not_found()
        if not isinstance(params, dict):
            raise codes.error_bad_request()
        tenant = self._tenant(principal, params)
        try:
            if method == "info":
                # An unbound key that names no tenant sees whole nodes; otherwise one tenant's share.
                whole = principal.tenant is None and "tenant" not in params
                return {"nodes": await self.node.control.nodes(None if whole else tenant)}
            return await handler(tenant, params)
        except UnknownNamespace:
            raise codes.error_unknown_channel() from None
        except InvalidChannel:
            raise codes.error_bad_request() from None
        except UnrecoverablePosition:
            raise codes.error_unrecoverable_position() from None
        except (BrokerUnavailable, PresenceUnavailable, ControlUnavailable):
            log_limited(
                log, logging.WARNING, "server API %s: backend unavailable", method, extra={"tenant": tenant}
            )
            raise codes.error_internal() from None

    async def reply(
        self, principal: ApiKey, method: str, params: Any
    ) -> tuple[dict[str, Any] | None, ClientError | None]:
        """``call``, with every failure turned into its error and a log line."""
        try:
            return await self.call(principal, method, params), None
        except ClientError as exc:
            extra = {"tenant": principal.tenant}
            log_limited(
                log, logging.INFO, "server API %s failed: %d %s", method, exc.code, exc.message, extra=extra
            )
            return None, exc
        except Exception:
            log.exception("server API %s crashed", method)
            return None, codes.error_internal()

    # ------------------------------------------------------------ methods

    async def _publish(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(p)
        res = await self.node.publish_to(
            tenant,
            channel,
            opts,
            _payload(p, opts.binary),
            tags=_tags(p),
            idempotency_key=_optional_str(p, "idempotency_key"),
            skip_history=_bool(p, "skip_history"),
        )
        return _result_of_publish(res)

    async def _broadcast(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        names = p.get("channels")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise codes.error_bad_request()
        if "data" not in p and p.get("b64data") in (None, ""):
            raise codes.error_bad_request()
        tags = _tags(p)
        payloads: dict[bool, bytes | ClientError] = {}
        """The data as a JSON and as a binary namespace take it, each read once (an error is per channel)."""
        key, skip = _optional_str(p, "idempotency_key"), _bool(p, "skip_history")
        responses: list[dict[str, Any]] = []
        for name in names:
            try:
                try:
                    channel, opts = self._channel(p, name)
                except UnknownNamespace:
                    raise codes.error_unknown_channel() from None
                if opts.binary not in payloads:
                    try:
                        payloads[opts.binary] = _payload(p, opts.binary)
                    except ClientError as exc:
                        payloads[opts.binary] = exc
                data = payloads[opts.binary]
                if isinstance(data, ClientError):
                    raise data
                res = await self.node.publish_to(
                    tenant, channel, opts, data, tags=tags, idempotency_key=key, skip_history=skip
                )
                responses.append({"result": _result_of_publish(res)})
            except ClientError as exc:
                log_limited(
                    log,
                    logging.INFO,
                    "server API broadcast to %s failed: %d",
                    name,
                    exc.code,
                    extra={"tenant": tenant},
                )
                responses.append(error_body(exc.code, exc.message))
        return {"responses": responses}

    def _target(self, tenant: str, p: Mapping[str, Any]) -> Target:
        """Whose connections a call acts on: every one of ``user``'s, or the one named by ``client`` and/or
        ``session`` (each node looks for it among its own)."""
        return Target(tenant, _str(p, "user"), _optional_str(p, "client"), _optional_str(p, "session"))

    async def _subscribe(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(tenant, p)
        channel, _ = self._channel(p)
        for unsupported in ("info", "b64info", "data", "b64data", "recover_since", "override"):
            if p.get(unsupported) is not None:
                log_limited(
                    log,
                    logging.INFO,
                    "server API subscribe: %s is not supported",
                    unsupported,
                    extra={"tenant": tenant},
                )
                raise codes.error_not_available()
        await self.node.control.subscribe_user(target, channel.raw)
        return {}

    async def _unsubscribe(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(tenant, p)
        channel, _ = self._channel(p)
        await self.node.control.unsubscribe_user(target, channel.raw)
        return {}

    async def _disconnect(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(tenant, p)
        whitelist = p.get("whitelist") or []
        if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
            raise codes.error_bad_request()
        code, reason = codes.FORCE_NO_RECONNECT
        raw = p.get("disconnect")
        if raw is not None:
            if not isinstance(raw, dict):
                raise codes.error_bad_request()
            code, reason = _int(raw, "code"), _str(raw, "reason", required=False)
            # Close codes an application may send: 3000-4999; a close reason holds at most 123 bytes.
            if not 3000 <= code <= 4999 or len(reason.encode()) > 123:
                raise codes.error_bad_request()
        await self.node.control.disconnect_user(target, code, reason, whitelist)
        return {}

    async def _refresh(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(tenant, p)
        expire_at = _int(p, "expire_at")
        if expire_at < 0:
            raise codes.error_bad_request()
        await self.node.control.refresh_user(target, expired=_bool(p, "expired"), expire_at=float(expire_at))
        return {}

    def _presence_key(self, tenant: str, p: Mapping[str, Any]) -> tuple[str, str]:
        channel, opts = self._channel(p)
        if not opts.presence:
            raise codes.error_not_available()
        return tenant, channel.raw

    async def _presence(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        members = await self.node.presence.get(self._presence_key(tenant, p))
        return {"presence": {cid: codec_json.info_dict(info) for cid, info in members.items()}}

    async def _presence_stats(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        stats = await self.node.presence.stats(self._presence_key(tenant, p))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _history(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(p)
        if not opts.history_enabled:
            raise codes.error_not_available()
        # As Centrifugo: no limit means only the stream position; a negative one, every publication kept.
        limit = _int(p, "limit")
        hist = await self.node.broker.history(
            (tenant, channel.raw),
            since=_position(p.get("since")),
            limit=limit,
            reverse=_bool(p, "reverse"),
            meta_ttl=opts.history_meta_ttl,
        )
        out: dict[str, Any] = {"epoch": hist.position.epoch, "offset": hist.position.offset}
        shown = json_view if opts.binary else None
        out["publications"] = [
            codec_json.publication_dict(pub if shown is None else shown(pub)) for pub in hist.publications
        ]
        return out

    async def _history_remove(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(p)
        if not opts.history_enabled:
            raise codes.error_not_available()
        await self.node.remove_history((tenant, channel.raw))
        return {}

    async def _channels(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        pattern = _str(p, "pattern", required=False)
        try:
            if pattern:
                compile_pattern(pattern)  # a bad glob is the caller's error, found before asking any node
        except BadPattern:
            raise codes.error_bad_request() from None
        counts = await self.node.control.channels(tenant, pattern)
        return {"channels": {name: {"num_clients": n} for name, n in counts.items()}}

    async def _info(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": await self.node.control.nodes(tenant)}  # ``call`` answers for whole nodes itself

    # ------------------------------------------------------------ batch

    async def batch(self, principal: ApiKey, body: Any) -> dict[str, Any]:
        """``{"commands": [...], "parallel"?}`` -> ``{"replies": [...]}`` in the commands' order."""
        if not isinstance(body, dict):
            raise codes.error_bad_request()
        commands = body.get("commands")
        parallel = body.get("parallel", False)
        if not isinstance(commands, list) or not isinstance(parallel, bool):
            raise codes.error_bad_request()

        async def one(command: Any) -> dict[str, Any]:
            if not isinstance(command, dict) or len(command) != 1:
                log_limited(
                    log,
                    logging.INFO,
                    "server API batch: malformed command",
                    extra={"tenant": principal.tenant},
                )
                return error_body(107, "bad request")
            ((method, params),) = command.items()
            result, err = await self.reply(principal, method, params)
            if err is not None:
                return error_body(err.code, err.message)
            return {method: result}

        if parallel:
            return {"replies": await _bounded(one, commands, self.node.config.api_batch_max_parallel)}
        return {"replies": [await one(c) for c in commands]}

    # ------------------------------------------------------------ HTTP

    async def admit(
        self, request: Request, schemes: Sequence[str] = ("apikey",), what: str = "server API"
    ) -> tuple[ApiKey | None, Response | None]:
        """The caller's key, or the response that refuses the request (nothing else happens then). The
        ingest endpoints (``what``) are admitted by the same keys, the same way."""
        remote = request.client.host if request.client else ""
        if self.node.stopping:
            return None, Response(status_code=503)
        if not self.keys:
            if self.node.config.dev_mode:
                return DEV_KEY, None
            log_limited(
                log, logging.WARNING, "%s request from %s refused: no API key configured", what, remote
            )
            return None, Response(status_code=404)
        presented = presented_key(request.headers, schemes)
        principal = authenticate(presented, self.keys)
        if principal is None:
            log_limited(
                log,
                logging.WARNING,
                "%s request from %s refused: %s API key",
                what,
                remote,
                "missing" if presented is None else "wrong",
            )
            return None, _json(error_body(101, "unauthorized"), 401)
        return principal, None

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None when it is over ``api_max_body_size`` (read no further than the limit)."""
        return await read_body(request, self.node.config.api_max_body_size)

    async def _read(self, request: Request) -> tuple[ApiKey | None, bytes, Response | None]:
        principal, refused = await self.admit(request)
        if refused is not None or principal is None:
            return None, b"", refused
        try:
            body = await self._body(request)
        except ClientDisconnect:
            remote = request.client.host if request.client else ""
            log_limited(
                log, logging.INFO, "server API request from %s: the client left before its body ended", remote
            )
            return None, b"", Response(status_code=400)
        if body is None:
            log_limited(
                log,
                logging.WARNING,
                "server API request over %d bytes refused",
                self.node.config.api_max_body_size,
            )
            return None, b"", _json(error_body(107, "request body too large"), 413)
        return principal, body, None

    async def method_endpoint(self, request: Request) -> Response:
        """``POST /api/<method>``."""
        principal, body, refused = await self._read(request)
        if refused is not None or principal is None:
            return refused or Response(status_code=500)
        method = request.path_params["method"]
        try:
            params = decode_params(body)
        except BadBody as exc:
            log_limited(
                log, logging.INFO, "server API %s: %s", method, exc, extra={"tenant": principal.tenant}
            )
            return _json(error_body(107, "bad request"), 400)
        if method == "batch":
            try:
                return _json(await self.batch(principal, params))
            except ClientError as exc:
                log_limited(
                    log,
                    logging.INFO,
                    "server API batch failed: %d",
                    exc.code,
                    extra={"tenant": principal.tenant},
                )
                return _json(error_body(exc.code, exc.message))
        result, err = await self.reply(principal, method, params)
        if err is not None:
            return _json(error_body(err.code, err.message))
        return _json({"result": result})

    async def root_endpoint(self, request: Request) -> Response:
        """``POST /api``: a batch body, or old-style commands one per line."""
        principal, body, refused = await self._read(request)
        if refused is not None or principal is None:
            return refused or Response(status_code=500)
        try:
            is_batch, objects = decode_root(body)
        except BadBody as exc:
            log_limited(log, logging.INFO, "server API: %s", exc, extra={"tenant": principal.tenant})
            return _json(error_body(107, "bad request"), 400)
        if is_batch:
            try:
                return _json(await self.batch(principal, objects[0]))
            except ClientError as exc:
                return _json(error_body(exc.code, exc.message))
        lines: list[bytes] = []
        for command in objects:
            method = command.get("method")
            reply: dict[str, Any] = {}
            if "id" in command:
                reply["id"] = command["id"]
                try:  # the reply echoes it: an id nested past what orjson writes (in the reply) is 107
                    codec_json.data_bytes(reply)
                except codec_json.DecodeError:
                    log.info("server API: command id cannot be echoed", extra={"tenant": principal.tenant})
                    lines.append(orjson.dumps(error_body(107, "bad request")))
                    continue
            if not isinstance(method, str):
                log_limited(
                    log,
                    logging.INFO,
                    "server API: command without a method",
                    extra={"tenant": principal.tenant},
                )
                reply.update(error_body(107, "bad request"))
            else:
                result, err = await self.reply(principal, method, command.get("params") or {})
                reply.update(error_body(err.code, err.message) if err is not None else {"result": result})
            lines.append(orjson.dumps(reply))
        return Response(b"\n".join(lines), media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes | None:
    """A request's body, or None when it is over ``limit`` bytes (read no further than the limit)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _bounded(
    run: Callable[[Any], Awaitable[dict[str, Any]]], items: list[Any], limit: int
) -> list[dict[str, Any]]:
    """``run`` over ``items`` with at most ``limit`` calls in flight; the results in the items' order.

    ``limit`` workers take the next item when they are done with one: a body of 30,000 commands costs
    ``limit`` coroutines at a time, not 30,000 tasks and as many backend calls at once."""
    results: list[dict[str, Any]] = [{}] * len(items)
    indices = iter(range(len(items)))

    async def worker() -> None:
        for i in indices:
            results[i] = await run(items[i])

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    return results


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
