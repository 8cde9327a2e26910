"""Configuration: a TOML file, then ``SWITCHBOARD_*`` environment overrides, then command-line flags.

With no file and no token key anywhere, the hub starts in development mode (see ``DEV_SECRET``): anonymous
clients may connect, and channels without a namespace allow everything with presence, join/leave and
history. Every key is documented in README.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.alerts import AlertRule
from channels.errors import UnknownNamespace
from channels.names import parse_channel
from channels.options import NamespaceOptions, Namespaces, parse_duration
from channels.pattern import compile_pattern
from hub.codes import ConfigError
from hub.ingest.settings import (
    IngestSettings,
    MqttSettings,
    check_user_channel,
    parse_alerts,
    parse_ingest,
    parse_mqtt,
)
from hub.outbound.settings import EmailSettings, Webhook, parse_email, parse_webhooks
from inbox.errors import InvalidInput
from inbox.model import DeliveryChannel, check_category, parse_channels
from inbox.preferences import CategoryPolicy, PreferencePolicy

log = logging.getLogger("switchboard.config")

ENV_PREFIX = "SWITCHBOARD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""The config file's path when ``--config`` is not given (``--config`` wins)."""
DEV_ENV = ENV_PREFIX + "DEV"
"""``SWITCHBOARD_DEV=1``, as ``--dev``: development mode is allowed on a non-loopback address."""
DEV_SECRET = "switchboard-development-secret-do-not-use-in-production"
DEV_BOT_SECRET = "switchboard-development-bot-secret-do-not-use-in-production"
"""Development mode's ``bot_token_hmac_secret_key``, public like ``DEV_SECRET``: anyone may sign a bot token
with it, so ``python -m examples.agent_assistant`` joins the demos as a bot with no configuration."""

DEV_CHANNEL_OPTIONS = NamespaceOptions(
    presence=True,
    join_leave=True,
    force_push_join_leave=True,
    history_size=100,
    history_ttl=300.0,
    force_recovery=True,
    allow_subscribe_for_client=True,
    allow_subscribe_for_anonymous=True,
    allow_publish_for_client=True,
    allow_publish_for_anonymous=True,
    allow_history_for_client=True,
    allow_history_for_anonymous=True,
    allow_presence_for_client=True,
    allow_presence_for_anonymous=True,
    allow_user_limited_channels=True,
    streams=True,  # the chat demo shows streamed replies (an ordinary publication passes unchanged)
)

DEV_PERSONAL_NAMESPACE = "personal"
DEV_PERSONAL_OPTIONS = NamespaceOptions(history_size=10, history_ttl=300.0, force_recovery=True)
"""Development mode's personal channels (``personal:#<user>``, every connection of a user subscribed
server-side, for the inbox's pushes): a short history so a reconnecting SDK recovers what it missed, and
nothing a client may do in them by itself (no subscribe, publish, history or presence of its own)."""

DEV_SENSORS_NAMESPACE = "sensors"
DEV_SENSORS_OPTIONS = NamespaceOptions.from_mapping(
    {
        "conflation": "latest",
        "max_rate": 5,
        "key_field": "/sensor",
        "max_keys": 100,
        "history_size": 1,
        "history_ttl": 3600,
        "force_recovery_mode": "cache",
        "allowed_delta_types": ["fossil"],
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
    }
)
"""Development mode's sensor feed (the sensor dashboard demo, ``hub.demo_sensors``): one channel, a key per
sensor, at most 5 readings a second per sensor to each dashboard, the latest of every sensor on subscribe,
fossil deltas; clients may subscribe, never publish (the hub's simulator does)."""

_DURATIONS = {
    "client_ping_interval",
    "client_pong_timeout",
    "client_expired_close_delay",
    "client_stale_close_delay",
    "shutdown_timeout",
    "shutdown_batch_pause",
    "sse_heartbeat_interval",
    "doc_unload_delay",
    "doc_ping_interval",
    "doc_edit_presence_linger",
    "presence_ttl",
    "presence_update_interval",
    "node_info_interval",
    "redis_connect_timeout",
    "http_header_timeout",
    "http_body_timeout",
    "http_keep_alive_timeout",
    "admin_session_ttl",
    "outbox_retry_base",
    "outbox_retry_cap",
    "outbox_retention",
    "document_changed_wait",
    "document_changed_max_wait",
    "inbox_expire_interval",
    "bot_rpc_timeout",
    "mqtt_lease_ttl",
}


