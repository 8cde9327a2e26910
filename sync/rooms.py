"""DocumentRooms: the open documents of one node, their loading, unloading and upkeep.

- ``acquire(key)`` returns the document's room, loading it from the store on first use (concurrent
  acquirers of one document share one load); ``release(room)`` gives it back. A room nobody holds is
  kept for ``unload_delay`` seconds (a reconnecting client finds it warm), then compacted if its log is
  not empty, flushed, and dropped. An acquire during that unload waits for it and loads afresh.
- ``max_open`` bounds the rooms of a node: past it, idle rooms are unloaded early, and if every room is
  in use ``acquire`` raises ``LimitExceeded`` (nothing is loaded).
- One clock task every ``TICK`` seconds expires stale awareness states, drops the rooms' shared
  full-state answers nobody asked for lately (``DocRoom.forget_full_state``) and, every
  ``keepalive_interval``, sends each peer an empty awareness update (see ``sync.room.KEEPALIVE``).
- The store is opened on the first acquire, so a node that never serves documents creates no file.
- A failed store write closes the rooms it touched (their peers get the ``StoreError`` and reconnect);
  the next acquire reloads what the store holds (after the failed room's link closed: a new link of the
  document must not be disturbed by the old one's close).
- Backpressure: ``backlog_full`` says that the changes waiting for the store (the journal) or for the
  other nodes (the relay) passed their bound (``write_backlog``); whoever feeds changes in and can wait
  (a document connection's reader, the server-side API) waits for ``has_room`` before taking more, so a
  slow store or Redis slows the writers down instead of growing memory. The clock also stores the rooms
  that relayed remote changes unjournaled while the journal was full (``DocRoom.store_unjournaled``).
- ``open(key)`` / ``transact(key, fn)`` / ``edit(key, ops)`` (an agent's JSON ops, ``sync.edit``) are the
  server-side API: edits made through them reach the connected peers and the store like any client's.
  They return once the edits are durable on the document's writer node; on another node (with a relay),
  once they were published to the other nodes (the writer stores them within a batch after they arrive;
  if that node dies first, the holders' next writer stores them, see ``sync.relay_redis``).

With a ``relay`` (``sync.relay``; several nodes share the documents) a load is: attach (subscribe to the
document's messages, buffered), load from the store, bind the room, run the sync exchange with the other
holders (bounded wait), then try to take the writer lease; peers join only after that, so a late joiner's
first sync step 2 holds the full state. A room starts as a non-writer; on gaining the lease it reloads
the store and merges it (``DocRoom.take_over``); an unload compacts only on the writer, flushes, then
closes the link (which hands the lease to another holder). Without a relay nothing changes: every room is
its document's writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from pycrdt import Doc

from sync.edit import EditLimits, EditResult
from sync.journal import Journal
from sync.protocol import LimitExceeded
from sync.relay import DocLink, DocumentRelay
from sync.room import DocRoom, RoomLimits
from sync.store import DocKey, DocumentStore, StoredDocument, StoreError

log = logging.getLogger("switchboard.sync.rooms")

T = TypeVar("T")

TICK = 3.0
"""Seconds between awareness expiry passes (y-protocols checks every outdatedTimeout / 10)."""


class DocumentRooms:
    def __init__(
        self,
        store: DocumentStore,
        *,
        limits: RoomLimits | None = None,
        unload_delay: float = 5.0,
        max_open: int = 10000,
        keepalive_interval: float = 15.0,
        commit_delay: float = 0.0,
        relay: DocumentRelay | None = None,
        write_backlog: int = 16 * 1024 * 1024,
    ) -> None:
        """``write_backlog``: bytes of changes the journal holds before ``backlog_full`` (the relay has
        its own bound, set where it is made)."""
        self.store = store
        self.relay = relay
        self.limits = limits if limits is not None else RoomLimits()
        self.unload_delay = unload_delay
        self.max_open = max_open
        self.keepalive_interval = keepalive_interval
        self.journal = Journal(
            store, on_failure=self._on_store_failure, delay=commit_delay, max_bytes=write_backlog
        )
        self.rooms: dict[DocKey, DocRoom] = {}
        self._loading: dict[DocKey, asyncio.Task[DocRoom]] = {}
        self._unloading: dict[DocKey, asyncio.Task[None]] = {}
        self._timers: dict[DocKey, asyncio.TimerHandle] = {}
        self._store_open = False
        self._open_lock = asyncio.Lock()
        self._clock: asyncio.Task[None] | None = None
        self._closing = False
        self._takeovers: dict[DocKey, asyncio.Task[None]] = {}
        self._failed: dict[DocKey, asyncio.Task[None]] = {}
        """Links of rooms closed by a failed write, still closing; an acquire of the key waits for it."""
        self.loads = 0
        self.unloads = 0
        self.on_unload: Callable[[DocKey], None] | None = None
        """Called after a document was unloaded (metrics, tests)."""
        self.on_change: Callable[[DocKey], None] | None = None
        """Called when this node, as a document's writer, stored a change of it (every change)."""

    # ---------------------------------------------------------------- acquire / release

    async def acquire(self, key: DocKey) -> DocRoom:
        if self._closing:
            raise StoreError("documents are shutting down")
        while True:
            unloading = self._unloading.get(key) or self._failed.get(key)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            room = self.rooms.get(key)
            if room is not None:
                room.users += 1
                timer = self._timers.pop(key, None)
                if timer is not None:
                    timer.cancel()
                return room
            loading = self._loading.get(key)
            if loading is None:
                self._make_room_for_one()
                loading = asyncio.get_running_loop().create_task(self._load(key))
                self._loading[key] = loading
            await asyncio.shield(loading)  # raises what the load raised; the next loop takes the room

    def release(self, room: DocRoom) -> None:
        room.users -= 1
        if room.users > 0 or room.closed or self.rooms.get(room.key) is not room:
            return
        if self.unload_delay <= 0:
            self._begin_unload(room.key)
        else:
            loop = asyncio.get_running_loop()
            self._timers[room.key] = loop.call_later(self.unload_delay, self._begin_unload, room.key)

    def _stored(self, key: DocKey) -> None:
        if self.on_change is not None:
            self.on_change(key)

    @property
    def backlog_full(self) -> bool:
        """Changes wait for the store or the other nodes past their bound (see the module docstring)."""
        return self.journal.full or (self.relay is not None and self.relay.backlog_full)

    async def has_room(self) -> None:
        """Return once neither the journal nor the relay is past its bound."""
        while True:
            if self.journal.full:
                await self.journal.has_room()
            elif self.relay is not None and self.relay.backlog_full:
                await self.relay.has_room()
            else:
                return

    @property
    def open_count(self) -> int:
        """Rooms loaded or loading, not counting those being unloaded."""
        return len(self.rooms) + len(self._loading) - len(self._unloading)

    def _make_room_for_one(self) -> None:
        if self.open_count < self.max_open:
            return
        for key, room in list(self.rooms.items()):
            if room.users == 0 and key not in self._unloading:
                timer = self._timers.pop(key, None)
                if timer is not None:
                    timer.cancel()
                self._begin_unload(key)
                if self.open_count < self.max_open:
                    return
        raise LimitExceeded(f"too many open documents on this node (limit {self.max_open})")

    async def _load(self, key: DocKey) -> DocRoom:
        try:
            await self._open_store()
            if self.relay is None:
                room = DocRoom(key, self.journal, self.limits, await self.store.load(key))
            else:
                room = await self._load_shared(key, self.relay)
            room.on_stored = self._stored
            self.rooms[key] = room
            self.loads += 1
            log.debug("document %r loaded", key[1])
            return room
        finally:
            self._loading.pop(key, None)

    async def _load_shared(self, key: DocKey, relay: DocumentRelay) -> DocRoom:
        try:
            link = await relay.attach(key)  # first: nothing published from now on is missed
        except OSError as exc:  # a relay must raise StoreError; a load never fails with a socket error
            raise StoreError(f"documents across nodes unavailable: {exc}") from None
        room: DocRoom | None = None
        try:
            room = DocRoom(key, self.journal, self.limits, await self.store.load(key))
            room.writer = False
            room.link = link
            bound = room
            link.bind(room, lambda gained: self._lease_changed(bound, gained))
            await link.catch_up(wait=True)
            await link.claim()
            takeover = self._takeovers.get(key)
            if takeover is not None:
                await asyncio.shield(takeover)
            return room
        except BaseException as exc:
            if room is not None:
                room.close()
            with contextlib.suppress(Exception):
                await link.close()
            if isinstance(exc, OSError):
                raise StoreError(f"documents across nodes unavailable: {exc}") from None
            raise

    def _lease_changed(self, room: DocRoom, gained: bool) -> None:
        if room.closed:
            return
        if not gained:
            room.stop_writing()
            log.info("document %r: this node no longer writes it", room.key[1])
            return
        room.writer = True  # from now on every change is journaled; the store is merged in the background
        key = room.key
        task = asyncio.get_running_loop().create_task(self._take_over(room))
        self._takeovers[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._takeovers.get(key) is finished:
                del self._takeovers[key]

        task.add_done_callback(done)

    async def _take_over(self, room: DocRoom) -> None:
        try:
            stored: StoredDocument | None = await self.store.load(room.key)
        except StoreError as exc:
            log.warning("document %r: store not readable when taking over: %s", room.key[1], exc.reason)
            stored = None
        if room.writer:  # still (the lease may have been lost while the store was read)
            room.take_over(stored)

    async def _close_link(self, link: DocLink | None) -> None:
        if link is not None:
            try:
                await link.close()
            except Exception:
                log.exception("closing a document's link to the other nodes failed")

    async def _open_store(self) -> None:
        if self._store_open:
            return
        async with self._open_lock:
            if not self._store_open:
                await self.store.open()
                if self.relay is not None:
                    await self.relay.start()
                self._store_open = True
                self._clock = asyncio.get_running_loop().create_task(self._run_clock())

    # ---------------------------------------------------------------- unloading

    def _begin_unload(self, key: DocKey) -> None:
        self._timers.pop(key, None)
        room = self.rooms.get(key)
        if room is None or room.users > 0 or key in self._unloading:
            return
        self._unloading[key] = asyncio.get_running_loop().create_task(self._unload(key, room))

    async def _unload(self, key: DocKey, room: DocRoom) -> None:
        try:
            if room.writer and (room.log_rows or room.unjournaled) and not room.closed:
                room.compact()
            room.store_before_leaving()
            await self.journal.flush()
        except Exception:
            log.exception("unloading document %r failed", key[1])
        finally:
            await self._close_link(room.link)  # after the flush: the next writer finds it all stored
            if self.rooms.get(key) is room:
                del self.rooms[key]
            room.close()
            self._unloading.pop(key, None)
            self.unloads += 1
            if self.on_unload is not None:
                self.on_unload(key)

    def _on_store_failure(self, keys: set[DocKey], error: StoreError) -> None:
        for key in keys:
            room = self.rooms.pop(key, None)
            if room is not None:
                log.error("document %r closed after a failed write; clients will resync", key[1])
                # Before the link closes: the other nodes must drop this node's cursors now, not when
                # they time out (the peers' own leave comes after the link is gone).
                room.withdraw_awareness()
                room.close(error)
                if room.link is not None and key not in self._unloading:  # else the unload closes it
                    task = asyncio.get_running_loop().create_task(self._close_link(room.link))
                    self._failed[key] = task

                    def done(finished: asyncio.Task[None], key: DocKey = key) -> None:
                        if self._failed.get(key) is finished:
                            del self._failed[key]

                    task.add_done_callback(done)

    # ---------------------------------------------------------------- upkeep

    async def _run_clock(self) -> None:
        last_keepalive = time.monotonic()
        tick = min(TICK, self.keepalive_interval)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            keepalive = now - last_keepalive >= self.keepalive_interval
            if keepalive:
                last_keepalive = now
            for room in list(self.rooms.values()):
                try:
                    room.forget_full_state(now)
                    room.expire_awareness(now)
                    if keepalive:
                        room.keepalive()
                    if room.unjournaled and not self.journal.full:
                        room.store_unjournaled()
                except Exception:
                    log.exception("upkeep of document %r failed", room.key[1])

    async def close(self) -> None:
        """Compact and flush every open document, then close the store."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
            self._clock = None
        if self._unloading:
            await asyncio.gather(*self._unloading.values(), return_exceptions=True)
        if self._takeovers:
            await asyncio.gather(*self._takeovers.values(), return_exceptions=True)
        if self._failed:
            await asyncio.gather(*self._failed.values(), return_exceptions=True)
        for room in list(self.rooms.values()):
            if room.writer and (room.log_rows or room.unjournaled) and not room.closed:
                room.compact()
            room.store_before_leaving()
        await self.journal.close()
        for room in self.rooms.values():
            room.close()
            await self._close_link(room.link)
        self.rooms.clear()
        if self._store_open:
            if self.relay is not None:
                await self.relay.close()
            await self.store.close()
            self._store_open = False
        self._closing = False

    # ---------------------------------------------------------------- server-side API

    @contextlib.asynccontextmanager
    async def open(self, key: DocKey) -> AsyncIterator[Doc[Any]]:
        """The live document of ``key``: edit it in transactions; each reaches the peers and the store.
        On exit, waits until the edits are durable on this node if it is the document's writer, else until
        they were published to the other nodes (see the module docstring)."""
        await self.has_room()
        room = await self.acquire(key)
        try:
            yield room.doc
            await self.settled(room)
        finally:
            self.release(room)

    async def transact(self, key: DocKey, fn: Callable[[Doc[Any]], T]) -> T:
        """Run ``fn(doc)`` in one transaction on the live document; return its result once durable on the
        writer node, or (on another node) once published to the other nodes."""
        await self.has_room()
        room = await self.acquire(key)
        try:
            result = room.transact(fn)
            await self.settled(room)
            return result
        finally:
            self.release(room)

    async def edit(
        self,
        key: DocKey,
        ops: Any,
        *,
        if_version: str | None = None,
        unit: str = "utf16",
        limits: EditLimits = EditLimits(),
    ) -> EditResult:
        """Apply an agent's JSON ops (``sync.edit``) to the live document in one transaction
        (``DocRoom.edit``); return once settled, as ``transact``. Raises ``EditRejected`` (nothing
        applied)."""
        await self.has_room()
        room = await self.acquire(key)
        try:
            result = room.edit(ops, if_version=if_version, unit=unit, limits=limits)
            await self.settled(room)
            return result
        finally:
            self.release(room)

    async def settled(self, room: DocRoom) -> None:
        """Journaled edits are durable; edits this node does not write have left it for the writer."""
        await self.journal.flush()
        if room.link is not None:
            await room.link.flush()
