"""The inbox model (sans-I/O): notifications, items, statuses, counts, list queries, marks, deliveries.

Every value that enters the inbox is one of the frozen dataclasses below, and each validates itself on
construction (``__post_init__``), so a Python caller cannot hand a store something a JSON client could not.
``parse_*`` build them from decoded JSON (the hub's RPC and server API params): wrong types, unknown keys
and values past the bounds raise ``InvalidInput`` naming the field.

Statuses are timestamps (None: not yet): ``seen_at``, ``read_at``, ``archived_at``, ``interacted_at``.
Invariant: a read item is seen (``read_at`` set implies ``seen_at`` set); every mark keeps it.

Counts, per (tenant, user), over the items that are neither archived nor expired:
``total`` (all of them), ``unread`` (read_at None), ``unseen`` (seen_at None). They are what a badge shows.
A store keeps them as counters changed in the same transaction as the items (``contribution`` is each
item's share), never recomputed from a cache. ``version`` rises by one with every change of a user's
inbox, so the newest of several pushes (from several nodes) can be told apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import orjson

from inbox.errors import InvalidInput

# -- bounds ------------------------------------------------------------------------------------------

MAX_TENANT_LENGTH = 255
MAX_USER_LENGTH = 255
MAX_CATEGORY_LENGTH = 64
MAX_KEY_LENGTH = 255
"""dedupe_key and group_key."""
MAX_DATA_BYTES = 16384
"""A notification's ``data``, encoded as JSON."""
MAX_TITLE_LENGTH = 512
MAX_BODY_LENGTH = 4096
MAX_URL_LENGTH = 2048
MAX_ACTIONS = 5
MAX_ACTION_LABEL_LENGTH = 64
MAX_RECIPIENTS = 10000
"""Recipients of one notify call (a larger audience is several calls)."""
MAX_WINDOW = 30 * 86400.0
"""Longest dedupe or group window, seconds."""
DEFAULT_DEDUPE_WINDOW = 86400.0
MAX_EXPIRE_AT = 253402300799.0
"""9999-12-31T23:59:59Z."""
MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_FILTER_CATEGORIES = 16
MAX_MARK_IDS = 1000
MAX_ID = 2**63 - 1

_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


class DeliveryChannel(StrEnum):
    IN_APP = "in_app"
    WEBHOOK = "webhook"
    EMAIL = "email"


ALL_CHANNELS = frozenset(DeliveryChannel)


class DeliveryState(StrEnum):
    """Where one notification stands for one recipient on one channel.

    Forward order ``queued < sent < delivered < seen < read``; ``failed`` (with the last error) can still
    become ``sent`` when a later attempt succeeds; ``skipped`` (a preference, or nowhere to deliver) is final.
    For ``in_app``: ``sent`` means stored in the inbox, ``delivered`` that a connected device got the push,
    and ``seen``/``read`` come from the item's statuses.
    """

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    SEEN = "seen"
    READ = "read"
    FAILED = "failed"
    SKIPPED = "skipped"


_FORWARD = {
    DeliveryState.QUEUED: 0,
    DeliveryState.FAILED: 0,
    DeliveryState.SENT: 1,
    DeliveryState.DELIVERED: 2,
    DeliveryState.SEEN: 3,
    DeliveryState.READ: 4,
}


def next_delivery_state(old: DeliveryState, new: DeliveryState) -> DeliveryState:
    """The state after reporting ``new`` on a delivery in ``old``: states only move forward (a late
    ``sent`` never undoes ``read``); ``failed`` replaces only ``queued``/``failed``; ``skipped`` is final."""
    if old is DeliveryState.SKIPPED or new is DeliveryState.SKIPPED:
        return DeliveryState.SKIPPED
    if new is DeliveryState.FAILED:
        return new if old in (DeliveryState.QUEUED, DeliveryState.FAILED) else old
    return new if _FORWARD[new] >= _FORWARD[old] else old


