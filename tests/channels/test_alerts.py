"""Threshold alerts: JSON pointers as RFC 6901 resolves them, rule config with clear errors, and the state
machine's properties: never fires twice without a clear, fires only once the condition held for the
minimum duration (and does fire then), clears only past the hysteresis band."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.alerts import MISSING, AlertEvaluator, AlertEvent, AlertRule, JsonPointer, parse_rules
from channels.errors import InvalidFeedConfig

# -- JSON pointer ------------------------------------------------------------------------------------------

RFC_DOC = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("", RFC_DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_rfc6901_examples(pointer: str, value: Any) -> None:
    assert JsonPointer.parse(pointer).resolve(RFC_DOC) == value


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/01", "/foo/-", "/foo/+1", "/bar", "/foo/0/x", "/a~1b/c"])
def test_what_is_not_there_is_missing(pointer: str) -> None:
    assert JsonPointer.parse(pointer).resolve(RFC_DOC) is MISSING


def test_escapes_are_decoded_in_the_rfc_order() -> None:
    assert JsonPointer.parse("/~01").tokens == ("~1",)
    assert JsonPointer.parse("/a/~0~1/").tokens == ("a", "~/", "")


@pytest.mark.parametrize("pointer", ["foo", "/~2", "/a~", 5])
def test_invalid_pointers(pointer: Any) -> None:
    with pytest.raises(ValueError):
        JsonPointer.parse(pointer)


@given(st.lists(st.text(max_size=5), max_size=4), st.integers(0, 9))
def test_escaped_tokens_reach_their_member(tokens: list[str], value: int) -> None:
    document: Any = value
    for token in reversed(tokens):
        document = {token: document}
    text = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
    assert JsonPointer.parse(text).resolve(document) == value


# -- rule config -------------------------------------------------------------------------------------------

BASE = {"name": "hot", "channels": "plant:*", "field": "/t"}


def test_rule_from_config() -> None:
    rule = AlertRule.from_mapping(
        {**BASE, "above": 90, "hysteresis": 2, "for": "1m30s", "publish_to": "alerts:x"}
    )
    assert (rule.low, rule.hysteresis, rule.min_duration, rule.publish_to) == (90.0, 2.0, 90.0, "alerts:x")
    band = AlertRule.from_mapping({**BASE, "outside": [10, 20.5], "hysteresis": 5.25})
    assert (band.low, band.high) == (10.0, 20.5)
    assert [r.name for r in parse_rules([{**BASE, "below": 1}, {**BASE, "name": "b", "above": 2}])] == [
        "hot",
        "b",
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"channels": "a", "field": "/t", "above": 1}, "needs a name"),
        ({**BASE, "above": 1, "treshold": 2}, "alert rule 'hot': unknown option 'treshold'"),
        ({**BASE, "channels": "", "above": 1}, "'channels' must be a channel pattern"),
        ({**BASE, "channels": "a[", "above": 1}, "'channels': unclosed"),
        ({"name": "hot", "channels": "a", "above": 1}, "'field'"),
        ({**BASE, "field": "t", "above": 1}, "'field': JSON pointer 't' must be empty or start with '/'"),
        (BASE, "exactly one of 'above', 'below' or 'outside'"),
        ({**BASE, "above": 1, "below": 0}, "exactly one of"),
        ({**BASE, "above": "90"}, "'above' must be a finite number"),
        ({**BASE, "above": True}, "'above' must be a finite number"),
        ({**BASE, "below": float("nan")}, "'below' must be a finite number"),
        ({**BASE, "outside": [1]}, "'outside' must be [low, high]"),
        ({**BASE, "outside": [2, 1]}, "low < high"),
        ({**BASE, "above": 1, "hysteresis": -1}, "'hysteresis' must be a finite number >= 0"),
        ({**BASE, "outside": [0, 10], "hysteresis": 6}, "at most half the band"),
        ({**BASE, "above": 1, "for": "soon"}, "'for': not a duration"),
        ({**BASE, "above": 1, "for": -3}, "'for': not a duration"),
        ({**BASE, "above": 1, "publish_to": "bad name"}, "'publish_to'"),
    ],
)
def test_rule_config_errors_say_what_is_wrong(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFeedConfig, match=message.replace("[", r"\[").replace("]", r"\]")):
        AlertRule.from_mapping(config)


def test_rule_list_errors() -> None:
    with pytest.raises(InvalidFeedConfig, match="'hot' is used twice"):
        parse_rules([{**BASE, "above": 1}, {**BASE, "below": 1}])
    with pytest.raises(InvalidFeedConfig, match="must be a table"):
        parse_rules(["x"])  # type: ignore[list-item]
    with pytest.raises(InvalidFeedConfig, match="must be a list"):
        parse_rules({"name": "x"})  # type: ignore[arg-type]


# -- evaluation: examples ------------------------------------------------------------------------------------


def evaluator(**options: Any) -> AlertEvaluator:
    rule = AlertRule.from_mapping({**BASE, **options})
    return AlertEvaluator([rule])


def kinds(events: list[AlertEvent]) -> list[tuple[str, float, float]]:
    return [(e.kind, e.value, e.time) for e in events]


def test_above_with_hysteresis_and_duration() -> None:
    ev = evaluator(above=90, hysteresis=5, **{"for": 10})
    assert ev.observe("plant:b", None, {"t": 91}, 0) == []  # pending
    assert ev.observe("plant:b", None, {"t": 95}, 9) == []  # held 9 s of 10
    assert kinds(ev.observe("plant:b", None, {"t": 93}, 10)) == [("fired", 93, 10)]
    assert ev.observe("plant:b", None, {"t": 99}, 11) == []  # fires once
    assert ev.observe("plant:b", None, {"t": 87}, 12) == []  # below 90, inside the band: still firing
    assert kinds(ev.observe("plant:b", None, {"t": 85}, 13)) == [("cleared", 85, 13)]
    assert ev.observe("plant:b", None, {"t": 84}, 14) == []


def test_a_break_in_the_condition_starts_the_duration_over() -> None:
    ev = evaluator(above=90, **{"for": 10})
    ev.observe("plant:b", None, {"t": 91}, 0)
    assert ev.observe("plant:b", None, {"t": 90}, 5) == []  # not above: pending dropped
    assert ev.observe("plant:b", None, {"t": 91}, 11) == []  # starts again at 11
    assert kinds(ev.observe("plant:b", None, {"t": 92}, 21)) == [("fired", 92, 21)]


def test_a_condition_that_held_long_enough_fires_even_when_the_next_reading_breaks_it() -> None:
    """On the readings' clock a value stands until the next reading: one that breaks a condition held for
    the rule's ``for`` finds the alert due and fires it first (as a node whose timer ran in the gap did),
    so every node evaluating the same readings decides the same events (test_two_nodes_... in
    tests/hub/test_alerting.py failed 2 runs in 3 before: one node fired by its timer, the other dropped)."""
    ev = evaluator(above=90, hysteresis=5, **{"for": 10})
    ev.observe("plant:b", None, {"t": 95}, 0)
    assert ev.observe("plant:b", None, {"t": 93}, 4) == []
    fired = ev.observe("plant:b", None, {"t": 88}, 12)
    assert kinds(fired) == [("fired", 93, 10)]  # 88 is inside the band: it stays firing
    assert kinds(ev.observe("plant:b", None, {"t": 84}, 13)) == [("cleared", 84, 13)]
    timer = evaluator(above=90, hysteresis=5, **{"for": 10})  # the same readings, with a tick in the gap
    timer.observe("plant:b", None, {"t": 95}, 0)
    timer.observe("plant:b", None, {"t": 93}, 4)
    assert [e.id for e in timer.advance(11)] == [e.id for e in fired]
    assert timer.observe("plant:b", None, {"t": 88}, 12) == []
    cleared = evaluator(above=90, hysteresis=5, **{"for": 10})  # broken below the band: fired, then cleared
    cleared.observe("plant:b", None, {"t": 95}, 0)
    assert kinds(cleared.observe("plant:b", None, {"t": 50}, 30)) == [("fired", 95, 10), ("cleared", 50, 30)]


def test_below_and_outside() -> None:
    ev = evaluator(below=5, hysteresis=1)
    assert kinds(ev.observe("plant:b", None, {"t": 4.5}, 0)) == [("fired", 4.5, 0)]
    assert ev.observe("plant:b", None, {"t": 5.5}, 1) == []
    assert kinds(ev.observe("plant:b", None, {"t": 6}, 2)) == [("cleared", 6, 2)]
    band = evaluator(outside=[10, 20], hysteresis=2)
    assert kinds(band.observe("plant:b", None, {"t": 21}, 0)) == [("fired", 21, 0)]
    assert band.observe("plant:b", None, {"t": 19}, 1) == []  # in range, inside the hysteresis
    assert kinds(band.observe("plant:b", None, {"t": 18}, 2)) == [("cleared", 18, 2)]
    assert kinds(band.observe("plant:b", None, {"t": 9}, 3)) == [("fired", 9, 3)]


def test_advance_fires_a_pending_alert_without_a_new_reading() -> None:
    ev = evaluator(above=90, **{"for": 30})
    ev.observe("plant:b", "k1", {"t": 95}, 100)
    assert ev.advance(129) == []
    (fired,) = ev.advance(130)
    assert (fired.kind, fired.value, fired.time, fired.since, fired.key) == ("fired", 95, 130, 100, "k1")
    assert ev.advance(200) == []
    assert ev.observe("plant:b", "k1", {"t": 96}, 129) == []  # older than the tick that fired: ignored
    assert [e.kind for e in ev.observe("plant:b", "k1", {"t": 1}, 201)] == ["cleared"]


def test_keys_and_channels_are_separate_series_and_other_channels_are_ignored() -> None:
    ev = evaluator(above=90)
    assert [e.key for e in ev.observe("plant:b", "a", {"t": 91}, 0)] == ["a"]
    assert [e.key for e in ev.observe("plant:b", "b", {"t": 91}, 0)] == ["b"]
    assert [e.channel for e in ev.observe("plant:c", "a", {"t": 91}, 0)] == ["plant:c"]
    assert ev.observe("office:b", "a", {"t": 91}, 0) == []
    assert ev.tracked() == 3 and len(ev.firing()) == 3
    assert [e.key for e in ev.observe("plant:b", "a", {"t": 1}, 1)] == ["a"]
    assert ev.tracked() == 2


@pytest.mark.parametrize(
    "data", [{}, {"t": "91"}, {"t": True}, {"t": None}, {"t": [91]}, [91], 91, {"t": 10**400}]
)
def test_readings_without_a_number_at_the_field_are_ignored(data: Any) -> None:
    ev = evaluator(above=90)
    assert ev.observe("plant:b", None, {"t": 91}, 0)[0].kind == "fired"
    assert ev.observe("plant:b", None, data, 1) == []
    assert len(ev.firing()) == 1


def test_stale_readings_are_ignored() -> None:
    ev = evaluator(above=90, **{"for": 10})
    ev.observe("plant:b", None, {"t": 91}, 100)
    assert ev.observe("plant:b", None, {"t": 50}, 99) == []  # older: does not break the pending condition
    assert kinds(ev.observe("plant:b", None, {"t": 92}, 110)) == [("fired", 92, 110)]


def test_tracked_series_are_bounded_and_firing_ones_are_kept() -> None:
    ev = AlertEvaluator([AlertRule.from_mapping({**BASE, "above": 90})], max_tracked=2)
    for key in ("a", "b", "c", "d"):
        ev.observe("plant:b", key, {"t": 91}, 0)
    assert ev.tracked() == 2 and ev.dropped == 2
    assert {e.key for e in ev.firing()} == {"a", "b"}
    assert [e.key for e in ev.observe("plant:b", "a", {"t": 0}, 1)] == ["a"]  # the kept ones still clear


def test_event_ids_name_an_episode() -> None:
    ev = evaluator(above=90, **{"for": 5})
    ev.observe("plant:b", "k", {"t": 91}, 10)
    (fired,) = ev.observe("plant:b", "k", {"t": 91}, 15)
    (cleared,) = ev.observe("plant:b", "k", {"t": 0}, 16)
    assert fired.since == cleared.since == 10
    assert fired.id == "hot|plant:b|k|10|fired" and cleared.id == "hot|plant:b|k|10|cleared"
    # another evaluator fed the same readings (another node) names the same events
    other = evaluator(above=90, **{"for": 5})
    other.observe("plant:b", "k", {"t": 91}, 10)
    assert [e.id for e in other.observe("plant:b", "k", {"t": 91}, 15)] == [fired.id]


def test_channel_rule_cache_is_bounded() -> None:
    ev = AlertEvaluator([AlertRule.from_mapping({**BASE, "above": 90})], max_cached_channels=10)
    for i in range(100):
        ev.observe(f"plant:{i}", None, {"t": 0}, 0)
    assert len(ev._matching) <= 10


# -- evaluation: properties ----------------------------------------------------------------------------------


@dataclass
class Step:
    key: str
    value: float | None  # None: an advance(time) tick instead of a reading
    dt: float


rules = st.one_of(
    st.builds(
        lambda t, h, d: {"above": t, "hysteresis": h, "for": d},
        st.integers(-5, 5),
        st.integers(0, 3),
        st.integers(0, 4),
    ),
    st.builds(
        lambda t, h, d: {"below": t, "hysteresis": h, "for": d},
        st.integers(-5, 5),
        st.integers(0, 3),
        st.integers(0, 4),
    ),
    st.builds(
        lambda lo, w, h, d: {"outside": [lo, lo + w], "hysteresis": min(h, w // 2), "for": d},
        st.integers(-5, 5),
        st.integers(1, 8),
        st.integers(0, 3),
        st.integers(0, 4),
    ),
)
steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(["a", "b"]),
        st.none() | st.integers(-10, 10).map(float),
        st.sampled_from([0, 1, 2]),
    ),
    max_size=40,
)


def run(
    options: dict[str, Any], script: list[Step]
) -> tuple[AlertRule, list[tuple[float, str, float | None]], list[tuple[int, AlertEvent]]]:
    """Feed the script; return the rule, the log of (time, key, value) per step (value None for a tick),
    and the events with the index of the step that caused them."""
    rule = AlertRule.from_mapping({**BASE, **options})
    ev = AlertEvaluator([rule])
    now = 0.0
    log: list[tuple[float, str, float | None]] = []
    events: list[tuple[int, AlertEvent]] = []
    for index, step in enumerate(script):
        now += step.dt
        if step.value is None:
            caused = ev.advance(now)
        else:
            caused = ev.observe("plant:x", step.key, {"t": step.value}, now)
        events += [(index, e) for e in caused]
        log.append((now, step.key, step.value))
    return rule, log, events


@given(rules, steps)
def test_never_fires_twice_without_a_clear(options: dict[str, Any], script: list[Step]) -> None:
    _, _, events = run(options, script)
    for key in ("a", "b"):
        sequence = [e.kind for _, e in events if e.key == key]
        assert sequence == ["fired", "cleared"] * (len(sequence) // 2) + ["fired"] * (len(sequence) % 2)


class Oracle:
    """The rule's conditions, written from the config independently of AlertRule's own predicates."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.h = options["hysteresis"]
        self.min_duration = options["for"]

    def violates(self, v: float) -> bool:
        o = self.options
        if "above" in o:
            return bool(v > o["above"])
        if "below" in o:
            return bool(v < o["below"])
        return not o["outside"][0] <= v <= o["outside"][1]

    def clears(self, v: float) -> bool:
        o = self.options
        if "above" in o:
            return bool(v <= o["above"] - self.h)
        if "below" in o:
            return bool(v >= o["below"] + self.h)
        return bool(o["outside"][0] + self.h <= v <= o["outside"][1] - self.h)


