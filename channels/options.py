"""Namespace options, named as Centrifugo names them, and their lookup by channel name (sans-I/O)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from channels.errors import UnknownNamespace
from channels.names import NAMESPACE_BOUNDARY, PRIVATE_PREFIX, ChannelName
from channels.schema import DataSchema
from channels.streams import StreamLimits

DELTA_TYPES = ("fossil",)
"""Delta encodings the hub speaks (the Centrifuge protocol's ``delta`` values)."""

MAX_RATE_LIMIT = 1000.0
"""The largest ``max_rate`` a namespace may grant (a conflation period of 1 ms)."""

MAX_KEYS_LIMIT = 1_000_000
"""The largest ``max_keys`` a namespace may set."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style duration string ("300s", "1h30m", "250ms")."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "0"):
            return 0.0
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"not a duration: {value!r}")
            return number
        pos, total = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos == len(text):
            return total
    raise ValueError(f"not a duration: {value!r}")


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    """Options of one namespace. Every name is Centrifugo's; every default is Centrifugo's."""

    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: float = 0.0
    history_meta_ttl: float = 0.0
    """How long an idle stream keeps its epoch and offset; 0 means the node default."""
    force_positioning: bool = False
    force_recovery: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    force_recovery_mode: str = "stream"
    """How a recovering subscriber catches up: "stream" (every publication it missed, from history) or
    "cache" (the latest publication, of each key where keyed; every subscribe recovers so)."""
    allowed_delta_types: tuple[str, ...] = ()
    """Delta encodings a subscriber may ask for (``delta`` in its subscribe request): "fossil"."""
    conflation: str = ""
    """"latest": a subscriber gets at most ``max_rate`` publications a second per channel and key, always
    the newest; one that reads slowly gets fewer, never a stale one, and is not disconnected for it."""
    max_rate: float = 0.0
    """Publications a second per channel (and per key) a conflated subscriber gets at most."""
    key_field: str = ""
    """JSON pointer to the member of a publication's data that holds its key (``/sensor``): conflation and
    the latest value per key go by it. Empty: one value per channel."""
    max_keys: int = 1000
    """Keys a channel keeps latest values of (cache recovery), and a conflated subscription tracks."""
    data_format: str = "json"
    """What a publication's data is: ``json`` (a JSON document, Centrifugo's only kind) or ``binary`` (any
    bytes: Protobuf clients and MQTT send and receive them raw, every JSON speaker as a base64 string)."""
    data_schema: DataSchema | None = None
    """A JSON Schema every publication's data must pass, whatever way it comes in (compiled once)."""
    streams: bool = False
    """Publications may be chunks of streamed replies (``channels.streams``): checked in order and bounded
    on every way in, delivered live, the finished message alone kept in history."""
    stream_max_open: int = 8
    """Streams open at once in one channel (``StreamLimits.max_open``)."""
    stream_max_chunk_bytes: int = 16 * 1024
    """Bytes of one chunk's data (``StreamLimits.max_chunk_bytes``)."""
    stream_max_message_bytes: int = 256 * 1024
    """Bytes of a finished message's text (``StreamLimits.max_message_bytes``)."""
    stream_idle_timeout: float = 120.0
    """Seconds without a chunk after which a stream is finished as it is, marked abandoned."""

    @property
    def stream_limits(self) -> StreamLimits:
        return StreamLimits(
            max_open=self.stream_max_open,
            max_chunk_bytes=self.stream_max_chunk_bytes,
            max_message_bytes=self.stream_max_message_bytes,
            idle_timeout=self.stream_idle_timeout,
        )

    @property
    def binary(self) -> bool:
        return self.data_format == "binary"

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> NamespaceOptions:
        """Build from a config table; unknown keys are an error (a typo must not silently open a channel)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "name":
                continue
            if key not in known:
                raise ValueError(f"unknown namespace option {key!r}")
            if key == "data_format":
                if value not in DATA_FORMATS:
                    raise ValueError(f"data_format must be one of {', '.join(DATA_FORMATS)}, got {value!r}")
                values[key] = value
            elif key == "data_schema":
                values[key] = _data_schema(value)
            elif key in ("history_ttl", "history_meta_ttl", "stream_idle_timeout"):
                values[key] = parse_duration(value)
            elif key == "history_size":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"history_size must be a non-negative integer, got {value!r}")
                values[key] = value
            elif key in _OPTION_READERS:
                values[key] = _OPTION_READERS[key](value)
            else:
                if not isinstance(value, bool):
                    raise ValueError(f"option {key} must be true or false, got {value!r}")
                values[key] = value
        opts = cls(**values)
        if (opts.history_size > 0) != (opts.history_ttl > 0):
            raise ValueError("history_size and history_ttl must be set together")
        if opts.binary and opts.data_schema is not None:
            raise ValueError('data_schema checks JSON data: it cannot be set with data_format = "binary"')
        if opts.binary and (opts.conflation or opts.allowed_delta_types or opts.key_field):
            # A feed subscription frames JSON itself, and keys and deltas are read from JSON data.
            raise ValueError('conflation, key_field and allowed_delta_types need data_format = "json"')
        _check_feed_options(opts)
        _check_stream_options(opts)
        return opts


DATA_FORMATS = ("json", "binary")


def _data_schema(value: Any) -> DataSchema | None:
    """A ``data_schema`` option: a table (or JSON text, from the environment), compiled now; InvalidFeedConfig
    (a ValueError) says what is wrong with it. A DataSchema (options merged again) is kept as it is."""
    if value is None or isinstance(value, DataSchema):
        return value
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"data_schema is not JSON: {exc}") from None
    if not isinstance(value, (Mapping, bool)):
        raise ValueError(f"data_schema must be a table (a JSON Schema), got {value!r:.80}")
    return DataSchema(value)


def _one_of(name: str, allowed: tuple[str, ...]) -> Any:
    def read(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return str(value)

    return read


def _delta_types(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value  # a string: from the environment
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"allowed_delta_types must be a list of strings, got {value!r}")
    types = tuple(v.strip() for v in items if v.strip())
    for name in types:
        if name not in DELTA_TYPES:
            raise ValueError(f"unknown delta type {name!r} (known: {', '.join(DELTA_TYPES)})")
    return types


def _max_rate(value: Any) -> float:
    if isinstance(value, str):  # from the environment
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"max_rate must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"max_rate must be a number, got {value!r}")
    if not 0 <= value <= MAX_RATE_LIMIT:  # 0: no conflation (the default)
        raise ValueError(f"max_rate must be from 0 to {MAX_RATE_LIMIT}, got {value!r}")
    return float(value)


def _key_field(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"key_field must be a JSON pointer string, got {value!r}")
    if value:
        from channels.feeds import key_pointer  # feeds reads pointers with alerts, which imports this module

        key_pointer(value)  # ValueError when it is not a pointer to a member
    return value


def _max_keys(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_KEYS_LIMIT:
        raise ValueError(f"max_keys must be an integer from 1 to {MAX_KEYS_LIMIT}, got {value!r}")
    return value


def _bounded_int(name: str, low: int, high: int) -> Any:
    def read(value: Any) -> int:
        if isinstance(value, str):  # from the environment
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
        return value

    return read


STREAM_MAX_OPEN_LIMIT = 1000
STREAM_MAX_BYTES_LIMIT = 16 * 1024 * 1024


def _check_stream_options(opts: NamespaceOptions) -> None:
    if not opts.streams:
        return
    if opts.binary:
        raise ValueError('streams read JSON data: it cannot be set with data_format = "binary"')
    if opts.conflation or opts.allowed_delta_types or opts.key_field:
        # A conflated or delta subscriber would be sent some chunks and not others.
        raise ValueError("streams cannot be set with conflation, key_field or allowed_delta_types")
    if opts.stream_idle_timeout <= 0:
        raise ValueError("stream_idle_timeout must be more than 0")


_OPTION_READERS = {
    "stream_max_open": _bounded_int("stream_max_open", 1, STREAM_MAX_OPEN_LIMIT),
    "stream_max_chunk_bytes": _bounded_int("stream_max_chunk_bytes", 64, STREAM_MAX_BYTES_LIMIT),
    "stream_max_message_bytes": _bounded_int("stream_max_message_bytes", 64, STREAM_MAX_BYTES_LIMIT),
    "force_recovery_mode": _one_of("force_recovery_mode", ("stream", "cache")),
    "allowed_delta_types": _delta_types,
    "conflation": _one_of("conflation", ("", "latest")),
    "max_rate": _max_rate,
    "key_field": _key_field,
    "max_keys": _max_keys,
}


def _check_feed_options(opts: NamespaceOptions) -> None:
    """The live-feed options together: what one needs of the others."""
    if opts.force_recovery_mode == "cache" and not opts.history_enabled:
        raise ValueError('force_recovery_mode = "cache" needs history (history_size and history_ttl)')
    if opts.conflation and not opts.max_rate:
        raise ValueError('conflation = "latest" needs max_rate (publications a second)')
    if opts.max_rate and not opts.conflation:
        raise ValueError('max_rate is the rate of conflation: set conflation = "latest" too')
    if opts.conflation and opts.history_enabled and opts.force_recovery_mode != "cache":
        # A conflated subscriber's stream position can be past a publication of another key it has not
        # been sent yet: recovering the stream from there would leave that key stale.
        raise ValueError('conflation with history needs force_recovery_mode = "cache"')
    if opts.key_field and not (opts.conflation or opts.force_recovery_mode == "cache"):
        raise ValueError('key_field is used by conflation and by force_recovery_mode = "cache": set one')


class Namespaces:
    """The options of the unnamed namespace plus every configured namespace."""

    __slots__ = ("default", "_by_name", "_binary", "_streams")

    def __init__(self, default: NamespaceOptions, named: dict[str, NamespaceOptions] | None = None) -> None:
        self.default = default
        self._by_name = dict(named or {})
        self._binary = frozenset(
            name for name, opts in [("", default), *self._by_name.items()] if opts.binary
        )
        """Namespaces with ``data_format = "binary"`` ("" is the unnamed one)."""
        self._streams = frozenset(
            name for name, opts in [("", default), *self._by_name.items()] if opts.streams
        )
        """Namespaces with ``streams`` set."""

    def options_for(self, channel: ChannelName) -> NamespaceOptions:
        if not channel.namespace:
            return self.default
        try:
            return self._by_name[channel.namespace]
        except KeyError:
            raise UnknownNamespace(channel.namespace) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def binary(self, channel: str) -> bool:
        """Whether the namespace of the channel named ``channel`` carries binary data (False for a name in
        no configured namespace). Reads the name without parsing it: the fan-out asks per publication."""
        return bool(self._binary) and _namespace_of(channel) in self._binary

    def streams(self, channel: str) -> bool:
        """Whether the namespace of the channel named ``channel`` has ``streams`` set (as ``binary``: read
        without parsing, for the fan-out)."""
        return bool(self._streams) and _namespace_of(channel) in self._streams


def _namespace_of(channel: str) -> str:
    """The namespace part of a channel name ("" for none), read without checking the name."""
    bare = channel[1:] if channel.startswith(PRIVATE_PREFIX) else channel
    namespace, sep, _ = bare.partition(NAMESPACE_BOUNDARY)
    return namespace if sep else ""