ALERTS_NOTIFY = ("inbox", "channel")
"""The values of ``alerts_notify``."""
MQTT_LEASE_TTL = (0.3, 3600.0)
"""The bounds of ``mqtt_lease_ttl``: a shorter lease would be renewed more often than Redis round trips
allow on a busy machine."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A server API key. ``tenant`` None: the key acts on any tenant (each call names one, default "");
    a string: every call is confined to that tenant."""

    key: str
    tenant: str | None = None


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: str = "text"
    metrics_port: int = 0
    data_dir: str = "data"
    node_name: str = ""

    token_hmac_secret_key: str = ""
    token_rsa_public_key: str = ""
    token_ecdsa_public_key: str = ""
    token_audience: str = ""
    token_issuer: str = ""
    token_require_exp: bool = False
    """Refuse connection, subscription and document tokens without ``exp`` (invalid token)."""
    allow_anonymous_connect_without_token: bool = False

    client_channel_limit: int = 128
    client_max_message_size: int = 65536
    client_queue_max_size: int = 1048576
    node_queue_max_size: int = 268435456
    """Bytes all connections of the node together may have waiting to be written; past it the ones holding
    the most are closed as slow consumers (3008) until the total is back under it (0: no node-wide bound)."""
    client_conflation_backlog: int = 65536
    """Bytes a connection may have waiting to be written before its conflated subscriptions skip flushes
    (it gets fewer, fresher publications instead of a longer queue); at most half client_queue_max_size
    is used, so conflated deliveries never make a connection a slow consumer."""
    client_ping_interval: float = 25.0
    client_pong_timeout: float = 8.0
    client_expired_close_delay: float = 25.0
    client_stale_close_delay: float = 10.0
    client_recovery_max_publication_limit: int = 300
    client_command_rate_limit: float = 0.0
    client_command_rate_burst: int = 200
    client_user_connection_limit: int = 0
    bot_token_hmac_secret_key: str = ""
    """Signs bot tokens (``"bot": true``, ``hub.bots``): only a token signed with it may carry the claim;
    empty: no connection is a bot."""
    bot_client_channel_limit: int = 0
    """Channels one bot connection may hold (0: client_channel_limit)."""
    bot_command_rate_limit: float = -1.0
    """Commands a second one bot connection may send (-1: client_command_rate_limit; 0: no limit)."""
    bot_command_rate_burst: int = 0
    """The bots' burst (0: client_command_rate_burst)."""
    bot_rpc_prefix: str = "agent."
    """RPC methods bot connections serve: a bot registers prefixes that start with it (``bot.serve``), and
    a call of a method under it that no hook serves goes to a bot (empty: no routing to bots)."""
    bot_rpc_timeout: float = 30.0
    """Seconds a call waits for its bot's reply; then error 504."""
    bot_rpc_max_pending: int = 64
    """Calls one bot connection may have unanswered (then another bot of its prefix; all full: 106)."""
    bot_rpc_max_pending_per_user: int = 16
    """Calls to bots one user (one connection when anonymous) may have unanswered on a node; past it: 106."""
    bot_rpc_max_data_size: int = 32768
    """Bytes of a call's data, and of a bot's result, at most (JSON); past it: 106."""
    bot_rpc_max_prefixes: int = 8
    """Prefixes one bot connection may serve at once."""
    bot_rpc_max_routes: int = 10000
    """Prefix registrations of all bot connections of a node together."""
    websocket_fast_path: bool = True
    websocket_compression: bool = False
    doc_anonymous_access: str = "none"
    doc_token_access: str = "none"
    doc_max_update_size: int = 4194304
    doc_max_document_size: int = 33554432
    doc_max_open_documents: int = 10000
    doc_user_connection_limit: int = 100
    doc_unload_delay: float = 5.0
    doc_compact_after_updates: int = 1000
    doc_compact_after_bytes: int = 1048576
    doc_ping_interval: float = 15.0
    doc_fsync: bool = False
    doc_queue_max_size: int = 1048576
    """Bytes waiting for one document connection (not counting one large message being streamed)."""
    doc_write_backlog_max_size: int = 16777216
    """Bytes of document changes waiting for the store, and for Redis, before connections stop being read."""
    doc_max_awareness_state_size: int = 16384
    doc_max_awareness_states: int = 8
    """Client ids one document connection may announce awareness states for."""
    doc_max_awareness_size: int = 524288
    """Bytes of all awareness states of one document together."""
    doc_edit_max_body_size: int = 1048576
    """Bytes of one ``POST /doc/{name}/edit`` body."""
    doc_edit_presence_linger: float = 2.0
    """Seconds an agent stays shown in a document (its cursor at what it edited) after its last edit."""
    sse_heartbeat_interval: float = 15.0
    sse_retry_ms: int = 2000
    shutdown_batch_size: int = 500
    shutdown_batch_pause: float = 0.2
    shutdown_timeout: float = 10.0
    api_key: str = ""
    api_max_body_size: int = 1048576
    http_header_timeout: float = 10.0
    """Seconds a connection has to deliver a request's headers (hub.http_uvicorn); then 408 and close."""
    http_body_timeout: float = 30.0
    """Seconds a request has to deliver its whole body once its headers are in; then 408 and close."""
    http_keep_alive_timeout: float = 5.0
    """Seconds an HTTP connection may stay idle between requests before the node closes it (uvicorn's
    ``timeout_keep_alive``). Behind a load balancer that reuses connections, set it above the balancer's
    own idle timeout, or the balancer may send a request into a connection the node is closing (a 502)."""
    http_max_unfinished_requests: int = 1000
    """Connections whose request (headers or body) is still arriving, at most, on this node; past it: 503."""
    api_batch_max_parallel: int = 32
    """Commands of one ``parallel`` server API batch in flight at once (the rest wait their turn)."""

    redis_urls: list[str] = field(default_factory=list)
    """Several standalone servers (channels spread by consistent hashing), or a cluster's seed nodes."""
    redis_cluster: bool = False
    redis_prefix: str = "sb"
    redis_connect_timeout: float = 5.0
    presence_ttl: float = 60.0
    """Seconds a presence entry lives in Redis unless its node refreshes it (a dead node leaves no ghosts)."""
    presence_update_interval: float = 25.0
    node_info_interval: float = 3.0
    """Seconds between two announcements of a node on the control channel; a node silent for three of them
    is taken for dead."""
    doc_store: str = "auto"
    """Where documents are stored: ``sqlite`` (under data_dir), ``redis`` (needs redis_urls), or ``auto``:
    redis when redis_urls are set, else sqlite."""

    admin_password: str = ""
    """Signs in to the console (``/admin``) with full control. No admin or read-only password (plain or
    hash): the console does not exist (404), except in development mode (a one-time password is logged)."""
    admin_password_hash: str = ""
    """``admin_password`` as a hash (``switchboard admin-hash``: scrypt or pbkdf2_sha256)."""
    admin_readonly_password: str = ""
    """Signs in to the console read-only: every view, no action."""
    admin_readonly_password_hash: str = ""
    admin_session_ttl: float = 28800.0
    """Seconds a console sign-in lasts."""
    admin_trust_proxy_headers: bool = False
    """Behind a TLS-terminating proxy: the console believes its ``X-Forwarded-Proto`` (Secure cookie, Origin
    check) and the last address of ``X-Forwarded-For`` (sign-in throttling, audit log)."""
    admin_audit_max_entries: int = 10000
    """Console actions the audit log keeps (the oldest go first)."""
    admin_max_streams: int = 32
    """Live console streams (browser tabs) one node serves at once; past it: 503."""
    webhooks: list[Webhook] = field(default_factory=list)
    """``[[webhooks]]``: endpoints that get the hub's events, signed (``hub.outbound.settings``)."""
    email: EmailSettings | None = None
    """``[email]``: notifications as email over SMTP (None: no email channel)."""
    workers_in_process: bool = True
    """Deliver webhooks and email from this node; false when ``switchboard worker`` processes do."""
    outbox_max_attempts: int = 8
    """Attempts of one delivery before it becomes a dead letter."""
    outbox_retry_base: float = 1.0
    """Seconds before the second attempt; doubling from there (with jitter), up to ``outbox_retry_cap``."""
    outbox_retry_cap: float = 3600.0
    outbox_retention: float = 604800.0
    """Seconds a finished delivery (and its attempts) is kept for ``webhook_tasks``/``webhook_attempts``."""
    document_changed_wait: float = 2.0
    """``document.changed`` goes out this long after a document's last change (y-websocket's debounce)..."""
    document_changed_max_wait: float = 10.0
    """... or this long after its first unreported change, whichever comes first."""
    database_url: str = ""
    """PostgreSQL DSN (``postgresql://...``) of the inbox and outbox store every node shares; empty: SQLite
    under ``data_dir`` (one process, or nodes sharing that directory)."""
    inbox_fsync: bool = False
    """SQLite inbox: fsync every change (survives power loss; without it, a crash of the process)."""
    inbox_expire_interval: float = 10.0
    """Seconds between this node's sweeps of expired inbox items (``hub.inbox.expiry``); 0: no sweeps here."""
    user_subscribe_to_personal: bool = False
    """Centrifugo's option: every connection of a user is subscribed server-side to the personal channel
    ``<user_personal_channel_namespace>:#<user>`` (``#<user>`` in the unnamed namespace)."""
    user_personal_channel_namespace: str = ""
    user_personal_single_connection: bool = False
    """Keep one connection per user across all nodes: a newer connection closes the older ones (3504)."""

    ingest_max_body_size: int = 4194304
    """Bytes an ingest request's body may have as sent (gzipped or not); larger: HTTP 413."""
    ingest_max_decompressed_size: int = 16777216
    """Bytes a gzipped ingest body may inflate to; larger: HTTP 413 (a zip bomb stops there)."""
    ingest_max_lines: int = 100000
    """Lines one ingest request may hold; the rest is refused (listed as one error)."""
    ingest_max_concurrent: int = 4
    """Ingest requests one node works on at once; another gets HTTP 429 with Retry-After."""
    ingest: IngestSettings = field(default_factory=IngestSettings)
    """``[[ingest.line_protocol]]`` routes (``hub.ingest.settings``)."""
    mqtt: MqttSettings | None = None
    """The ``[mqtt]`` bridge's broker and routes; None: no bridge."""
    mqtt_enabled: bool = True
    """Whether this node runs the ``[mqtt]`` bridge (run it on one node of a hub: each bridge publishes
    what it receives)."""
    mqtt_lease_ttl: float = 10.0
    """Seconds the MQTT bridge's lease lasts (renewed every third of it): a standby candidate takes over
    within it when the one running the bridge dies (``workers.lease``)."""
    alerts: list[AlertRule] = field(default_factory=list)
    """``[[alerts]]`` threshold rules (``channels.alerts``), evaluated on every node."""
    alerts_notify: str = "inbox"
    """How a rule's ``notify`` users are told of its events: ``"inbox"`` (a notification of category
    ``alert``, once per event across nodes) or ``"channel"`` (a publication on ``alerts_user_channel``)."""
    alerts_user_channel: str = "personal:alerts#{user}"
    """Where a rule's ``notify`` users are told of its events with ``alerts_notify = "channel"``: ``{user}``
    is the user's id."""

    api_keys: list[ApiKey] = field(default_factory=list)
    inbox: PreferencePolicy = field(default_factory=PreferencePolicy)
    """``[inbox]``: the delivery channels of each notification category by default, and which are
    critical (a user's opt-outs do not apply)."""
    channel: NamespaceOptions = field(default_factory=NamespaceOptions)
    namespaces: dict[str, NamespaceOptions] = field(default_factory=dict)

    dev_mode: bool = False

    def documents_in_redis(self) -> bool:
        """Whether documents are stored in the shared Redis (``doc_store``, ``auto`` resolved)."""
        if self.doc_store == "auto":
            return bool(self.redis_urls)
        return self.doc_store == "redis"

    def watch_patterns(self) -> list[Callable[[str], bool]]:
        """Matchers of the channels some node must see every publication of (``hub.watch``): the alert
        rules', and the MQTT bridge's outbound routes' (whichever node runs it)."""
        patterns = [compile_pattern(rule.channels) for rule in self.alerts]
        if self.mqtt is not None:
            patterns += [route.matches for route in self.mqtt.publish]
        return patterns

    def namespace_table(self) -> Namespaces:
        return Namespaces(self.channel, self.namespaces)

    def server_api_keys(self) -> list[ApiKey]:
        """Every server API key: ``api_key`` (unbound) first, then the ``[[api_keys]]`` tables."""
        keys = [ApiKey(self.api_key)] if self.api_key else []
        return keys + self.api_keys


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


