"""Threshold alerts on a running hub: the ``[[alerts]]`` rules (``channels.alerts``) evaluated on every node,
their events published once across nodes, and the users of each rule notified.

- **What is evaluated**: every publication of every channel a rule matches, whatever way it came in. The
  node learns such channels as they are published to and taps them (``hub.watch``): every node that
  evaluates sees the same publications, in the broker's order, from the one that made the channel known.
- **The clock** is the readings' own: a publication's time (``Publication.time``, set once when it is
  published, the same on every node), and the wall clock for ``advance`` (a condition held past ``for``
  with no reading since). So every node decides the same events with the same ``since``.
- **Once across nodes**: an event goes to the rule's ``publish_to`` channel with ``AlertEvent.id`` as its
  idempotency key; the broker keeps the first and suppresses the others' (``IDEMPOTENCY_TTL``, 5 minutes:
  every node decides within that of the others). Only the node whose publication was not suppressed
  notifies the rule's users; without ``publish_to`` each notification carries its own idempotency key.
- **Notifications** go through an ``AlertNotifier``. ``InboxAlerts`` (``alerts_notify = "inbox"``, the
  default) makes one inbox notification per event for the rule's users: category ``alert``, the event's
  data as its data, and a dedupe key derived from ``AlertEvent.id`` (``ALERT_DEDUPE_WINDOW``), so the
  nodes sharing the inbox's store never store one event twice, whichever of them delivers it (with or
  without ``publish_to``). ``PersonalChannels`` (``"channel"``) publishes the event on each user's
  personal channel (``alerts_user_channel``, ``personal:alerts#{user}``) with an idempotency key.
- **A node that starts watching late** (started in the middle of an episode, or after letting the channel
  go) would otherwise begin its series at the first reading it sees and decide a ``since`` (so an event
  id) of its own for that episode, telling it twice. So when a node first sees a channel with history, it
  reads the channel's last ``REPLAY`` publications and evaluates those older than the first one it got
  live before it (the events they decide are not told: the nodes that saw them live did), holding that
  channel's live readings meanwhile (at most ``MAX_HELD``, past it they are evaluated without waiting).
  Every node then starts from the same readings and decides the same ``since``, as far as the history
  reaches back (give alert channels a history that covers a rule's ``for``).
- **Bounds**: the evaluator's (series tracked, channels cached); events waiting to be published
  (``MAX_QUEUE``: past it the oldest are dropped, counted and logged); the watch's; channels remembered as
  seen (``MAX_SEEN``, then the oldest are forgotten and replayed again when they come back, which changes
  nothing: a series ignores readings older than its newest).
- A reading whose data is not JSON (a binary namespace, or garbage) is skipped; so is one the rule's
  field does not hold a number in (``channels.alerts``).

The event's data (what ``publish_to`` subscribers and notified users get)::

    {"alert": "boiler-hot", "kind": "fired", "channel": "plant:boiler.b7", "key": null,
     "field": "/temp", "condition": "above", "threshold": 90.0, "value": 93.5,
     "since": 1700000000000, "time": 1700000030000}

(``threshold`` is ``[low, high]`` for ``outside``; times in milliseconds since the epoch.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from channels.alerts import AlertEvaluator, AlertEvent, AlertRule, Condition
from channels.errors import InvalidChannel, UnknownNamespace
from channels.names import ChannelKey, parse_channel
from channels.pattern import compile_pattern
from channels.publication import ClientInfo, Publication
from hub import codec_json
from hub.codes import ClientError
from hub.ingest.settings import user_channel
from hub.logs import log_limited
from inbox.errors import InvalidInput
from inbox.model import MAX_BODY_LENGTH, MAX_TITLE_LENGTH, Notification, NotifyResult

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.alerts")

ADVANCE = 1.0
"""Seconds between two looks for conditions held past their ``for`` without a reading since."""
MAX_QUEUE = 10_000
"""Events waiting to be published."""
REPLAY = 100
"""Publications of a channel's history a node evaluates when it first sees the channel."""
MAX_HELD = 1_000
"""Live publications of one channel held while its history is read."""
MAX_SEEN = 10_000
"""Channels a node remembers having seen (as many as ``hub.watch`` watches)."""


def event_data(event: AlertEvent) -> dict[str, Any]:
    rule = event.rule
    threshold: Any = [rule.low, rule.high] if rule.condition is Condition.OUTSIDE else rule.low
    return {
        "alert": rule.name,
        "kind": event.kind,
        "channel": event.channel,
        "key": event.key,
        "field": rule.field.text,
        "condition": rule.condition.value,
        "threshold": threshold,
        "value": event.value,
        "since": round(event.since * 1000),
        "time": round(event.time * 1000),
    }


