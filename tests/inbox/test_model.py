"""The sans-I/O inbox: statuses and counts, marks, preferences, cursors, retry policy, plans, parsing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox import cursor
from inbox.errors import InvalidCursor, InvalidInput
from inbox.model import (
    NEW_ITEM,
    ZERO,
    DeliveryChannel,
    DeliveryState,
    Flags,
    MarkAction,
    Notification,
    Outcome,
    advance_delivery,
    apply_mark,
    change,
    contribution,
    in_app_state,
    next_delivery_state,
    parse_list_query,
    parse_mark,
    parse_notification,
)
from inbox.outbox import AttemptResult, Destination, OutboxEvent, RetryPolicy, Verdict, retry_delay, verdict
from inbox.plan import NO_DESTINATION, plan_mark, plan_notify
from inbox.preferences import (
    CategoryPolicy,
    CategoryPreference,
    PreferencePolicy,
    Preferences,
    decide,
    parse_preferences,
)

flags = st.builds(Flags, st.booleans(), st.booleans(), st.booleans()).filter(lambda f: f.seen or not f.read)
"""Statuses that keep the invariant: read implies seen."""


# -- statuses, counts, marks --------------------------------------------------------------------------


@given(flags, st.sampled_from(list(MarkAction)))
def test_every_mark_keeps_read_implies_seen_and_the_delta_is_the_change_of_contribution(
    old: Flags, action: MarkAction
) -> None:
    new = apply_mark(action, old)
    assert new.seen or not new.read
    before, after = contribution(old), contribution(new)
    assert change(old, new) == (
        after.unread - before.unread,
        after.unseen - before.unseen,
        after.total - before.total,
    )


@given(st.lists(st.tuples(flags, st.integers(1, 5)), max_size=8), st.sampled_from(list(MarkAction)))
def test_plan_mark_sums_what_each_item_changes(groups: list[tuple[Flags, int]], action: MarkAction) -> None:
    changed, delta = plan_mark(action, groups)
    expected = ZERO
    for f, n in groups:
        expected = expected + change(f, apply_mark(action, f)).times(n)
    assert delta == expected
    assert changed == sum(n for f, n in groups if apply_mark(action, f) != f)


def test_an_archived_item_counts_for_nothing_and_a_new_one_for_everything() -> None:
    assert contribution(NEW_ITEM) == (1, 1, 1)
    assert contribution(Flags(True, True, True)) == ZERO
    assert change(None, NEW_ITEM) == (1, 1, 1) and change(NEW_ITEM, None) == (-1, -1, -1)


@given(st.lists(st.sampled_from(list(DeliveryState)), min_size=1, max_size=6))
def test_delivery_states_never_go_back(reports: list[DeliveryState]) -> None:
    order = [
        DeliveryState.QUEUED,
        DeliveryState.SENT,
        DeliveryState.DELIVERED,
        DeliveryState.SEEN,
        DeliveryState.READ,
    ]
    state = DeliveryState.QUEUED
    for report in reports:
        new = next_delivery_state(state, report)
        if state is DeliveryState.SKIPPED:
            assert new is DeliveryState.SKIPPED
        elif state in order and new in order:
            assert order.index(new) >= order.index(state)
        if state not in (DeliveryState.QUEUED, DeliveryState.FAILED, DeliveryState.SKIPPED):
            assert new is not DeliveryState.FAILED  # a failure after a success does not undo it
        state = new


def test_a_delivery_keeps_the_last_error_until_it_succeeds_and_a_skip_keeps_its_reason() -> None:
    q, f, s, k = DeliveryState.QUEUED, DeliveryState.FAILED, DeliveryState.SENT, DeliveryState.SKIPPED
    assert advance_delivery(q, "", None, "500") == (q, "500")  # retrying
    assert advance_delivery(q, "500", f, "timeout") == (f, "timeout")  # dead
    assert advance_delivery(f, "timeout", s, "") == (s, "")  # replayed and delivered
    assert advance_delivery(s, "", f, "late failure") == (s, "")
    assert advance_delivery(k, "channel preference", s, "") == (k, "channel preference")
    assert advance_delivery(q, "", f, "x" * 5000)[1] == "x" * 1000


def test_in_app_state_follows_the_item() -> None:
    assert in_app_state(DeliveryState.SENT, None) is DeliveryState.SENT
    assert in_app_state(DeliveryState.SENT, Flags(True, False, False)) is DeliveryState.SEEN
    assert in_app_state(DeliveryState.DELIVERED, Flags(True, True, False)) is DeliveryState.READ
    assert in_app_state(DeliveryState.SKIPPED, Flags(True, True, False)) is DeliveryState.SKIPPED


# -- preferences ---------------------------------------------------------------------------------------

IN_APP, WEBHOOK, EMAIL = DeliveryChannel.IN_APP, DeliveryChannel.WEBHOOK, DeliveryChannel.EMAIL
POLICY = PreferencePolicy(
    categories={"security": CategoryPolicy(frozenset({IN_APP, EMAIL}), critical=True)},
    default=CategoryPolicy(frozenset({IN_APP, WEBHOOK})),
)


@pytest.mark.parametrize(
    ("prefs", "category", "channel", "send", "reason"),
    [
        (Preferences(), "comment", IN_APP, True, ""),
        (Preferences(), "comment", EMAIL, False, "category default"),
        (Preferences(channels={EMAIL: True}), "comment", EMAIL, True, ""),
        (Preferences(channels={IN_APP: False}), "comment", IN_APP, False, "channel preference"),
        (
            Preferences(categories={"comment": CategoryPreference(enabled=False)}),
            "comment",
            IN_APP,
            False,
            "category preference",
        ),
        # the most specific choice wins
        (
            Preferences(channels={IN_APP: False}, categories={"comment": CategoryPreference(enabled=True)}),
            "comment",
            IN_APP,
            True,
            "",
        ),
        (
            Preferences(categories={"comment": CategoryPreference(enabled=False, channels={WEBHOOK: True})}),
            "comment",
            WEBHOOK,
            True,
            "",
        ),
        (
            Preferences(categories={"comment": CategoryPreference(channels={IN_APP: False})}),
            "comment",
            IN_APP,
            False,
            "category channel preference",
        ),
        # critical: opt-outs do not count, the category's defaults do
        (
            Preferences(channels={IN_APP: False}, categories={"security": CategoryPreference(enabled=False)}),
            "security",
            IN_APP,
            True,
            "",
        ),
        (Preferences(channels={WEBHOOK: True}), "security", WEBHOOK, False, "category default"),
    ],
)
def test_decide_takes_the_most_specific_choice_and_critical_ignores_opt_outs(
    prefs: Preferences, category: str, channel: DeliveryChannel, send: bool, reason: str
) -> None:
    decision = decide(POLICY, prefs, category, channel)
    assert (decision.send, decision.reason) == (send, reason)


def test_preferences_round_trip_through_json_and_refuse_garbage() -> None:
    prefs = Preferences(
        channels={EMAIL: False},
        categories={"comment": CategoryPreference(enabled=True, channels={IN_APP: False})},
    )
    assert parse_preferences(prefs.as_dict()) == prefs
    for bad in [
        None,
        [],
        {"channels": {"sms": True}},
        {"channels": {"email": 1}},
        {"categories": {"bad name": {}}},
        {"categories": {"c": {"enabled": "yes"}}},
        {"categories": {"c": {"other": 1}}},
        {"categories": {f"c{i}": {} for i in range(257)}},
        {"extra": 1},
    ]:
        with pytest.raises(InvalidInput):
            parse_preferences(bad)


# -- cursors -------------------------------------------------------------------------------------------

KEY = b"k" * 32


@given(st.text(max_size=20), st.text(min_size=1, max_size=20), st.integers(0, 2**63 - 1))
def test_a_cursor_decodes_to_its_position_only_for_its_tenant_and_user(
    tenant: str, user: str, seq: int
) -> None:
    token = cursor.encode(KEY, tenant, user, seq)
    assert len(token) <= cursor.MAX_CURSOR_LENGTH
    assert cursor.decode(KEY, tenant, user, token) == seq
    with pytest.raises(InvalidCursor):
        cursor.decode(KEY, tenant, user + "x", token)
    with pytest.raises(InvalidCursor):
        cursor.decode(b"other" * 8, tenant, user, token)


@given(
    st.one_of(st.text(max_size=80), st.binary(max_size=30).map(lambda b: b.hex()), st.integers(), st.none())
)
def test_anything_but_an_issued_cursor_is_refused(garbage: Any) -> None:
    with pytest.raises(InvalidCursor):
        cursor.decode(KEY, "", "alice", garbage)


# -- retry policy --------------------------------------------------------------------------------------


@given(st.integers(1, 200), st.floats(0, 1, exclude_max=True), st.one_of(st.none(), st.floats(0, 1e6)))
def test_retry_delay_is_jittered_exponential_backoff_capped_and_honours_retry_after(
    attempt: int, rand: float, retry_after: float | None
) -> None:
    policy = RetryPolicy(max_attempts=10, base=2.0, cap=600.0, max_retry_after=3600.0)
    delay = retry_delay(policy, attempt, rand, retry_after)
    backoff = min(600.0, 2.0 * 2 ** (attempt - 1))
    assert math.isfinite(delay)
    assert delay >= backoff / 2
    if retry_after is None:
        assert delay <= backoff
    else:
        assert delay >= min(retry_after, 3600.0)
        assert delay <= max(backoff, min(retry_after, 3600.0))


def test_retry_delay_grows_then_stops_at_the_cap() -> None:
    policy = RetryPolicy(base=1.0, cap=60.0)
    lows = [retry_delay(policy, n, 0.0) for n in range(1, 12)]
    highs = [retry_delay(policy, n, 0.999999) for n in range(1, 12)]
    assert lows[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and set(lows[7:]) == {30.0}
    assert all(h <= 60.0 for h in highs) and highs == sorted(highs)


def test_verdicts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert verdict(policy, 1, AttemptResult(ok=True)) is Verdict.DONE
    assert verdict(policy, 1, AttemptResult(ok=False)) is Verdict.RETRY
    assert verdict(policy, 1, AttemptResult(ok=False, retryable=False)) is Verdict.DEAD
    assert verdict(policy, 3, AttemptResult(ok=False)) is Verdict.DEAD


# -- plans ---------------------------------------------------------------------------------------------


def test_plan_notify_binds_tasks_to_delivered_channels_and_records_every_skip() -> None:
    def route(event: OutboxEvent) -> list[Destination]:
        return [
            Destination("email", EMAIL),
            Destination("webhook:a", WEBHOOK),
            Destination("webhook:a", WEBHOOK),
        ]

    prefs = {"bob": Preferences(channels={WEBHOOK: False}), "carol": Preferences(channels={IN_APP: False})}
    n = Notification("", ("alice", "bob", "carol"), "comment")
    plan = plan_notify(
        n, 7, 1.0, POLICY, prefs, {"alice": (99, Flags(True, True, False))}, [10, 11, 12], route
    )
    assert [(r.user, r.outcome, r.item_id) for r in plan.results] == [
        ("alice", Outcome.COLLAPSED, 99),
        ("bob", Outcome.CREATED, 10),
        ("carol", Outcome.SKIPPED, None),
    ]
    assert plan.deltas == {"alice": (1, 1, 0), "bob": (1, 1, 1)}
    states = {(d.user, d.channel): (d.state, d.error) for d in plan.deliveries}
    assert states[("bob", WEBHOOK)] == (DeliveryState.SKIPPED, "channel preference")
    assert states[("alice", WEBHOOK)] == (DeliveryState.QUEUED, "")
    assert states[("alice", EMAIL)] == (DeliveryState.SKIPPED, "category default")
    assert states[("carol", IN_APP)] == (DeliveryState.SKIPPED, "channel preference")
    assert [(e.event.payload["user"], [t.destination for t in e.tasks]) for e in plan.events] == [
        ("alice", ["webhook:a"]),
        ("carol", ["webhook:a"]),
    ]
    nowhere = plan_notify(n, 7, 1.0, POLICY, {}, {}, [1, 2, 3], lambda e: [])
    assert {d.error for d in nowhere.deliveries if d.channel is WEBHOOK} == {NO_DESTINATION}
    assert nowhere.events == []


# -- parsing JSON params -------------------------------------------------------------------------------


def test_parse_notification_builds_what_the_constructor_would() -> None:
    n = parse_notification(
        "acme",
        {
            "recipients": ["alice"],
            "category": "comment",
            "data": {"x": 1},
            "actions": [{"id": "open", "label": "Open", "url": "https://x"}],
            "group_key": "g",
            "group_window": 60,
            "channels": ["in_app"],
        },
    )
    assert n.tenant == "acme" and n.recipients == ("alice",) and n.channels == {IN_APP}
    assert n.actions[0].label == "Open" and n.group_window == 60


def test_a_notification_keeps_the_data_it_checked() -> None:
    data: dict[str, Any] = {"x": [1, 2]}
    n = Notification("", ("alice",), "comment", data)
    data["x"].append("y" * 100000)
    assert n.data == {"x": [1, 2]}


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "recipients",
        "category",
        "data",
        "title",
        "actions",
        "dedupe_key",
        "group_key",
        "group_window",
        "expire_at",
        "channels",
        "limit",
        "cursor",
        "status",
        "archived",
        "categories",
        "action",
        "ids",
        "up_to",
        "all",
        "junk",
    ]
)


@settings(max_examples=300)
@given(st.one_of(json_values, st.dictionaries(keys, json_values, max_size=6)))
def test_parsers_answer_garbage_with_invalid_input_only(params: Any) -> None:
    for parse in (lambda p: parse_notification("", p), parse_list_query, parse_mark, parse_preferences):
        try:
            parse(params)
        except InvalidInput:
            pass