def violating_run(
    oracle: Oracle, log: list[tuple[float, str, float | None]], key: str, upto: int
) -> list[float]:
    """Times of the series' last unbroken run of violating readings up to step ``upto``."""
    times: list[float] = []
    for t, k, v in log[: upto + 1]:
        if k == key and v is not None:
            times = [*times, t] if oracle.violates(v) else []
    return times


@given(rules, steps)
def test_fires_only_after_the_condition_held_for_the_duration(
    options: dict[str, Any], script: list[Step]
) -> None:
    _, log, events = run(options, script)
    oracle = Oracle(options)
    for index, event in events:
        if event.kind == "fired":
            t, k, v = log[index]
            # Fired by the reading that broke the condition: it had held from `since` until this reading
            # (the last value stands until the next), long enough; it fired as it was due, before it.
            broke = k == event.key and v is not None and not oracle.violates(v)
            times = violating_run(oracle, log, event.key or "", index - 1 if broke else index)
            assert times and times[0] == event.since  # the condition held from `since` on, unbroken
            assert event.time - event.since >= oracle.min_duration
            assert oracle.violates(event.value)
            if broke:
                assert event.time == event.since + oracle.min_duration <= t


@given(rules, steps)
def test_clears_at_the_first_reading_past_the_hysteresis_and_only_then(
    options: dict[str, Any], script: list[Step]
) -> None:
    _, log, events = run(options, script)
    oracle = Oracle(options)
    for key in ("a", "b"):
        firing = False
        for index, (_, k, value) in enumerate(log):
            caused = [e for i, e in events if i == index and e.key == key]
            if k == key and value is not None and firing:
                # while firing, a reading clears exactly when it is past the band
                assert [e.kind for e in caused] == (["cleared"] if oracle.clears(value) else [])
                if caused:
                    assert caused[0].value == value
            for event in caused:
                firing = event.kind == "fired"


