"""The delivery loop: claims the outbox's tasks with a lease, hands each to its destination's sender, and
records every attempt (``inbox.outbox`` holds the policy: retries, backoff, dead letters).

Policies:

- One lane per destination (a webhook endpoint, email): it claims only while it has a free slot, at most
  as many tasks as it has free slots (``concurrency``: the per-endpoint limit), so a slow endpoint holds
  only its own tasks, never leases that run out while they queue behind it.
- Leases: ``sender.timeout + LEASE_MARGIN``, and every delivery is cut off at ``sender.timeout +
  CUTOFF_SLACK``, so a lease never runs out under a delivery still in progress. A worker that dies (or is
  killed) mid-delivery leaves its tasks leased; once the lease is over another worker, or the same node
  after a restart, claims them again: at least once, and a duplicate carries the same ``webhook-id``.
- Polling: a lane that found nothing waits ``POLL_MIN`` doubling to ``POLL_MAX`` (a retry due, or a task
  appended by another process, is picked up within ``POLL_MAX``); ``wake()`` (the node appended events)
  and a freed slot end the wait at once.
- ``Retry-After``: besides the task's own delay (the store's ``retry_delay``), the lane claims nothing for
  that endpoint for ``min(Retry-After, MAX_PAUSE)`` seconds: the receiver asked everyone to wait.
- Store failures: a claim that fails is logged (once per ``LOG_EVERY`` per lane) and retried after
  ``POLL_MAX``; a record that fails leaves the task leased, and it is delivered again after its lease.
- Upkeep: every ``DEPTH_INTERVAL`` the queue depth and dead letters per destination are read for the
  metrics; every ``PRUNE_INTERVAL`` finished tasks older than ``retention`` are deleted.
- ``stop()`` claims nothing more and waits up to ``grace`` seconds for the deliveries in flight; those
  still running are cancelled (their tasks come back after their lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from hub.metrics import OutboxMetrics
from inbox.errors import InboxError
from inbox.inbox import InboxStore
from inbox.outbox import AttemptResult, Task, Verdict

log = logging.getLogger("switchboard.workers")

LEASE_MARGIN = 5.0
CUTOFF_SLACK = 1.0
POLL_MIN = 0.05
POLL_MAX = 1.0
MAX_PAUSE = 60.0
DEPTH_INTERVAL = 5.0
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 10000
LOG_EVERY = 30.0


class Sender(Protocol):
    """Delivers the tasks of one destination (``workers.webhook.WebhookSender``,
    ``workers.email.EmailSender``)."""

    @property
    def destination(self) -> str: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def timeout(self) -> float:
        """Seconds one delivery may take, at most."""
        ...

    async def deliver(self, task: Task) -> AttemptResult:
        """Never raises for a failed delivery: the result says what happened."""
        ...

    async def close(self) -> None: ...


def worker_name(node: str = "") -> str:
    """A name unique to this worker among every process that claims from the store."""
    return f"{node or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class _Lane:
    sender: Sender
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    paused_until: float = 0.0
    logged_at: float = -LOG_EVERY


class OutboxWorker:
    def __init__(
        self,
        store: InboxStore,
        senders: Sequence[Sender],
        *,
        name: str | None = None,
        metrics: OutboxMetrics | None = None,
        retention: float = 7 * 86400.0,
        grace: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.name = name or worker_name()
        self.metrics = metrics if metrics is not None else OutboxMetrics()
        self.retention = retention
        self.grace = grace
        self.clock = clock
        self._lanes = [_Lane(s) for s in senders]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def destinations(self) -> list[str]:
        return [lane.sender.destination for lane in self._lanes]

    def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_lane(lane)) for lane in self._lanes]
        self._tasks.append(loop.create_task(self._upkeep()))
        log.info("outbox worker %s delivering to %s", self.name, ", ".join(self.destinations) or "nothing")

    def wake(self) -> None:
        """Claim now (new tasks were appended)."""
        for lane in self._lanes:
            lane.wakeup.set()

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        flying = [t for lane in self._lanes for t in lane.in_flight]
        if flying:
            _, pending = await asyncio.wait(flying, timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.info("outbox worker %s: %d deliveries cut short at stop", self.name, len(pending))
        for lane in self._lanes:
            await lane.sender.close()

    # ---------------------------------------------------------------- lanes

    async def _run_lane(self, lane: _Lane) -> None:
        sender = lane.sender
        lease = sender.timeout + LEASE_MARGIN
        delay = POLL_MIN
        while not self._stopping:
            lane.wakeup.clear()
            free = sender.concurrency - len(lane.in_flight)
            wait = lane.paused_until - self.clock()
            if free <= 0 or wait > 0:
                await self._wait(lane, wait if free > 0 else POLL_MAX)
                continue
            try:
                tasks = await self.store.claim(self.name, [sender.destination], limit=free, lease=lease)
            except InboxError as exc:
                self._warn(lane, f"claim failed: {exc}")
                await self._wait(lane, POLL_MAX)
                continue
            for task in tasks:
                delivery = asyncio.get_running_loop().create_task(self._deliver(lane, task))
                lane.in_flight.add(delivery)
                delivery.add_done_callback(partial(self._done, lane))
            if tasks:
                delay = POLL_MIN
                continue
            await self._wait(lane, delay)
            delay = min(delay * 2, POLL_MAX)

    @staticmethod
    async def _wait(lane: _Lane, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await lane.wakeup.wait()

    def _done(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        lane.in_flight.discard(task)
        lane.wakeup.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox delivery crashed: %r", task.exception())

    async def _deliver(self, lane: _Lane, task: Task) -> None:
        sender = lane.sender
        try:
            async with asyncio.timeout(sender.timeout + CUTOFF_SLACK):
                result = await sender.deliver(task)
        except TimeoutError:
            result = AttemptResult(ok=False, error="timeout: the delivery took too long", retryable=True)
        except Exception as exc:  # a sender's bug must not lose the task: it is retried and shows here
            log.exception("sender %s failed on task %d", sender.destination, task.id)
            result = AttemptResult(ok=False, error=f"internal error: {type(exc).__name__}", retryable=True)
        if not result.ok and result.retry_after:
            lane.paused_until = max(lane.paused_until, self.clock() + min(result.retry_after, MAX_PAUSE))
        try:
            verdict = await self.store.record(self.name, task, result)
        except InboxError as exc:
            self._warn(
                lane, f"attempt of task {task.id} not recorded (delivered again after its lease): {exc}"
            )
            return
        self.metrics.attempt(sender.destination, verdict)
        if verdict is Verdict.DONE:
            self.metrics.delivered(self.clock() - task.created_at)
        elif verdict is Verdict.DEAD:
            log.warning(
                "delivery to %s dead after %d attempts: %s",
                sender.destination,
                task.attempt,
                result.error[:200],
            )

    def _warn(self, lane: _Lane, message: str) -> None:
        now = time.monotonic()
        if now - lane.logged_at >= LOG_EVERY:
            lane.logged_at = now
            log.warning("outbox %s: %s", lane.sender.destination, message)

    # ---------------------------------------------------------------- upkeep

    async def _upkeep(self) -> None:
        next_prune = time.monotonic() + PRUNE_INTERVAL
        while True:
            try:
                depth = await self.store.outbox_depth()
                self.metrics.set_depth({(d, str(s)): n for (d, s), n in depth.items()})
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_INTERVAL
                    pruned = await self.store.prune(before=self.clock() - self.retention, limit=PRUNE_BATCH)
                    if pruned:
                        log.info("outbox: %d finished deliveries pruned", pruned)
            except InboxError as exc:
                log.warning("outbox upkeep failed: %s", exc)
            await asyncio.sleep(DEPTH_INTERVAL)  # the upkeep's period