def advance_delivery(
    old: DeliveryState, old_error: str, reported: DeliveryState | None, error: str
) -> tuple[DeliveryState, str]:
    """A delivery's (state, error) after a report (``reported`` None: an attempt failed and will be
    retried, the state stays and ``error`` is its last error). A success clears the error; a skipped
    delivery keeps its reason."""
    new = next_delivery_state(old, reported) if reported is not None else old
    if new is DeliveryState.SKIPPED:
        return new, old_error
    if new in (DeliveryState.QUEUED, DeliveryState.FAILED):
        return new, error[:1000]
    return new, ""


def in_app_state(stored: DeliveryState, flags: Flags | None) -> DeliveryState:
    """The in-app state of a delivery whose item has ``flags`` (None: no item, or it is gone): the item's
    statuses carry it forward to ``seen``/``read``."""
    if flags is not None and flags.read:
        return next_delivery_state(stored, DeliveryState.READ)
    if flags is not None and flags.seen:
        return next_delivery_state(stored, DeliveryState.SEEN)
    return stored


# -- statuses and counts -----------------------------------------------------------------------------


class Flags(NamedTuple):
    """An item's statuses as booleans, the part that counts depend on."""

    seen: bool
    read: bool
    archived: bool


NEW_ITEM = Flags(seen=False, read=False, archived=False)


@dataclass(frozen=True, slots=True)
class Counts:
    unread: int = 0
    unseen: int = 0
    total: int = 0
    version: int = 0
    """Changes of this user's inbox so far; a push with a lower version than one already shown is stale."""

    def plus(self, delta: CountsDelta) -> Counts:
        return Counts(
            self.unread + delta.unread, self.unseen + delta.unseen, self.total + delta.total, self.version
        )

    def as_dict(self) -> dict[str, int]:
        return {"unread": self.unread, "unseen": self.unseen, "total": self.total, "version": self.version}


class CountsDelta(NamedTuple):
    unread: int = 0
    unseen: int = 0
    total: int = 0

    def __add__(self, other: object) -> CountsDelta:
        assert isinstance(other, CountsDelta)
        return CountsDelta(self.unread + other.unread, self.unseen + other.unseen, self.total + other.total)

    def times(self, n: int) -> CountsDelta:
        return CountsDelta(self.unread * n, self.unseen * n, self.total * n)


ZERO = CountsDelta()


def contribution(flags: Flags) -> CountsDelta:
    """What one (unexpired) item adds to its user's counts."""
    if flags.archived:
        return ZERO
    return CountsDelta(unread=int(not flags.read), unseen=int(not flags.seen), total=1)


def change(old: Flags | None, new: Flags | None) -> CountsDelta:
    """The counts delta of one item going from ``old`` to ``new`` (None: absent, before a create or
    after a delete)."""
    before = contribution(old) if old is not None else ZERO
    after = contribution(new) if new is not None else ZERO
    return CountsDelta(after.unread - before.unread, after.unseen - before.unseen, after.total - before.total)


class MarkAction(StrEnum):
    SEEN = "seen"
    UNSEEN = "unseen"
    """Also unread (a read item is seen)."""
    READ = "read"
    """Also seen."""
    UNREAD = "unread"
    ARCHIVED = "archived"
    UNARCHIVED = "unarchived"
    INTERACTED = "interacted"
    """The user acted on the item (clicked it, pressed an action): also seen and read. The first
    interaction's time is kept."""


def apply_mark(action: MarkAction, flags: Flags) -> Flags:
    """The statuses of an item after ``action`` (the reference for the SQL in ``MARK_SQL``)."""
    if action is MarkAction.SEEN:
        return flags._replace(seen=True)
    if action is MarkAction.UNSEEN:
        return flags._replace(seen=False, read=False)
    if action in (MarkAction.READ, MarkAction.INTERACTED):
        return flags._replace(seen=True, read=True)
    if action is MarkAction.UNREAD:
        return flags._replace(read=False)
    if action is MarkAction.ARCHIVED:
        return flags._replace(archived=True)
    return flags._replace(archived=False)


