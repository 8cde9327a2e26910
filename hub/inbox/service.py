"""``Notifications``: the inbox as the hub serves it, to RPC, the server API and ``Switchboard.notify``.

Every change runs in the store first (one transaction: items, counters, deliveries, outbox events), then
the hub pushes its result to the personal channel of each user it changed (``hub.inbox.personal``),
through the broker, so every connection of that user on every node gets it. Pushes are publications of
that channel whose ``data`` is one JSON object::

    {"type": "inbox.notification", "counts": C, "item": I}     a notify created an item, or collapsed
                                                                  into a group item (I["outcome"])
    {"type": "inbox.marked", "counts": C, "mark": M, "changed": n}  a mark (from any device or the API)
    {"type": "inbox.counts", "counts": C}                       any other change (an expiry sweep)

``C`` is ``{"unread", "unseen", "total", "version"}``: ``version`` rises by one with every change of the
user's inbox, so a client keeps the counts of the highest version it has seen (pushes from two nodes may
arrive out of order) and calls ``inbox.counts`` after a reconnect or when a version is skipped. ``I`` is
the item as the notification defines it (``id``, ``notification_id``, ``outcome``, ``category``,
``title``, ``body``, ``url``, ``actions``, ``data``, ``group_key``, ``expire_at``); its statuses and
timestamps are in ``inbox.list``. ``M`` is the mark as asked (``action``, and ``ids``, ``up_to`` or
``all``, and ``categories``). A notification's pushes carry the tag ``notification_id``.

Policies:

- A push follows the commit; it never decides the change. A push the broker refuses is counted
  (``switchboard_inbox_push_failures``) and logged (one line per 10 s), and the call still succeeds:
  the change is stored, and failing the call would make the caller repeat it. A push is at most once
  (as every publication); the version and ``inbox.counts`` make the badge exact again. With history on
  the personal channel's namespace, an SDK that reconnects recovers the pushes it missed.
- One notify pushes to its recipients with at most ``PUSH_CONCURRENCY`` publishes in flight, and its call
  returns once every push was handed to the broker.
- In-app ``delivered`` means the push reached a connected device: some node handed it to a local
  subscriber of the user's personal channel (``Node.delivered`` sees it in the fan-out). Each node batches
  what it saw and records it with one ``record_deliveries`` per batch (``DeliveryTracker``); a delivery
  seen by two nodes (two devices) is recorded once. Bounded: at most ``MAX_PENDING_REPORTS`` wait; past
  that (the store failing or far behind) they are dropped and counted, never held without limit.
- An audience ("everyone subscribed to channel X") is resolved when the notify runs, by a survey of every
  node's subscribers (``Control.subscribers``): exact at that moment, named users only, bounded by
  ``MAX_RECIPIENTS`` (more is error 106), and an error (100) when a node does not answer, never a partial
  audience presented as the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from channels.errors import InvalidChannel, UnknownNamespace
from channels.names import ChannelKey, parse_channel
from channels.publication import Publication
from hub import codes
from hub.codes import ClientError
from hub.control import ControlUnavailable
from hub.inbox.expiry import ExpirySweep
from hub.logs import log_limited
from inbox.errors import InboxError, InvalidInput, NotFound, StoreError
from inbox.inbox import MAX_DELIVERY_REPORTS, InboxStore
from inbox.model import (
    MAX_RECIPIENTS,
    Counts,
    DeliveryChannel,
    DeliveryState,
    ListQuery,
    Mark,
    MarkResult,
    Notification,
    NotificationStatus,
    NotifyResult,
    Outcome,
    Page,
    UserCounts,
    check_id,
    check_tenant,
    parse_notification,
)
from inbox.preferences import Preferences

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.inbox")

PUSH_CONCURRENCY = 256
"""Personal-channel publishes one notify keeps in flight."""
MAX_PENDING_REPORTS = 100_000
"""In-app deliveries seen and not yet recorded, at most (per node)."""
TAG = "notification_id"
"""The tag of a notification's pushes (its id, as text)."""
_OUTCOME = {o: f',"outcome":"{o}",'.encode() for o in Outcome}


