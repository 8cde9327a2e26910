"""The inbox's RPC methods, over the Centrifuge ``rpc`` command (``client.rpc(method, data)`` in every SDK).

The tenant and the user are the connection's (its token, or the connect hook), never taken from the
params; an anonymous connection is refused (103). ``data`` is a JSON object (absent: ``{}``); unknown
fields, wrong types and values past the model's bounds are 107 with the reason.

- ``inbox.list``: ``limit`` (1-100, default 20), ``cursor`` (a ``next_cursor``), ``status`` (all, unread,
  read, unseen, seen, interacted), ``archived`` (exclude, include, only), ``categories`` (at most 16) ->
  ``{"items": [...], "next_cursor", "head_cursor"}``, newest first; ``next_cursor`` null on the last page.
- ``inbox.counts``: ``{}`` -> ``{"unread", "unseen", "total", "version"}``.
- ``inbox.mark``: ``action`` (seen, unseen, read, unread, archived, unarchived, interacted) and one of
  ``ids`` (at most 1000), ``up_to`` (a cursor: that item and every older one), ``all: true``; optional
  ``categories`` -> ``{"changed", "counts"}``.
- ``inbox.preferences.get``: ``{}`` -> ``{"preferences": {...}}``.
- ``inbox.preferences.set``: ``{"preferences": {...}}`` -> ``{"preferences": {...}}`` as stored.

The hub's methods cannot be shadowed: they are looked up before the application's, and registering one of
their names with ``Switchboard.rpc`` is an error (``RESERVED``). A reply must fit the connection's write
bound: a page of large items is cut (fewer items, with the cursor of the last one sent) to at most half of
``client_queue_max_size`` rather than closing the connection with 3008.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from hub import codes
from hub.hooks import RPCContext
from hub.inbox.service import Notifications, client_error
from inbox.errors import InvalidInput
from inbox.model import Page, parse_list_query, parse_mark
from inbox.preferences import parse_preferences

RpcHandler = Callable[[RPCContext], Awaitable[Any]]
RESERVED_PREFIX = "inbox."
"""RPC method names the hub keeps for itself."""

T = TypeVar("T")


def page_dict(page: Page) -> dict[str, Any]:
    return {
        "items": [item.as_dict() for item in page.items],
        "next_cursor": page.next_cursor,
        "head_cursor": page.head_cursor,
    }


def parsed(parse: Callable[[Any], T], params: Any) -> T:
    """``parse(params)``, its ``InvalidInput`` as 107."""
    try:
        return parse(params)
    except InvalidInput as exc:
        raise client_error(exc) from None


def _owner(ctx: RPCContext) -> tuple[str, str, dict[str, Any]]:
    """(tenant, user, params) of a call; 103 for an anonymous connection, 107 for data that is not an
    object."""
    if not ctx.user:
        raise codes.error_permission_denied()
    data = {} if ctx.data is None else ctx.data
    if not isinstance(data, dict):
        raise client_error(InvalidInput("data must be a JSON object"))
    return ctx.tenant, ctx.user, data


def rpc_methods(notifications: Notifications, reply_budget: int) -> dict[str, RpcHandler]:
    """The ``inbox.*`` methods, for ``Node.builtin_rpc``; ``reply_budget``: most bytes a page's reply
    takes (half of ``client_queue_max_size``)."""
    n = notifications

    async def inbox_list(ctx: RPCContext) -> Any:
        tenant, user, p = _owner(ctx)
        query = parsed(parse_list_query, p)
        while True:
            encoded = orjson.dumps(page_dict(await n.list_items(tenant, user, query)))
            if len(encoded) <= reply_budget or query.limit == 1:
                return orjson.Fragment(encoded)
            query = dataclasses.replace(query, limit=query.limit // 2)

    async def inbox_counts(ctx: RPCContext) -> Any:
        tenant, user, p = _owner(ctx)
        if p:
            raise client_error(InvalidInput("inbox.counts takes no fields"))
        return (await n.counts(tenant, user)).as_dict()

    async def inbox_mark(ctx: RPCContext) -> Any:
        tenant, user, p = _owner(ctx)
        result = await n.mark(tenant, user, parsed(parse_mark, p))
        return {"changed": result.changed, "counts": result.counts.as_dict()}

    async def preferences_get(ctx: RPCContext) -> Any:
        tenant, user, p = _owner(ctx)
        if p:
            raise client_error(InvalidInput("inbox.preferences.get takes no fields"))
        return {"preferences": (await n.preferences(tenant, user)).as_dict()}

    async def preferences_set(ctx: RPCContext) -> Any:
        tenant, user, p = _owner(ctx)
        if set(p) != {"preferences"}:
            raise client_error(InvalidInput("inbox.preferences.set takes {preferences: {...}}"))
        stored = await n.set_preferences(tenant, user, parsed(parse_preferences, p["preferences"]))
        return {"preferences": stored.as_dict()}

    return {
        "inbox.list": inbox_list,
        "inbox.counts": inbox_counts,
        "inbox.mark": inbox_mark,
        "inbox.preferences.get": preferences_get,
        "inbox.preferences.set": preferences_set,
    }
