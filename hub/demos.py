"""The landing page at ``/`` and the demo apps under ``/demo``: development mode only.

Endpoints (every one answers 404 outside development mode)::

    GET  /                    the landing page: links to each demo and the console, and what to run
                              when the demo bundles are not built
    GET  /demo/<name>         a demo's page (static/demo/<name>.html); 503 with the build instructions
                              while its bundle is missing
    GET  /demo/<file>         the demos' stylesheet (static/demo) and bundles (static/demo/dist)
    POST /demo/token          {"name": "Alice"} -> {"token", "user", "name", "expires_in"}

and the RPC method ``demo.typing`` (``{"channel": ...}``) for the chat's typing indicator.

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
  (``hub.logs.log_limited``).
- ``demo.typing`` publishes ``{"typing": true}`` into a channel the caller is subscribed to, without
  history (``skip_history``): typing indicators pass through the channel's subscribers and are never
  stored, replayed by recovery, or counted against the channel's history size. The publication carries
  the caller's client info, so a typist's name comes from its token, not from what it sends. It takes
  what a publish takes: an active subscription and a namespace that lets this subscriber publish (103
  otherwise); a bad request is 107. Its data is fixed, so a client controls nothing but how often it
  calls, as for any publish (``client_command_rate_limit``), and no ``on_publish`` hook is asked.

Adding a demo (the notification bell and the sensor dashboard will): a ``Demo`` entry in ``DEMOS``, its
page ``static/demo/<name>.html`` loading ``<name>.js``, its entry module ``static/demo/src/<name>.js``
(``build.mjs`` bundles every ``src/*.js``; shared code lives in ``src/lib``), and its npm packages in
``static/demo/package.json`` (then ``npm install`` to update the lock). A demo that needs a part of the
hub which may be off (the inbox, feeds) says so on its page, as the chat says when it cannot connect.
"""

from __future__ import annotations

import html
import logging
import re
import string
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
from hub.hooks import RPCContext
from hub.logs import log_limited

if TYPE_CHECKING:
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
        return _json({"token": token, "user": user, "name": name, "expires_in": TOKEN_TTL})

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
                "demos: %s (%s); POST /demo/token signs a development token for any name",
                where,
                ", ".join(d.name for d in DEMOS),
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