_TABLES = (
    "channel",
    "namespaces",
    "dev_mode",
    "api_keys",
    "redis_urls",
    "webhooks",
    "email",
    "inbox",
    "ingest",
    "mqtt",
    "alerts",
)
_SCALARS = {f.name: f for f in dataclasses.fields(Config) if f.name not in _TABLES}


def _coerce(name: str, raw: Any, from_env: bool) -> Any:
    kind = _SCALARS[name].type
    try:
        if name in _DURATIONS:
            return parse_duration(raw)
        if kind == "bool":
            if from_env:
                return _env_bool(ENV_PREFIX + name.upper(), raw)
            if not isinstance(raw, bool):
                raise ValueError(raw)
            return raw
        if kind == "int":
            value = int(raw)
            if not from_env and isinstance(raw, bool):
                raise ValueError(raw)
            return value
        if kind == "float":
            return float(raw)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {name}: {raw!r}") from None


def _namespaces(raw: Any) -> dict[str, NamespaceOptions]:
    if not isinstance(raw, list):
        raise ConfigError("namespaces must be a list of tables, each with a name")
    out: dict[str, NamespaceOptions] = {}
    for table in raw:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str) or not table["name"]:
            raise ConfigError("every namespace needs a name")
        name = table["name"]
        if ":" in name or name in out:
            raise ConfigError(f"bad or repeated namespace name {name!r}")
        try:
            out[name] = NamespaceOptions.from_mapping(table)
        except ValueError as exc:
            raise ConfigError(f"namespace {name}: {exc}") from None
    return out


