"""A notification's delivery status, assembled from stored rows (sans-I/O, shared by the stores)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from inbox.model import (
    DeliveryChannel,
    DeliveryState,
    DeliveryStatus,
    Flags,
    NotificationStatus,
    RecipientStatus,
    in_app_state,
)


def effective_state(
    channel: DeliveryChannel, stored: DeliveryState, item_present: bool, seen: bool, read: bool
) -> DeliveryState:
    """The state to report: an in-app delivery moves on with its item's statuses."""
    if channel is not DeliveryChannel.IN_APP:
        return stored
    return in_app_state(stored, Flags(seen, read, False) if item_present else None)


@dataclass(frozen=True, slots=True)
class DeliveryStatusRow:
    """``user, channel, item_id, state, error, updated_at, item present, seen, read, archived``."""

    user: str
    item_id: int | None
    status: DeliveryStatus

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeliveryStatusRow:
        user, channel, item_id, state, error, updated_at, present, seen, read, _archived = row
        kind = DeliveryChannel(channel)
        shown = effective_state(kind, DeliveryState(state), bool(present), bool(seen), bool(read))
        return cls(
            user,
            int(item_id) if item_id is not None else None,
            DeliveryStatus(kind, shown, error, float(updated_at)),
        )


def build_status(
    notification_id: int,
    tenant: str,
    category: str,
    created_at: float,
    page: Iterable[DeliveryStatusRow],
    summary: Iterable[tuple[DeliveryChannel, DeliveryState, bool, bool, bool, int]],
) -> NotificationStatus:
    """``page``: the rows of a page of recipients, by user; ``summary``: (channel, stored state, item
    present, seen, read, how many) over every recipient."""
    recipients: list[RecipientStatus] = []
    for row in page:
        if not recipients or recipients[-1].user != row.user:
            recipients.append(RecipientStatus(row.user, row.item_id, []))
        recipients[-1].deliveries.append(row.status)
    totals: dict[DeliveryChannel, dict[DeliveryState, int]] = {}
    for channel, stored, present, seen, read, n in summary:
        state = effective_state(channel, stored, present, seen, read)
        per = totals.setdefault(channel, {})
        per[state] = per.get(state, 0) + n
    return NotificationStatus(notification_id, tenant, category, created_at, recipients, totals)
