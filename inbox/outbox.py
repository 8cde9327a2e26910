"""The transactional outbox (sans-I/O part): events, destinations, claimed tasks, attempts, retry policy.

Every inbox change appends its events in the same transaction as the change, and so may any part of the
hub (publications, channel occupied/vacated, client connected/disconnected, document changes), through
``InboxStore.append``. The store asks its ``Router`` where each event goes; it writes the event once and
one task per destination (an event nobody wants is not stored). Workers ``claim`` tasks with a lease,
deliver them, and ``record`` each attempt's result:

- success: the task is done;
- a retryable failure: the task waits ``retry_delay`` (exponential backoff with jitter, at least the
  receiver's ``Retry-After``) and is claimable again;
- a failure that must not be retried (4xx other than 408/429), or the ``max_attempts``-th attempt: the
  task is a dead letter, until ``replay`` makes it pending again with a fresh attempt budget.

A claim counts as an attempt, so a task whose delivery kills its worker dead-letters too instead of
looping. A lease that runs out (the worker died or stalled) makes the task claimable by another worker:
delivery is at least once, and a duplicate carries the same ``event_id`` (the ``webhook-id``). A late
result from a worker that lost its lease is kept as an attempt but does not change the task.

A destination may be bound to a delivery channel (email, webhook): its task then also moves the
notification's delivery for that recipient and channel (sent, or failed with the last error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inbox.errors import InvalidInput
from inbox.model import DeliveryChannel, check_json_object, check_tenant, check_text

MAX_EVENT_BYTES = 65536
"""An event's payload as JSON (a document.changed carries the document's content)."""
MAX_APPEND = 1000
"""Events per append call."""
MAX_DESTINATION_LENGTH = 128
MAX_ERROR_LENGTH = 1000
"""Longer errors are cut, never refused (a receiver's answer is not ours to bound)."""
MAX_CLAIM = 1000


class Topic(StrEnum):
    NOTIFICATION_CREATED = "notification.created"
    """One per recipient that gets the notification on any channel; ``channels`` lists which."""
    INBOX_CHANGED = "inbox.changed"
    """A mark changed a user's items (action, ids or up_to/all, changed, counts)."""
    PUBLICATION = "publication"
    CHANNEL_OCCUPIED = "channel.occupied"
    CHANNEL_VACATED = "channel.vacated"
    CLIENT_CONNECTED = "client.connected"
    CLIENT_DISCONNECTED = "client.disconnected"
    DOCUMENT_CHANGED = "document.changed"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    tenant: str
    topic: Topic
    payload: Mapping[str, Any]

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        if not isinstance(self.topic, Topic):
            raise InvalidInput("topic must be an outbox topic")
        check_json_object("payload", self.payload, MAX_EVENT_BYTES)

    @classmethod
    def trusted(cls, tenant: str, topic: Topic, payload: Mapping[str, Any]) -> OutboxEvent:
        """An event whose parts were validated already (a notification's content and ids: a notify to
        10,000 recipients builds 10,000 events, and checking the same content again each time cost half
        of its planning). Never for anything a caller hands in."""
        event = object.__new__(cls)
        object.__setattr__(event, "tenant", tenant)
        object.__setattr__(event, "topic", topic)
        object.__setattr__(event, "payload", payload)
        return event


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a worker delivers (``webhook:<name>``, ``email``, ...); the worker that serves it claims by
    this name."""

    name: str
    channel: DeliveryChannel | None = None
    """The delivery channel its tasks stand for, for ``notification.created`` events."""

    def __post_init__(self) -> None:
        check_destination(self.name)


def check_destination(name: object) -> str:
    return check_text("destination", name, MAX_DESTINATION_LENGTH)


Router = Callable[[OutboxEvent], Sequence[Destination]]
"""The destinations of an event (pure, from the hub's config: webhook endpoints and their filters,
email). Called inside the store's transaction: it must not block or raise."""


def no_destinations(event: OutboxEvent) -> Sequence[Destination]:
    return ()


class TaskState(StrEnum):
    PENDING = "pending"
    """Waiting for its next attempt, or leased to a worker (``lease_until`` in the future)."""
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Task:
    """A claimed task: deliver ``payload`` to ``destination``, then ``record`` the result with this task
    (its ``attempt`` number proves the lease)."""

    id: int
    event_id: int
    """Stable across retries and duplicates: the webhook-id."""
    destination: str
    tenant: str
    topic: Topic
    payload: Mapping[str, Any]
    attempt: int
    """1 on the first claim."""
    lease_until: float
    created_at: float


@dataclass(frozen=True, slots=True)
class AttemptResult:
    ok: bool
    error: str = ""
    retryable: bool = True
    retry_after: float | None = None
    """The receiver's Retry-After, seconds."""
    status: int | None = None
    """The receiver's status code, if any."""

    def __post_init__(self) -> None:
        if not isinstance(self.error, str):
            raise InvalidInput("error must be a string")
        if self.retry_after is not None and not (
            isinstance(self.retry_after, int | float) and 0 <= self.retry_after < float("inf")
        ):
            raise InvalidInput("retry_after must be a non-negative number of seconds")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base: float = 1.0
    """Seconds before the second attempt (before jitter)."""
    cap: float = 3600.0
    """Longest backoff, seconds."""
    max_retry_after: float = 86400.0
    """A receiver's Retry-After is honoured up to this."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not 0 < self.base <= self.cap or self.max_retry_after < 0:
            raise InvalidInput("retry policy needs max_attempts >= 1 and 0 < base <= cap")


def retry_delay(policy: RetryPolicy, attempt: int, rand: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential backoff
    ``base * 2**(attempt-1)`` capped at ``cap``, with "equal jitter" (a uniform draw in the upper half, so
    retries of many tasks that failed together spread out but none comes back early), and never sooner
    than the receiver's ``retry_after`` (itself capped at ``max_retry_after``). ``rand`` is a draw from
    [0, 1) (``random.random()``), passed in so the function is pure."""
    exponent = min(max(attempt, 1) - 1, 62)
    backoff = min(policy.cap, policy.base * 2.0**exponent)
    delay = backoff / 2 + backoff / 2 * min(max(rand, 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_retry_after))
    return delay


class Verdict(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    STALE = "stale"
    """The worker had lost its lease; the attempt is kept, the task unchanged."""


def verdict(policy: RetryPolicy, attempt: int, result: AttemptResult) -> Verdict:
    """What an attempt's result does to its task (module docstring)."""
    if result.ok:
        return Verdict.DONE
    if not result.retryable or attempt >= policy.max_attempts:
        return Verdict.DEAD
    return Verdict.RETRY


@dataclass(frozen=True, slots=True)
class Attempt:
    task_id: int
    attempt: int
    worker: str
    verdict: Verdict
    error: str
    status: int | None
    at: float


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task as ``tasks``/``dead_letters`` show it."""

    id: int
    event_id: int
    destination: str
    tenant: str
    topic: Topic
    state: TaskState
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    updated_at: float
    payload: Mapping[str, Any] = field(default_factory=dict)


def cut_error(error: str) -> str:
    return error[:MAX_ERROR_LENGTH]