MARK_SQL: Mapping[MarkAction, tuple[str, str]] = {
    MarkAction.SEEN: ("seen_at = {now}", "seen_at IS NULL"),
    MarkAction.UNSEEN: ("seen_at = NULL, read_at = NULL", "seen_at IS NOT NULL"),
    MarkAction.READ: ("read_at = {now}, seen_at = COALESCE(seen_at, {now})", "read_at IS NULL"),
    MarkAction.UNREAD: ("read_at = NULL", "read_at IS NOT NULL"),
    MarkAction.ARCHIVED: ("archived_at = {now}", "archived_at IS NULL"),
    MarkAction.UNARCHIVED: ("archived_at = NULL", "archived_at IS NOT NULL"),
    MarkAction.INTERACTED: (
        "interacted_at = COALESCE(interacted_at, {now}), read_at = COALESCE(read_at, {now}),"
        " seen_at = COALESCE(seen_at, {now})",
        "(interacted_at IS NULL OR read_at IS NULL)",
    ),
}
"""Per action: the SET clause and the condition selecting the items it changes (both stores use these;
``{now}`` is the store's placeholder for the time). ``apply_mark`` is what they must do to the flags."""


# -- validation helpers ------------------------------------------------------------------------------


def check_text(name: str, value: object, max_length: int, *, empty: bool = False) -> str:
    """A printable string of at most ``max_length`` characters (empty only if allowed)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if not value and not empty:
        raise InvalidInput(f"{name} must not be empty")
    if len(value) > max_length:
        raise InvalidInput(f"{name} is longer than {max_length} characters")
    if not value.isprintable():
        raise InvalidInput(f"{name} has control characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not valid Unicode") from None
    return value


def check_prose(name: str, value: object, max_length: int) -> str:
    """Like ``check_text`` but empty is fine and line breaks and tabs are allowed (a body)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if value:
        check_text(name, value.replace("\n", " ").replace("\t", " ").replace("\r", " "), max_length)
    return value


def check_tenant(value: object) -> str:
    return check_text("tenant", value, MAX_TENANT_LENGTH, empty=True)


def check_user(value: object) -> str:
    return check_text("user", value, MAX_USER_LENGTH)


def check_category(value: object, name: str = "category") -> str:
    text = check_text(name, value, MAX_CATEGORY_LENGTH)
    if not _CATEGORY.fullmatch(text):
        raise InvalidInput(f"{name} must be letters, digits and _.:- (starting with a letter or digit)")
    return text


def check_id(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
        raise InvalidInput(f"{name} must be a positive integer id")
    return value


def check_time(name: str, value: object, *, upper: float = MAX_EXPIRE_AT) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number of seconds")
    if not 0 <= value <= upper:
        raise InvalidInput(f"{name} is out of range")
    return float(value)


def check_window(name: str, value: object) -> float:
    seconds = check_time(name, value, upper=MAX_WINDOW)
    if seconds <= 0:
        raise InvalidInput(f"{name} must be positive")
    return seconds


def encode_json(name: str, value: object, max_bytes: int) -> bytes:
    """``value`` as JSON bytes, if it is JSON (str keys, finite numbers, 64-bit ints) within ``max_bytes``."""
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        raise InvalidInput(f"{name} must be JSON (an object with string keys, finite numbers)") from None
    if len(encoded) > max_bytes:
        raise InvalidInput(f"{name} is larger than {max_bytes} bytes as JSON")
    return encoded


def _has_non_finite(value: object, depth: int = 0) -> bool:
    if depth > 64:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v, depth + 1) for v in value)
    return False


