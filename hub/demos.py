"""The landing page at ``/`` and the demo apps under ``/demo``: development mode only.

Endpoints (every one answers 404 outside development mode)::

    GET  /                    the landing page: links to each demo and the console, and what to run
                              when the demo bundles are not built
    GET  /demo/<name>         a demo's page (static/demo/<name>.html); 503 with the build instructions
                              while its bundle is missing
    GET  /demo/<file>         the demos' stylesheet (static/demo) and bundles (static/demo/dist)
    POST /demo/token          {"name": "Alice"} -> {"token", "user", "name", "expires_in", "personal"}

and the RPC methods ``demo.typing`` (``{"channel": ...}``) for the chat's typing indicator and
``demo.notify`` (``{}``) for the bell's "send me a notification".

Policies:

- Development mode only. A production hub has no landing page: ``/`` stays 404, so the address of a node
  tells nothing about it, and no page is there to keep up to date. The landing page shows only what
  is public anyway (links, build instructions), never the console's one-time password, which stays in
  the log: a page a DNS-rebinding site could read must hold no secret.
- The pages and their stylesheet are files of the repository (``static/demo``); the bundles are built at
  set-up from the official npm packages, pinned by ``static/demo/package-lock.json``, by esbuild
  (``make demos``: ``npm ci`` and ``npm run build``, which runs ``static/demo/build.mjs``) into
  ``static/demo/dist``, which is never committed. Files are looked up on each request (a build made
  while the hub runs shows up on the next reload), by name in those two folders only.
- Pages load scripts from this origin only (CSP ``script-src 'self'``); inline style attributes are
  allowed because the editor binding draws remote cursors with them.
- ``POST /demo/token`` signs a connection token with the development secret, which is public: it opens
  nothing that development mode has not opened already, and it lets the demos show names (the token's
  ``info`` is the ``conn_info`` others see in presence, join/leave and publications). The user id is the
  name's slug (``Alice Smith`` -> ``alice-smith``), so a name is the same user on every page and in
  ``dm#alice,bob`` channels. Bounds: a JSON body (``Content-Type: application/json``, so a cross-site form
  cannot post it) of at most ``MAX_TOKEN_BODY`` bytes, a name of at most ``MAX_DISPLAY_NAME`` printable
  characters with a letter or digit, tokens valid for ``TOKEN_TTL`` (the pages refresh them). Anything
  else is a 4xx with ``{"error": reason}`` and one INFO line, rate-limited per kind
  (``hub.logs.log_limited``). ``personal`` is the user's personal channel, where the inbox's pushes
  arrive (null when ``user_subscribe_to_personal`` is off: the bell says so).
- ``demo.typing`` publishes ``{"typing": true}`` into a channel the caller is subscribed to, without
  history (``skip_history``): typing indicators pass through the channel's subscribers and are never
  stored, replayed by recovery, or counted against the channel's history size. The publication carries
  the caller's client info, so a typist's name comes from its token, not from what it sends. It takes
  what a publish takes: an active subscription and a namespace that lets this subscriber publish (103
  otherwise); a bad request is 107. Its data is fixed, so a client controls nothing but how often it
  calls, as for any publish (``client_command_rate_limit``), and no ``on_publish`` hook is asked.
- ``demo.notify`` stores a notification for the caller's own user (its tenant, from its token) through
  the inbox (``Notifications.notify_params``: stored, counted, pushed to every device like any other),
  with content the hub picks from ``SAMPLES``: the caller sends ``{}`` (or nothing) and chooses nothing.
  Bounds: ``NOTIFY_BURST`` at once and ``NOTIFY_RATE`` a second per user (111 past it; at most
  ``MAX_NOTIFY_SENDERS`` users are remembered, the least recent forgotten first), and every demo
  notification expires after ``NOTIFY_TTL``, so the expiry sweep empties a demo inbox by itself. An
  anonymous caller gets 103, any data but ``{}`` 107. It opens nothing development mode has not: the
  server API is open there, and ``notify`` with it.

- The sensor dashboard's feed is simulated by the hub (``hub.demo_sensors``: 12 readings a second in all,
  into development mode's ``sensors`` namespace), from start to stop.

Adding a demo: a ``Demo`` entry in ``DEMOS``, its
page ``static/demo/<name>.html`` loading ``<name>.js``, its entry module ``static/demo/src/<name>.js``
(``build.mjs`` bundles every ``src/*.js``; shared code lives in ``src/lib``), and its npm packages in
``static/demo/package.json`` (then ``npm install`` to update the lock). A demo that needs a part of the
hub which may be off (the inbox, feeds) says so on its page, as the chat says when it cannot connect.
"""

