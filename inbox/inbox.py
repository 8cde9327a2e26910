"""The inbox store interface, and what its implementations share.

Obligations of an implementation (``inbox_sqlite.SqliteInbox``, ``inbox_postgres.PostgresInbox``):

- Every change is one transaction: the items, the counters, the deliveries and the outbox events it
  appends commit together or not at all. An input that fails validation raises ``InvalidInput`` before
  the transaction starts; a failed write raises ``StoreError`` and leaves nothing of the change.
- Counts are counters kept per (tenant, user) and changed in the same transaction as the items they
  count, so they are exact at every commit (``counts`` reads a row, it never counts 100,000 items).
  Concurrent changes of one user, from any number of store instances sharing the database, are
  serialised on that user's counter row (PostgreSQL: a row lock, taken in (tenant, user) order so two
  changes cannot deadlock; SQLite: the database's one writer). Every change returns the new counts of
  each user it touched, with a ``version`` that rises by one per change of that user's inbox.
- Expired items are neither listed nor counted from their ``expire_at`` on (``counts`` subtracts the
  expired items not yet swept, found through an index of the few that have an expiry), and ``expire``
  deletes them and moves the counters in one transaction.
- Outbox tasks are claimed with a lease by any number of workers and processes without being handed to
  two of them at once while the lease lasts (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the claim is
  a write transaction).
- The schema is created and migrated by ``open`` (a ``schema_version`` table, ordered migrations, each in
  its own transaction; PostgreSQL holds an advisory lock so nodes starting together migrate once). A
  database whose schema is newer than the code raises ``SchemaError``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from inbox.errors import InvalidInput, SchemaError
from inbox.model import (
    MAX_USER_LENGTH,
    Counts,
    CountsDelta,
    DeliveryChannel,
    DeliveryState,
    Item,
    ListQuery,
    Mark,
    MarkResult,
    Notification,
    NotificationStatus,
    NotifyResult,
    Page,
    TenantCounts,
    UserCounts,
    check_id,
    check_tenant,
    check_text,
    check_user,
    item_from_row,
    next_delivery_state,
)
from inbox.outbox import (
    MAX_APPEND,
    MAX_CLAIM,
    Attempt,
    AttemptResult,
    OutboxEvent,
    RetryPolicy,
    Router,
    Task,
    TaskInfo,
    TaskState,
    Verdict,
    check_destination,
    cut_error,
    no_destinations,
    retry_delay,
    verdict,
)
from inbox.preferences import PreferencePolicy, Preferences

MAX_STATUS_PAGE = 1000
MAX_REPLAY = 10000
MAX_WORKER_LENGTH = 128
MAX_EXPIRE_BATCH = 10000
MAX_LEASE = 3600.0
MAX_DELIVERY_REPORTS = 10000
"""Deliveries one ``record_deliveries`` call may report."""

DeliveryKey = tuple[str, int, str]
"""(tenant, notification id, user): one delivery of a notification, on a channel named beside it."""


@dataclass(frozen=True, slots=True)
class InboxOptions:
    """What a store is told by the composition root (the same for every backend)."""

    policy: PreferencePolicy = field(default_factory=PreferencePolicy)
    route: Router = no_destinations
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], float] = time.time
    """Epoch seconds; tests pass their own."""
    rand: Callable[[], float] = random.random
    """The jitter's draw."""


