"""The feed tables of the config: ``[ingest]`` (how line-protocol points become channel readings),
``[mqtt]`` (the MQTT bridge) and ``[[alerts]]`` (threshold rules).

::

    [[ingest.line_protocol]]
    measurements = ["boiler", "pump"]            # optional: the measurements this route takes (default: all)
    channel = "plant:{measurement}.{tag:host}"   # required (channels.lineprotocol.ChannelTemplate)
    key = "{tag:sensor}"                         # optional: the reading's key in a keyed feed
    time_field = "time"                          # the point's time (ms) in the data; "" leaves it out
    tags_field = "tags"                          # optional: the tags as an object in the data

A point takes the first route whose ``measurements`` hold its measurement (or that names none); a point
no route takes is refused (its line is listed). Without any route, line protocol is not ingested (the
endpoints answer 404): a collector must not write into channels nobody chose.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.alerts import AlertRule, parse_rules
from channels.errors import InvalidChannel, InvalidFeedConfig
from channels.lineprotocol import LineMapping
from channels.names import parse_channel
from channels.options import parse_duration
from channels.topics import ChannelRoute, TopicRoute
from hub.codes import ConfigError


@dataclass(frozen=True, slots=True)
class LineRoute:
    mapping: LineMapping
    measurements: frozenset[str] | None = None
    """The measurements this route takes; None: every one."""


@dataclass(frozen=True, slots=True)
class IngestSettings:
    line_protocol: tuple[LineRoute, ...] = ()

    def route(self, measurement: str) -> LineMapping | None:
        """The mapping of the first route that takes ``measurement``; None when none does."""
        for route in self.line_protocol:
            if route.measurements is None or measurement in route.measurements:
                return route.mapping
        return None


def parse_ingest(table: Any) -> IngestSettings:
    """The ``[ingest]`` table; ConfigError names what is wrong (and which route)."""
    if not isinstance(table, Mapping):
        raise ConfigError("[ingest] must be a table")
    unknown = set(table) - {"line_protocol"}
    if unknown:
        raise ConfigError(f"[ingest]: unknown key {sorted(unknown)[0]!r} (known: line_protocol)")
    raw = table.get("line_protocol", [])
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise ConfigError("[[ingest.line_protocol]] must be a list of tables")
    routes: list[LineRoute] = []
    for number, route in enumerate(raw, 1):
        options = dict(route)
        measurements = options.pop("measurements", None)
        if options.get("time_field") == "":
            options["time_field"] = None
        try:
            if measurements is not None and (
                not isinstance(measurements, list)
                or not measurements
                or not all(isinstance(m, str) and m for m in measurements)
            ):
                raise InvalidFeedConfig("'measurements' must be a non-empty list of measurement names")
            mapping = LineMapping.from_mapping(options)
        except InvalidFeedConfig as exc:
            raise ConfigError(f"[[ingest.line_protocol]] number {number}: {exc}") from None
        routes.append(LineRoute(mapping, None if measurements is None else frozenset(measurements)))
    return IngestSettings(tuple(routes))


# ---------------------------------------------------------------- [mqtt]

MQTT_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The ``[mqtt]`` table: the broker, the bridge's bounds, and its routes (``channels.topics``)."""

    host: str
    port: int
    tls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    client_id: str = ""
    """Empty: ``switchboard-<node id>``."""
    tenant: str = ""
    """The tenant of every channel the bridge reads from or writes to."""
    keepalive: int = 30
    max_payload: int = 65536
    """Bytes of one message either way; a larger one is refused (logged, counted)."""
    max_queue: int = 10000
    """Messages waiting to go to the broker; past it the oldest are dropped (counted, logged)."""
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    subscribe: tuple[TopicRoute, ...] = ()
    publish: tuple[ChannelRoute, ...] = ()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt(table: Any) -> MqttSettings:
    """The ``[mqtt]`` table (format in the README, "MQTT bridge"); ConfigError says what is wrong."""
    if not isinstance(table, Mapping):
        raise ConfigError("[mqtt] must be a table")
    known = {f.name for f in dataclasses.fields(MqttSettings)} - {"host", "port", "tls"} | {"url"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[mqtt]: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})")
    url = table.get("url")
    if not isinstance(url, str):
        raise ConfigError('[mqtt] needs url, e.g. "mqtt://127.0.0.1:1883" (mqtts:// for TLS)')
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in MQTT_SCHEMES or not parsed.hostname or parsed.path not in ("", "/"):
        raise ConfigError(f"[mqtt] url {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    default_port, tls = MQTT_SCHEMES[parsed.scheme]
    try:
        port = parsed.port or default_port
    except ValueError:
        raise ConfigError(f"[mqtt] url {url!r}: bad port") from None
    values: dict[str, Any] = {"host": parsed.hostname, "port": port, "tls": tls}
    if parsed.username:
        values["username"] = urllib.parse.unquote(parsed.username)
        values["password"] = urllib.parse.unquote(parsed.password or "")
    for name in ("username", "password", "client_id", "tenant"):
        if name in table:
            if not isinstance(table[name], str):
                raise ConfigError(f"[mqtt] {name} must be a string")
            values[name] = table[name]
    if len(values.get("client_id", "")) > 64:
        raise ConfigError("[mqtt] client_id is at most 64 characters")
    for name, low, high in (
        ("keepalive", 5, 3600),
        ("max_payload", 1, 256 << 20),
        ("max_queue", 1, 10_000_000),
    ):
        if name in table:
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"[mqtt] {name} must be an integer from {low} to {high}, got {value!r}")
            values[name] = value
    for name in ("reconnect_min", "reconnect_max"):
        if name in table:
            try:
                values[name] = parse_duration(table[name])
            except ValueError as exc:
                raise ConfigError(f"[mqtt] {name}: {exc}") from None
    if not 0 < values.get("reconnect_min", 0.5) <= values.get("reconnect_max", 30.0):
        raise ConfigError("[mqtt] reconnect_min must be positive and at most reconnect_max")
    kinds: tuple[tuple[str, type[TopicRoute] | type[ChannelRoute]], ...] = (
        ("subscribe", TopicRoute),
        ("publish", ChannelRoute),
    )
    for name, kind in kinds:
        raw = table.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
            raise ConfigError(f"[[mqtt.{name}]] must be a list of tables")
        routes = []
        for number, route in enumerate(raw, 1):
            try:
                routes.append(kind.from_mapping(route))
            except InvalidFeedConfig as exc:
                raise ConfigError(f"[[mqtt.{name}]] number {number}: {exc}") from None
        values[name] = tuple(routes)
    if not values["subscribe"] and not values["publish"]:
        raise ConfigError("[mqtt] has no [[mqtt.subscribe]] nor [[mqtt.publish]] route")
    return MqttSettings(**values)


# ---------------------------------------------------------------- [[alerts]]


def parse_alerts(tables: Any) -> list[AlertRule]:
    """The ``[[alerts]]`` rules (``channels.alerts``); ConfigError names the rule and the option."""
    try:
        return parse_rules(tables)
    except InvalidFeedConfig as exc:
        raise ConfigError(f"[[alerts]]: {exc}") from None


def user_channel(template: str, user: str) -> str:
    """A user's personal channel for alert notifications, from ``alerts_user_channel``."""
    return template.replace("{user}", user)


def check_user_channel(template: str) -> None:
    """``alerts_user_channel`` must put ``{user}`` into a channel name."""
    if "{user}" not in template:
        raise ConfigError('alerts_user_channel must hold {user}, e.g. "personal:alerts#{user}"')
    try:
        parse_channel(user_channel(template, "u"))
    except InvalidChannel as exc:
        raise ConfigError(f"alerts_user_channel {template!r}: {exc}") from None