from __future__ import annotations

import html
import itertools
import logging
import re
import string
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hub import codes
from hub.auth import mint_token
from hub.config import Config
from hub.demo_sensors import Simulator
from hub.hooks import RPCContext
from hub.limits import TokenBucket
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.inbox.service import Notifications
    from hub.node import Node

log = logging.getLogger("switchboard.demos")

DEMO_PREFIX = "/demo"
TOKEN_PATH = DEMO_PREFIX + "/token"
TYPING_RPC = "demo.typing"
TYPING_DATA = b'{"typing":true}'
TOKEN_TTL = 3600
"""Seconds a demo token is valid; the chat's SDK refreshes it (getToken), the editor reconnects on 4401."""
MAX_TOKEN_BODY = 1024
MAX_DISPLAY_NAME = 40
MAX_USER_ID = 32
BUILD_COMMAND = "make demos"
NOTIFY_RPC = "demo.notify"
NOTIFY_CATEGORY = "demo"
NOTIFY_TTL = 3600
"""Seconds a demo notification lives (then the expiry sweep deletes it)."""
NOTIFY_RATE = 1.0
NOTIFY_BURST = 10
MAX_NOTIFY_SENDERS = 1000
SAMPLES = (
    ("New comment on “Launch plan”", "Dana: Looks good to me, let's ship it on Monday."),
    ("Your export is ready", "orders-2024.csv (2.3 MB) can be downloaded for the next 24 hours."),
    ("Build #{n} passed", "main · 214 tests · 3 min 12 s"),
    ("Omar mentioned you", "“@you can you review the pricing table before the call?”"),
    ("Payment received", "Invoice INV-{n} was paid in full."),
)
"""What ``demo.notify`` sends, in turn (``{n}``: the demo's running number on this node)."""

FILE_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".css": "text/css; charset=utf-8",
}
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9]+)+")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Demo:
    """One demo app: its page is ``/demo/<name>`` (``static/demo/<name>.html``), its bundle ``<name>.js``
    (built from ``static/demo/src/<name>.js``)."""

    name: str
    title: str
    blurb: str


DEMOS = (
    Demo(
        "chat",
        "Chat",
        "Rooms with history, who is here, typing indicators, direct messages, and recovery after a "
        "dropped connection (the official centrifuge SDK).",
    ),
    Demo(
        "editor",
        "Collaborative editor",
        "CodeMirror 6 on a shared Yjs document through the stock y-websocket provider, with the "
        "others' cursors and names.",
    ),
    Demo(
        "sensors",
        "Sensor dashboard",
        "A live chart of a plant's sensors: the latest value of each at once on open (cache recovery), "
        "conflated to 5 readings a second, fossil deltas (the official centrifuge SDK).",
    ),
    Demo(
        "bell",
        "Notification bell",
        "A badge with exact counts on every device of a user, the inbox page by page, mark read and "
        "mark all read, live from the personal channel (the official centrifuge SDK).",
    ),
)


def demo_folder() -> Path:
    """``static/demo``: the pages, the stylesheet, the sources and (once built) ``dist``."""
    return Path(str(resources.files("static").joinpath("demo")))


def user_id(name: str) -> str:
    """The user id of a display name: lower-case letters and digits, words joined by ``-``, at most
    ``MAX_USER_ID`` characters ("" when the name has no letter or digit). Never holds ``,`` ``#`` ``:``
    ``$`` or whitespace, so it fits in a user-limited channel's list."""
    words = ("".join(ch if ch.isalnum() else " " for ch in name.lower())).split()
    return "-".join(words)[:MAX_USER_ID].strip("-")