class InboxStore(Protocol):
    origin: str
    """A random name of this database, set by ``open`` and kept for the database's life: with an event's
    id it names the event uniquely across databases (the webhook-id), since two databases (two embedded
    nodes, a database set up again) count their event ids from 1 each."""

    async def open(self) -> None:
        """Connect, create or migrate the schema; idempotent."""

    async def close(self) -> None: ...

    # -- inbox ---------------------------------------------------------------------------------------

    async def notify(self, notification: Notification) -> NotifyResult:
        """Store ``notification`` for its recipients (dedupe, groups, preferences: see ``Notification``)
        and append a ``notification.created`` per recipient that gets it, in one transaction."""
        ...

    async def list_items(self, tenant: str, user: str, query: ListQuery = ListQuery()) -> Page: ...

    async def counts(self, tenant: str, user: str) -> Counts: ...

    async def tenant_counts(self, tenant: str) -> TenantCounts:
        """The counts of every user of ``tenant`` added up: a sum over the tenant's counter rows (one per
        user who ever had an item), for an operator's page, not for every request."""
        ...

    async def mark(self, tenant: str, user: str, mark: Mark) -> MarkResult:
        """Apply a mark and append ``inbox.changed`` (when something changed)."""
        ...

    async def preferences(self, tenant: str, user: str) -> Preferences: ...

    async def set_preferences(self, tenant: str, user: str, preferences: Preferences) -> None:
        """Replace the user's preferences (the empty value restores the defaults)."""

    async def notification_status(
        self, tenant: str, notification_id: int, *, after_user: str = "", limit: int = 100
    ) -> NotificationStatus:
        """Where the notification stands, per recipient and channel (a page of recipients) and in sum;
        ``NotFound`` for an id this tenant never had (or a deduplicated repeat's rolled-back id)."""
        ...

    async def record_delivery(
        self,
        tenant: str,
        notification_id: int,
        user: str,
        channel: DeliveryChannel,
        state: DeliveryState,
        error: str = "",
    ) -> DeliveryState:
        """Report progress of one delivery (the hub: in-app ``delivered`` once a device got the push);
        states only move forward (``next_delivery_state``). Returns the state now stored."""
        ...

    async def record_deliveries(
        self, channel: DeliveryChannel, state: DeliveryState, deliveries: Sequence[DeliveryKey]
    ) -> int:
        """Report that many deliveries of ``channel`` reached ``state`` (the hub: in-app ``delivered``
        for every recipient whose device got the push, batched across notifications and tenants), in
        one transaction. Each moves only forward, as ``record_delivery`` would move it (a repeat, or a
        report about a delivery that is already further, changes nothing); a delivery that does not
        exist (or a notification of another tenant) is left out. ``state`` carries no error: not
        ``failed`` nor ``skipped``. Returns how many deliveries moved."""
        ...

    async def expire(self, *, limit: int = 1000) -> list[UserCounts]:
        """Delete up to ``limit`` expired items (and dedupe keys past their window); the new counts of
        every user who lost items."""
        ...

    # -- outbox --------------------------------------------------------------------------------------

    async def append(self, events: Sequence[OutboxEvent]) -> int:
        """Store events of the hub (publications, occupancy, connections, documents) where the router
        sends them; returns how many had a destination."""
        ...

    async def claim(
        self, worker: str, destinations: Sequence[str] | None = None, *, limit: int = 100, lease: float = 30.0
    ) -> list[Task]:
        """Lease up to ``limit`` due tasks (of ``destinations``, or any) to ``worker`` for ``lease`` s,
        oldest due first."""
        ...

    async def record(self, worker: str, task: Task, result: AttemptResult) -> Verdict:
        """Record an attempt's result (see ``inbox.outbox``)."""
        ...

    async def tasks(
        self,
        *,
        state: TaskState | None = None,
        destination: str | None = None,
        tenant: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[TaskInfo]:
        """Tasks in id order after ``after_id`` (``state=DEAD``: the dead letters); with ``before_id``,
        the tasks below it (and after ``after_id``) newest first: the most recent ones."""
        ...

    async def replay(
        self,
        task_ids: Sequence[int] | None = None,
        *,
        destination: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Make dead letters pending again with a fresh attempt budget (the given ids, or every dead
        letter of ``destination``/``tenant``, at most ``MAX_REPLAY``); returns how many."""
        ...

    async def attempts(self, task_id: int) -> list[Attempt]: ...

    async def outbox_depth(self, tenant: str | None = None) -> dict[tuple[str, TaskState], int]:
        """Tasks per (destination, state) that are pending or dead (the done ones are not counted): the
        queue depth and the dead letters, for metrics (of ``tenant`` only, when given). A count over the
        tasks: call it now and then, not per event."""
        ...

    async def prune(self, *, before: float, limit: int = 10000) -> int:
        """Delete done tasks finished before ``before`` (and their attempts, and their events once no
        task of theirs is left); returns how many tasks."""
        ...


def check_owner(tenant: object, user: object) -> None:
    """The (tenant, user) an inbox call is about."""
    check_tenant(tenant)
    check_user(user)


def check_kind(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise InvalidInput(f"{name} must be a {kind.__name__}")


def check_status_query(tenant: object, notification_id: object, after_user: object, limit: object) -> None:
    check_tenant(tenant)
    check_id("notification_id", notification_id)
    check_text("after_user", after_user, MAX_USER_LENGTH, empty=True)
    check_page(limit, MAX_STATUS_PAGE)


def check_delivery_report(
    tenant: object, notification_id: object, user: object, channel: object, state: object, error: object
) -> None:
    check_owner(tenant, user)
    check_id("notification_id", notification_id)
    check_kind("channel", channel, DeliveryChannel)
    check_kind("state", state, DeliveryState)
    check_kind("error", error, str)


def check_delivery_reports(channel: object, state: object, deliveries: object) -> list[DeliveryKey]:
    """The deliveries of a valid ``record_deliveries`` call, sorted and without repeats (rows are then
    locked in one order by every caller)."""
    check_kind("channel", channel, DeliveryChannel)
    check_kind("state", state, DeliveryState)
    if state in (DeliveryState.FAILED, DeliveryState.SKIPPED):
        raise InvalidInput("record_deliveries reports states without an error: not failed or skipped")
    if (
        not isinstance(deliveries, Sequence)
        or isinstance(deliveries, str)
        or len(deliveries) > MAX_DELIVERY_REPORTS
    ):
        raise InvalidInput(f"deliveries must be a list of at most {MAX_DELIVERY_REPORTS}")
    out: set[DeliveryKey] = set()
    for entry in deliveries:
        if not isinstance(entry, tuple) or len(entry) != 3:
            raise InvalidInput("a delivery is (tenant, notification id, user)")
        tenant, notification_id, user = entry
        check_owner(tenant, user)
        out.add((tenant, check_id("notification_id", notification_id), user))
    return sorted(out)


def states_moving_to(state: DeliveryState) -> list[str]:
    """The stored states a report of ``state`` moves forward (``next_delivery_state``), for the stores'
    bulk update."""
    return sorted(str(s) for s in DeliveryState if s is not state and next_delivery_state(s, state) is state)


def check_events(events: object) -> None:
    if not isinstance(events, Sequence) or isinstance(events, str) or len(events) > MAX_APPEND:
        raise InvalidInput(f"events must be a list of at most {MAX_APPEND}")
    for event in events:
        check_kind("event", event, OutboxEvent)


def check_claim(
    worker: object, destinations: object, limit: object, lease: object
) -> tuple[list[str] | None, float]:
    """The destinations (None: any) and the lease in seconds of a valid claim."""
    check_text("worker", worker, MAX_WORKER_LENGTH)
    check_page(limit, MAX_CLAIM)
    seconds = check_lease(lease)
    if destinations is None:
        return None, seconds
    if not isinstance(destinations, Sequence) or isinstance(destinations, str) or len(destinations) > 100:
        raise InvalidInput("destinations must be a list of at most 100 names")
    return [check_destination(d) for d in destinations], seconds


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """What ``record`` writes for an attempt: the task's verdict, its next state and due time, the error,
    and the state its bound delivery is reported in (None: left as it is)."""

    verdict: Verdict
    state: TaskState
    due: float
    error: str
    delivery: DeliveryState | None


def record_outcome(
    options: InboxOptions, now: float, worker: object, task: object, result: object
) -> RecordPlan:
    """Check a ``record`` call and decide what it writes if the worker still holds the lease (a stale
    attempt writes only the attempt)."""
    check_text("worker", worker, MAX_WORKER_LENGTH)
    check_kind("task", task, Task)
    check_kind("result", result, AttemptResult)
    assert isinstance(task, Task) and isinstance(result, AttemptResult)
    policy = options.retry
    decided = verdict(policy, task.attempt, result)
    if decided is Verdict.RETRY:
        state, due = (
            TaskState.PENDING,
            now + retry_delay(policy, task.attempt, options.rand(), result.retry_after),
        )
    else:
        state, due = (TaskState.DONE if decided is Verdict.DONE else TaskState.DEAD), now
    reported = {Verdict.DONE: DeliveryState.SENT, Verdict.DEAD: DeliveryState.FAILED}.get(decided)
    return RecordPlan(decided, state, due, cut_error(result.error), reported)


def check_task_query(
    state: object,
    destination: object,
    tenant: object,
    after_id: object = 0,
    limit: object = 1,
    before_id: object = None,
) -> None:
    if before_id is not None:
        check_id("before_id", before_id)
    if state is not None:
        check_kind("state", state, TaskState)
    if destination is not None:
        check_destination(destination)
    if tenant is not None:
        check_tenant(tenant)
    if not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 0:
        raise InvalidInput("after_id must be a non-negative integer")
    check_page(limit, MAX_CLAIM)


def check_replay_ids(task_ids: object) -> list[int] | None:
    if task_ids is None:
        return None
    if not isinstance(task_ids, Sequence) or isinstance(task_ids, str) or len(task_ids) > MAX_REPLAY:
        raise InvalidInput(f"task ids must be a list of at most {MAX_REPLAY}")
    return [check_id("task id", i) for i in task_ids]


def check_prune(before: object, limit: object) -> float:
    check_page(limit, MAX_EXPIRE_BATCH)
    if not isinstance(before, int | float) or isinstance(before, bool) or not math.isfinite(before):
        raise InvalidInput("before must be a time")
    return float(before)


def by_tenant(deltas: Mapping[tuple[str, str], CountsDelta]) -> dict[str, dict[str, CountsDelta]]:
    """Per-(tenant, user) deltas grouped per tenant, tenants in order (the lock order)."""
    grouped: dict[str, dict[str, CountsDelta]] = {}
    for (tenant, user), delta in sorted(deltas.items()):
        grouped.setdefault(tenant, {})[user] = delta
    return grouped


def check_page(limit: object, upper: int, name: str = "limit") -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= upper:
        raise InvalidInput(f"{name} must be an integer from 1 to {upper}")
    return limit


def check_lease(lease: object) -> float:
    if not isinstance(lease, int | float) or isinstance(lease, bool) or not 0 < lease <= MAX_LEASE:
        raise InvalidInput(f"lease must be a number of seconds in (0, {MAX_LEASE}]")
    return float(lease)


def check_expire_at(notification: Notification, now: float) -> None:
    if notification.expire_at is not None and notification.expire_at <= now:
        raise InvalidInput("expire_at is in the past")


def migrations_to_run(current: int, latest: int, target: int | None) -> range:
    """The versions to apply, in order, to go from ``current`` to ``target`` (default ``latest``)."""
    if current > latest:
        raise SchemaError(f"the inbox schema is at version {current}, newer than this code ({latest})")
    goal = latest if target is None else min(target, latest)
    return range(current + 1, goal + 1)


def counts_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, Counts]:
    """Counts per user from the stores' counts query: (user, the counter row's unread, unseen, total,
    version, then the same three over the user's expired items not swept yet, which are subtracted)."""
    out: dict[str, Counts] = {}
    for user, unread, unseen, total, version, e_unread, e_unseen, e_total in rows:
        out[user] = Counts(
            unread=int(unread or 0) - int(e_unread or 0),
            unseen=int(unseen or 0) - int(e_unseen or 0),
            total=int(total or 0) - int(e_total or 0),
            version=int(version or 0),
        )
    return out


OUTBOX_DEPTH = (
    "SELECT destination, state, count(*) FROM outbox_tasks WHERE state IN ('pending', 'dead'){} GROUP BY 1, 2"
)
"""The query behind ``outbox_depth`` (the same in both stores): ``{}`` is the tenant's condition or ""."""

ITEM_COLUMNS = (
    "i.id, i.seq, i.category, i.notification_id, i.first_notification_id, n.content, i.group_key, i.count,"
    " i.created_at, i.updated_at, i.seen_at, i.read_at, i.archived_at, i.interacted_at, i.expire_at"
)
"""What both stores select for an item (``FROM inbox_items i JOIN inbox_notifications n``)."""


def item_from_columns(row: Sequence[Any]) -> Item:
    """An ``Item`` from the columns ``ITEM_COLUMNS`` names."""
    (
        id_,
        _seq,
        category,
        nid,
        first,
        content,
        group_key,
        count,
        created,
        updated,
        seen,
        read,
        archived,
        interacted,
        expire,
    ) = row
    return item_from_row(
        id=int(id_),
        category=category,
        notification_id=int(nid),
        first_notification_id=int(first),
        content=orjson.loads(content),
        group_key=group_key,
        count=int(count),
        created_at=float(created),
        updated_at=float(updated),
        seen_at=seen,
        read_at=read,
        archived_at=archived,
        interacted_at=interacted,
        expire_at=expire,
    )


def to_json(value: Any) -> str:
    return orjson.dumps(value).decode()


__all__ = ["InboxOptions", "InboxStore", "TaskState"]
