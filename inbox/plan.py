"""What a change does, decided without I/O: both stores read the state, call these, and write the result.

The stores differ only in SQL; every decision (who gets an item, which group it collapses into, what is
skipped and why, the counts delta of each user, the events and where they go) is made here once, and
tested here without a database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from inbox.model import (
    NEW_ITEM,
    ZERO,
    CountsDelta,
    DeliveryChannel,
    DeliveryState,
    Flags,
    Mark,
    MarkAction,
    Notification,
    Outcome,
    RecipientResult,
    apply_mark,
    change,
)
from inbox.outbox import Destination, OutboxEvent, Router, Topic
from inbox.preferences import NO_PREFERENCES, PreferencePolicy, Preferences, decide_all

NO_DESTINATION = "no destination configured"


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    user: str
    channel: DeliveryChannel
    state: DeliveryState
    error: str = ""


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One destination of one event; ``user``/``channel`` bind it to a delivery (or are None)."""

    destination: str
    user: str | None = None
    channel: DeliveryChannel | None = None


@dataclass(slots=True)
class EventRow:
    event: OutboxEvent
    tasks: list[TaskRow]


@dataclass(slots=True)
class NotifyPlan:
    results: list[RecipientResult] = field(default_factory=list)
    creates: list[tuple[str, int]] = field(default_factory=list)
    """(user, new item id)."""
    collapses: list[tuple[str, int]] = field(default_factory=list)
    """(user, id of the open group item)."""
    deliveries: list[DeliveryRow] = field(default_factory=list)
    deltas: dict[str, CountsDelta] = field(default_factory=dict)
    """Every user whose inbox changed (a collapse may leave the numbers as they were)."""
    events: list[EventRow] = field(default_factory=list)

    def delivery_counts(self) -> dict[tuple[DeliveryChannel, DeliveryState], int]:
        """The deliveries recorded, counted per (channel, state)."""
        return dict(Counter((d.channel, d.state) for d in self.deliveries))


def plan_notify(
    n: Notification,
    notification_id: int,
    now: float,
    policy: PreferencePolicy,
    prefs: Mapping[str, Preferences],
    open_groups: Mapping[str, tuple[int, Flags]],
    new_ids: Sequence[int],
    route: Router,
) -> NotifyPlan:
    """Decide one notify call. ``prefs`` holds the recipients that have preferences stored,
    ``open_groups`` each recipient's open group item for ``n.group_key`` (id, flags), ``new_ids`` at least
    as many unused item ids as there are recipients (taken in order, only for created items)."""
    plan = NotifyPlan()
    ids = iter(new_ids)
    content = n.content()
    defaults = decide_all(policy, NO_PREFERENCES, n.category, n.channels)
    default_enabled = frozenset(c for c, d in defaults.items() if d.send)
    created = change(None, NEW_ITEM)
    names: dict[frozenset[DeliveryChannel], list[str]] = {}
    for user in n.recipients:
        own = prefs.get(user)
        if own is None:
            decisions, enabled = defaults, default_enabled
        else:
            decisions = decide_all(policy, own, n.category, n.channels)
            enabled = frozenset(c for c, d in decisions.items() if d.send)
        item_id: int | None = None
        outcome = Outcome.SKIPPED
        if DeliveryChannel.IN_APP in enabled:
            group = open_groups.get(user)
            if group is not None:
                item_id, flags = group
                outcome = Outcome.COLLAPSED
                plan.collapses.append((user, item_id))
                plan.deltas[user] = change(flags, NEW_ITEM)  # open groups are never archived
            else:
                item_id = next(ids)
                outcome = Outcome.CREATED
                plan.creates.append((user, item_id))
                plan.deltas[user] = created
        plan.results.append(RecipientResult(user, outcome, item_id, enabled))
        if not enabled:
            plan.deliveries.extend(
                DeliveryRow(user, c, DeliveryState.SKIPPED, d.reason) for c, d in decisions.items()
            )
            continue
        event = OutboxEvent.trusted(
            n.tenant,
            Topic.NOTIFICATION_CREATED,
            {
                "notification_id": notification_id,
                "user": user,
                "item_id": item_id,
                "outcome": str(outcome),
                "category": n.category,
                "channels": names.get(enabled) or names.setdefault(enabled, sorted(map(str, enabled))),
                "created_at": now,
                **content,
            },
        )
        tasks = _tasks_for(route(event), user, enabled)
        served = {t.channel for t in tasks}
        for channel, decision in decisions.items():
            if not decision.send:
                plan.deliveries.append(DeliveryRow(user, channel, DeliveryState.SKIPPED, decision.reason))
            elif channel is DeliveryChannel.IN_APP:
                plan.deliveries.append(DeliveryRow(user, channel, DeliveryState.SENT))
            elif channel in served:
                plan.deliveries.append(DeliveryRow(user, channel, DeliveryState.QUEUED))
            else:
                plan.deliveries.append(DeliveryRow(user, channel, DeliveryState.SKIPPED, NO_DESTINATION))
        if tasks:
            plan.events.append(EventRow(event, tasks))
    return plan