class BadRequest(ValueError):
    """A token request the hub refuses (its ``status`` and reason go back to the browser)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Demos:
    """The landing page, the demo pages and their two server-side helpers, for one node."""

    def __init__(self, config: Config, node: Node, folder: Path | None = None) -> None:
        self.config = config
        self.node = node
        self.folder = folder if folder is not None else demo_folder()
        self.enabled = config.dev_mode and bool(config.token_hmac_secret_key)
        self.notifications: Notifications | None = None
        """The inbox calls (``hub.inbox.service``), set by the app once it has them (``demo.notify``)."""
        self._senders: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._sent = itertools.count(1)
        self.simulator = Simulator(node) if self.enabled else None
        """The sensor dashboard's simulated feed (``hub.demo_sensors``), development mode only."""

    async def start(self) -> None:
        if self.simulator is not None:
            self.simulator.start()

    async def stop(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()

    # ------------------------------------------------------------ ASGI

    def handles(self, path: str) -> bool:
        """Whether ``path`` (the app's route path) is the landing page or under ``/demo``."""
        return path == "/" or path == DEMO_PREFIX or path.startswith(DEMO_PREFIX + "/")

    async def serve(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        response = await self._respond(Request(scope, receive), path)
        await response(scope, receive, send)

    async def _respond(self, request: Request, path: str) -> Response:
        if not self.enabled:
            return Response("Not Found", status_code=404)
        method = request.method
        if path == TOKEN_PATH:
            if method != "POST":
                return _error(405, 'POST a JSON body {"name": ...}', allow="POST")
            return await self._token(request)
        if method not in ("GET", "HEAD"):
            return _error(405, "GET only", allow="GET, HEAD")
        if path == "/":
            return self._landing()
        rest = path[len(DEMO_PREFIX) :].strip("/")
        demo = next((d for d in DEMOS if d.name == rest), None)
        if not rest or (demo is not None and path.endswith("/")):
            # The pages' links are relative to /demo/<name>: one address for each (/demo is the landing).
            root = request.scope.get("root_path", "")
            target = f"{root}{DEMO_PREFIX}/{rest}" if rest else f"{root}/"
            return Response(status_code=307, headers={"location": target})
        if demo is not None:
            return self._page(demo)
        return self._file(rest)

    # ------------------------------------------------------------ pages

    def bundle(self, demo: Demo) -> Path:
        return self.folder / "dist" / f"{demo.name}.js"

    def missing(self) -> list[Demo]:
        """The demos whose bundle is not built."""
        return [d for d in DEMOS if not self.bundle(d).is_file()]

    def _landing_page(self, base: str, items: str) -> str:
        """``index.html`` with its links relative to ``base`` ("" at ``/``, "../" under ``/demo``)."""
        template = string.Template((self.folder / "index.html").read_text(encoding="utf-8"))
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return template.substitute(
            base=base,
            demos=items,
            build_note=self._build_note(),
            websocket_url=html.escape(f"ws://{host}:{self.config.port}/connection/websocket"),
        )

    def _build_note(self) -> str:
        missing = self.missing()
        if not missing:
            return ""
        names = ", ".join(html.escape(d.title) for d in missing)
        return (
            f'<section class="note" data-testid="build-note"><h2>Not built yet: {names}</h2>'
            "<p>The demos are bundled from the official npm packages at set-up. With Node.js 20+ and npm "
            f"installed, run <code>{BUILD_COMMAND}</code> in the repository (or <code>make run</code>, which "
            "builds them when npm is there), then reload this page.</p></section>"
        )

    def _landing(self) -> Response:
        missing = self.missing()
        items = "\n".join(
            f'<li data-testid="demo-link"><a href="demo/{d.name}">{html.escape(d.title)}</a>'
            f"{' <span class=tag>not built</span>' if d in missing else ''}"
            f"<p>{html.escape(d.blurb)}</p></li>"
            for d in DEMOS
        )
        return _page(self._landing_page("", items))

    def _page(self, demo: Demo) -> Response:
        if not self.bundle(demo).is_file():
            # The landing page's note without its list, from /demo/<name>: links go one folder up.
            return _page(self._landing_page("../", ""), status=503)
        return _page((self.folder / f"{demo.name}.html").read_bytes())

    def _file(self, name: str) -> Response:
        suffix = "." + name.rsplit(".", 1)[-1]
        if not _FILE_NAME.fullmatch(name) or suffix not in FILE_TYPES:
            return Response("Not Found", status_code=404)
        for folder in (self.folder / "dist", self.folder):
            found = folder / name
            if found.is_file():
                return Response(found.read_bytes(), media_type=FILE_TYPES[suffix], headers=SECURITY_HEADERS)
        return Response("Not Found", status_code=404)

    # ------------------------------------------------------------ POST /demo/token

    async def _token(self, request: Request) -> Response:
        remote = request.client.host if request.client else ""
        try:
            name = await self._token_name(request)
        except BadRequest as exc:
            log_limited(log, logging.INFO, "demo token request from %s refused: %s", remote, exc)
            return _error(exc.status, str(exc))
        user = user_id(name)
        token = mint_token(self.config.token_hmac_secret_key, user, ttl=TOKEN_TTL, info={"name": name})
        personal = self.node.personal.channel(user) if self.config.user_subscribe_to_personal else None
        return _json(
            {"token": token, "user": user, "name": name, "expires_in": TOKEN_TTL, "personal": personal}
        )

    async def _token_name(self, request: Request) -> str:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise BadRequest(415, "the body must be JSON (Content-Type: application/json)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TOKEN_BODY:
            raise BadRequest(413, f"body larger than {MAX_TOKEN_BODY} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_TOKEN_BODY:
                raise BadRequest(413, f"body larger than {MAX_TOKEN_BODY} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest(400, "body is not JSON") from None
        if not isinstance(body, dict) or set(body) != {"name"}:
            raise BadRequest(400, 'body must be {"name": "..."}')
        name = body["name"]
        if not isinstance(name, str):
            raise BadRequest(400, "name must be a string")
        name = " ".join(name.split())
        if not name.isprintable() or len(name) > MAX_DISPLAY_NAME:
            raise BadRequest(400, f"name must be at most {MAX_DISPLAY_NAME} printable characters")
        if not user_id(name):
            raise BadRequest(400, "name needs at least one letter or digit")
        return name

    # ------------------------------------------------------------ RPC demo.typing

    async def typing(self, ctx: RPCContext) -> None:
        """``demo.typing``: tell the channel's subscribers that the caller is typing (module docstring)."""
        channel = ctx.data.get("channel") if isinstance(ctx.data, dict) else None
        if not isinstance(channel, str):
            raise codes.error_bad_request()
        client = self.node.registry.clients.get(ctx.client_id)
        sub = client.subs.get(channel) if client is not None else None
        if client is None or sub is None or not sub.active:
            raise codes.error_permission_denied()
        opts = sub.options
        anonymous_ok = bool(client.user) or opts.allow_publish_for_anonymous
        if not (opts.allow_publish_for_subscriber or (opts.allow_publish_for_client and anonymous_ok)):
            raise codes.error_permission_denied()
        await self.node.publish_to(
            client.tenant, sub.channel, opts, TYPING_DATA, info=sub.info, skip_history=True
        )

    # ------------------------------------------------------------ RPC demo.notify

    async def notify(self, ctx: RPCContext) -> dict[str, Any]:
        """``demo.notify``: a notification for the caller's own user (module docstring)."""
        if ctx.data not in (None, {}):
            raise codes.error_bad_request()
        if not ctx.user:
            raise codes.error_permission_denied()
        if self.notifications is None:
            raise codes.error_not_available()
        if not self._admit((ctx.tenant, ctx.user)):
            log_limited(log, logging.INFO, "demo.notify refused: more than %d at once", NOTIFY_BURST)
            raise codes.error_too_many_requests()
        n = next(self._sent)
        title, body = SAMPLES[(n - 1) % len(SAMPLES)]
        result = await self.notifications.notify_params(
            ctx.tenant,
            {
                "recipients": [ctx.user],
                "category": NOTIFY_CATEGORY,
                "title": title.format(n=n),
                "body": body.format(n=n),
                "data": {"demo": n},
                "expire_at": time.time() + NOTIFY_TTL,
            },
        )
        [recipient] = result.recipients
        return {"notification_id": result.notification_id, "item_id": recipient.item_id}

    def _admit(self, sender: tuple[str, str]) -> bool:
        now = time.monotonic()
        bucket = self._senders.pop(sender, None)
        if bucket is None:
            bucket = TokenBucket(NOTIFY_RATE, NOTIFY_BURST, now)
            if len(self._senders) >= MAX_NOTIFY_SENDERS:
                self._senders.popitem(last=False)  # the least recent sender
        self._senders[sender] = bucket
        return bucket.take(now)

    def announce(self) -> None:
        """One log line: where the demos are, or what to run to build them."""
        if not self.enabled:
            return
        where = f"http://{self.config.host}:{self.config.port}/"
        missing = self.missing()
        if missing:
            log.warning(
                "demos: %s lists them; not built: %s (run `%s`, which needs npm)",
                where,
                ", ".join(d.name for d in missing),
                BUILD_COMMAND,
            )
        else:
            log.warning(
                "demos: %s (%s); POST /demo/token signs a development token for any name, "
                "the RPC %s stores a notification for the caller",
                where,
                ", ".join(d.name for d in DEMOS),
                NOTIFY_RPC,
            )


def _json(body: Any, status: int = 200) -> Response:
    headers = {**SECURITY_HEADERS, "cache-control": "no-store"}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, reason: str, allow: str = "") -> Response:
    response = _json({"error": reason}, status)
    if allow:
        response.headers["allow"] = allow
    return response


def _page(body: str | bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)
