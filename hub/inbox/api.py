"""The inbox's server API methods (``POST /api/<method>``, in batches too), for backends.

A key bound to a tenant acts on that tenant only (naming another is 103); an unbound key on the tenant
the call names in ``tenant`` (default ``""``), as for every other method. The user is named in ``user``.
Errors: 107 with the reason for bad input, an unknown cursor or notification; 102 for an audience channel
in an unknown namespace; 106 for an audience of more than 10,000 users; 100 when the store (or, for an
audience, a node) failed.

===========================  ==============================================  ==============================
method                       params                                          result
===========================  ==============================================  ==============================
``notify``                   ``recipients`` (users, at most 10,000),         ``{"notification_id",
                             ``channel`` (its subscribers join them),        "deduplicated", "recipients":
                             ``category``, ``data``, ``title``, ``body``,    [{"user", "outcome",
                             ``url``, ``actions``, ``dedupe_key``,           "item_id", "channels"}]}``
                             ``dedupe_window``, ``group_key``,
                             ``group_window``, ``expire_at``, ``channels``
``inbox_list``               ``user`` and ``inbox.list``'s fields            as ``inbox.list``
``inbox_counts``             ``user``                                        as ``inbox.counts``
``inbox_mark``               ``user`` and ``inbox.mark``'s fields            as ``inbox.mark``
``preferences``              ``user``; ``set`` (a preferences object) to     ``{"preferences": {...}}``
                             replace them
``notification_status``      ``notification_id``, ``after_user``,            ``{"notification_id",
                             ``limit`` (1-1000, 100)                         "category", "created_at",
                                                                             "recipients", "summary",
                                                                             "next_after_user"}``
===========================  ==============================================  ==============================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hub.inbox.rpc import page_dict, parsed
from hub.inbox.service import Notifications, client_error
from inbox.errors import InvalidInput
from inbox.inbox import MAX_STATUS_PAGE
from inbox.model import NotificationStatus, NotifyResult, check_user, parse_list_query, parse_mark
from inbox.preferences import parse_preferences

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def notify_result(result: NotifyResult) -> dict[str, Any]:
    return {
        "notification_id": result.notification_id,
        "deduplicated": result.deduplicated,
        "recipients": [
            {
                "user": r.user,
                "outcome": str(r.outcome),
                "item_id": r.item_id,
                "channels": sorted(map(str, r.channels)),
            }
            for r in result.recipients
        ],
    }


def status_dict(status: NotificationStatus, limit: int) -> dict[str, Any]:
    recipients = [
        {
            "user": r.user,
            "item_id": r.item_id,
            "deliveries": [
                {
                    "channel": str(d.channel),
                    "state": str(d.state),
                    "error": d.error,
                    "updated_at": d.updated_at,
                }
                for d in r.deliveries
            ],
        }
        for r in status.recipients
    ]
    return {
        "notification_id": status.notification_id,
        "category": status.category,
        "created_at": status.created_at,
        "recipients": recipients,
        "summary": {
            str(channel): {str(state): n for state, n in sorted(states.items())}
            for channel, states in sorted(status.summary.items())
        },
        "next_after_user": recipients[-1]["user"] if len(recipients) == limit else None,
    }


def _split(p: dict[str, Any], *own: str) -> tuple[str, dict[str, Any]]:
    """(user, the remaining fields) of a call's params: ``tenant`` was read by the API, ``user`` and
    ``own`` are the method's."""
    try:
        user = check_user(p.get("user"))
    except InvalidInput as exc:
        raise client_error(exc) from None
    rest = {k: v for k, v in p.items() if k not in ("tenant", "user", *own)}
    return user, rest


def api_methods(notifications: Notifications) -> dict[str, Handler]:
    """The inbox's methods, for ``ServerAPI.register``."""
    n = notifications

    async def notify(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in p.items() if k != "tenant"}
        return notify_result(await n.notify_params(tenant, params))

    async def inbox_list(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        user, rest = _split(p)
        return page_dict(await n.list_items(tenant, user, parsed(parse_list_query, rest)))

    async def inbox_counts(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        user, rest = _split(p)
        if rest:
            raise client_error(InvalidInput("inbox_counts takes user (and tenant)"))
        return (await n.counts(tenant, user)).as_dict()

    async def inbox_mark(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        user, rest = _split(p)
        result = await n.mark(tenant, user, parsed(parse_mark, rest))
        return {"changed": result.changed, "counts": result.counts.as_dict()}

    async def preferences(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        user, rest = _split(p, "set")
        if rest:
            raise client_error(InvalidInput("preferences takes user, set (and tenant)"))
        if "set" in p:
            stored = await n.set_preferences(tenant, user, parsed(parse_preferences, p["set"]))
        else:
            stored = await n.preferences(tenant, user)
        return {"preferences": stored.as_dict()}

    async def notification_status(tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        unknown = set(p) - {"tenant", "notification_id", "after_user", "limit"}
        if unknown:
            raise client_error(InvalidInput("notification_status takes notification_id, after_user, limit"))
        notification_id: Any = p.get("notification_id")
        after_user: Any = p.get("after_user", "")
        limit: Any = p.get("limit", 100)
        status = await n.status(tenant, notification_id, after_user, limit)
        return status_dict(status, limit if isinstance(limit, int) else MAX_STATUS_PAGE)

    return {
        "notify": notify,
        "inbox_list": inbox_list,
        "inbox_counts": inbox_counts,
        "inbox_mark": inbox_mark,
        "preferences": preferences,
        "notification_status": notification_status,
    }
