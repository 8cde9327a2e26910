"""Events out on one node: the tap into the outbox, and the in-process delivery worker.

``Outbound.start(store, ...)`` does nothing without webhooks and email configured (nor without a store):
the node then has no tap, its registry no watch, its documents no change callback, and the hot paths one
``is None`` check each. With them, the tap is installed for the topics some webhook wants (the inbox's own
topics are appended by the inbox store), and a worker is started when one is given (``workers_in_process``;
``hub/app.py`` passes ``workers.process.start_worker``: ``hub`` never imports ``workers``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from hub.config import Config
from hub.metrics import OutboxMetrics
from hub.outbound.routes import Routes
from hub.outbound.tap import EventTap
from inbox.inbox import InboxStore
from inbox.outbox import Topic
from presence.occupancy import Occupancy

if TYPE_CHECKING:
    from hub.docs import Documents
    from hub.node import Node

log = logging.getLogger("switchboard.outbound")

INBOX_TOPICS = frozenset({Topic.NOTIFICATION_CREATED, Topic.INBOX_CHANGED})
"""Appended by the inbox store itself, in the transaction of the change."""
OCCUPANCY_TOPICS = frozenset({Topic.CHANNEL_OCCUPIED, Topic.CHANNEL_VACATED})


class Worker(Protocol):
    """What the node needs of its in-process worker (``workers.outbox.OutboxWorker``)."""

    def wake(self) -> None: ...

    async def stop(self) -> None: ...


StartWorker = Callable[[InboxStore, OutboxMetrics], Awaitable[Worker]]


class Outbound:
    def __init__(self, config: Config, node: Node, documents: Documents, occupancy: Occupancy) -> None:
        self.config = config
        self.node = node
        self.documents = documents
        self.occupancy = occupancy
        self.routes = Routes.of(config)
        self.metrics = OutboxMetrics()
        self.store: InboxStore | None = None
        self.tap: EventTap | None = None
        self.worker: Worker | None = None

    async def start(self, store: InboxStore | None, *, worker: StartWorker | None = None) -> None:
        """Events go to ``store`` (open, the inbox's) from now on."""
        if self.store is not None or store is None or not self.routes.enabled:
            return
        self.store = store
        if worker is not None:
            self.worker = await worker(store, self.metrics)
        topics = self.routes.topics - INBOX_TOPICS
        if not topics:
            return
        cfg = self.config
        tap = EventTap(
            self.routes,
            store,
            node_id=self.node.id,
            registry=self.node.registry,
            occupancy=self.occupancy,
            documents=self.documents,
            metrics=self.metrics,
            doc_wait=cfg.document_changed_wait,
            doc_max_wait=cfg.document_changed_max_wait,
            renew_interval=cfg.presence_update_interval,
            on_appended=self.worker.wake if self.worker is not None else None,
        )
        self.tap = tap
        self.node.events = tap
        if topics & OCCUPANCY_TOPICS:
            self.node.registry.watch = tap.channel_changed
        if Topic.DOCUMENT_CHANGED in topics:
            self.documents.rooms.on_change = tap.document_changed
        tap.start()
        log.info("events out: %s", ", ".join(sorted(map(str, topics))))

    async def stop(self) -> None:
        """After the node stopped (its last sessions' events are in): append what is pending, stop the
        worker. The store is the inbox's: its owner closes it."""
        tap, self.tap = self.tap, None
        if tap is not None:
            await tap.stop(self.config.shutdown_timeout)
            self.node.events = None
            self.node.registry.watch = None
            self.documents.rooms.on_change = None
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.stop()
        self.store = None
