"""Running a worker in one process of a deployment at a time: a lease, and a ``Leader`` that runs the worker
while its process holds the lease.

The MQTT bridge must run once per deployment (each bridge publishes every message it receives), whichever
processes are its candidates: nodes (``mqtt_enabled``) and ``switchboard worker`` processes. Candidates
share a ``Lease``:

- ``LocalLease``: a process alone (no Redis): it always holds it.
- ``RedisLease`` (``workers.lease_redis``): a Redis key holding the holder's id with a TTL (the same
  scripts as the document writer's lease: ``channels.redis_shards.CLAIM_LEASE``).

Policies of ``Leader`` (as the document writer's lease, ``sync.relay_redis``):

- Every ``ttl / 3`` it claims (takes a free lease, renews its own). Holding it, it starts the worker;
  answered "another holds it", it stops the worker.
- A claim that fails (Redis down, an error reply) is "unknown": a holder keeps running only until its own
  clock says the lease may have expired (two thirds of a TTL after its last successful claim began), then
  stops, before Redis can hand the lease to another candidate. So two never run at once, as long as
  clocks run at about the same rate.
- ``stop`` stops the worker and releases the lease, so another candidate takes over at its next claim
  (within ``ttl / 3``); a process that dies loses it when the TTL runs out.
- Each change is one log line and the gauge given (``switchboard_mqtt_bridge_active``: 1 where it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("switchboard.workers")


class Lease(Protocol):
    holder: str
    """Who claims (a node's or worker's id), for the log."""

    async def claim(self) -> bool:
        """Take the lease if it is free or renew it if it is ours; True when we hold it now, False when
        another does. Raises when it cannot tell (Redis down, an error reply)."""
        ...

    async def release(self) -> None:
        """Give the lease up if it is ours (best effort: it expires anyway)."""
        ...


class LocalLease:
    """The lease of a process alone: always held."""

    def __init__(self, holder: str) -> None:
        self.holder = holder

    async def claim(self) -> bool:
        return True

    async def release(self) -> None:
        pass


class Leader:
    """Runs ``start``/``stop`` of a worker while this process holds ``lease`` (module docstring)."""

    def __init__(
        self,
        name: str,
        lease: Lease,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        ttl: float,
        on_change: Callable[[bool], None] = lambda active: None,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"a lease's ttl is a positive number of seconds, got {ttl}")
        self.name = name
        self.lease = lease
        self._start = start
        self._stop = stop
        self.ttl = ttl
        self.on_change = on_change
        self.active = False
        """True while this process runs the worker."""
        self.changed = asyncio.Event()
        """Set at every change of ``active`` (tests wait on it; clear it first)."""
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Claim once now (a process alone, or the first candidate, runs the worker when this returns),
        then every ``ttl / 3``."""
        if self._task is None:
            try:
                await self.step()
            except Exception:
                log.exception("%s: starting failed", self.name)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker if it runs here and release the lease."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        was_active = self.active
        await self._set(False, "stopped")
        if was_active:
            try:
                await self.lease.release()
            except Exception as exc:  # it expires by itself
                log.warning("%s lease not released: %r", self.name, exc)

    async def step(self) -> bool:
        """One claim and what it decides; ``active`` after it."""
        started = time.monotonic()
        try:
            held: bool | None = await self.lease.claim()
        except Exception as exc:  # unknown: keep running only while our last claim surely holds
            log.debug("%s lease claim failed: %r", self.name, exc)
            held = None
        if held:
            self._valid_until = started + self.ttl * 2 / 3
            await self._set(True, f"{self.lease.holder} holds the lease")
        elif held is False:
            await self._set(False, "another process holds the lease")
        elif time.monotonic() >= self._valid_until:
            await self._set(False, "the lease could not be renewed")
        return self.active

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.step()
            except Exception:  # the worker's start or stop failed: try again at the next claim
                log.exception("%s: starting or stopping failed", self.name)

    async def _set(self, active: bool, why: str) -> None:
        if active == self.active:
            return
        if active:
            await self._start()
        else:
            await self._stop()
        self.active = active
        self.on_change(active)
        self.changed.set()
        log.info("%s %s here: %s", self.name, "runs" if active else "no longer runs", why)
