"""MQTT topic filters and the routes between topics and channels (sans-I/O)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.errors import InvalidFeedConfig
from channels.names import parse_channel
from channels.topics import ChannelRoute, TopicFilter, TopicRoute, check_topic


@pytest.mark.parametrize(
    ("pattern", "topic", "values"),
    [
        ("plant/+/temperature", "plant/p7/temperature", {"1": "p7"}),
        ("plant/+/temperature", "plant/p7/humidity", None),
        ("plant/+/temperature", "plant/p7/temperature/x", None),
        ("plant/+/+", "plant/a/b", {"1": "a", "2": "b"}),
        ("plant/#", "plant/a/b/c", {"#": "a/b/c"}),
        ("plant/#", "plant", {"#": ""}),  # '#' takes the parent level too
        ("+/x", "/x", {"1": ""}),  # an empty level is a level
        ("#", "$SYS/broker/uptime", None),  # wildcards first never match $ topics
        ("+/uptime", "$SYS/uptime", None),
        ("$SYS/#", "$SYS/broker/uptime", {"#": "broker/uptime"}),
        ("a/b", "a/b", {}),
    ],
)
def test_filters_match_as_mqtt_says(pattern: str, topic: str, values: dict[str, str] | None) -> None:
    assert TopicFilter.parse(pattern).match(topic) == values


@pytest.mark.parametrize("bad", ["", "a/b+", "a/#/b", "a#", "a/\x00", 5, "x" * 65536])
def test_bad_filters_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidFeedConfig):
        TopicFilter.parse(bad)


def test_topics_to_publish_to_hold_no_wildcard() -> None:
    assert check_topic("a/b", wildcards=False) is None
    assert check_topic("a/+", wildcards=False) == "a topic to publish to holds no wildcard (+ or #)"


def route(**table: Any) -> TopicRoute:
    return TopicRoute.from_mapping(table)


def test_a_topic_makes_a_channel_and_a_key() -> None:
    r = route(topic="plant/+/sensors/+", channel="plant:{1}.{2}", key="{2}")
    assert r.route("plant/p7/sensors/t1") == ("plant:p7.t1", "t1")
    assert r.route("office/p7/sensors/t1") is None
    deep = route(topic="raw/#", channel="raw:{#}")
    assert deep.route("raw/a/b") == ("raw:a/b", None)


@pytest.mark.parametrize(
    ("level", "why"),
    [
        ("a b", "holds '#' or whitespace"),
        ("ns:x", "holds ':', which would choose the channel's namespace"),
        ("$secret", "starts with '$', which would make the channel private"),
    ],
)
def test_a_topic_level_cannot_change_what_the_template_decides(level: str, why: str) -> None:
    r = route(topic="plant/+", channel="{1}:temperature")
    reason = r.route(f"plant/{level}")
    assert isinstance(reason, str) and why in reason


@given(st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and "\x00" not in s))
def test_no_topic_level_chooses_a_namespace_a_user_or_privacy(level: str) -> None:
    """Whatever a device puts in a topic level, the channel stays in the namespace the template fixes
    (or none), never private, never user-limited."""
    for template, namespace in (("{1}.t", ""), ("sensors:{1}", "sensors"), ("{1}:t", None)):
        result = route(topic="plant/+", channel=template).route(f"plant/{level}")
        if isinstance(result, tuple):
            name = parse_channel(result[0])
            assert not name.private and name.allowed_users is None
            if namespace is not None:
                assert name.namespace == namespace


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"topic": "a/+", "channel": "x:{2}"}, "uses {2}, which 'a/+' lacks"),
        ({"topic": "a/+", "channel": "x:{#}"}, "uses {#}"),
        ({"topic": "a/+", "channel": "x:{1", "key": None}, "unmatched '{'"),
        ({"topic": "a/+"}, "needs 'topic'"),
        ({"topic": "a/+", "channel": "x", "qos": 2}, "unknown option 'qos'"),
    ],
)
def test_bad_topic_routes_say_why(table: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidFeedConfig, match=re.escape(words)):
        TopicRoute.from_mapping(table)


def test_a_channel_goes_to_its_topic() -> None:
    r = ChannelRoute.from_mapping({"channel": "commands:plant.{1}", "topic": "plant/{1}/command"})
    assert r.matches("commands:plant.p7") and r.topic_for("commands:plant.p7") == "plant/p7/command"
    assert r.topic_for("commands:office.p7") is None
    for sneaky in ("commands:plant.a/b", "commands:plant.+", "commands:plant.#"):
        assert r.topic_for(sneaky) is None  # a channel part can neither add topic levels nor wildcards
    fixed = ChannelRoute.from_mapping({"channel": "alerts:plant", "topic": "alerts/plant", "retain": True})
    assert fixed.topic_for("alerts:plant") == "alerts/plant" and fixed.retain


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"channel": "c:{1}", "topic": "t/{2}"}, "uses a part"),
        ({"channel": "c:{1}", "topic": "t/+/{1}"}, "holds no wildcard"),
        ({"channel": "c:{#}", "topic": "t/{#}"}, "not {#}"),
        ({"channel": "c:{1}.{1}", "topic": "t/{1}"}, "'channel'"),
        ({"channel": "c", "topic": "t", "retain": "yes"}, "'retain' must be true or false"),
    ],
)
def test_bad_channel_routes_say_why(table: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidFeedConfig, match=re.escape(words)):
        ChannelRoute.from_mapping(table)