def _printable(text: str, limit: int = 300) -> str:
    """``text`` for a reply and a log line: control characters escaped, cut to ``limit``."""
    cut = text[:limit]
    return cut if cut.isprintable() else cut.encode("unicode_escape").decode("ascii")[:limit]


def client_error(exc: InboxError) -> ClientError:
    """The protocol error of an inbox error (package docstring): 107 with the reason for bad input, a
    cursor that is not the user's, or an id the tenant does not have; 100 (temporary) when the store
    failed, logged at most once per 10 s."""
    if isinstance(exc, InvalidInput | NotFound):
        return ClientError(107, f"bad request: {_printable(str(exc))}")
    if isinstance(exc, StoreError):
        log_limited(log, logging.WARNING, "inbox store failed: %s", _printable(str(exc)))
    return codes.error_internal()


class DeliveryTracker:
    """In-app ``delivered`` (module docstring): collects what the fan-out saw reach local subscribers of
    personal channels and records it in batches."""

    def __init__(self, node: Node, store: InboxStore) -> None:
        self.node = node
        self.store = store
        self._pending: dict[tuple[str, int, str], None] = {}
        """(tenant, notification id, user), in arrival order, without repeats."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def observe(self, key: ChannelKey, pub: Publication, delivered: int) -> None:
        """``Node.delivered``: a publication with tags reached ``delivered`` local subscribers of ``key``."""
        tags = pub.tags
        raw = tags.get(TAG) if tags else None
        if raw is None or not delivered:
            return
        user = self.node.personal.user_of(key[1])
        if user is None or not raw.isdigit() or len(raw) > 19:
            return
        notification_id = int(raw)
        try:
            check_id(TAG, notification_id)
            check_tenant(key[0])
        except InvalidInput:
            return  # not a push of ours (a server API publish with that tag): nothing to record
        if len(self._pending) >= MAX_PENDING_REPORTS:
            self.node.metrics.inbox_reports_dropped += 1
            log_limited(
                log, logging.WARNING, "in-app deliveries not recorded: %d waiting", len(self._pending)
            )
            return
        self._pending[(key[0], notification_id, user)] = None
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inbox deliveries")

    async def stop(self) -> None:
        """Record what is waiting (once), then stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Record everything waiting, in batches of at most ``MAX_DELIVERY_REPORTS``. A batch the store
        refuses is dropped (counted, logged); what is left waits for the next delivery."""
        while self._pending:
            batch = list(itertools.islice(self._pending, MAX_DELIVERY_REPORTS))
            for entry in batch:
                del self._pending[entry]
            try:
                moved = await self.store.record_deliveries(
                    DeliveryChannel.IN_APP, DeliveryState.DELIVERED, batch
                )
            except InboxError as exc:
                self.node.metrics.inbox_reports_dropped += len(batch)
                reason = _printable(str(exc))
                log_limited(log, logging.WARNING, "%d in-app deliveries not recorded: %s", len(batch), reason)
                return
            self.node.metrics.delivery_state(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, moved)


class Notifications:
    """The inbox calls of one node (module docstring). The store is opened and closed by the app."""

    def __init__(self, node: Node, store: InboxStore) -> None:
        self.node = node
        self.store = store
        self.tracker = DeliveryTracker(node, store)
        self.expiry = ExpirySweep(store, self.push_swept, node.config.inbox_expire_interval)
        """Deletes expired items every ``inbox_expire_interval`` and pushes the new counts."""

    async def start(self) -> None:
        self.tracker.start()
        self.expiry.start()

    async def stop(self) -> None:
        await self.expiry.stop()
        await self.tracker.stop()

    # -- notify -------------------------------------------------------------------------------------

    async def notify_params(self, tenant: str, params: Any) -> NotifyResult:
        """A notify from JSON params (``inbox.model.parse_notification``'s fields, plus ``channel``: its
        subscribers join the recipients). With only an audience and nobody in it, nothing is stored:
        ``notification_id`` 0 and no recipients."""
        if not isinstance(params, dict):
            raise client_error(InvalidInput("params must be an object"))
        fields = dict(params)
        audience = fields.pop("channel", None)
        if audience is not None:
            fields["recipients"] = await self._with_audience(tenant, fields.get("recipients", []), audience)
            if not fields["recipients"]:
                return NotifyResult(0, False, [], {})
        try:
            notification = parse_notification(tenant, fields)
        except InvalidInput as exc:
            raise client_error(exc) from None
        return await self.notify(notification)

    async def _with_audience(self, tenant: str, listed: object, channel: object) -> list[Any]:
        """``listed`` and then every named user subscribed to ``channel`` now, each once."""
        if not isinstance(listed, list):
            raise client_error(InvalidInput("recipients must be a list"))
        if not isinstance(channel, str):
            raise client_error(InvalidInput("channel must be a channel name"))
        try:
            name = parse_channel(channel)
            self.node.namespaces.options_for(name)
        except InvalidChannel:
            raise client_error(InvalidInput("channel is not a channel name")) from None
        except UnknownNamespace:
            raise codes.error_unknown_channel() from None
        try:
            users = await self.node.control.subscribers(tenant, name.raw, MAX_RECIPIENTS)
        except ControlUnavailable as exc:
            log.warning("audience of %s not resolved: %s", name.raw, exc, extra={"tenant": tenant})
            raise codes.error_internal() from None
        if len(users) > MAX_RECIPIENTS:
            raise ClientError(106, f"limit exceeded: more than {MAX_RECIPIENTS} users subscribed")
        return [*listed, *sorted(users - {u for u in listed if isinstance(u, str)})]

    async def notify(self, notification: Notification) -> NotifyResult:
        """Store ``notification`` and push each recipient whose inbox changed its item and counts."""
        try:
            result = await self.store.notify(notification)
        except InboxError as exc:
            raise client_error(exc) from None
        metrics = self.node.metrics
        if result.deduplicated:
            metrics.inbox_notifications["deduplicated"] += 1
            return result
        for recipient in result.recipients:
            metrics.inbox_notifications[str(recipient.outcome)] += 1
        for (channel, state), n in result.deliveries.items():
            metrics.delivery_state(channel, state, n)
        await self._push_notification(notification, result)
        return result

    async def _push_notification(self, n: Notification, result: NotifyResult) -> None:
        # The item's common part is encoded once; each recipient's push adds its id, outcome and counts.
        common = orjson.dumps(
            {
                "notification_id": result.notification_id,
                "category": n.category,
                **n.content(),
                "group_key": n.group_key,
                "expire_at": n.expire_at,
            }
        )[1:]
        tags = {TAG: str(result.notification_id)}

        def pushes() -> Iterable[tuple[str, bytes]]:
            for r in result.recipients:
                counts = result.counts.get(r.user)
                if r.item_id is None or counts is None:
                    continue
                yield (
                    r.user,
                    b'{"type":"inbox.notification","counts":'
                    + orjson.dumps(counts.as_dict())
                    + b',"item":{"id":'
                    + str(r.item_id).encode()
                    + _OUTCOME[r.outcome]
                    + common
                    + b"}",
                )

        await self._publish_all(n.tenant, pushes(), tags, len(result.counts))

    # -- the other calls ---------------------------------------------------------------------------

    async def list_items(self, tenant: str, user: str, query: ListQuery) -> Page:
        try:
            return await self.store.list_items(tenant, user, query)
        except InboxError as exc:
            raise client_error(exc) from None

    async def counts(self, tenant: str, user: str) -> Counts:
        try:
            return await self.store.counts(tenant, user)
        except InboxError as exc:
            raise client_error(exc) from None

    async def mark(self, tenant: str, user: str, mark: Mark) -> MarkResult:
        """Apply ``mark``; when it changed something, push ``inbox.marked`` with the new counts."""
        try:
            result = await self.store.mark(tenant, user, mark)
        except InboxError as exc:
            raise client_error(exc) from None
        if result.changed:
            extra: dict[str, Any] = {"mark": mark_dict(mark), "changed": result.changed}
            await self.push_counts(tenant, user, result.counts, "inbox.marked", extra)
        return result

    async def preferences(self, tenant: str, user: str) -> Preferences:
        try:
            return await self.store.preferences(tenant, user)
        except InboxError as exc:
            raise client_error(exc) from None

    async def set_preferences(self, tenant: str, user: str, preferences: Preferences) -> Preferences:
        try:
            await self.store.set_preferences(tenant, user, preferences)
        except InboxError as exc:
            raise client_error(exc) from None
        return preferences

    async def status(
        self, tenant: str, notification_id: int, after_user: str = "", limit: int = 100
    ) -> NotificationStatus:
        try:
            return await self.store.notification_status(
                tenant, notification_id, after_user=after_user, limit=limit
            )
        except InboxError as exc:
            raise client_error(exc) from None

    # -- pushes -------------------------------------------------------------------------------------

    async def push_counts(
        self,
        tenant: str,
        user: str,
        counts: Counts,
        kind: str = "inbox.counts",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Push ``counts`` (and ``extra`` fields) to the user's personal channel, as ``kind``."""
        body = {"type": kind, "counts": counts.as_dict(), **(extra or {})}
        await self._publish(tenant, user, orjson.dumps(body), None)

    async def push_swept(self, swept: Sequence[UserCounts]) -> None:
        """Push the counts an expiry sweep (``InboxStore.expire``) returned, one push per user."""
        by_tenant: dict[str, list[tuple[str, bytes]]] = {}
        for s in swept:
            body = orjson.dumps({"type": "inbox.counts", "counts": s.counts.as_dict()})
            by_tenant.setdefault(s.tenant, []).append((s.user, body))
        for tenant, pushes in by_tenant.items():
            await self._publish_all(tenant, pushes, None, len(pushes))

    async def _publish_all(
        self, tenant: str, pushes: Iterable[tuple[str, bytes]], tags: dict[str, str] | None, count: int
    ) -> None:
        """Publish each of ``count`` (user, data) to the user's personal channel, at most
        ``PUSH_CONCURRENCY`` at a time (one iterator shared by the workers)."""
        queue = iter(pushes)

        async def worker() -> None:
            for user, data in queue:
                await self._publish(tenant, user, data, tags)

        await asyncio.gather(*(worker() for _ in range(min(count, PUSH_CONCURRENCY))))

    async def _publish(self, tenant: str, user: str, data: bytes, tags: dict[str, str] | None) -> None:
        node = self.node
        channel = node.personal.parsed(user)
        if channel is None:
            return
        try:
            options = node.namespaces.options_for(channel)  # a configured namespace (hub.config checks)
            await node.publish_to(tenant, channel, options, data, tags=tags)
        except (ClientError, UnknownNamespace) as exc:
            node.metrics.inbox_push_failures += 1
            log_limited(log, logging.WARNING, "inbox push to %s failed: %s", channel.raw, exc)


def mark_dict(mark: Mark) -> dict[str, Any]:
    """A mark as its pushes and the API show it (what was asked, not what changed)."""
    out: dict[str, Any] = {"action": str(mark.action)}
    if mark.ids:
        out["ids"] = list(mark.ids)
    elif mark.up_to is not None:
        out["up_to"] = mark.up_to
    else:
        out["all"] = True
    if mark.categories:
        out["categories"] = list(mark.categories)
    return out