class AlertNotifier(Protocol):
    """Tells users of an alert event (the inbox, or their personal channels)."""

    async def notify(
        self, tenant: str, users: Sequence[str], event: AlertEvent, data: dict[str, Any]
    ) -> None:
        """Tell each of ``users`` (of ``tenant``) about ``event``; ``event.id`` names it across nodes, so a
        notifier that can should not tell a user twice of one id. Raises nothing for a user it cannot
        reach (it logs); an unavailable backend may raise."""


class PersonalChannels:
    """Notifies by publishing the event on each user's personal channel (``alerts_user_channel``)."""

    def __init__(self, node: Node, template: str) -> None:
        self.node = node
        self.template = template

    async def notify(
        self, tenant: str, users: Sequence[str], event: AlertEvent, data: dict[str, Any]
    ) -> None:
        payload = codec_json.data_bytes(data)
        for user in users:
            name = user_channel(self.template, user)
            try:
                channel = parse_channel(name)
                opts = self.node.namespaces.options_for(channel)
            except (InvalidChannel, UnknownNamespace) as exc:
                log_limited(log, logging.WARNING, "alert notification to %s impossible: %s", name, exc)
                continue
            await self.node.publish_to(
                tenant, channel, opts, payload, idempotency_key=f"{event.id}|{user}", info=_INFO
            )


ALERT_CATEGORY = "alert"
"""The inbox category of alert notifications (``[inbox.categories.alert]`` sets its channels, critical)."""
ALERT_DEDUPE_WINDOW = 7 * 86400.0
"""Seconds an event's dedupe key is kept in the inbox: a node deciding the same event later (its clock
behind, a replay) stores nothing."""


def dedupe_key(event: AlertEvent) -> str:
    """The inbox dedupe key of ``event``: its id, hashed to a bounded length (a channel and a key may each be
    255 characters)."""
    return "alert:" + hashlib.blake2b(event.id.encode(), digest_size=20).hexdigest()


def notification_of(
    tenant: str, users: Sequence[str], event: AlertEvent, data: dict[str, Any]
) -> Notification:
    """The inbox notification of ``event`` for ``users`` (InvalidInput for users the inbox refuses)."""
    rule = event.rule
    where = event.channel + (f" ({event.key})" if event.key else "")
    threshold = data["threshold"]
    limit = f"{threshold[0]}..{threshold[1]}" if isinstance(threshold, list) else threshold
    return Notification(
        tenant=tenant,
        recipients=tuple(dict.fromkeys(users)),
        category=ALERT_CATEGORY,
        data=data,
        title=f"{rule.name} {event.kind}"[:MAX_TITLE_LENGTH],
        body=f"{where}: {rule.field.text} = {event.value} ({rule.condition.value} {limit})"[:MAX_BODY_LENGTH],
        dedupe_key=dedupe_key(event),
        dedupe_window=ALERT_DEDUPE_WINDOW,
    )


class Notifier(Protocol):
    """What ``InboxAlerts`` needs of the inbox (``hub.inbox.service.Notifications``)."""

    async def notify(self, notification: Notification) -> NotifyResult: ...


class InboxAlerts:
    """Notifies through the inbox: one notification per event, deduplicated across nodes by its id."""

    def __init__(self, notifications: Notifier) -> None:
        self.notifications = notifications

    async def notify(
        self, tenant: str, users: Sequence[str], event: AlertEvent, data: dict[str, Any]
    ) -> None:
        try:
            notification = notification_of(tenant, users, event, data)
        except InvalidInput as exc:
            log_limited(log, logging.WARNING, "alert notification of %s impossible: %s", event.rule.name, exc)
            return
        result = await self.notifications.notify(notification)
        if result.deduplicated:
            log.debug("alert event %s was stored by another node", event.id)


_INFO = ClientInfo("", "alerts")
"""Who publishes alert events, as subscribers see it."""