def _api_keys(raw: Any) -> list[ApiKey]:
    """``[[api_keys]]`` tables: ``key`` (required) and ``tenant`` (absent: the key is not bound)."""
    if not isinstance(raw, list):
        raise ConfigError("api_keys must be a list of tables, each with a key")
    out: list[ApiKey] = []
    for table in raw:
        if not isinstance(table, dict) or not isinstance(table.get("key"), str) or not table["key"]:
            raise ConfigError("every api_keys entry needs a non-empty key")
        unknown = set(table) - {"key", "tenant"}
        if unknown:
            raise ConfigError(f"unknown api_keys field(s): {', '.join(sorted(unknown))}")
        tenant = table.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise ConfigError("api_keys tenant must be a string")
        out.append(ApiKey(table["key"], tenant))
    return out


def _inbox_channels(where: str, raw: Any) -> frozenset[DeliveryChannel]:
    try:
        return parse_channels(raw, f"{where} channels")
    except InvalidInput as exc:
        raise ConfigError(f"{exc} (in_app, webhook, email)") from None


def inbox_policy(raw: Any) -> PreferencePolicy:
    """``[inbox]``: ``channels`` (those of categories not named; default ``["in_app", "webhook"]``) and one
    ``[inbox.categories.<name>]`` table per category with ``channels`` and ``critical``."""
    if not isinstance(raw, dict):
        raise ConfigError("[inbox] must be a table")
    unknown = set(raw) - {"channels", "categories"}
    if unknown:
        raise ConfigError(f"unknown [inbox] key(s): {', '.join(sorted(map(str, unknown)))}")
    default = CategoryPolicy()
    if "channels" in raw:
        default = CategoryPolicy(_inbox_channels("[inbox]", raw["channels"]))
    tables = raw.get("categories", {})
    if not isinstance(tables, dict):
        raise ConfigError("[inbox.categories] must be a table of categories")
    categories: dict[str, CategoryPolicy] = {}
    for name, table in tables.items():
        try:
            check_category(name)
        except InvalidInput as exc:
            raise ConfigError(f"[inbox.categories]: {exc}") from None
        where = f"[inbox.categories.{name}]"
        if not isinstance(table, dict) or set(table) - {"channels", "critical"}:
            raise ConfigError(f"{where} takes channels and critical")
        critical = table.get("critical", False)
        if not isinstance(critical, bool):
            raise ConfigError(f"{where} critical must be true or false")
        channels = _inbox_channels(where, table["channels"]) if "channels" in table else default.channels
        categories[name] = CategoryPolicy(channels, critical)
    return PreferencePolicy(categories, default)


