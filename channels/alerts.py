"""Threshold alerts (sans-I/O): rules from config, RFC 6901 JSON pointers, and a state machine per
(rule, channel, key) that turns readings into ``fired`` and ``cleared`` events.

A rule (one config table; ``parse_rules`` takes a list and checks that names are unique)::

    name = "boiler-hot"           # required, unique
    channels = "plant:boiler-*"   # channel pattern (channels.pattern syntax)
    field = "/temperature"        # JSON pointer (RFC 6901) into the publication's data
    above = 90.0                  # exactly one of: above = X, below = X, outside = [LOW, HIGH]
    hysteresis = 2.0              # >= 0, default 0
    for = "30s"                   # minimum duration before firing, default 0 (number of seconds or "1m30s")
    publish_to = "alerts:plant"   # optional: the channel the hub publishes the events to
    notify = ["alice", "bob"]     # optional: the users notified of each event (at most MAX_NOTIFY)

Policy, per series (a rule, a tenant, a channel of it the rule matches, and the reading's key, None for
unkeyed feeds):

- **Violating**: ``above``: value > X; ``below``: value < X; ``outside``: value < LOW or value > HIGH.
- **Firing** takes the condition holding for ``for`` seconds: the first violating reading starts it
  (``since``); a later violating reading at or after ``since + for``, or ``advance(now)`` at or after it
  with no reading in between, fires. A reading that does not violate before then starts over. With
  ``for = 0`` a violating reading fires at once.
- **Clearing** takes the value back past the hysteresis: ``above``: value <= X - h; ``below``: value >= X + h;
  ``outside``: LOW + h <= value <= HIGH - h (config refuses 2h > HIGH - LOW). A value between the threshold
  and the hysteresis keeps a firing alert firing. No minimum duration for clearing.
- A series fires at most once until it clears, and clears only what fired.
- A reading whose field is missing, not a number (booleans are not numbers) or not finite is ignored: it
  neither starts, fires nor clears anything. So is a reading older than the newest one its series has seen
  (late arrivals cannot rewrite what was decided).

Time: seconds on ONE clock the caller chooses, used for both the readings and ``advance``: the readings'
own timestamps (then every node that evaluates the same readings decides the same events, with the same
``since``: ``AlertEvent.id`` lets the hub publish each once across nodes), or the hub's receive time. This
module never reads a clock.

Memory: only series that are pending or firing are kept (a series in the normal state has no entry), at
most ``max_tracked``; past that a series that starts violating is not tracked (counted in ``dropped``) rather
than grow without bound or evict a firing alert, which would then never clear. The rules matching a channel
are cached for up to ``max_cached_channels`` channels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from channels.errors import InvalidChannel, InvalidFeedConfig
from channels.names import parse_channel
from channels.options import parse_duration
from channels.pattern import BadPattern, compile_pattern

__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "Condition",
    "JsonPointer",
    "MISSING",
    "parse_rules",
]

MAX_NOTIFY = 1000
"""Users one rule may notify."""


# -- JSON pointer (RFC 6901) -------------------------------------------------------------------------------


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What ``JsonPointer.resolve`` returns when the document has nothing at the pointer."""

