"""The hub's events into the outbox: built where they happen, appended once per loop tick.

Producers (called from the hub's code paths, synchronously, never awaiting): ``connected``,
``disconnected``, ``published``, ``channel_changed`` (the registry's fan-out gained its first or lost its
last subscriber of a channel on this node), ``document_changed`` (the document's writer stored a change),
and ``node_gone`` (another node was dropped). Each first asks ``Routes.wants``; an event nobody wants is
not built.

Events and their payloads (``data`` of the webhook body; every event also carries its tenant):

- ``client.connected``: ``{client, user, transport, node}``; ``client.disconnected``: the same and
  ``{code, reason}``. Once per connection, by the node that held it.
- ``publication``: ``{channel, offset, epoch, data, info: {user, client}, tags}``, once per publication, by
  the node it was published on (client or server API); ``data`` over ``MAX_DATA_BYTES`` is left out
  (``data_omitted: true, size``). A publication suppressed by its idempotency key is no event.
- ``channel.occupied`` / ``channel.vacated``: ``{channel, at}``: the channel's first subscriber in the hub
  arrived / its last one left every node (``presence.occupancy``: one node reports each transition; ``at``
  is the backend's clock, in order per channel). A node's subscribe and unsubscribe of one channel within
  one reconciliation (a tick, or a retry while the backend is down) cancel out.
- ``document.changed``: ``{document, version, content}`` after a document's changes settle (debounced per
  document: ``document_changed_wait`` after the last change, at most ``document_changed_max_wait`` after
  the first), by the document's writer node; ``content`` is ``sync.content``'s JSON, left out over
  ``MAX_CONTENT_BYTES`` (``content_omitted: true, size``: read it from ``/doc/<name>/content``).

Bounds and failures: events wait for the append in a list of at most ``MAX_PENDING``; past it (the store is
down or far behind) new events are dropped and counted (``switchboard_outbox_events_dropped``), with one
warning per ``LOG_EVERY``. A failed append is retried with backoff, the events kept in order. Occupancy
changes that the backend refused are retried the same way (the node's share is reconciled with its
registry, so nothing is reported twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from channels.names import ChannelKey, ChannelName
from channels.publication import ClientInfo, PublishResult
from hub.metrics import OutboxMetrics
from hub.outbound.debounce import Debouncer
from hub.outbound.routes import Routes, channel_namespace, document_namespace
from inbox.errors import InboxError, InvalidInput
from inbox.inbox import InboxStore
from inbox.outbox import MAX_APPEND, OutboxEvent, Topic
from presence.occupancy import Occupancy, Transition
from presence.presence import PresenceUnavailable

if TYPE_CHECKING:
    from hub.client import Client
    from hub.docs import Documents
    from hub.registry import Registry

log = logging.getLogger("switchboard.outbound")

MAX_PENDING = 10000
MAX_DATA_BYTES = 32768
MAX_CONTENT_BYTES = 49152
LOG_EVERY = 30.0
RETRY_MIN = 0.5
RETRY_MAX = 30.0
DocKey = tuple[str, str]


class EventTap:
    def __init__(
        self,
        routes: Routes,
        store: InboxStore,
        *,
        node_id: str,
        registry: Registry,
        occupancy: Occupancy,
        documents: Documents | None = None,
        metrics: OutboxMetrics | None = None,
        doc_wait: float = 2.0,
        doc_max_wait: float = 10.0,
        renew_interval: float = 25.0,
        on_appended: Callable[[], None] | None = None,
    ) -> None:
        self.routes = routes
        self.store = store
        self.node_id = node_id
        self.registry = registry
        self.occupancy = occupancy
        self.documents = documents
        self.metrics = metrics if metrics is not None else OutboxMetrics()
        self.renew_interval = renew_interval
        self.on_appended = on_appended
        self.pending: list[OutboxEvent] = []
        self._flush: asyncio.Task[None] | None = None
        self._scheduled = False
        self._logged: dict[str, float] = {}
        # occupancy
        self.held: set[ChannelKey] = set()
        """Channels whose share the backend has from this node."""
        self._dirty: set[ChannelKey] = set()
        self._occupancy_lock = asyncio.Lock()
        self._reconcile: asyncio.Task[None] | None = None
        self._renewals: asyncio.Task[None] | None = None
        # documents
        self.debounce: Debouncer[DocKey] = Debouncer(doc_wait, doc_max_wait)
        self._doc_timer: asyncio.TimerHandle | None = None
        self._doc_reports: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ---------------------------------------------------------------- producers

    def connected(self, client: Client) -> None:
        if self.routes.wants(Topic.CLIENT_CONNECTED, client.tenant):
            self._emit(client.tenant, Topic.CLIENT_CONNECTED, self._client(client))

    def disconnected(self, client: Client, code: int, reason: str) -> None:
        if self.routes.wants(Topic.CLIENT_DISCONNECTED, client.tenant):
            payload = self._client(client)
            payload.update(code=code, reason=reason[:200])
            self._emit(client.tenant, Topic.CLIENT_DISCONNECTED, payload)

    def _client(self, client: Client) -> dict[str, Any]:
        return {
            "client": client.id,
            "user": client.user,
            "transport": client.transport.name,
            "node": self.node_id,
        }

    def published(
        self,
        tenant: str,
        channel: ChannelName,
        data: bytes,
        info: ClientInfo | None,
        tags: Mapping[str, str] | None,
        result: PublishResult,
    ) -> None:
        if result.suppressed or not self.routes.wants(Topic.PUBLICATION, tenant, channel.namespace):
            return
        payload: dict[str, Any] = {
            "channel": channel.raw,
            "offset": result.position.offset,
            "epoch": result.position.epoch,
        }
        if len(data) > MAX_DATA_BYTES:
            payload.update(data_omitted=True, size=len(data))
        else:
            try:
                payload["data"] = orjson.loads(data)
            except orjson.JSONDecodeError:
                payload.update(data_omitted=True, size=len(data))
        if info is not None:
            payload["info"] = {"user": info.user, "client": info.client}
        if tags:
            payload["tags"] = dict(tags)
        self._emit(tenant, Topic.PUBLICATION, payload)

    def _watched(self, key: ChannelKey) -> bool:
        """Whether ``key``'s occupancy is wanted by a route (or this node holds a share of it)."""
        namespace = channel_namespace(key[1])
        routes = self.routes
        return (
            routes.wants(Topic.CHANNEL_OCCUPIED, key[0], namespace)
            or routes.wants(Topic.CHANNEL_VACATED, key[0], namespace)
            or key in self.held
        )

    async def occupy(self, key: ChannelKey) -> None:
        """A subscriber of ``key`` is being set up on this node: the node's share is in the backend before
        the subscriber is answered, so no other node can report the channel vacated while it is subscribed
        here (after its reply, a subscriber elsewhere leaving saw this share). A backend that fails leaves
        it to the reconcile loop, with its retries: the subscribe does not fail for it."""
        if key in self.held or not self._watched(key):
            return
        async with self._occupancy_lock:
            if key in self.held or not self.registry.has_local(key):
                return
            try:
                transitions = await self.occupancy.update([(key, True)])
            except PresenceUnavailable as exc:
                self._warn("occupancy", f"channel occupancy not updated (retrying): {exc}")
                self.channel_changed(key)
                return
            self.held.add(key)
            self._report(transitions)

    def channel_changed(self, key: ChannelKey) -> None:
        """The registry's watch: ``key`` got its first, or lost its last, local subscriber (active or being
        set up: the node also calls it when it releases a channel)."""
        if not self._watched(key):
            return
        self._dirty.add(key)
        if self._reconcile is None or self._reconcile.done():
            self._reconcile = asyncio.get_running_loop().create_task(self._reconcile_dirty())

    def document_changed(self, key: DocKey) -> None:
        """The writer stored a change of document ``key``."""
        if self._stopped or not self.routes.wants(Topic.DOCUMENT_CHANGED, key[0], document_namespace(key[1])):
            return
        self.debounce.touch(key, time.monotonic())
        if self._doc_timer is None:
            self._doc_timer = asyncio.get_running_loop().call_later(self.debounce.wait, self._documents_due)

    async def node_gone(self, owner: str) -> None:
        """Another node was dropped: the channels only it held are vacated (reported once in the hub)."""
        if not (self.routes.topics & {Topic.CHANNEL_VACATED}):
            return
        try:
            transitions = await self.occupancy.purge(owner)
        except PresenceUnavailable as exc:
            log.warning("occupancy of a dropped node not purged: %s", exc)
            return
        self._report(transitions)

    # ---------------------------------------------------------------- the append

    def _emit(self, tenant: str, topic: Topic, payload: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.metrics.dropped["overflow"] += 1
            self._warn("overflow", f"outbox behind: events dropped (over {MAX_PENDING} waiting)")
            return
        try:
            event = OutboxEvent(tenant, topic, payload)
        except InvalidInput as exc:  # a tenant or payload the outbox refuses: counted, never raised
            self.metrics.dropped["invalid"] += 1
            self._warn("invalid", f"{topic} event dropped: {exc}")
            return
        self.pending.append(event)
        if not self._scheduled and (self._flush is None or self._flush.done()):
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = False
        if self.pending and (self._flush is None or self._flush.done()):
            self._flush = asyncio.get_running_loop().create_task(self._append_pending())

    async def _append_pending(self) -> None:
        delay = RETRY_MIN
        while self.pending:
            batch = self.pending[:MAX_APPEND]
            try:
                routed = await self.store.append(batch)
            except InvalidInput as exc:
                log.error("outbox refused %d events: %s", len(batch), exc)
                routed = 0
            except InboxError as exc:
                self._warn("append", f"outbox append failed (retrying): {exc}")
                if self._stopped:
                    return
                await asyncio.sleep(delay)  # backoff while the store is away
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            del self.pending[: len(batch)]
            for event in batch:
                self.metrics.appended[str(event.topic)] += 1
            if routed and self.on_appended is not None:
                self.on_appended()

    def _warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY) >= LOG_EVERY:
            self._logged[reason] = now
            log.warning(message)

    # ---------------------------------------------------------------- occupancy

    def _report(self, transitions: list[Transition]) -> None:
        for t in transitions:
            topic = Topic.CHANNEL_OCCUPIED if t.occupied else Topic.CHANNEL_VACATED
            if self.routes.wants(topic, t.key[0], channel_namespace(t.key[1])):
                self._emit(t.key[0], topic, {"channel": t.key[1], "at": t.at})

    async def _reconcile_dirty(self) -> None:
        delay = RETRY_MIN
        while self._dirty and not self._stopped:
            keys, self._dirty = self._dirty, set()
            async with self._occupancy_lock:
                changes = [
                    (key, has) for key in keys if (has := self.registry.has_local(key)) != (key in self.held)
                ]
                if not changes:
                    continue
                try:
                    transitions = await self.occupancy.update(changes)
                except PresenceUnavailable as exc:
                    self._dirty |= keys
                    self._warn("occupancy", f"channel occupancy not updated (retrying): {exc}")
                    failed = True
                else:
                    failed = False
                    for key, has in changes:
                        (self.held.add if has else self.held.discard)(key)
                    self._report(transitions)
            if failed:
                await asyncio.sleep(delay)  # backoff while the backend is away
                delay = min(delay * 2, RETRY_MAX)

    async def _renew(self) -> None:
        """Renew this node's shares (a shared backend expires them otherwise)."""
        while True:
            await asyncio.sleep(self.renew_interval)  # the renewal period
            async with self._occupancy_lock:
                held = [(key, True) for key in self.held]
                if not held:
                    continue
                try:
                    self._report(await self.occupancy.update(held))
                except PresenceUnavailable as exc:
                    self._warn("occupancy", f"channel occupancy not renewed: {exc}")

    # ---------------------------------------------------------------- documents

    def _documents_due(self) -> None:
        self._doc_timer = None
        now = time.monotonic()
        for key in self.debounce.due(now):
            self._report_document(key)
        upcoming = self.debounce.next_due()
        if upcoming is not None:
            self._doc_timer = asyncio.get_running_loop().call_later(
                max(upcoming - now, 0.01), self._documents_due
            )

    def _report_document(self, key: DocKey) -> None:
        task = asyncio.get_running_loop().create_task(self._document_event(key))
        self._doc_reports.add(task)
        task.add_done_callback(self._doc_reports.discard)

    async def _document_event(self, key: DocKey) -> None:
        if self.documents is None:
            return
        try:  # the content read of /content, kept for the readers after this one while unchanged
            content, version, _ = await self.documents.read_encoded(key[1], tenant=key[0])
        except Exception as exc:  # the store failed: the change is not reported
            self._warn("document", f"document {key[1]!r} not read for its change event: {exc}")
            return
        payload: dict[str, Any] = {"document": key[1], "version": version}
        if len(content) > MAX_CONTENT_BYTES:
            payload.update(content_omitted=True, size=len(content))
        else:
            payload["content"] = orjson.Fragment(content)
        self._emit(key[0], Topic.DOCUMENT_CHANGED, payload)

    # ---------------------------------------------------------------- life cycle

    def start(self) -> None:
        if self.occupancy.owner and self._renewals is None:
            self._renewals = asyncio.get_running_loop().create_task(self._renew())

    async def stop(self, grace: float = 5.0) -> None:
        """Report the documents still waiting, and append what is pending (for up to ``grace`` seconds)."""
        if self._doc_timer is not None:
            self._doc_timer.cancel()
            self._doc_timer = None
        for key in self.debounce.drain():
            self._report_document(key)
        if self._renewals is not None:
            self._renewals.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewals
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                # the node's last clients left: its shares go (vacated events), then everything is appended
                if self._reconcile is not None:
                    await self._reconcile
                if self._doc_reports:
                    await asyncio.gather(*self._doc_reports, return_exceptions=True)
                self._start_flush()
                if self._flush is not None:
                    await self._flush
        self._stopped = True
        for task in (self._reconcile, self._flush):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._flush is not None and not self._flush.done():
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        if self.pending:
            self.metrics.dropped["shutdown"] += len(self.pending)
            log.warning("%d events not appended to the outbox at shutdown", len(self.pending))
            self.pending.clear()
