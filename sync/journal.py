"""Group commit in front of a DocumentStore, and the "relay only what is durable" rule.

Rooms queue operations (``append``, ``compact``) and ask to be called back once everything they queued so
far is durable (``after_durable``). One writer task drains the queue: every operation queued while the
previous batch was being written goes into the next batch, in one store transaction. Under load a batch
grows to whatever arrived during one commit; when idle a lone update is written on the next loop tick
(or after ``delay`` seconds, to gather more per commit).

Callbacks run in the order they were registered, after the batch holding everything queued before them
has committed. A room relays an update from such a callback, so no client ever receives an update the
store would lose in a crash.

A batch that fails is not retried: its callbacks are dropped (nothing in it is relayed) and ``on_failure``
is told which documents it touched, so their rooms can be closed and reloaded from what is stored; their
clients resend what the store lacks when they sync again.

Bound: ``backlog`` counts the bytes of the operations queued and of the batch being written (a relayed
update is held twice meanwhile: its operation and its relay message). Past ``max_bytes`` the journal is
``full``: it still takes operations (a caller that cannot wait must not fail), but the callers that can
(the document connections' readers) stop reading until ``has_room`` returns, so a slow store slows the
writers down instead of growing the queue. A ``Compact`` drops the operations of its document still queued
before it (the snapshot holds them), so a store that falls behind writes each document's state once, not
every snapshot taken meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sync.store import Append, Compact, DocKey, DocumentStore, StoreError, StoreOp

log = logging.getLogger("switchboard.sync.journal")

Callback = Callable[[], None]
Waiter = tuple["DocKey | None", Callback]
"""A callback and the document it belongs to (None: it must wait for the whole batch)."""

FULL_LOG_SPACING = 10.0
"""Seconds between two log lines saying that the journal is full."""


def op_size(op: StoreOp) -> int:
    return len(op.update) if isinstance(op, Append) else len(op.snapshot)


class Journal:
    def __init__(
        self,
        store: DocumentStore,
        *,
        on_failure: Callable[[set[DocKey], StoreError], None] | None = None,
        delay: float = 0.0,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.on_failure = on_failure
        self.delay = delay
        self.max_bytes = max_bytes
        self._queued_bytes = 0
        self._inflight_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._full_logged = float("-inf")
        self._ops: list[StoreOp] = []
        self._callbacks: list[Waiter] = []
        self._inflight: list[Waiter] | None = None
        """Callbacks waiting on the batch being written (None: nothing is being written)."""
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        """Set (and replaced) each time a batch finishes."""
        self._started = 0
        self._finished = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.ops_written = 0

    # ---------------------------------------------------------------- queueing (synchronous, no awaits)

    def append(self, key: DocKey, update: bytes) -> None:
        self._queue(Append(key, update))

    def compact(self, key: DocKey, snapshot: bytes) -> None:
        self._queue(Compact(key, snapshot))

    def _queue(self, op: StoreOp) -> None:
        if self._closed:
            raise StoreError("document journal is closed")
        if isinstance(op, Compact) and self._ops:
            self._ops = [queued for queued in self._ops if queued.key != op.key]
        self._ops.append(op)
        self._queued_bytes += op_size(op)
        if self.full and self._room.is_set():
            self._room.clear()
            now = time.monotonic()
            if now - self._full_logged >= FULL_LOG_SPACING:
                self._full_logged = now
                log.warning(
                    "document store is behind (%d bytes waiting): document connections are not read "
                    "until it catches up",
                    self.backlog,
                )
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Bytes queued or being written."""
        return self._queued_bytes + self._inflight_bytes

    @property
    def full(self) -> bool:
        return self.backlog > self.max_bytes

    async def has_room(self) -> None:
        """Return once the backlog is within ``max_bytes`` (at once if it is)."""
        await self._room.wait()

    def after_durable(self, callback: Callback, key: DocKey | None = None) -> None:
        """Call ``callback`` once everything queued so far is durable (now, if it already is).

        With ``key``, a batch that fails without touching that document still runs the callback: all of
        the document's own operations were durable before it was registered."""
        if self._ops:
            self._callbacks.append((key, callback))
        elif self._inflight is not None:
            self._inflight.append((key, callback))
        else:
            callback()

    @property
    def idle(self) -> bool:
        return not self._ops and self._inflight is None

    async def flush(self) -> None:
        """Wait until everything queued so far is written (durable, or its batch failed)."""
        target = self._started + (1 if self._ops else 0)
        while self._finished < target:
            await self._progress.wait()

    # ---------------------------------------------------------------- the writer

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            while self._ops:
                ops, self._ops = self._ops, []
                callbacks, self._callbacks = self._callbacks, []
                self._inflight = callbacks
                self._inflight_bytes, self._queued_bytes = self._queued_bytes, 0
                self._started += 1
                try:
                    await self.store.write(ops)
                except Exception as exc:
                    failed = self._fail(ops, exc)
                    self._inflight = None
                    self._call([cb for cb in callbacks if cb[0] is not None and cb[0] not in failed])
                else:
                    self.batches += 1
                    self.ops_written += len(ops)
                    self._inflight = None
                    self._call(callbacks)  # including those added while the batch was written
                self._inflight = None
                self._inflight_bytes = 0
                if not self.full:
                    self._room.set()
                self._finished += 1
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()
                # Done with the batch: its updates and callbacks (which hold rooms and connections) must not
                # stay in this frame until the next one, for ever on a document store that has gone idle.
                del ops, callbacks

    @staticmethod
    def _call(callbacks: list[Waiter]) -> None:
        for _, callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("callback after a durable write failed")

    def _fail(self, ops: list[StoreOp], exc: Exception) -> set[DocKey]:
        """Report the documents a failed batch touched (their callbacks are dropped: nothing of theirs is
        relayed); return them."""
        error = exc if isinstance(exc, StoreError) else StoreError(f"store failure: {exc!r}")
        if not isinstance(exc, StoreError):  # a store bug must not stop every later write
            log.error("document store write raised", exc_info=exc)
        keys = {op.key for op in ops}
        log.error("document write failed for %d document(s): %s", len(keys), error.reason)
        if self.on_failure is not None:
            try:
                self.on_failure(keys, error)
            except Exception:
                log.exception("on_failure handler failed")
        return keys

    async def close(self) -> None:
        """Write what is queued, then stop. Later operations raise ``StoreError``."""
        await self.flush()
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
