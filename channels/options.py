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
    data_format: str = "json"
    """What a publication's data is: ``json`` (a JSON document, Centrifugo's only kind) or ``binary`` (any
    bytes: Protobuf clients and MQTT send and receive them raw, every JSON speaker as a base64 string)."""
    data_schema: DataSchema | None = None
    """A JSON Schema every publication's data must pass, whatever way it comes in (compiled once)."""

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
            elif key in ("history_ttl", "history_meta_ttl"):
                values[key] = parse_duration(value)
            elif key == "history_size":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"history_size must be a non-negative integer, got {value!r}")
                values[key] = value
            else:
                if not isinstance(value, bool):
                    raise ValueError(f"option {key} must be true or false, got {value!r}")
                values[key] = value
        opts = cls(**values)
        if (opts.history_size > 0) != (opts.history_ttl > 0):
            raise ValueError("history_size and history_ttl must be set together")
        if opts.binary and opts.data_schema is not None:
            raise ValueError('data_schema checks JSON data: it cannot be set with data_format = "binary"')
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


class Namespaces:
    """The options of the unnamed namespace plus every configured namespace."""

    __slots__ = ("default", "_by_name", "_binary")

    def __init__(self, default: NamespaceOptions, named: dict[str, NamespaceOptions] | None = None) -> None:
        self.default = default
        self._by_name = dict(named or {})
        self._binary = frozenset(
            name for name, opts in [("", default), *self._by_name.items()] if opts.binary
        )
        """Namespaces with ``data_format = "binary"`` ("" is the unnamed one)."""

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
        if not self._binary:
            return False
        bare = channel[1:] if channel.startswith(PRIVATE_PREFIX) else channel
        namespace, sep, _ = bare.partition(NAMESPACE_BOUNDARY)
        return (namespace if sep else "") in self._binary
