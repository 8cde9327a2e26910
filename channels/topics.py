"""MQTT topics and channels (sans-I/O): topic filters, routes from topics to channels and back.

Topics (MQTT 3.1.1 section 4.7, MQTT 5 section 4.7): UTF-8, 1 to 65,535 bytes, no NUL; levels separated by
``/``. A filter's ``+`` is one whole level, ``#`` the rest (last, a whole level; it also matches the parent
level: ``a/#`` takes ``a``); a filter starting with a wildcard does not match topics starting with ``$``
(``$SYS/...``). A topic a message is published to holds no wildcard.

**Topic to channel** (``TopicRoute``, the bridge's inbound side)::

    topic = "plant/+/sensors/+"            # a filter
    channel = "plant:{1}.{2}"              # {1}, {2}: the levels the +'s matched, in order; {#}: the rest
    key = "{2}"                            # optional: the reading's key in a keyed feed

The channel template obeys ``channels.names.substitution_refused``: a topic level can never choose the
namespace, make a channel private or user-limited, nor put whitespace in it; the result must be a valid
channel name. The key template has only the length bound.

**Channel to topic** (``ChannelRoute``, the outbound side)::

    channel = "commands:plant.{1}"         # a template over channel names: each {N} one non-empty part
    topic = "plant/{1}/command"            # the topic, from the same parts

A part taken from a channel name may hold no ``/``, ``+``, ``#`` or NUL (it could not choose topic levels
nor become a wildcard); a channel the template does not match, or whose parts could not be put in a topic,
has no topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from channels.errors import InvalidChannel, InvalidFeedConfig
from channels.names import TemplateParts, parse_channel, parse_template, render_template

__all__ = ["MAX_TOPIC_BYTES", "ChannelRoute", "TopicFilter", "TopicRoute", "check_topic"]

MAX_TOPIC_BYTES = 65535
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([1-9][0-9]?|#)\}|[{}]")
_TOPIC_LITERAL_REFUSED = re.compile(r"[+#\x00]")


def check_topic(topic: str, *, wildcards: bool) -> str | None:
    """Why ``topic`` is not a topic (a filter when ``wildcards``), or None."""
    if not isinstance(topic, str) or not topic:
        return "a topic is a non-empty string"
    if "\x00" in topic:
        return "a topic holds no NUL"
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        return f"a topic is at most {MAX_TOPIC_BYTES} bytes"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            return "a topic to publish to holds no wildcard (+ or #)"
        if wildcards and "+" in level and level != "+":
            return "'+' must be a whole level"
        if wildcards and "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be the whole last level"
    return None


@dataclass(frozen=True, slots=True)
class TopicFilter:
    text: str
    levels: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TopicFilter:
        refused = check_topic(text, wildcards=True)
        if refused is not None:
            raise InvalidFeedConfig(f"topic filter {text!r}: {refused}")
        return cls(text, tuple(text.split("/")))

    @property
    def plus_count(self) -> int:
        return sum(1 for level in self.levels if level == "+")

    @property
    def multi(self) -> bool:
        return self.levels[-1] == "#"

    def match(self, topic: str) -> dict[str, str] | None:
        """The values of the wildcards (``"1"``, ``"2"``, ... for the +'s, ``"#"`` for the rest, "" when
        ``#`` matched the parent level) when ``topic`` matches, else None."""
        if topic.startswith("$") and self.levels[0] in ("+", "#"):
            return None
        parts = topic.split("/")
        values: dict[str, str] = {}
        plus = 0
        for i, level in enumerate(self.levels):
            if level == "#":
                values["#"] = "/".join(parts[i:])
                return values
            if i >= len(parts):
                return None
            if level == "+":
                plus += 1
                values[str(plus)] = parts[i]
            elif level != parts[i]:
                return None
        return values if len(parts) == len(self.levels) else None


@dataclass(frozen=True, slots=True)
class _Template:
    """Literal text and ``{N}`` / ``{#}`` placeholders (``{{`` and ``}}`` for braces)."""

    text: str
    parts: TemplateParts
    namespace_fixed_at: int

    @classmethod
    def parse(cls, text: Any, what: str) -> _Template:
        if not isinstance(text, str) or not text:
            raise InvalidFeedConfig(f"{what} must be a non-empty string, got {text!r}")
        parts, fixed = parse_template(text, _PLACEHOLDER, "placeholders are {1}, {2}, ... and {#}")
        return cls(text, parts, fixed)

    def names(self) -> set[str]:
        return {p[0] for p in self.parts if isinstance(p, tuple)}

    def render(self, values: Mapping[str, str], *, channel: bool) -> str:
        """The text with the values put in; ValueError (the reason) where a channel could not take one."""
        return render_template(
            self.parts,
            self.namespace_fixed_at,
            lambda name: (values[name], f"topic level {values[name][:80]!r}"),
            channel=channel,
        )


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """Messages of the topics ``filter`` matches become readings of ``channel`` (module docstring)."""

    filter: TopicFilter
    channel: _Template
    key: _Template | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TopicRoute:
        unknown = set(data) - {"topic", "channel", "key"}
        if unknown:
            raise InvalidFeedConfig(f"unknown option {sorted(unknown)[0]!r} (known: topic, channel, key)")
        if "topic" not in data or "channel" not in data:
            raise InvalidFeedConfig("a route needs 'topic' (a filter) and 'channel' (a template)")
        topic_filter = TopicFilter.parse(data["topic"])
        channel = _Template.parse(data["channel"], "'channel'")
        key = None if data.get("key") is None else _Template.parse(data["key"], "'key'")
        known = {str(n) for n in range(1, topic_filter.plus_count + 1)} | (
            {"#"} if topic_filter.multi else set()
        )
        for template in (channel, key):
            if template is not None and not template.names() <= known:
                missing = sorted(template.names() - known)[0]
                raise InvalidFeedConfig(
                    f"{template.text!r} uses {{{missing}}}, which {topic_filter.text!r} lacks"
                )
        return cls(topic_filter, channel, key)

    def route(self, topic: str, max_name_length: int = 255) -> tuple[str, str | None] | str | None:
        """(channel, key) for a message on ``topic``; None when the filter does not match it; the reason
        (a string) when it matches but cannot make a channel."""
        values = self.filter.match(topic)
        if values is None:
            return None
        try:
            channel = self.channel.render(values, channel=True)
            parse_channel(channel, max_name_length)
        except (ValueError, InvalidChannel) as exc:
            return f"topic {topic[:120]!r} makes no channel: {exc}"
        key = None
        if self.key is not None:
            key = self.key.render(values, channel=False)
            if len(key) > max_name_length:
                return f"topic {topic[:120]!r}: key longer than {max_name_length} characters"
        return channel, key


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """Publications of the channels ``channel`` matches go to the MQTT topic ``topic`` (module docstring)."""

    channel: _Template
    topic: _Template
    pattern: re.Pattern[str]
    retain: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ChannelRoute:
        unknown = set(data) - {"channel", "topic", "retain"}
        if unknown:
            raise InvalidFeedConfig(f"unknown option {sorted(unknown)[0]!r} (known: channel, topic, retain)")
        if "channel" not in data or "topic" not in data:
            raise InvalidFeedConfig("a route needs 'channel' (a template) and 'topic' (a template)")
        channel = _Template.parse(data["channel"], "'channel'")
        topic = _Template.parse(data["topic"], "'topic'")
        if "#" in channel.names() | topic.names():
            raise InvalidFeedConfig("channel to topic routes take {1}, {2}, ... (not {#})")
        if not topic.names() <= channel.names():
            raise InvalidFeedConfig(f"{topic.text!r} uses a part {channel.text!r} does not have")
        literal = "".join(p for p in topic.parts if isinstance(p, str))
        if _TOPIC_LITERAL_REFUSED.search(literal):
            raise InvalidFeedConfig(
                f"topic {topic.text!r}: a topic to publish to holds no wildcard (+, #) or NUL"
            )
        regex = "".join(
            re.escape(p) if isinstance(p, str) else f"(?P<p{p[0]}>[^/+#\\x00]+)" for p in channel.parts
        )
        try:
            pattern = re.compile(regex)
        except re.error as exc:  # a part used twice
            raise InvalidFeedConfig(f"'channel' {channel.text!r}: {exc}") from None
        retain = data.get("retain", False)
        if not isinstance(retain, bool):
            raise InvalidFeedConfig(f"'retain' must be true or false, got {retain!r}")
        return cls(channel, topic, pattern, retain)

    def matches(self, channel: str) -> bool:
        return self.pattern.fullmatch(channel) is not None

    def topic_for(self, channel: str) -> str | None:
        """The topic a publication of ``channel`` goes to; None when the route does not take the channel."""
        match = self.pattern.fullmatch(channel)
        if match is None:
            return None
        values = {name[1:]: value for name, value in match.groupdict().items()}
        topic = self.topic.render(values, channel=False)
        return topic if check_topic(topic, wildcards=False) is None else None
