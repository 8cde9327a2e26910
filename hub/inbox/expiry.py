"""The inbox's expiry sweep: every node deletes expired items now and then and pushes the new counts of
each user who lost some, so their badges move without anyone asking.

An item is neither listed nor counted from its ``expire_at`` on (the store subtracts the expired items
not swept yet when it counts), so the sweep is not what makes ``inbox.list`` and ``inbox.counts`` right:
it deletes the rows, moves the counters, and tells the devices. It pushes ``inbox.counts`` with a new
version (``InboxStore.expire`` bumps it), so a device that read ``inbox.counts`` in between (the same
version, the expired items already left out) takes the push as news and shows the same numbers.

Policies:

- Every ``inbox_expire_interval`` on every node (0: this node does not sweep); the first sweep comes after
  a random part of the interval, so nodes started together do not sweep together. Several nodes sweeping
  one database at once is safe and costs little: the store deletes each item in one transaction and moves
  the counters only for the rows it deleted (SQLite: one writer at a time; PostgreSQL: the users' counter
  rows are locked, then ``DELETE ... RETURNING`` skips rows another sweep deleted meanwhile), so each
  removal is counted once and pushed once, by the node that made it. A sweep that finds nothing expired
  is one indexed query.
- Bounded: at most ``BATCH`` items a transaction and ``MAX_BATCHES`` transactions a sweep; what is left
  waits for the next sweep. The pushes of a batch go out (``Notifications.push_swept``: at most
  ``PUSH_CONCURRENCY`` in flight) before the next batch is deleted: one per user and batch, each with the
  next version (a device sees no version skipped, so it has no reason to read its inbox again), and never
  more pushes than items deleted. Pushing once per user at the end of a sweep would send fewer when a
  user's items span batches, but skip versions, and every such device would then read its inbox again.
- A store that fails is logged (``hub.logs.log_limited``) and tried again at the next interval; the loop
  never ends on an error. A push that fails is the pushes' business (counted and logged there): the
  change is stored, and the next ``inbox.counts`` or push shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from hub.logs import log_limited
from inbox.errors import InboxError
from inbox.inbox import InboxStore
from inbox.model import UserCounts

log = logging.getLogger("switchboard.inbox")

BATCH = 1000
"""Expired items one transaction deletes."""
MAX_BATCHES = 10
"""Transactions one sweep runs at most (``BATCH`` each)."""

PushSwept = Callable[[Sequence[UserCounts]], Awaitable[None]]


class ExpirySweep:
    """The periodic sweep of one node (module docstring)."""

    def __init__(
        self,
        store: InboxStore,
        push: PushSwept,
        interval: float,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.push = push
        self.interval = interval
        self.rand = rand
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inbox expiry")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        await asyncio.sleep(self.interval * self.rand())  # the period's phase, drawn once per node
        while True:
            await self.sweep()
            await asyncio.sleep(self.interval)  # the sweep's period

    async def sweep(self) -> int:
        """Delete up to ``MAX_BATCHES`` batches of expired items and push each affected user's counts;
        returns how many pushes (users of a batch) went out. Never raises for a failing store."""
        pushed = 0
        for _ in range(MAX_BATCHES):
            try:
                swept = await self.store.expire(limit=BATCH)
            except InboxError as exc:
                log_limited(log, logging.WARNING, "inbox expiry sweep failed: %s", str(exc)[:300])
                break
            if not swept:
                break  # every batch that deleted something names at least one user
            await self.push(swept)
            pushed += len(swept)
        return pushed
