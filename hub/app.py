"""The composition root: the only place that picks concrete backends, and the embedding API.

``Switchboard`` is what a program embeds: it holds the Node, takes hooks and RPC handlers as decorators,
and is an ASGI application serving ``/connection/websocket``, ``/health``, ``/ready`` and ``/metrics``.
Mount it inside your own Starlette or FastAPI app (``Mount("/realtime", app=sb)``) and run ``sb.lifespan``
from your app's lifespan, or let it start on its first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.broker import Broker
from channels.broker_memory import MemoryBroker
from channels.publication import PublishResult
from channels.redis_shards import RedisShards
from hub.admin.console import Console
from hub.admin.inspect import node_figures
from hub.admin.store import ConsoleStore
from hub.admin.store_sqlite import SqliteConsoleStore
from hub.alerting import AlertNotifier, Alerts, InboxAlerts, PersonalChannels
from hub.api import ServerAPI
from hub.bots.service import BOT_PREFIX, Bots
from hub.config import Config, load_config
from hub.demos import NOTIFY_RPC, TYPING_RPC, Demos
from hub.docs import CONTENT_SUFFIX, DOC_PREFIX, EDIT_SUFFIX, Documents
from hub.hooks import Hooks
from hub.inbox.api import api_methods
from hub.inbox.rpc import RESERVED_PREFIX, rpc_methods
from hub.inbox.service import Notifications
from hub.ingest.endpoint import Ingest
from hub.ingest.metrics import FeedCollector
from hub.metrics import HubCollector, MetricsServer, OutboxCollector, build_registry, exposition
from hub.node import Node, new_node_id
from hub.outbound.api import WebhookAPI
from hub.outbound.routes import retry_policy
from hub.outbound.service import Outbound
from hub.readiness import BrokerWatch
from hub.transport_http import EMULATION_PATH, STREAM_PATHS, emulation, stream_session
from hub.transport_websocket import websocket_session
from inbox.inbox import InboxOptions, InboxStore
from inbox.inbox_sqlite import SqliteInbox
from inbox.model import NotifyResult
from inbox.outbox import Router
from presence.occupancy import Occupancy
from presence.occupancy_memory import MemoryOccupancy
from presence.presence import PresenceManager
from presence.presence_memory import MemoryPresence
from sync.store_sqlite import SqliteDocumentStore

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

log = logging.getLogger("switchboard.app")

WEBSOCKET_PATH = "/connection/websocket"
ADMIN_PREFIX = "/admin"


def _route_path(scope: dict[str, Any]) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class Switchboard:
    """A hub node as an embeddable ASGI application."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        hooks: Hooks | None = None,
        broker: Broker | None = None,
        presence: PresenceManager | None = None,
    ) -> None:
        # No config: SWITCHBOARD_* settings over closed defaults, never development mode.
        self.config = config if config is not None else load_config()
        self.hooks = hooks if hooks is not None else Hooks()
        node_id = new_node_id(self.config)
        self.redis = _redis_shards(self.config)
        """The Redis deployment the nodes share (None: one process, the embedded backends)."""
        if self.redis is not None:
            from channels.broker_redis import RedisBroker
            from presence.presence_redis import RedisPresence

            broker = broker if broker is not None else RedisBroker(self.redis, node_id=node_id)
            presence = (
                presence
                if presence is not None
                else RedisPresence(self.redis, ttl=self.config.presence_ttl, node_id=node_id)
            )
        self.node = Node(
            self.config,
            broker if broker is not None else MemoryBroker(),
            presence if presence is not None else MemoryPresence(),
            self.hooks,
            node_id=node_id,
        )
        self.brokers: BrokerWatch | None = None
        """Whether the node reaches every Redis server it needs (``/ready``); None without Redis."""
        if self.redis is not None:
            from hub.control import RedisControl

            self.node.control = RedisControl(self.node, self.redis)
            self.brokers = BrokerWatch(self.redis.unreachable, self.config.node_info_interval)
        self._start_lock = asyncio.Lock()
        self.started = False
        """Every part runs (``start`` finished): what ``/ready`` waits for."""
        # Documents: the embedded SQLite store under data_dir (opened on first use), or Redis (doc_store);
        # with Redis configured, documents' updates, awareness and writer lease travel between nodes over it.
        doc_relay = None
        if self.redis is not None:
            from sync.relay_redis import RedisDocumentRelay
            from sync.store_redis import RedisDocumentStore

            doc_relay = RedisDocumentRelay(
                self.redis, node_id=node_id, max_backlog=self.config.doc_write_backlog_max_size
            )
        self.documents = Documents(
            self.config,
            self.node.verifier,
            self.node.scheduler,
            RedisDocumentStore(self.redis)
            if self.redis is not None and self.config.documents_in_redis()
            else SqliteDocumentStore(Documents.default_store_path(self.config), fsync=self.config.doc_fsync),
            doc_relay,
        )
        node = self.node
        self.metrics_registry = build_registry(
            HubCollector(node.metrics, lambda: node.sessions, lambda: len(node.registry.fanout))
        )
        self.metrics_registry.register(FeedCollector(node.feed_metrics))
        self.metrics_server: MetricsServer | None = None
        # Events out (webhooks, email): the hub's events go to the outbox of the inbox's store
        # (``outbox_store``); this node delivers them unless ``workers_in_process`` is off.
        self.outbound = Outbound(self.config, node, self.documents, _occupancy(self.config, self.redis, node))
        self.metrics_registry.register(OutboxCollector(self.outbound.metrics))
        self.api = ServerAPI(node)
        self.ingest = Ingest(node, self.api)
        self.mqtt: Any = None
        """The MQTT bridge (``workers.mqtt``) when ``[mqtt]`` is configured and this node is a candidate."""
        self.mqtt_leader: Any = None
        """Runs the bridge while this process holds its lease (``workers.lease``): one per deployment."""
        if self.config.mqtt is not None and self.config.mqtt_enabled:
            self._mqtt_candidate()
        """Readings from collectors, in batches (``hub.ingest``)."""
        node.info_sources.append(node_figures(self.documents, self.redis))
        store = _console_store(self.config, self.redis)
        self.console = Console(self.config, node, self.api, self.documents, store)
        """The admin console at ``/admin`` (``hub.admin``): 404 unless a password is configured."""
        self.console.announce()
        self.demos = Demos(self.config, node)
        """The landing page at ``/`` and the demos under ``/demo`` (``hub.demos``): development mode only."""
        if self.demos.enabled:
            self.hooks.rpc.setdefault(TYPING_RPC, self.demos.typing)
            self.hooks.rpc.setdefault(NOTIFY_RPC, self.demos.notify)
        self.demos.announce()
        self.api.add_methods(WebhookAPI(self.outbound).handlers())
        self.inbox: InboxStore = _inbox_store(self.config, self.outbound.routes.route)
        """The notification inbox (and outbox) store: PostgreSQL when ``database_url`` names one, else
        SQLite under ``data_dir``; opened (and migrated) by ``start``, closed by ``stop``."""
        self.notifications = Notifications(node, self.inbox)
        self.console.inbox = self.inbox
        self.demos.notifications = self.notifications
        """The inbox calls with their pushes (``hub.inbox.service``): what RPC, the API and ``notify`` use."""
        notifier: AlertNotifier = (
            InboxAlerts(self.notifications)
            if self.config.alerts_notify == "inbox"
            else PersonalChannels(node, self.config.alerts_user_channel)
        )
        self.alerts = Alerts(node, self.config.alerts, notifier) if self.config.alerts else None
        """The ``[[alerts]]`` rules on this node (``hub.alerting``); users are notified through the inbox (or
        on their personal channels: ``alerts_notify``)."""
        _check_reserved(self.hooks.rpc)
        node.builtin_rpc.update(rpc_methods(self.notifications, self.config.client_queue_max_size // 2))
        self.bots = node.bots = Bots(node)
        """Bot connections and the RPC methods they serve (``hub.bots``)."""
        node.builtin_rpc.update(self.bots.methods())
        self.bots.listen()
        for method, handler in api_methods(self.notifications).items():
            self.api.register(method, handler)
        node.delivered = self.notifications.tracker.observe
        self.http = Starlette(
            routes=[
                Route("/health", self._health),
                Route("/ready", self._ready),
                Route("/metrics", self._metrics),
                Route("/ingest/influx", self.ingest.influx, methods=["POST"]),
                Route("/api/v2/write", self.ingest.influx, methods=["POST"]),
                Route("/ingest/jsonl", self.ingest.jsonl, methods=["POST"]),
                Route("/api", self.api.root_endpoint, methods=["POST"]),
                Route("/api/{method}", self.api.method_endpoint, methods=["POST"]),
            ],
            lifespan=self.lifespan,
        )

    # hooks as decorators
    def on_connecting(self, fn: F) -> F:
        self.hooks.on_connecting = fn
        return fn

    def on_subscribe(self, fn: F) -> F:
        self.hooks.on_subscribe = fn
        return fn

    def on_publish(self, fn: F) -> F:
        self.hooks.on_publish = fn
        return fn

    def on_message(self, fn: F) -> F:
        self.hooks.on_message = fn
        return fn

    def rpc(self, method: str) -> Callable[[F], F]:
        _check_reserved([method])

        def register(fn: F) -> F:
            self.hooks.rpc[method] = fn
            return fn

        return register

    # lifecycle
    async def start(self) -> None:
        """Start every part; idempotent. ``started`` (and ``/ready``) only once all of them run: a node that
        answered ready before its alert rules or bridges listened would take publications they miss."""
        async with self._start_lock:
            if self.started:
                return
            if self.redis is not None and not self.node.started:
                await self.redis.start()
            if not self.node.started:
                if self.redis is not None and not self.config.database_url:
                    log.warning("inbox on SQLite under data_dir: nodes share it only if they share data_dir")
                await self.inbox.open()  # creates or migrates the schema; a store that cannot open stops us
                await self.notifications.start()
            await self.node.start()
            if self.outbound.store is None:
                worker = None
                if self.config.workers_in_process:
                    from workers.process import start_worker

                    worker = partial(start_worker, self.config, self.node.id)
                await self.outbound.start(self.outbox_store(), worker=worker)
            if self.alerts is not None:
                await self.alerts.start()
            if self.mqtt_leader is not None:
                await self.mqtt_leader.start()
            if self.brokers is not None:
                await self.brokers.start()
            await self.demos.start()
            if self.config.metrics_port and self.metrics_server is None:
                self.metrics_server = MetricsServer(
                    self.metrics_registry, self.config.host, self.config.metrics_port
                )
                await self.metrics_server.start()
            self.started = True

    def _mqtt_candidate(self) -> None:
        from workers.lease import Leader, Lease, LocalLease  # workers, run in the node or the worker
        from workers.mqtt import MqttBridge

        assert self.config.mqtt is not None
        node, ttl = self.node, self.config.mqtt_lease_ttl
        self.mqtt = MqttBridge(node, self.config.mqtt)
        lease: Lease = LocalLease(node.id)
        if self.redis is not None:
            from workers.lease_redis import RedisLease

            lease = RedisLease(self.redis, "mqtt-bridge", node.id, ttl)
        metrics = node.feed_metrics
        metrics.mqtt_bridge_active = 0

        def changed(active: bool) -> None:
            metrics.mqtt_bridge_active = int(active)

        self.mqtt_leader = Leader("mqtt bridge", lease, self.mqtt.start, self.mqtt.close, ttl, changed)

    async def start_bridge(self) -> None:
        """What ``switchboard worker`` runs of a node for the MQTT bridge: Redis, the node (its broker and
        control channel: the bridge publishes through it, and outbound routes learn channels through it)
        and the bridge's candidacy; no inbox, no alerts, no HTTP."""
        if self.config.mqtt is None:
            raise ValueError("no [mqtt] configured")
        if self.mqtt_leader is None:
            self._mqtt_candidate()
        if self.redis is not None:
            await self.redis.start()
        await self.node.start()
        await self.mqtt_leader.start()

    async def stop_bridge(self) -> None:
        if self.mqtt_leader is not None:
            await self.mqtt_leader.stop()
        await self.node.stop()
        if self.redis is not None:
            await self.redis.close()

    async def drain(self) -> None:
        """Disconnect every client with 3001 (reconnect) in batches (``Node.drain``). Call it from your
        server's shutdown before the server closes connections; ``stop`` runs it if nobody did."""
        await self.node.drain()

    async def stop(self) -> None:
        if self.brokers is not None:
            await self.brokers.stop()
        if self.alerts is not None:
            await self.alerts.close()
        if self.mqtt_leader is not None:
            await self.mqtt_leader.stop()
        await self.demos.stop()
        await self.node.stop()
        await self.outbound.stop()
        await self.notifications.stop()
        await self.inbox.close()
        await self.documents.close()
        await self.console.store.close()
        if self.redis is not None:
            await self.redis.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        self.started = False

    def outbox_store(self) -> InboxStore | None:
        """Where events out are stored: the inbox's store (its outbox commits with its changes); None when
        no webhook and no email is configured (nothing to deliver)."""
        return self.inbox if self.outbound.routes.enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def publish(
        self, channel: str, data: Any, *, tenant: str = "", idempotency_key: str | None = None
    ) -> PublishResult:
        await self.start()
        return await self.node.publish(channel, data, tenant=tenant, idempotency_key=idempotency_key)

    async def notify(
        self,
        category: str,
        recipients: list[str] | None = None,
        *,
        tenant: str = "",
        channel: str | None = None,
        **fields: Any,
    ) -> NotifyResult:
        """Notify ``recipients`` (and, with ``channel``, every user subscribed to it now), as the server
        API's ``notify`` (the same fields, as JSON values: ``data``, ``title``, ``body``, ``url``,
        ``actions``, ``dedupe_key``, ``group_key``, ``group_window``, ``expire_at``, ``channels``...).
        Stores the notification and pushes each recipient's new item and counts. Bad input raises
        ``ClientError`` (107, with the reason)."""
        await self.start()
        params: dict[str, Any] = {"category": category, "recipients": list(recipients or []), **fields}
        if channel is not None:
            params["channel"] = channel
        return await self.notifications.notify_params(tenant, params)

    # server-side control of connections (see Node for the semantics)
    async def subscribe(self, user: str, channel: str, *, tenant: str = "") -> int:
        return await self.node.subscribe_user(user, channel, tenant=tenant)

    async def unsubscribe(self, user: str, channel: str, *, tenant: str = "") -> int:
        return await self.node.unsubscribe_user(user, channel, tenant=tenant)

    def send(self, user: str, data: Any, *, tenant: str = "") -> int:
        return self.node.send_message(user, data, tenant=tenant)

    def disconnect(
        self, user: str, *, tenant: str = "", code: int = 3503, reason: str = "force disconnect"
    ) -> int:
        return self.node.disconnect_user(user, tenant=tenant, code=code, reason=reason)

    # ASGI
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "lifespan" and not self.started:
            await self.start()  # mounted in a host app whose lifespan does not start us
        if kind == "websocket" and _route_path(scope).startswith(DOC_PREFIX):
            await self.documents.websocket(scope, _route_path(scope), receive, send)
            return
        if kind == "websocket" and _route_path(scope) == WEBSOCKET_PATH:
            await websocket_session(self.node, scope, receive, send)
            return
        if kind == "http":
            path = _route_path(scope)
            if path.startswith(DOC_PREFIX) and path.endswith(CONTENT_SUFFIX):
                await self.documents.content_endpoint(scope, path, receive, send)
                return
            if path.startswith(DOC_PREFIX) and path.endswith(EDIT_SUFFIX):
                await self.documents.edit_endpoint(scope, path, receive, send)
                return
            stream = STREAM_PATHS.get(path)
            if stream is not None:
                await stream_session(self.node, stream, scope, receive, send)
                return
            if path == EMULATION_PATH:
                await emulation(self.node, scope, receive, send)
                return
            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                await self.console.serve(scope, path, receive, send)
                return
            if self.demos.handles(path):
                await self.demos.serve(scope, path, receive, send)
                return
        await self.http(scope, receive, send)

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _metrics(self, request: Request) -> Response:
        body, content_type = exposition(self.metrics_registry)
        return Response(body, headers={"Content-Type": content_type})

    async def _ready(self, request: Request) -> JSONResponse:
        if not self.started or self.node.stopping:
            return JSONResponse({"status": "not ready"}, status_code=503)
        if self.brokers is not None and self.brokers.down:
            return JSONResponse({"status": "not ready", "reason": self.brokers.reason()}, status_code=503)
        return JSONResponse({"status": "ready", "node": self.node.id})


def _redis_shards(config: Config) -> RedisShards | None:
    if not config.redis_urls:
        return None
    return RedisShards(
        config.redis_urls,
        cluster=config.redis_cluster,
        prefix=config.redis_prefix,
        connect_timeout=config.redis_connect_timeout,
    )


def _console_store(config: Config, redis: RedisShards | None) -> ConsoleStore:
    """The console's audit log and revoked sessions: in the shared Redis, else SQLite under data_dir."""
    if redis is not None:
        from hub.admin.store_redis import RedisConsoleStore

        return RedisConsoleStore(redis, config.admin_audit_max_entries)
    return SqliteConsoleStore(Path(config.data_dir) / "admin.sqlite3", config.admin_audit_max_entries)


def _occupancy(config: Config, redis: RedisShards | None, node: Node) -> Occupancy:
    """Channel occupancy across the nodes (for occupied/vacated events): in Redis when the nodes share one."""
    if redis is None:
        return MemoryOccupancy()
    from presence.occupancy_redis import RedisOccupancy

    return RedisOccupancy(redis, ttl=config.presence_ttl, owner=node.presence.owner)


def _inbox_store(config: Config, route: Router) -> InboxStore:
    """PostgreSQL when ``database_url`` is set (every node shares it), else SQLite under ``data_dir``; its
    outbox routes the hub's events by ``route`` (``hub.outbound.routes``) and retries by the config."""
    options = InboxOptions(policy=config.inbox, route=route, retry=retry_policy(config))
    if config.database_url:
        from inbox.inbox_postgres import PostgresInbox

        return PostgresInbox(config.database_url, options)
    return SqliteInbox(Path(config.data_dir) / "inbox.sqlite3", options, fsync=config.inbox_fsync)


def _check_reserved(methods: Any) -> None:
    for method in methods:
        if isinstance(method, str) and method.startswith((RESERVED_PREFIX, BOT_PREFIX)):
            raise ValueError(f"RPC method {method!r}: the inbox.* and bot.* methods are the hub's own")


def create_app(config: Config | None = None, hooks: Hooks | None = None) -> Switchboard:
    return Switchboard(config, hooks=hooks)