def check_json_object(name: str, value: object, max_bytes: int) -> bytes:
    """``value`` as JSON bytes if it is an object that survives a round trip (orjson would write NaN
    and infinities as null), nested at most 64 deep, within ``max_bytes``."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object")
    encoded = encode_json(name, value, max_bytes)
    if _has_non_finite(value):
        raise InvalidInput(f"{name} must be JSON (finite numbers, nesting at most 64 deep)")
    return encoded


def _unique(name: str, values: Sequence[Any]) -> None:
    if len(set(values)) != len(values):
        raise InvalidInput(f"{name} has duplicates")


# -- notifications -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """A button on an inbox item: an id the client reports back (mark ``interacted``), a label, a URL."""

    id: str
    label: str
    url: str = ""

    def __post_init__(self) -> None:
        check_text("action id", self.id, MAX_CATEGORY_LENGTH)
        check_text("action label", self.label, MAX_ACTION_LABEL_LENGTH)
        check_text("action url", self.url, MAX_URL_LENGTH, empty=True)

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "label": self.label, "url": self.url}


@dataclass(frozen=True, slots=True)
class Notification:
    """One notify call: the same notification stored for each recipient.

    - ``dedupe_key``: the notification's identity in its tenant for ``dedupe_window`` seconds; a repeat
      in that window (whatever its recipients) stores nothing and answers the first notification's id.
    - ``group_key`` + ``group_window``: per recipient, a notification with a key that has an open group
      item (created less than ``group_window`` seconds ago, not archived) collapses into it: its count
      rises, it carries the latest notification's content, it becomes unseen and unread again and moves
      to the top of the inbox. Otherwise it opens a new group item.
    - ``expire_at`` (epoch seconds): from then on the item is neither listed nor counted, and a sweep
      deletes it.
    - ``channels``: the delivery channels this notification may use (each still subject to the
      recipient's preferences).
    """

    tenant: str
    recipients: tuple[str, ...]
    category: str
    data: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""
    body: str = ""
    url: str = ""
    actions: tuple[Action, ...] = ()
    dedupe_key: str | None = None
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW
    group_key: str | None = None
    group_window: float | None = None
    expire_at: float | None = None
    channels: frozenset[DeliveryChannel] = ALL_CHANNELS

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        if not isinstance(self.recipients, tuple) or not self.recipients:
            raise InvalidInput("recipients must be a non-empty list of users")
        if len(self.recipients) > MAX_RECIPIENTS:
            raise InvalidInput(f"more than {MAX_RECIPIENTS} recipients")
        for user in self.recipients:
            check_user(user)
        _unique("recipients", self.recipients)
        check_category(self.category)
        # Keep what was checked: a copy, so a caller changing its dict later cannot slip anything past.
        object.__setattr__(self, "data", orjson.loads(check_json_object("data", self.data, MAX_DATA_BYTES)))
        check_text("title", self.title, MAX_TITLE_LENGTH, empty=True)
        check_prose("body", self.body, MAX_BODY_LENGTH)
        check_text("url", self.url, MAX_URL_LENGTH, empty=True)
        if not isinstance(self.actions, tuple) or len(self.actions) > MAX_ACTIONS:
            raise InvalidInput(f"actions must be a list of at most {MAX_ACTIONS}")
        if not all(isinstance(a, Action) for a in self.actions):
            raise InvalidInput("actions must be Action values")
        _unique("action ids", [a.id for a in self.actions])
        if self.dedupe_key is not None:
            check_text("dedupe_key", self.dedupe_key, MAX_KEY_LENGTH)
        check_window("dedupe_window", self.dedupe_window)
        if self.group_key is not None:
            check_text("group_key", self.group_key, MAX_KEY_LENGTH)
            if self.group_window is None:
                raise InvalidInput("group_key needs a group_window")
        if self.group_window is not None:
            if self.group_key is None:
                raise InvalidInput("group_window needs a group_key")
            check_window("group_window", self.group_window)
        if self.expire_at is not None:
            check_time("expire_at", self.expire_at)
        if not isinstance(self.channels, frozenset) or not self.channels:
            raise InvalidInput("channels must be a non-empty set of delivery channels")
        if not all(isinstance(c, DeliveryChannel) for c in self.channels):
            raise InvalidInput("channels must be delivery channels")

    def content(self) -> dict[str, Any]:
        """What an inbox item shows (stored once per notification, not per recipient)."""
        return {
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "actions": [a.as_dict() for a in self.actions],
            "data": dict(self.data),
        }


def check_content(value: object) -> dict[str, Any]:
    """The stored content of a notification, as a store reads it back (trusted, but still typed)."""
    if not isinstance(value, dict):
        raise InvalidInput("stored content is not an object")
    return value


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a user's inbox, as ``list`` returns it."""

    id: int
    category: str
    notification_id: int
    """The latest notification shown by this item (a group item shows its latest)."""
    first_notification_id: int
    title: str
    body: str
    url: str
    actions: tuple[Action, ...]
    data: Mapping[str, Any]
    group_key: str | None
    count: int
    """Notifications collapsed into this item (1 without a group)."""
    created_at: float
    updated_at: float
    seen_at: float | None
    read_at: float | None
    archived_at: float | None
    interacted_at: float | None
    expire_at: float | None

    @property
    def flags(self) -> Flags:
        return Flags(self.seen_at is not None, self.read_at is not None, self.archived_at is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "notification_id": self.notification_id,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "actions": [a.as_dict() for a in self.actions],
            "data": dict(self.data),
            "group_key": self.group_key,
            "count": self.count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "seen_at": self.seen_at,
            "read_at": self.read_at,
            "archived_at": self.archived_at,
            "interacted_at": self.interacted_at,
            "expire_at": self.expire_at,
        }


def item_from_row(
    *,
    id: int,
    category: str,
    notification_id: int,
    first_notification_id: int,
    content: Mapping[str, Any],
    group_key: str | None,
    count: int,
    created_at: float,
    updated_at: float,
    seen_at: float | None,
    read_at: float | None,
    archived_at: float | None,
    interacted_at: float | None,
    expire_at: float | None,
) -> Item:
    """An ``Item`` from a stored row and its notification's content (both stores read the same columns)."""
    return Item(
        id=id,
        category=category,
        notification_id=notification_id,
        first_notification_id=first_notification_id,
        title=content.get("title", ""),
        body=content.get("body", ""),
        url=content.get("url", ""),
        actions=tuple(Action(**a) for a in content.get("actions", ())),
        data=content.get("data", {}),
        group_key=group_key,
        count=count,
        created_at=created_at,
        updated_at=updated_at,
        seen_at=seen_at,
        read_at=read_at,
        archived_at=archived_at,
        interacted_at=interacted_at,
        expire_at=expire_at,
    )


# -- list and mark -----------------------------------------------------------------------------------


class StatusFilter(StrEnum):
    ALL = "all"
    UNREAD = "unread"
    READ = "read"
    UNSEEN = "unseen"
    SEEN = "seen"
    INTERACTED = "interacted"


STATUS_SQL: Mapping[StatusFilter, str] = {
    StatusFilter.ALL: "",
    StatusFilter.UNREAD: "read_at IS NULL",
    StatusFilter.READ: "read_at IS NOT NULL",
    StatusFilter.UNSEEN: "seen_at IS NULL",
    StatusFilter.SEEN: "seen_at IS NOT NULL",
    StatusFilter.INTERACTED: "interacted_at IS NOT NULL",
}


class ArchivedFilter(StrEnum):
    EXCLUDE = "exclude"
    INCLUDE = "include"
    ONLY = "only"


ARCHIVED_SQL: Mapping[ArchivedFilter, str] = {
    ArchivedFilter.EXCLUDE: "archived_at IS NULL",
    ArchivedFilter.INCLUDE: "",
    ArchivedFilter.ONLY: "archived_at IS NOT NULL",
}


def _check_categories(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_FILTER_CATEGORIES:
        raise InvalidInput(f"categories must be a list of at most {MAX_FILTER_CATEGORIES}")
    for c in value:
        check_category(c, "categories")
    _unique("categories", value)
    return value


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A page of a user's inbox, newest first: items older than ``cursor`` (from the top without one)
    that pass every filter. Archived items are left out unless ``archived`` says otherwise."""

    limit: int = DEFAULT_PAGE
    cursor: str | None = None
    status: StatusFilter = StatusFilter.ALL
    archived: ArchivedFilter = ArchivedFilter.EXCLUDE
    categories: tuple[str, ...] = ()
    """Only these categories (none: every category)."""

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or not 1 <= self.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}")
        if self.cursor is not None and not isinstance(self.cursor, str):
            raise InvalidInput("cursor must be a string")
        if not isinstance(self.status, StatusFilter):
            raise InvalidInput("status must be a status filter")
        if not isinstance(self.archived, ArchivedFilter):
            raise InvalidInput("archived must be exclude, include or only")
        _check_categories(self.categories)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_cursor: str | None
    """Pass it back for the next (older) page; None on the last page."""
    head_cursor: str | None
    """The position of the first item: ``Mark(up_to=...)`` with it marks everything this listing showed
    and older, but nothing that arrived (or moved up) since."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Apply ``action`` to the items ``ids`` of the user, or to every item at or below the cursor
    ``up_to``, or to every item (``everything``), each optionally limited to ``categories``.
    Expired items are left alone; items the action would not change are not counted as changed."""

    action: MarkAction
    ids: tuple[int, ...] = ()
    up_to: str | None = None
    everything: bool = False
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.action, MarkAction):
            raise InvalidInput("action must be a mark action")
        if not isinstance(self.ids, tuple) or len(self.ids) > MAX_MARK_IDS:
            raise InvalidInput(f"ids must be a list of at most {MAX_MARK_IDS}")
        for i in self.ids:
            check_id("ids", i)
        _unique("ids", self.ids)
        if self.up_to is not None and not isinstance(self.up_to, str):
            raise InvalidInput("up_to must be a cursor")
        if not isinstance(self.everything, bool):
            raise InvalidInput("all must be true or false")
        if sum((bool(self.ids), self.up_to is not None, self.everything)) != 1:
            raise InvalidInput("name exactly one of ids, up_to or all")
        _check_categories(self.categories)


@dataclass(frozen=True, slots=True)
class MarkResult:
    changed: int
    """Items whose statuses changed."""
    counts: Counts


# -- notify results ----------------------------------------------------------------------------------


class Outcome(StrEnum):
    CREATED = "created"
    COLLAPSED = "collapsed"
    """Collapsed into an open group item (``item_id``)."""
    SKIPPED = "skipped"
    """No inbox item: the recipient's preferences (or the notification's channels) leave out in-app."""


@dataclass(frozen=True, slots=True)
class RecipientResult:
    user: str
    outcome: Outcome
    item_id: int | None
    channels: frozenset[DeliveryChannel]
    """The channels this recipient gets it on (after preferences)."""


@dataclass(frozen=True, slots=True)
class NotifyResult:
    notification_id: int
    deduplicated: bool
    """A repeat of ``dedupe_key`` within the window: ``notification_id`` is the first one's, nothing"
    " stored."""
    recipients: list[RecipientResult]
    counts: dict[str, Counts]
    """The new counts of every recipient whose inbox changed (for the pushes)."""
    deliveries: Mapping[tuple[DeliveryChannel, DeliveryState], int] = field(default_factory=dict)
    """How many deliveries the call recorded, per channel and state (for the hub's metrics)."""


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    channel: DeliveryChannel
    state: DeliveryState
    error: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    user: str
    item_id: int | None
    deliveries: list[DeliveryStatus]


@dataclass(frozen=True, slots=True)
class NotificationStatus:
    notification_id: int
    tenant: str
    category: str
    created_at: float
    recipients: list[RecipientStatus]
    """One page, by user name, after ``after_user``."""
    summary: dict[DeliveryChannel, dict[DeliveryState, int]]
    """Every recipient, counted per channel and state."""


@dataclass(frozen=True, slots=True)
class UserCounts:
    """New counts of one user after a change that spans tenants (the expiry sweep)."""

    tenant: str
    user: str
    counts: Counts


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """The counts of a tenant's users added up (the console): ``users`` with at least one item counted,
    and the sums of their ``unread``, ``unseen`` and ``total``. From the counter rows, so expired items
    not swept yet are still in them until the next sweep."""

    users: int = 0
    unread: int = 0
    unseen: int = 0
    total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"users": self.users, "unread": self.unread, "unseen": self.unseen, "total": self.total}