class Alerts:
    """The alert rules of one node (policies in the module docstring)."""

    def __init__(self, node: Node, rules: Sequence[AlertRule], notifier: AlertNotifier) -> None:
        self.node = node
        self.notifier = notifier
        self.evaluator = AlertEvaluator(rules)
        self.dropped = 0
        """Events dropped because MAX_QUEUE were waiting."""
        self._queue: deque[AlertEvent] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: OrderedDict[ChannelKey, None] = OrderedDict()
        self._held: dict[ChannelKey, list[Publication]] = {}
        """Live publications of channels whose history is being read (``_replay``)."""
        self._replays: set[asyncio.Task[None]] = set()
        matchers = [compile_pattern(rule.channels) for rule in rules]
        node.watch.listen(lambda name: any(match(name) for match in matchers), self)

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._advance_loop()), loop.create_task(self._publish_loop())]

    async def close(self) -> None:
        for task in [*self._tasks, *self._replays]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # ------------------------------------------------------------ ChannelTap (on the fan-out path)

    def publication(self, key: ChannelKey, pub: Publication) -> None:
        if self.node.namespaces.binary(key[1]):
            return
        held = self._held.get(key)
        if held is not None:
            if len(held) < MAX_HELD:
                held.append(pub)
                return
            log_limited(log, logging.WARNING, "alerts: history of %s slow to read, not waited for", key[1])
            for early in self._held.pop(key):
                self._emit(self._observe(key, early))
        elif key not in self._seen:
            self._see(key)
            if pub.offset and self._has_history(key[1]):
                self._held[key] = [pub]
                task = asyncio.get_running_loop().create_task(self._replay(key))
                self._replays.add(task)
                task.add_done_callback(self._replays.discard)
                return
        self._emit(self._observe(key, pub))

    def _observe(self, key: ChannelKey, pub: Publication) -> list[AlertEvent]:
        try:
            data = orjson.loads(pub.data)
        except orjson.JSONDecodeError:
            return []
        feed_key = pub.key or None  # the reading's key in a keyed feed
        return self.evaluator.observe(key[1], feed_key, data, pub.time / 1000, key[0])

    def _see(self, key: ChannelKey) -> None:
        self._seen[key] = None
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)

    def _has_history(self, channel: str) -> bool:
        try:
            return self.node.namespaces.options_for(parse_channel(channel)).history_enabled
        except (InvalidChannel, UnknownNamespace):
            return False

    async def _replay(self, key: ChannelKey) -> None:
        """Evaluate the history of a channel seen for the first time, older than its first live reading, then
        the live readings held meanwhile (module docstring: a node that starts watching late)."""
        try:
            found = await self.node.broker.history(key, limit=REPLAY, reverse=True)
            held = self._held.get(key) or []
            first = held[0].offset if held else 0
            for pub in sorted((p for p in found.publications if p.offset < first), key=lambda p: p.offset):
                self._observe(key, pub)  # decided by the nodes that saw it live: not told again
        except Exception as exc:  # the history cannot be read: evaluate from the live readings on
            log_limited(log, logging.WARNING, "alerts: history of %s not read: %r", key[1], exc)
        finally:
            for pub in self._held.pop(key, []):
                self._emit(self._observe(key, pub))

    def join(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    def leave(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    # ------------------------------------------------------------ events

    def advance(self, now: float) -> None:
        """Fire the conditions held past their ``for`` by ``now`` (wall clock, seconds)."""
        self._emit(self.evaluator.advance(now))

    def _emit(self, events: list[AlertEvent]) -> None:
        for event in events:
            self.node.feed_metrics.alert_events[event.kind] += 1
            if len(self._queue) >= MAX_QUEUE:
                self._queue.popleft()
                self.dropped += 1
                log_limited(log, logging.WARNING, "%d alert events waiting: the oldest dropped", MAX_QUEUE)
            self._queue.append(event)
        if events:
            self._wakeup.set()

    async def _advance_loop(self) -> None:
        while True:
            await asyncio.sleep(ADVANCE)
            try:
                self.advance(time.time())
            except Exception:
                log.exception("alert evaluation failed")

    async def _publish_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                event = self._queue.popleft()
                try:
                    await self.deliver(event)
                except Exception:
                    log.exception("alert event %s could not be delivered", event.id)

    async def deliver(self, event: AlertEvent) -> None:
        """Publish ``event`` on its rule's ``publish_to`` (once across nodes) and notify its users."""
        rule = event.rule
        data = event_data(event)
        log_limited(
            log,
            logging.INFO,
            "alert %s %s on %s (value %s)",
            rule.name,
            event.kind,
            event.channel,
            event.value,
        )
        if rule.publish_to is not None:
            channel = parse_channel(rule.publish_to)
            opts = self.node.namespaces.options_for(channel)
            try:
                result = await self.node.publish_to(
                    event.tenant,
                    channel,
                    opts,
                    codec_json.data_bytes(data),
                    idempotency_key=event.id,
                    info=_INFO,
                )
            except ClientError as exc:
                log_limited(log, logging.WARNING, "alert event not published to %s: %s", rule.publish_to, exc)
                return
            if result.suppressed:
                return  # another node published (and notified) this one
        if rule.notify:
            try:
                await self.notifier.notify(event.tenant, rule.notify, event, data)
            except ClientError as exc:
                log_limited(log, logging.WARNING, "alert notification of %s failed: %s", rule.name, exc)
