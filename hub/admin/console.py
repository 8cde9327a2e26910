"""The console's HTTP side: ``/admin`` (the page and its modules from ``static/admin``) and its JSON API.

Endpoints (JSON bodies and answers; every one under ``/admin`` answers 404 while the console is off)::

    GET  /admin, /admin/<file>       the page and its ES modules (static/admin)
    GET  /admin/api/session          {"role", "csrf", "expires", "node"}               | 401
    POST /admin/api/login            {"password"} -> the session (and its cookie)      | 401, 429
    POST /admin/api/logout           revokes the session on every node
    GET  /admin/api/nodes            ?tenant=               every node, and the gone ones
    GET  /admin/api/channels         ?tenant=&pattern=      channels with subscribers (the API's survey)
    GET  /admin/api/channel          ?tenant=&channel=      options, presence, stream position
    GET  /admin/api/history          ?tenant=&channel=&limit=&reverse=&before=&epoch=
    GET  /admin/api/user             ?tenant=&user=         every connection on every node
    GET  /admin/api/documents        ?tenant=               open documents on every node
    GET  /admin/api/document         ?tenant=&name=         connections, awareness, content preview
    GET  /admin/api/notifications    ?tenant=               the tenant's inbox counts added up, and every
                                                            destination of events out with its queue, dead
                                                            letters and RECENT_DELIVERIES most recent tasks
    GET  /admin/api/deliveries       ?tenant=&state=&destination=&after_id=&limit=   a page of deliveries
                                                            (dead letters: state=dead), as webhook_tasks
    GET  /admin/api/delivery         ?tenant=&task_id=      one delivery, its payload and every attempt
    GET  /admin/api/inbox            ?tenant=&user=&cursor= one user's counts and a page of their items
    GET  /admin/api/audit            ?limit=&before=
    GET  /admin/api/events           ?tenant=&channel=      live events (``hub.admin.stream``)
    POST /admin/api/action           {"action", "tenant", ...}: publish, purge, disconnect, unsubscribe,
                                     refresh, replay (dead letters: ``ids``, ``destination`` or ``all``);
                                     run by the server API (``hub.api``), so its checks and errors are
                                     the API's

The Notifications and deliveries view reads the inbox store for what the server API has no method for
(a tenant's counts added up, its queue depth per destination) and goes through the API's inbox and
webhook methods (``inbox_counts``, ``inbox_list``, ``webhook_tasks``, ``webhook_attempts``,
``webhook_replay``) for the rest, so their bounds, tenants and errors are theirs. Destinations are shown
from the configuration without a secret (``hub.admin.deliveries``).

Policies:

- Sign-in and sessions: ``hub.admin.auth``. Every POST but ``login`` needs the session's CSRF token in
  ``X-CSRF-Token``, and an ``Origin`` (when the browser sends one) equal to the console's own origin.
  A read-only session is refused every action (403) and the refusal is audited.
- Every action, sign-in and sign-out goes to the audit log (``hub.admin.store``) with the role, remote
  address, tenant, arguments and result. Failed sign-ins are audited too (they are throttled).
- Bounds: request bodies ``MAX_BODY``; names and patterns ``MAX_NAME``; history pages ``MAX_HISTORY``;
  audit pages ``MAX_AUDIT``; document previews ``MAX_PREVIEW`` bytes of JSON. A bad parameter is 400 with
  ``{"error": reason}``; an unreachable node or store 503. Refused requests log one line each, rate-limited
  per kind (``hub.logs.log_limited``).
- Behind a TLS-terminating proxy, ``admin_trust_proxy_headers`` makes the console believe the proxy's
  ``X-Forwarded-Proto`` (Secure cookie, Origin check) and the last address of ``X-Forwarded-For``
  (throttling, audit). Without it, the socket's own scheme and address count.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from channels.errors import InvalidChannel, UnknownNamespace
from channels.names import parse_channel
from channels.pattern import BadPattern, compile_pattern
from hub.admin import auth
from hub.admin.deliveries import destinations, serves
from hub.admin.inspect import document_peers, open_documents, user_connections
from hub.admin.store import AuditEntry, ConsoleStore, StoreUnavailable
from hub.admin.stream import Roster, Stream
from hub.codes import ClientError
from hub.config import ApiKey, Config
from hub.control import ControlUnavailable
from hub.logs import log_limited
from inbox.errors import InvalidInput
from inbox.errors import StoreError as InboxUnavailable
from inbox.outbox import TaskState
from presence.presence import PresenceUnavailable
from sync.protocol import SyncError

if TYPE_CHECKING:
    from hub.api import ServerAPI
    from hub.docs import Documents
    from hub.node import Node
    from inbox.inbox import InboxStore

log = logging.getLogger("switchboard.admin")

MAX_BODY = 65536
MAX_NAME = 255
MAX_HISTORY = 100
MAX_AUDIT = 200
MAX_PREVIEW = 262144
MAX_DELIVERIES = 100
"""A page of deliveries (the server API's ``webhook_tasks`` bound)."""
RECENT_DELIVERIES = 10
"""The most recent deliveries shown per destination."""
INBOX_PAGE = 20
NEWEST = 2**63 - 1
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
ACTIONS = {
    "publish": "publish",
    "purge": "history_remove",
    "disconnect": "disconnect",
    "unsubscribe": "unsubscribe",
    "refresh": "refresh",
    "replay": "webhook_replay",
}
"""Console actions and the server API method each one is."""
CONSOLE_KEY = ApiKey("", None)
"""The principal of console actions in the server API: not bound to a tenant (each names its own)."""

SURVEY_USER = "admin.user"
SURVEY_DOCUMENTS = "admin.documents"
SURVEY_DOCUMENT = "admin.document"


class BadRequest(ValueError):
    """A request the console cannot read (400)."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        media_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _error(status: int, reason: str, **more: Any) -> Response:
    return _json({"error": reason, **more}, status)


def _param(request: Request, name: str, *, required: bool = False, default: str = "") -> str:
    value = request.query_params.get(name, default)
    if len(value) > MAX_NAME:
        raise BadRequest(f"{name} is longer than {MAX_NAME} characters")
    if not value.isprintable():
        raise BadRequest(f"{name} holds control characters")
    if required and not value:
        raise BadRequest(f"{name} is required")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


class Console:
    """The console of one node. Always built (its surveys must be answered on every node); it serves
    pages only when a password is configured, or in development mode."""

    def __init__(
        self, config: Config, node: Node, api: ServerAPI, documents: Documents, store: ConsoleStore
    ) -> None:
        self.config = config
        self.node = node
        self.api = api
        self.documents = documents
        self.store = store
        self.inbox: InboxStore | None = None
        """The notification inbox (and outbox) store, once the app has one (``hub/app.py`` sets it)."""
        self.creds = auth.credentials(
            config.admin_password,
            config.admin_password_hash,
            config.admin_readonly_password,
            config.admin_readonly_password_hash,
        )
        self.one_time_password = ""
        if not self.creds and config.dev_mode:
            self.one_time_password = secrets.token_urlsafe(12)
            self.creds = auth.credentials(self.one_time_password)
        self.enabled = bool(self.creds)
        self.sessions = auth.Sessions(
            auth.session_key(self.creds, config.token_hmac_secret_key), config.admin_session_ttl
        )
        self.throttle = auth.LoginThrottle()
        self._checking = asyncio.Semaphore(2)
        self.roster = Roster()
        self.streams: dict[str, Stream] = {}
        self._files = self._static_files()
        node.control.answer(SURVEY_USER, self._answer_user)
        node.control.answer(SURVEY_DOCUMENTS, self._answer_documents)
        node.control.answer(SURVEY_DOCUMENT, self._answer_document)
        api_routes: list[tuple[str, Callable[[Request, auth.Session], Awaitable[Response]]]] = [
            ("/api/nodes", self._nodes),
            ("/api/channels", self._channels),
            ("/api/channel", self._channel),
            ("/api/history", self._history),
            ("/api/user", self._user),
            ("/api/documents", self._documents),
            ("/api/document", self._document),
            ("/api/notifications", self._notifications),
            ("/api/deliveries", self._deliveries),
            ("/api/delivery", self._delivery),
            ("/api/inbox", self._inbox),
            ("/api/audit", self._audit),
        ]
        self.router = Router(
            routes=[
                Route("/api/session", self._session, methods=["GET"]),
                Route("/api/login", self._login, methods=["POST"]),
                Route("/api/logout", self._signed_in(self._logout, post=True), methods=["POST"]),
                Route("/api/action", self._signed_in(self._action, post=True), methods=["POST"]),
                *(Route(path, self._signed_in(fn), methods=["GET"]) for path, fn in api_routes),
                Route("/", self._page, methods=["GET"]),
                Route("/{file}", self._static, methods=["GET"]),
            ]
        )

    def announce(self) -> None:
        """Log how to sign in when development mode made a one-time password (one line)."""
        if self.one_time_password:
            log.warning(
                "admin console: http://%s:%d/admin, one-time password (this run only): %s",
                self.config.host,
                self.config.port,
                self.one_time_password,
            )

    # ------------------------------------------------------------ ASGI

    async def serve(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        """Serve an HTTP request for ``path`` (the app's route path: ``/admin`` or under it)."""
        if not self.enabled:
            await Response("Not Found", status_code=404)(scope, receive, send)
            return
        if path == "/admin":
            # The page's modules and API calls are relative to /admin/ (so a mounted hub works too).
            await Response(status_code=307, headers={"location": "admin/"})(scope, receive, send)
            return
        rest = path[len("/admin") :]
        scope = {**scope, "sb.admin_root": scope.get("root_path", "") + "/admin"}
        if rest == "/api/events":
            await self._events(scope, receive, send)
            return
        await self.router({**scope, "path": rest, "root_path": ""}, receive, send)

    # ------------------------------------------------------------ request helpers

    def _https(self, request: Request) -> bool:
        if self.config.admin_trust_proxy_headers:
            forwarded = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
            if forwarded:
                return forwarded == "https"
        return request.url.scheme == "https"

    def _remote(self, request: Request) -> str:
        if self.config.admin_trust_proxy_headers:
            forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
            if forwarded:
                return forwarded[:64]
        return request.client.host if request.client else ""

    def _session_of(self, request: Request) -> auth.Session | None:
        return self.sessions.read(request.cookies.get(auth.COOKIE))

    async def _valid(self, session: auth.Session) -> bool:
        if time.time() >= session.expires:
            return False
        try:
            return not await self.store.revoked(session.sid)
        except StoreUnavailable:
            return True  # a store that cannot be read does not end every session; its sign-in still expires

    def _signed_in(
        self, endpoint: Callable[[Request, auth.Session], Awaitable[Response]], *, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            remote = self._remote(request)
            session = self._session_of(request)
            if session is None or not await self._valid(session):
                log_limited(log, logging.WARNING, "admin request from %s refused: not signed in", remote)
                return _error(401, "not signed in")
            if post:
                scheme = "https" if self._https(request) else "http"
                if not auth.same_origin(request.headers.get("origin"), scheme, request.headers.get("host")):
                    log_limited(log, logging.WARNING, "admin request from %s refused: foreign Origin", remote)
                    return _error(403, "cross-origin request refused")
                if not self.sessions.csrf_ok(session, request.headers.get(auth.CSRF_HEADER)):
                    log_limited(
                        log,
                        logging.WARNING,
                        "admin request from %s refused: missing or wrong CSRF token",
                        remote,
                    )
                    return _error(403, "missing or wrong CSRF token")
            try:
                return await endpoint(request, session)
            except BadRequest as exc:
                log_limited(log, logging.WARNING, "admin request from %s refused: %s", remote, exc)
                return _error(400, str(exc))
            except (ControlUnavailable, StoreUnavailable, PresenceUnavailable, InboxUnavailable) as exc:
                log_limited(log, logging.WARNING, "admin request: %s", exc or type(exc).__name__)
                return _error(503, f"not available now: {exc or type(exc).__name__}")

        return guarded

    async def _body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BadRequest(f"body larger than {MAX_BODY} bytes")
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks) or b"{}")
        except orjson.JSONDecodeError:
            raise BadRequest("body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    async def _audit_entry(
        self, request: Request, role: str, action: str, tenant: str, target: Any, result: str
    ) -> None:
        entry = AuditEntry.make(time.time(), role, self._remote(request), action, tenant, target, result)
        try:
            await self.store.append(entry)
        except StoreUnavailable as exc:
            # The action happened; losing its record is worth a line of its own, every time.
            log.error("audit log unavailable, entry lost: %s (%s)", entry.as_json(), exc)

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        secure = "; Secure" if self._https(request) else ""
        path = request.scope.get("sb.admin_root", "/admin")
        return f"{auth.COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    # ------------------------------------------------------------ sign-in

    def _session_body(self, session: auth.Session) -> dict[str, Any]:
        return {
            "role": session.role,
            "csrf": self.sessions.csrf(session),
            "expires": session.expires,
            "node": self.node.id,
            "tenants_hint": sorted({k.tenant for k in self.config.api_keys if k.tenant}),
        }

    async def _session(self, request: Request) -> Response:
        session = self._session_of(request)
        if session is None or not await self._valid(session):
            return _error(401, "not signed in")
        return _json(self._session_body(session))

    async def _login(self, request: Request) -> Response:
        remote = self._remote(request)
        wait = self.throttle.retry_after(remote)
        if wait > 0:
            log_limited(log, logging.WARNING, "admin sign-in from %s throttled", remote)
            retry = max(1, round(wait))
            refused = _error(429, "too many failed sign-ins; try later", retry_after=retry)
            refused.headers["retry-after"] = str(retry)
            return refused
        scheme = "https" if self._https(request) else "http"
        if not auth.same_origin(request.headers.get("origin"), scheme, request.headers.get("host")):
            log_limited(log, logging.WARNING, "admin sign-in from %s refused: foreign Origin", remote)
            return _error(403, "cross-origin request refused")
        try:
            body = await self._body(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        password = body.get("password")
        if not isinstance(password, str):
            return _error(400, "password must be a string")
        self.throttle.attempt(remote)
        async with self._checking:  # a password hash costs tens of milliseconds and 32 MiB: a few at once
            role = await asyncio.to_thread(auth.check_password, self.creds, password)
        if role is not None:
            self.throttle.forgive(remote)
        if role is None:
            log_limited(log, logging.WARNING, "admin sign-in from %s failed: wrong password", remote)
            await self._audit_entry(request, "-", "login", "", {}, "refused: wrong password")
            return _error(401, "wrong password")
        session, cookie = self.sessions.issue(role)
        await self._audit_entry(request, role, "login", "", {}, "ok")
        log.info("admin sign-in from %s as %s", remote, role)
        response = _json(self._session_body(session))
        response.headers.append(
            "set-cookie", self._cookie(request, cookie, int(self.config.admin_session_ttl))
        )
        return response

    async def _logout(self, request: Request, session: auth.Session) -> Response:
        await self.store.revoke(session.sid, session.expires)
        stream = self.streams.get(session.sid)
        if stream is not None:
            stream.end("signed_out")
        await self._audit_entry(request, session.role, "logout", "", {}, "ok")
        response = _json({"ok": True})
        response.headers.append("set-cookie", self._cookie(request, "", 0))
        return response

    # ------------------------------------------------------------ pages

    @staticmethod
    def _static_files() -> dict[str, tuple[bytes, str]]:
        """Every file of static/admin, read once: nothing outside this table is ever served."""
        out: dict[str, tuple[bytes, str]] = {}
        folder = resources.files("static").joinpath("admin")
        if not folder.is_dir():
            return out
        for item in folder.iterdir():
            suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
            if item.is_file() and suffix in STATIC_TYPES:
                out[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
        return out

    async def _page(self, request: Request) -> Response:
        return await self._serve_file("index.html")

    async def _static(self, request: Request) -> Response:
        return await self._serve_file(request.path_params["file"])

    async def _serve_file(self, name: str) -> Response:
        found = self._files.get(name)
        if found is None:
            return Response("Not Found", status_code=404)
        body, media_type = found
        headers = {**SECURITY_HEADERS, "cache-control": "no-cache"}
        return Response(body, media_type=media_type, headers=headers)

    # ------------------------------------------------------------ reading

    async def _nodes_body(self, tenant: str | None) -> dict[str, Any]:
        nodes = await self.node.control.nodes()
        self.roster.update(nodes, time.time())
        body = self.roster.as_json()
        if tenant is not None:
            body["tenant"] = {"tenant": tenant, "nodes": await self.node.control.nodes(tenant)}
        return body

    def _tenant(self, request: Request) -> str | None:
        """``?tenant=`` when given (the empty string is the default tenant), else None."""
        if "tenant" not in request.query_params:
            return None
        return _param(request, "tenant")

    async def _nodes(self, request: Request, session: auth.Session) -> Response:
        return _json(await self._nodes_body(self._tenant(request)))

    async def _channels(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        pattern = _param(request, "pattern")
        if pattern:
            try:
                compile_pattern(pattern)
            except BadPattern as exc:
                raise BadRequest(f"bad pattern: {exc}") from None
        counts = await self.node.control.channels(tenant, pattern)
        names = sorted(counts, key=lambda n: (-counts[n], n))
        return _json(
            {
                "channels": [{"channel": n, "num_clients": counts[n]} for n in names[:1000]],
                "total": len(names),
            }
        )

    def _parse_channel(self, request: Request) -> tuple[str, Any, Any]:
        raw = _param(request, "channel", required=True)
        try:
            name = parse_channel(raw)
            opts = self.node.namespaces.options_for(name)
        except InvalidChannel as exc:
            raise BadRequest(f"bad channel name: {exc}") from None
        except UnknownNamespace:
            raise BadRequest(f"unknown namespace {raw.partition(':')[0]!r}") from None
        return raw, name, opts

    async def _call(
        self, method: str, params: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, ClientError | None]:
        try:
            return await self.api.call(CONSOLE_KEY, method, params), None
        except ClientError as exc:
            return None, exc

    async def _channel(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        raw, name, opts = self._parse_channel(request)
        out: dict[str, Any] = {
            "tenant": tenant,
            "channel": raw,
            "namespace": name.namespace,
            "private": name.private,
            "allowed_users": list(name.allowed_users) if name.allowed_users is not None else None,
            "options": dataclasses.asdict(opts),
            "subscribers_here": self.node.registry.subscriber_count((tenant, raw)),
        }
        if opts.presence:
            stats, err = await self._call("presence_stats", {"tenant": tenant, "channel": raw})
            out["presence_stats"] = stats if err is None else {"error": err.message}
        if opts.history_enabled:
            top, err = await self._call("history", {"tenant": tenant, "channel": raw, "limit": 0})
            out["stream"] = (
                {"offset": top["offset"], "epoch": top["epoch"]} if top else {"error": err and err.message}
            )
        return _json(out)

    async def _history(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        raw, _, opts = self._parse_channel(request)
        if not opts.history_enabled:
            raise BadRequest("this channel's namespace keeps no history")
        params: dict[str, Any] = {
            "tenant": tenant,
            "channel": raw,
            "limit": _int_param(request, "limit", 20, 1, MAX_HISTORY),
            "reverse": request.query_params.get("reverse", "1") != "0",
        }
        before = _int_param(request, "before", 0, 0, 2**62)
        if before:  # the page before offset ``before`` of epoch ``epoch`` (newest first)
            params["since"] = {"offset": before, "epoch": _param(request, "epoch", required=True)}
        result, err = await self._call("history", params)
        if err is not None:
            raise BadRequest(f"{err.code} {err.message}")
        return _json(result)

    async def _user(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        user = _param(request, "user", required=True)
        answers = await self.node.control.survey(SURVEY_USER, [tenant, user])
        connections: list[dict[str, Any]] = []
        total = 0
        for answer in answers.values():
            connections.extend(answer["connections"])
            total += answer["total"]
        connections.sort(key=lambda c: c["connected_at"])
        return _json({"tenant": tenant, "user": user, "connections": connections, "total": total})

    async def _documents(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        answers = await self.node.control.survey(SURVEY_DOCUMENTS, [tenant])
        docs: list[dict[str, Any]] = []
        total = 0
        for answer in answers.values():
            docs.extend(answer["documents"])
            total += answer["total"]
        docs.sort(key=lambda d: (-d["connections"], d["name"], d["node"]))
        return _json({"tenant": tenant, "documents": docs, "total": total})

    async def _document(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        name = _param(request, "name", required=True)
        answers = await self.node.control.survey(SURVEY_DOCUMENT, [tenant, name])
        holders = [a for a in answers.values() if a is not None]
        out: dict[str, Any] = {"tenant": tenant, "name": name, "open_on": holders}
        if request.query_params.get("content") == "1":
            try:
                content, _, _ = await self.documents.read_encoded(name, tenant=tenant)
            except SyncError as exc:
                out["content_error"] = exc.reason
            else:
                if len(content) > MAX_PREVIEW:
                    out["content_truncated"] = content[:MAX_PREVIEW].decode(errors="replace")
                else:
                    out["content"] = orjson.Fragment(content)
        return _json(out)

    # ------------------------------------------------------------ notifications and deliveries

    async def _api_result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A server API call whose error is the caller's bad request (the API's code and reason)."""
        result, err = await self._call(method, params)
        if err is not None:
            raise BadRequest(f"{err.code} {err.message}")
        assert result is not None
        return result

    def _inbox_store(self) -> InboxStore:
        if self.inbox is None:
            raise InboxUnavailable("the inbox is not open")
        return self.inbox

    async def _notifications(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        store = self._inbox_store()
        dests = destinations(self.config)
        try:
            counts = await store.tenant_counts(tenant)
            depth = await store.outbox_depth(tenant) if dests else {}
        except InvalidInput as exc:
            raise BadRequest(str(exc)) from None
        for dest in dests:
            name = dest["destination"]
            dest["for_tenant"] = serves(dest, tenant)
            dest["pending"] = depth.get((name, TaskState.PENDING), 0)
            dest["dead"] = depth.get((name, TaskState.DEAD), 0)
            recent, err = await self._call(
                "webhook_tasks",
                {"tenant": tenant, "destination": name, "before_id": NEWEST, "limit": RECENT_DELIVERIES},
            )
            dest["recent"] = recent["tasks"] if recent is not None else []
            if err is not None:
                dest["error"] = f"{err.code} {err.message}"
        return _json({"tenant": tenant, "inbox": counts.as_dict(), "destinations": dests})

    async def _deliveries(self, request: Request, session: auth.Session) -> Response:
        params: dict[str, Any] = {
            "tenant": _param(request, "tenant"),
            "state": _param(request, "state", default="dead"),
            "after_id": _int_param(request, "after_id", 0, 0, NEWEST),
            "limit": _int_param(request, "limit", 20, 1, MAX_DELIVERIES),
        }
        destination = _param(request, "destination")
        if destination:
            params["destination"] = destination
        return _json(await self._api_result("webhook_tasks", params))

    async def _delivery(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        task_id = _int_param(request, "task_id", 0, 1, NEWEST)
        if not task_id:
            raise BadRequest("task_id is required")
        found = await self._api_result(
            "webhook_tasks", {"tenant": tenant, "after_id": task_id - 1, "limit": 1, "payload": True}
        )
        tasks = [t for t in found["tasks"] if t["id"] == task_id]
        if not tasks:
            raise BadRequest(f"no delivery {task_id} in this tenant")
        attempts = await self._api_result("webhook_attempts", {"tenant": tenant, "task_id": task_id})
        return _json({"tenant": tenant, "task": tasks[0], "attempts": attempts["attempts"]})

    async def _inbox(self, request: Request, session: auth.Session) -> Response:
        tenant = _param(request, "tenant")
        user = _param(request, "user", required=True)
        query: dict[str, Any] = {"tenant": tenant, "user": user, "limit": INBOX_PAGE, "archived": "include"}
        cursor = _param(request, "cursor")
        if cursor:
            query["cursor"] = cursor
        counts = await self._api_result("inbox_counts", {"tenant": tenant, "user": user})
        page = await self._api_result("inbox_list", query)
        return _json({"tenant": tenant, "user": user, "counts": counts, **page})

    async def _audit(self, request: Request, session: auth.Session) -> Response:
        limit = _int_param(request, "limit", 50, 1, MAX_AUDIT)
        before = _int_param(request, "before", 0, 0, 2**62)
        entries = await self.store.entries(limit, before)
        return _json({"entries": [e.as_json() for e in entries]})

    # ------------------------------------------------------------ surveys (every node answers its share)

    async def _answer_user(self, args: list[Any]) -> dict[str, Any]:
        tenant, user = args
        return user_connections(self.node, str(tenant), str(user))

    async def _answer_documents(self, args: list[Any]) -> dict[str, Any]:
        return open_documents(self.documents, str(args[0]), self.node.id)

    async def _answer_document(self, args: list[Any]) -> dict[str, Any] | None:
        return document_peers(self.documents, str(args[0]), str(args[1]), self.node.id)

    # ------------------------------------------------------------ actions

    async def _action(self, request: Request, session: auth.Session) -> Response:
        body = await self._body(request)
        action = body.get("action")
        tenant = body.get("tenant", "")
        if not isinstance(action, str) or action not in ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(tenant, str) or len(tenant) > MAX_NAME:
            raise BadRequest("tenant must be a string")
        params = {k: v for k, v in body.items() if k != "action"}
        if session.role != auth.ADMIN:
            log_limited(log, logging.WARNING, "admin action %s refused: read-only session", action)
            await self._audit_entry(request, session.role, action, tenant, params, "refused: read-only")
            return _error(403, "read-only: this session cannot act")
        if action == "refresh":
            params.setdefault("expired", True)  # "expire the token": the client must refresh now
        result, err = await self._call(ACTIONS[action], params)
        outcome = "ok" if err is None else f"error: {err.code} {err.message}"
        await self._audit_entry(request, session.role, action, tenant, params, outcome)
        log.info("admin action %s (tenant %r) by %s: %s", action, tenant, session.role, outcome)
        if err is not None:
            return _json({"error": err.message, "code": err.code}, 400)
        return _json({"result": result})

    # ------------------------------------------------------------ live events

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        session = self._session_of(request)
        if session is None or not await self._valid(session):
            await _error(401, "not signed in")(scope, receive, send)
            return
        try:
            tenant = self._tenant(request)
            channel = _param(request, "channel")
            key, opts = None, None
            if channel:
                _, _, opts = self._parse_channel(request)
                key = (tenant or "", channel)
        except BadRequest as exc:
            await _error(400, str(exc))(scope, receive, send)
            return
        old = self.streams.get(session.sid)
        if old is None and len(self.streams) >= self.config.admin_max_streams:
            log_limited(log, logging.WARNING, "admin stream refused: %d streams open", len(self.streams))
            await _error(503, "too many console streams on this node")(scope, receive, send)
            return
        if old is not None:
            old.end("replaced")
        stream = Stream(
            self.node,
            sid=session.sid,
            tenant=tenant,
            key=key,
            presence=bool(opts and opts.presence),
            live_presence=bool(opts and opts.join_leave),
            nodes=lambda: self._nodes_body(tenant),
            still_valid=lambda: self._valid(session),
            interval=self.config.node_info_interval,
        )
        self.streams[session.sid] = stream
        try:
            if key is not None:
                await self.node.tap(key, stream)
            try:
                await self._write_stream(stream, receive, send)
            finally:
                if key is not None:
                    await self.node.untap(key, stream)
        finally:
            if self.streams.get(session.sid) is stream:
                del self.streams[session.sid]

    @staticmethod
    async def _write_stream(stream: Stream, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async def write() -> None:
            async for chunk in stream.events():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(write()), loop.create_task(gone())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