# -- parsing JSON params -----------------------------------------------------------------------------


def _object(value: object, name: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be an object")
    unknown = set(value) - allowed
    if unknown:
        raise InvalidInput(f"{name} has unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
    return value


def _list(value: object, name: str, max_items: int) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{name} must be a list")
    if len(value) > max_items:
        raise InvalidInput(f"{name} has more than {max_items} entries")
    return tuple(value)


E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], name: str, value: object) -> E:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(e.value for e in kind)
        raise InvalidInput(f"{name} must be one of {choices}") from None


def parse_channels(value: object, name: str = "channels") -> frozenset[DeliveryChannel]:
    items = _list(value, name, len(DeliveryChannel))
    return frozenset(_enum(DeliveryChannel, name, c) for c in items)


_NOTIFY_FIELDS = {
    "recipients",
    "category",
    "data",
    "title",
    "body",
    "url",
    "actions",
    "dedupe_key",
    "dedupe_window",
    "group_key",
    "group_window",
    "expire_at",
    "channels",
}


def parse_notification(tenant: str, params: object) -> Notification:
    """A ``Notification`` from JSON params (the tenant comes from the caller's credentials, never from
    the params). ``recipients`` here are user names; the hub resolves channel audiences before."""
    p = _object(params, "params", _NOTIFY_FIELDS)
    actions = []
    for raw in _list(p.get("actions", []), "actions", MAX_ACTIONS):
        a = _object(raw, "action", {"id", "label", "url"})
        actions.append(Action(a.get("id"), a.get("label"), a.get("url", "")))  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if "channels" in p:
        kwargs["channels"] = parse_channels(p["channels"])
    return Notification(
        tenant=tenant,
        recipients=_list(p.get("recipients"), "recipients", MAX_RECIPIENTS),
        category=p.get("category"),  # type: ignore[arg-type]
        data=p.get("data", {}),
        title=p.get("title", ""),
        body=p.get("body", ""),
        url=p.get("url", ""),
        actions=tuple(actions),
        dedupe_key=p.get("dedupe_key"),
        dedupe_window=p.get("dedupe_window", DEFAULT_DEDUPE_WINDOW),
        group_key=p.get("group_key"),
        group_window=p.get("group_window"),
        expire_at=p.get("expire_at"),
        **kwargs,
    )


def parse_list_query(params: object) -> ListQuery:
    p = _object(params, "params", {"limit", "cursor", "status", "archived", "categories"})
    return ListQuery(
        limit=p.get("limit", DEFAULT_PAGE),
        cursor=p.get("cursor"),
        status=_enum(StatusFilter, "status", p.get("status", "all")),
        archived=_enum(ArchivedFilter, "archived", p.get("archived", "exclude")),
        categories=_list(p.get("categories", []), "categories", MAX_FILTER_CATEGORIES),
    )


def parse_mark(params: object) -> Mark:
    p = _object(params, "params", {"action", "ids", "up_to", "all", "categories"})
    return Mark(
        action=_enum(MarkAction, "action", p.get("action")),
        ids=_list(p.get("ids", []), "ids", MAX_MARK_IDS),
        up_to=p.get("up_to"),
        everything=p.get("all", False),
        categories=_list(p.get("categories", []), "categories", MAX_FILTER_CATEGORIES),
    )
