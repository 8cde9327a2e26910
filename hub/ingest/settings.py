"""The ``[ingest]`` table of the config: how line-protocol points become channel readings.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from channels.errors import InvalidFeedConfig
from channels.lineprotocol import LineMapping
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