@given(rules, steps)
def test_a_condition_that_held_long_enough_is_firing(options: dict[str, Any], script: list[Step]) -> None:
    _, log, events = run(options, script)
    oracle = Oracle(options)
    for key in ("a", "b"):
        times = violating_run(oracle, log, key, len(log) - 1)
        if not times:
            continue
        ticks = [t for t, _, v in log if v is None and t >= times[-1]]
        if max([times[-1], *ticks]) - times[0] >= oracle.min_duration:
            mine = [e for _, e in events if e.key == key]
            assert mine and mine[-1].kind == "fired"


def test_tenants_are_separate_series() -> None:
    ev = evaluator(above=90, **{"for": 5})
    ev.observe("plant:b", None, {"t": 91}, 0, tenant="acme")
    assert ev.observe("plant:b", None, {"t": 91}, 3, tenant="beta") == []  # beta's own pending series
    (fired,) = ev.observe("plant:b", None, {"t": 91}, 5, tenant="acme")
    assert (fired.tenant, fired.since) == ("acme", 0)
    assert ev.observe("plant:b", None, {"t": 0}, 6, tenant="beta") == []  # beta's clear is not acme's
    assert [(e.tenant, e.kind) for e in ev.observe("plant:b", None, {"t": 0}, 7, tenant="acme")] == [
        ("acme", "cleared")
    ]


def test_users_to_notify() -> None:
    rule = AlertRule.from_mapping({**BASE, "above": 1, "notify": ["alice", "bob", "alice"]})
    assert rule.notify == ("alice", "bob")
    for bad in (["a b\x00"], "alice", [""], [1], ["x"] * 1001):
        with pytest.raises(InvalidFeedConfig, match="'notify' must be a list"):
            AlertRule.from_mapping({**BASE, "above": 1, "notify": bad})


def test_an_alert_that_would_evaluate_its_own_events_is_refused() -> None:
    with pytest.raises(InvalidFeedConfig, match="'publish_to' matches 'channels'"):
        AlertRule.from_mapping({**BASE, "above": 1, "publish_to": "plant:alerts"})