_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class JsonPointer:
    """A parsed JSON pointer: ``""`` is the whole document; ``"/a/0/b~1c"`` has the tokens ``a``, ``0``,
    ``b/c``."""

    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPointer:
        """ValueError when ``text`` is not a JSON pointer (RFC 6901 section 3)."""
        if not isinstance(text, str):
            raise ValueError(f"a JSON pointer is a string, got {text!r}")
        if text == "":
            return cls(text, ())
        if not text.startswith("/"):
            raise ValueError(f"JSON pointer {text!r} must be empty or start with '/'")
        if re.search(r"~(?![01])", text):
            raise ValueError(f"JSON pointer {text!r}: '~' must be followed by 0 or 1")
        # RFC 6901 section 4: "~1" to "/" first, then "~0" to "~" (so "~01" is "~1").
        return cls(text, tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")))

    def resolve(self, document: Any) -> Any:
        """The value at the pointer, or MISSING (a member or index that is not there, an index into a
        non-array, ``-``, or an index with leading zeros)."""
        for token in self.tokens:
            if isinstance(document, dict):
                document = document.get(token, MISSING)
                if document is MISSING:
                    return MISSING
            elif isinstance(document, list):
                if not _ARRAY_INDEX.fullmatch(token) or int(token) >= len(document):
                    return MISSING
                document = document[int(token)]
            else:
                return MISSING
        return document


# -- rules -------------------------------------------------------------------------------------------------


class Condition(Enum):
    ABOVE = "above"
    BELOW = "below"
    OUTSIDE = "outside"


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    channels: str
    """The channel pattern, as configured."""
    field: JsonPointer
    condition: Condition
    low: float
    """The threshold of ``above`` and ``below``; the band's low end for ``outside``."""
    high: float
    """The band's high end for ``outside``; equals ``low`` otherwise."""
    hysteresis: float = 0.0
    min_duration: float = 0.0
    """Seconds the condition must hold before the alert fires (the config's ``for``)."""
    publish_to: str | None = None
    notify: tuple[str, ...] = ()
    """Users told of each event (the hub's notifications)."""

    def violates(self, value: float) -> bool:
        if self.condition is Condition.ABOVE:
            return value > self.low
        if self.condition is Condition.BELOW:
            return value < self.low
        return value < self.low or value > self.high

    def clears(self, value: float) -> bool:
        h = self.hysteresis
        if self.condition is Condition.ABOVE:
            return value <= self.low - h
        if self.condition is Condition.BELOW:
            return value >= self.low + h
        return self.low + h <= value <= self.high - h

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AlertRule:
        """From one config table; InvalidFeedConfig names the rule and the option at fault."""
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidFeedConfig(f"an alert rule needs a name (a non-empty string), got {name!r}")

        def bad(message: str) -> InvalidFeedConfig:
            return InvalidFeedConfig(f"alert rule {name!r}: {message}")

        known = {
            "name",
            "channels",
            "field",
            "above",
            "below",
            "outside",
            "hysteresis",
            "for",
            "publish_to",
            "notify",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise bad(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        channels = data.get("channels")
        if not isinstance(channels, str) or not channels:
            raise bad("'channels' must be a channel pattern (a non-empty string)")
        try:
            compile_pattern(channels)
        except BadPattern as exc:
            raise bad(f"'channels': {exc}") from None
        if "field" not in data:
            raise bad("'field' (a JSON pointer such as \"/temperature\") is required")
        try:
            pointer = JsonPointer.parse(data["field"])
        except ValueError as exc:
            raise bad(f"'field': {exc}") from None
        given = [c for c in Condition if c.value in data]
        if len(given) != 1:
            raise bad("exactly one of 'above', 'below' or 'outside' is required")
        condition = given[0]
        if condition is Condition.OUTSIDE:
            band = data["outside"]
            if not isinstance(band, (list, tuple)) or len(band) != 2 or not all(_is_number(b) for b in band):
                raise bad("'outside' must be [low, high], two finite numbers")
            low, high = float(band[0]), float(band[1])
            if not low < high:
                raise bad("'outside' must be [low, high] with low < high")
        else:
            threshold = data[condition.value]
            if not _is_number(threshold):
                raise bad(f"{condition.value!r} must be a finite number, got {threshold!r}")
            low = high = float(threshold)
        hysteresis = data.get("hysteresis", 0)
        if not _is_number(hysteresis) or hysteresis < 0:
            raise bad(f"'hysteresis' must be a finite number >= 0, got {hysteresis!r}")
        if condition is Condition.OUTSIDE and 2 * hysteresis > high - low:
            raise bad("'hysteresis' must be at most half the band, or the alert could never clear")
        try:
            min_duration = parse_duration(data.get("for", 0))
        except ValueError as exc:
            raise bad(f"'for': {exc}") from None
        publish_to = data.get("publish_to")
        if publish_to is not None:
            try:
                parse_channel(publish_to)
            except InvalidChannel as exc:
                raise bad(f"'publish_to': {exc}") from None
            if compile_pattern(channels)(publish_to):
                raise bad("'publish_to' matches 'channels': the alert's own events would be evaluated")
        notify = data.get("notify", [])
        if (
            not isinstance(notify, (list, tuple))
            or len(notify) > MAX_NOTIFY
            or not all(isinstance(u, str) and 0 < len(u) <= 255 and u.isprintable() for u in notify)
        ):
            raise bad(
                f"'notify' must be a list of at most {MAX_NOTIFY} user ids (printable, 1-255 characters)"
            )
        return cls(
            name,
            channels,
            pointer,
            condition,
            low,
            high,
            float(hysteresis),
            min_duration,
            publish_to,
            tuple(dict.fromkeys(notify)),
        )


def _is_number(value: Any) -> bool:
    """A finite number a float can hold (not a boolean, which Python counts as an int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def parse_rules(tables: Sequence[Mapping[str, Any]]) -> list[AlertRule]:
    """Rules from a list of config tables; InvalidFeedConfig for a bad rule or a name used twice."""
    if not isinstance(tables, (list, tuple)):
        raise InvalidFeedConfig("alert rules must be a list of tables")
    rules: list[AlertRule] = []
    for table in tables:
        if not isinstance(table, Mapping):
            raise InvalidFeedConfig(f"an alert rule must be a table, got {table!r}")
        rule = AlertRule.from_mapping(table)
        if any(r.name == rule.name for r in rules):
            raise InvalidFeedConfig(f"alert rule name {rule.name!r} is used twice")
        rules.append(rule)
    return rules


# -- evaluation --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertEvent:
    kind: Literal["fired", "cleared"]
    rule: AlertRule
    channel: str
    key: str | None
    value: float
    """The reading that decided it (for a fire by ``advance``, the last reading, which violated)."""
    time: float
    """When it was decided: the reading's time, or the ``advance`` clock."""
    since: float
    """When the condition began: the same in an episode's ``fired`` and ``cleared`` events."""
    tenant: str = ""

    @property
    def id(self) -> str:
        """Names the event across nodes that evaluate the same readings (publish each id once). The tenant
        is not in it: an idempotency key is kept per (tenant, channel) by the broker."""
        return f"{self.rule.name}|{self.channel}|{self.key or ''}|{self.since!r}|{self.kind}"


class _State(Enum):
    PENDING = 1
    FIRING = 2


class _Series:
    __slots__ = ("state", "since", "last_time", "value")

    def __init__(self, state: _State, since: float, value: float) -> None:
        self.state = state
        self.since = since
        self.last_time = since
        self.value = value


_SeriesKey = tuple[int, str, str, str | None]
"""(rule index, tenant, channel, key)."""


class AlertEvaluator:
    """Evaluates readings against rules (policy in the module docstring). Not thread-safe; no I/O."""

    def __init__(
        self, rules: Sequence[AlertRule], *, max_tracked: int = 100_000, max_cached_channels: int = 10_000
    ) -> None:
        self.rules = list(rules)
        self._matchers: list[Callable[[str], bool]] = [compile_pattern(r.channels) for r in self.rules]
        self._series: dict[_SeriesKey, _Series] = {}
        self._matching: dict[str, list[int]] = {}
        self.max_tracked = max_tracked
        self.max_cached_channels = max_cached_channels
        self.dropped = 0
        """Series that started violating while ``max_tracked`` series were tracked: they fire nothing."""

    def _rules_for(self, channel: str) -> list[int]:
        found = self._matching.get(channel)
        if found is None:
            if len(self._matching) >= self.max_cached_channels:
                self._matching.clear()
            found = self._matching[channel] = [i for i, m in enumerate(self._matchers) if m(channel)]
        return found

    def observe(
        self, channel: str, key: str | None, data: Any, time: float, tenant: str = ""
    ) -> list[AlertEvent]:
        """Events that a reading (``data``: the publication's parsed JSON) on ``channel`` of ``tenant``
        causes."""
        events: list[AlertEvent] = []
        for index in self._rules_for(channel):
            rule = self.rules[index]
            value = rule.field.resolve(data)
            if not _is_number(value):
                continue
            value = float(value)
            series_key = (index, tenant, channel, key)
            series = self._series.get(series_key)
            if series is None:
                if rule.violates(value):
                    self._start(series_key, rule, value, time, events)
                continue
            if time < series.last_time:
                continue  # older than what this series has seen
            series.last_time = time
            if (
                series.state is _State.PENDING
                and time - series.since >= rule.min_duration
                and not rule.violates(value)
            ):
                # Its last reading violated and none came until this one, which breaks the condition: it held
                # for the rule's ``for`` before this reading (its last value stands until the next one). A
                # node whose ``advance`` ran in the gap fired then; every node must decide alike on the
                # readings' clock, whenever its timer runs. Then this reading is taken as by a firing series.
                series.state = _State.FIRING
                fired_at = series.since + rule.min_duration
                events.append(
                    AlertEvent("fired", rule, channel, key, series.value, fired_at, series.since, tenant)
                )
            if series.state is _State.FIRING:
                if rule.clears(value):
                    del self._series[series_key]
                    events.append(
                        AlertEvent("cleared", rule, channel, key, value, time, series.since, tenant)
                    )
                else:
                    series.value = value
                continue
            if not rule.violates(value):
                del self._series[series_key]  # pending, and the condition broke off: start over
            else:
                series.value = value
                if time - series.since >= rule.min_duration:
                    series.state = _State.FIRING
                    events.append(AlertEvent("fired", rule, channel, key, value, time, series.since, tenant))
        return events

    def _start(
        self, series_key: _SeriesKey, rule: AlertRule, value: float, time: float, events: list[AlertEvent]
    ) -> None:
        if len(self._series) >= self.max_tracked:
            self.dropped += 1
            return
        firing = rule.min_duration <= 0
        self._series[series_key] = _Series(_State.FIRING if firing else _State.PENDING, time, value)
        if firing:
            _, tenant, channel, key = series_key
            events.append(AlertEvent("fired", rule, channel, key, value, time, time, tenant))

    def advance(self, now: float) -> list[AlertEvent]:
        """Fire the pending series whose condition has held for their rule's ``for`` by ``now`` (their last
        reading violated and none came since); ``now`` is on the readings' clock."""
        events: list[AlertEvent] = []
        for (index, tenant, channel, key), series in self._series.items():
            rule = self.rules[index]
            if (
                series.state is _State.PENDING
                and now >= series.last_time
                and now - series.since >= rule.min_duration
            ):
                series.state = _State.FIRING
                series.last_time = now
                events.append(
                    AlertEvent("fired", rule, channel, key, series.value, now, series.since, tenant)
                )
        return events

    def firing(self) -> list[AlertEvent]:
        """The alerts firing now, each as the ``fired`` event it had (value and time of its last reading)."""
        return [
            AlertEvent(
                "fired", self.rules[index], channel, key, series.value, series.last_time, series.since, tenant
            )
            for (index, tenant, channel, key), series in self._series.items()
            if series.state is _State.FIRING
        ]

    def tracked(self) -> int:
        """Series pending or firing."""
        return len(self._series)