def _tasks_for(
    destinations: Iterable[Destination], user: str, enabled: frozenset[DeliveryChannel]
) -> list[TaskRow]:
    """A task per destination; one bound to a channel the recipient does not get is dropped. An in-app
    destination is not a delivery of its own (the inbox is), so its tasks are not bound."""
    tasks: list[TaskRow] = []
    seen: set[str] = set()
    for d in destinations:
        if d.name in seen or (d.channel is not None and d.channel not in enabled):
            continue
        seen.add(d.name)
        bound = d.channel is not None and d.channel is not DeliveryChannel.IN_APP
        tasks.append(TaskRow(d.name, user if bound else None, d.channel if bound else None))
    return tasks


def route_event(event: OutboxEvent, route: Router) -> EventRow | None:
    """An event not tied to a delivery (marks, the hub's events): its tasks, or None if nobody wants it."""
    tasks: list[TaskRow] = []
    for name in dict.fromkeys(d.name for d in route(event)):
        tasks.append(TaskRow(name))
    return EventRow(event, tasks) if tasks else None


def plan_mark(action: MarkAction, groups: Iterable[tuple[Flags, int]]) -> tuple[int, CountsDelta]:
    """(items changed, counts delta) of ``action`` on target items, given as (flags, how many) for the
    items it changes (the stores select them with ``MARK_SQL``'s condition)."""
    changed, delta = 0, ZERO
    for flags, count in groups:
        new = apply_mark(action, flags)
        if new == flags:
            continue
        changed += count
        delta = delta + change(flags, new).times(count)
    return changed, delta


def mark_event(
    tenant: str, user: str, mark: Mark, changed_ids: Sequence[int] | None, changed: int
) -> OutboxEvent:
    """The ``inbox.changed`` event of a mark; ``changed_ids`` only for a mark by ids."""
    scope = "ids" if mark.ids else "up_to" if mark.up_to is not None else "all"
    payload: dict[str, object] = {
        "user": user,
        "action": str(mark.action),
        "scope": scope,
        "changed": changed,
    }
    if changed_ids is not None:
        payload["ids"] = list(changed_ids)
    if mark.categories:
        payload["categories"] = list(mark.categories)
    return OutboxEvent(tenant, Topic.INBOX_CHANGED, payload)


def plan_removal(groups: Iterable[tuple[str, str, Flags, int]]) -> dict[tuple[str, str], CountsDelta]:
    """Counts deltas of deleting items, given as (tenant, user, flags, how many)."""
    deltas: dict[tuple[str, str], CountsDelta] = {}
    for tenant, user, flags, count in groups:
        key = (tenant, user)
        deltas[key] = deltas.get(key, ZERO) + change(flags, None).times(count)
    return deltas