def redis_urls(raw: Any) -> list[str]:
    """``redis_urls``: a list of ``redis://`` / ``rediss://`` URLs (the environment takes them separated by
    commas or spaces)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
        raise ConfigError("redis_urls must be a list of redis:// URLs")
    for url in raw:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"not a Redis URL: {url!r}")
    if len(set(raw)) != len(raw):
        raise ConfigError("a Redis URL is configured twice")
    return list(raw)


_CHANNEL_FIELDS = {f.name: f for f in dataclasses.fields(NamespaceOptions)}


def _channel_option_from_env(name: str, raw: str) -> Any:
    """A ``SWITCHBOARD_CHANNEL_<OPTION>`` value, converted by the option's own type."""
    option = name[len(ENV_PREFIX) + len("channel_") :].lower()
    field_ = _CHANNEL_FIELDS.get(option)
    if field_ is None:
        raise ConfigError(f"unknown environment setting {name}")
    text = raw.strip()
    if field_.type == "bool":
        return _env_bool(name, text)
    if field_.type == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    return text  # a duration: from_mapping parses it


def dev_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``SWITCHBOARD_DEV`` asks for development mode on a non-loopback address (``hub.devmode``)."""
    raw = (os.environ if env is None else env).get(DEV_ENV, "")
    return _env_bool(DEV_ENV, raw) if raw.strip() else False


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    *,
    allow_dev_mode: bool = False,
) -> Config:
    """Read ``path`` (TOML; without it, the file ``SWITCHBOARD_CONFIG`` names, if any), then apply
    ``SWITCHBOARD_*`` overrides from ``env`` (os.environ). A file that cannot be read is a ConfigError
    naming its path.

    Development mode is entered only when ``allow_dev_mode`` (``switchboard serve`` passes it) and neither
    a file nor a token key is given; otherwise a missing setting means Centrifugo's closed default.
    """
    env = dict(os.environ if env is None else env)
    dev_requested(env)  # a SWITCHBOARD_DEV that is not a boolean is an error here, not at first use
    named_by = ""
    if path is None and env.get(CONFIG_ENV, "").strip():
        path, named_by = env[CONFIG_ENV].strip(), f" (named by {CONFIG_ENV})"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}{named_by}: {exc}") from None
    cfg = Config()
    for key, value in data.items():
        if key == "channel":
            if not isinstance(value, dict):
                raise ConfigError("[channel] must be a table")
            try:
                cfg.channel = NamespaceOptions.from_mapping(value)
            except ValueError as exc:
                raise ConfigError(f"[channel]: {exc}") from None
        elif key == "namespaces":
            cfg.namespaces = _namespaces(value)
        elif key == "api_keys":
            cfg.api_keys = _api_keys(value)
        elif key == "redis_urls":
            cfg.redis_urls = redis_urls(value)
        elif key == "webhooks":
            cfg.webhooks = parse_webhooks(value)
        elif key == "email":
            cfg.email = parse_email(value)
        elif key == "inbox":
            cfg.inbox = inbox_policy(value)
        elif key == "ingest":
            cfg.ingest = parse_ingest(value)
        elif key == "mqtt":
            cfg.mqtt = parse_mqtt(value)
        elif key == "alerts":
            cfg.alerts = parse_alerts(value)
        elif key in _SCALARS:
            setattr(cfg, key, _coerce(key, value, from_env=False))
        else:
            raise ConfigError(f"unknown config key {key!r}")
    channel_env: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in ("config", "dev"):
            continue  # read above
        if key in _SCALARS:
            setattr(cfg, key, _coerce(key, raw, from_env=True))
        elif key == "namespaces":
            try:
                cfg.namespaces = _namespaces(json.loads(raw))
            except json.JSONDecodeError:
                raise ConfigError("SWITCHBOARD_NAMESPACES must be a JSON list") from None
        elif key == "api_keys":
            try:
                cfg.api_keys = _api_keys(json.loads(raw))
            except json.JSONDecodeError:
                raise ConfigError("SWITCHBOARD_API_KEYS must be a JSON list") from None
        elif key == "redis_urls":
            cfg.redis_urls = redis_urls([u for u in raw.replace(",", " ").split() if u])
        elif key in ("webhooks", "email"):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise ConfigError(f"{name} must be JSON") from None
            if key == "webhooks":
                cfg.webhooks = parse_webhooks(value)
            else:
                cfg.email = parse_email(value)
        elif key == "inbox":
            try:
                cfg.inbox = inbox_policy(json.loads(raw))
            except json.JSONDecodeError:
                raise ConfigError("SWITCHBOARD_INBOX must be a JSON object") from None
        elif key.startswith("channel_"):
            channel_env[key[len("channel_") :]] = _channel_option_from_env(name, raw)
        else:
            raise ConfigError(f"unknown environment setting {name}")
    if channel_env:
        merged = {f.name: getattr(cfg.channel, f.name) for f in dataclasses.fields(NamespaceOptions)}
        merged.update(channel_env)
        try:
            cfg.channel = NamespaceOptions.from_mapping(merged)
        except ValueError as exc:
            raise ConfigError(f"SWITCHBOARD_CHANNEL_*: {exc}") from None
    has_key = cfg.token_hmac_secret_key or cfg.token_rsa_public_key or cfg.token_ecdsa_public_key
    if allow_dev_mode and path is None and not has_key:
        cfg.dev_mode = True
        cfg.token_hmac_secret_key = DEV_SECRET
        if not cfg.bot_token_hmac_secret_key:
            cfg.bot_token_hmac_secret_key = DEV_BOT_SECRET
        cfg.allow_anonymous_connect_without_token = True
        cfg.doc_anonymous_access = cfg.doc_token_access = "write"
        if not channel_env:
            cfg.channel = DEV_CHANNEL_OPTIONS
        asked = ENV_PREFIX + "USER_SUBSCRIBE_TO_PERSONAL" in env or cfg.user_personal_channel_namespace
        if not asked:  # the inbox's pushes reach every device of a user (the bell demo)
            cfg.user_subscribe_to_personal = True
            cfg.user_personal_channel_namespace = DEV_PERSONAL_NAMESPACE
            cfg.namespaces.setdefault(DEV_PERSONAL_NAMESPACE, DEV_PERSONAL_OPTIONS)
        cfg.namespaces.setdefault(DEV_SENSORS_NAMESPACE, DEV_SENSORS_OPTIONS)  # the sensor dashboard demo
    validate(cfg)
    return cfg


DOC_ACCESS = ("none", "read", "write")


MAX_KEEP_ALIVE = 3600.0
"""Longest ``http_keep_alive_timeout``: an idle connection holds a descriptor for that long."""


def _require_positive(cfg: Config, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be positive")


def _validate_docs(cfg: Config) -> None:
    for name in ("doc_anonymous_access", "doc_token_access"):
        if getattr(cfg, name) not in DOC_ACCESS:
            raise ConfigError(f"{name} must be one of none, read, write")
    _require_positive(
        cfg,
        "doc_max_update_size",
        "doc_max_document_size",
        "doc_max_open_documents",
        "doc_user_connection_limit",
        "doc_compact_after_updates",
        "doc_compact_after_bytes",
        "doc_ping_interval",
        "doc_queue_max_size",
        "doc_write_backlog_max_size",
        "doc_max_awareness_state_size",
        "doc_max_awareness_states",
        "doc_max_awareness_size",
        "doc_edit_max_body_size",
    )
    if cfg.doc_unload_delay < 0:
        raise ConfigError("doc_unload_delay must not be negative")
    if cfg.doc_edit_presence_linger < 0:
        raise ConfigError("doc_edit_presence_linger must not be negative")
    if cfg.doc_max_awareness_state_size > cfg.doc_max_awareness_size:
        raise ConfigError("doc_max_awareness_state_size must not exceed doc_max_awareness_size")


def _validate_outbox(cfg: Config) -> None:
    if not 1 <= cfg.outbox_max_attempts <= 100:
        raise ConfigError("outbox_max_attempts must be from 1 to 100")
    if not 0 < cfg.outbox_retry_base <= cfg.outbox_retry_cap:
        raise ConfigError("outbox_retry_base must be positive and at most outbox_retry_cap")
    _require_positive(cfg, "outbox_retention", "document_changed_wait")
    if cfg.document_changed_max_wait < cfg.document_changed_wait:
        raise ConfigError("document_changed_max_wait must not be shorter than document_changed_wait")


def _validate_inbox(cfg: Config) -> None:
    if cfg.database_url and not cfg.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database_url must be a postgresql:// URL (empty: SQLite under data_dir)")
    namespace = cfg.user_personal_channel_namespace
    if namespace and namespace not in cfg.namespaces:
        raise ConfigError(f"user_personal_channel_namespace {namespace!r} is not a configured namespace")
    if cfg.user_personal_single_connection and not cfg.user_subscribe_to_personal:
        raise ConfigError("user_personal_single_connection needs user_subscribe_to_personal")
    if cfg.inbox_expire_interval < 0:
        raise ConfigError("inbox_expire_interval must not be negative (0 turns the sweep off)")


def validate(cfg: Config) -> None:
    if not (0 < cfg.port < 65536):
        raise ConfigError(f"port out of range: {cfg.port}")
    _validate_docs(cfg)
    _require_positive(
        cfg,
        "client_channel_limit",
        "client_max_message_size",
        "client_queue_max_size",
        "client_recovery_max_publication_limit",
        "sse_heartbeat_interval",
        "sse_retry_ms",
        "api_max_body_size",
        "api_batch_max_parallel",
        "ingest_max_body_size",
        "ingest_max_decompressed_size",
        "ingest_max_lines",
        "ingest_max_concurrent",
    )
    _require_positive(cfg, "client_conflation_backlog")
    if cfg.log_level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(f"unknown log_level {cfg.log_level!r}")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError(f"log_format must be text or json, got {cfg.log_format!r}")
    if not (0 <= cfg.metrics_port < 65536):
        raise ConfigError(f"metrics_port out of range: {cfg.metrics_port}")
    for name in (
        "client_command_rate_limit",
        "client_user_connection_limit",
        "shutdown_batch_pause",
        "node_queue_max_size",
    ):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must not be negative (0 turns it off)")
    if cfg.client_command_rate_limit and cfg.client_command_rate_burst < 1:
        raise ConfigError("client_command_rate_burst must be at least 1")
    _require_positive(
        cfg, "presence_ttl", "presence_update_interval", "node_info_interval", "redis_connect_timeout"
    )
    if cfg.presence_update_interval >= cfg.presence_ttl:
        raise ConfigError("presence_update_interval must be shorter than presence_ttl")
    if cfg.redis_cluster and not cfg.redis_urls:
        raise ConfigError("redis_cluster needs at least one URL in redis_urls")
    if cfg.doc_store not in ("auto", "sqlite", "redis"):
        raise ConfigError("doc_store must be auto, sqlite or redis")
    if cfg.doc_store == "redis" and not cfg.redis_urls:
        raise ConfigError("doc_store = redis needs redis_urls")
    if not cfg.redis_prefix or any(c in cfg.redis_prefix for c in "{} "):
        raise ConfigError("redis_prefix must be non-empty, without braces or spaces")
    _require_positive(cfg, "http_header_timeout", "http_body_timeout", "http_max_unfinished_requests")
    if not 0 < cfg.http_keep_alive_timeout <= MAX_KEEP_ALIVE:
        raise ConfigError(f"http_keep_alive_timeout must be above 0 and at most {MAX_KEEP_ALIVE:g} s")
    if cfg.shutdown_batch_size < 1:
        raise ConfigError("shutdown_batch_size must be positive")
    _validate_outbox(cfg)
    _validate_inbox(cfg)
    keys = [k.key for k in cfg.server_api_keys()]
    if len(set(keys)) != len(keys):
        raise ConfigError("an API key is configured twice")
    _validate_admin(cfg)
    _validate_feeds(cfg)
    _validate_bots(cfg)


BOT_RPC_PREFIX_MAX = 64
_RESERVED_RPC = ("bot.", "inbox.")


def _validate_bots(cfg: Config) -> None:
    """Bot keys and bounds (``hub.bots``)."""
    if cfg.bot_token_hmac_secret_key and cfg.bot_token_hmac_secret_key == cfg.token_hmac_secret_key:
        raise ConfigError("bot_token_hmac_secret_key must differ from token_hmac_secret_key")
    if cfg.bot_client_channel_limit < 0 or cfg.bot_command_rate_burst < 0:
        raise ConfigError("bot_client_channel_limit and bot_command_rate_burst must not be negative")
    if cfg.bot_command_rate_limit < 0 and cfg.bot_command_rate_limit != -1:
        raise ConfigError("bot_command_rate_limit must be -1 (as clients), 0 (off) or positive")
    _require_positive(
        cfg,
        "bot_rpc_timeout",
        "bot_rpc_max_pending",
        "bot_rpc_max_pending_per_user",
        "bot_rpc_max_data_size",
        "bot_rpc_max_prefixes",
        "bot_rpc_max_routes",
    )
    prefix = cfg.bot_rpc_prefix
    if len(prefix) > BOT_RPC_PREFIX_MAX or any(c.isspace() for c in prefix):
        raise ConfigError(f"bot_rpc_prefix must be at most {BOT_RPC_PREFIX_MAX} characters, no spaces")
    if prefix and any(prefix.startswith(r) or r.startswith(prefix) for r in _RESERVED_RPC):
        raise ConfigError(f"bot_rpc_prefix {prefix!r} overlaps the hub's own methods (bot.*, inbox.*)")


def _validate_feeds(cfg: Config) -> None:
    """Alert notifications go to the inbox, or need a personal channel in a configured namespace."""
    low, high = MQTT_LEASE_TTL
    if not low <= cfg.mqtt_lease_ttl <= high:
        raise ConfigError(f"mqtt_lease_ttl must be from {low} to {high} seconds")
    if cfg.alerts_notify not in ALERTS_NOTIFY:
        raise ConfigError(
            f"alerts_notify must be one of {', '.join(ALERTS_NOTIFY)}, got {cfg.alerts_notify!r}"
        )
    if cfg.alerts_notify == "channel" and any(rule.notify for rule in cfg.alerts):
        check_user_channel(cfg.alerts_user_channel)
        namespace = cfg.namespace_table()
        try:
            namespace.options_for(parse_channel(cfg.alerts_user_channel.replace("{user}", "u")))
        except UnknownNamespace:
            raise ConfigError(f"alerts_user_channel {cfg.alerts_user_channel!r}: no such namespace") from None
    for rule in cfg.alerts:
        if rule.publish_to is not None:
            try:
                cfg.namespace_table().options_for(parse_channel(rule.publish_to))
            except UnknownNamespace:
                raise ConfigError(
                    f"alert rule {rule.name!r}: publish_to {rule.publish_to!r}: no such namespace"
                ) from None


def _validate_admin(cfg: Config) -> None:
    from hub.admin.auth import BadHash, credentials

    try:
        credentials(
            cfg.admin_password,
            cfg.admin_password_hash,
            cfg.admin_readonly_password,
            cfg.admin_readonly_password_hash,
        )
    except BadHash as exc:
        raise ConfigError(f"admin password hash: {exc}") from None
    _require_positive(cfg, "admin_session_ttl", "admin_audit_max_entries", "admin_max_streams")
