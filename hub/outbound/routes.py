"""Which destination wants which event: the outbox's router, from the configured webhooks and email.

``Routes.route`` is the ``inbox.outbox.Router`` the inbox store is built with (pure, never blocking or
raising, called inside the store's transactions); ``Routes.wants`` is the same decision made before an
event is built, so the hub's hot paths build nothing for an event nobody wants.

- A webhook gets the events it lists, of the tenants it lists (all without ``tenants``), and, for events
  of a channel or a document, of the namespaces it lists (all without ``namespaces``).
- ``notification.created`` goes to a webhook as a delivery on the ``webhook`` channel (a recipient who
  opted out of webhooks for that category gets none, and the notification's status shows it), and to
  ``email`` (the ``email`` channel) when email is configured.
- Destinations are named ``webhook:<name>`` and ``email``; a worker claims by these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hub.outbound.settings import EMAIL_DESTINATION, EmailSettings, Webhook
from inbox.model import DeliveryChannel
from inbox.outbox import Destination, OutboxEvent, RetryPolicy, Topic

if TYPE_CHECKING:
    from hub.config import Config

CHANNEL_TOPICS = frozenset({Topic.PUBLICATION, Topic.CHANNEL_OCCUPIED, Topic.CHANNEL_VACATED})


def webhook_id(origin: str, event_id: int) -> str:
    """The ``webhook-id`` of an event: the same on every attempt and duplicate, unique across databases
    (``origin`` is the store's, ``InboxStore.origin``)."""
    return f"msg_{origin}_{event_id}" if origin else f"msg_{event_id}"


def channel_namespace(name: str) -> str:
    """The namespace of a channel name (as ``channels.names.parse_channel`` has it; "" for none)."""
    bare = name[1:] if name.startswith("$") else name
    namespace, sep, _ = bare.partition(":")
    return namespace if sep else ""


def document_namespace(name: str) -> str:
    """The "namespace" of a document name: the part before its first ``:`` ("" without one)."""
    namespace, sep, _ = name.partition(":")
    return namespace if sep else ""


def event_namespace(event: OutboxEvent) -> str | None:
    """The namespace a webhook's ``namespaces`` filter looks at; None for events without one."""
    if event.topic in CHANNEL_TOPICS:
        return channel_namespace(str(event.payload.get("channel", "")))
    if event.topic is Topic.DOCUMENT_CHANGED:
        return document_namespace(str(event.payload.get("document", "")))
    return None


class Routes:
    """The routing of one configuration (immutable once built)."""

    def __init__(self, webhooks: Sequence[Webhook] = (), email: EmailSettings | None = None) -> None:
        self.webhooks = tuple(webhooks)
        self.email = email
        self._by_topic: dict[Topic, list[tuple[Webhook, Destination]]] = {}
        for hook in self.webhooks:
            for topic in hook.events:
                channel = DeliveryChannel.WEBHOOK if topic is Topic.NOTIFICATION_CREATED else None
                self._by_topic.setdefault(topic, []).append((hook, Destination(hook.destination, channel)))
        self._email = Destination(EMAIL_DESTINATION, DeliveryChannel.EMAIL) if email is not None else None
        self.topics = frozenset(self._by_topic)
        """The topics some webhook wants."""

    @classmethod
    def of(cls, config: Config) -> Routes:
        return cls(config.webhooks, config.email)

    @property
    def enabled(self) -> bool:
        """Whether anything is configured (else nothing is ever appended, and no worker runs)."""
        return bool(self.webhooks) or self.email is not None

    def destinations(self) -> list[str]:
        """Every destination name, as workers claim them."""
        names = [h.destination for h in self.webhooks]
        return names + ([EMAIL_DESTINATION] if self.email is not None else [])

    def route(self, event: OutboxEvent) -> list[Destination]:
        """The destinations of ``event`` (the store's ``Router``)."""
        out = [
            destination
            for hook, destination in self._by_topic.get(event.topic, ())
            if _passes(hook, event.tenant, event_namespace(event))
        ]
        if self._email is not None and event.topic is Topic.NOTIFICATION_CREATED:
            out.append(self._email)
        return out

    def wants(self, topic: Topic, tenant: str, namespace: str | None = None) -> bool:
        """Whether an event of ``topic`` in ``tenant`` (and ``namespace``, for channel and document events)
        would go anywhere: checked before the event is built."""
        hooks = self._by_topic.get(topic)
        if not hooks:
            return topic is Topic.NOTIFICATION_CREATED and self._email is not None
        return any(_passes(hook, tenant, namespace) for hook, _ in hooks)


def _passes(hook: Webhook, tenant: str, namespace: str | None) -> bool:
    if hook.tenants is not None and tenant not in hook.tenants:
        return False
    return namespace is None or hook.namespaces is None or namespace in hook.namespaces


def retry_policy(config: Config) -> RetryPolicy:
    """The store's retry policy from the ``outbox_*`` settings (Retry-After honoured up to a day)."""
    return RetryPolicy(
        max_attempts=config.outbox_max_attempts, base=config.outbox_retry_base, cap=config.outbox_retry_cap
    )
