"""Whether this node can reach the brokers it needs: what ``/ready`` reports besides starting and stopping.

Policy: every ``interval`` seconds (``node_info_interval``) the probe asks every Redis server of the
deployment to answer (``RedisShards.unreachable``: pub/sub connected, and a PING back within
``redis_connect_timeout``). While any of them does not, the node is not ready: publish, history and
presence on its channels would fail with error 100, so a load balancer should send new clients to a node
that can serve them. Clients already connected stay. The first check runs at start, so a node that comes
up without its Redis is not ready until it can reach it. Each change is one log line (WARNING when a
server is lost, INFO when every one is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchboard.readiness")

Probe = Callable[[], Awaitable[dict[str, str]]]
"""Returns the brokers that cannot be reached now, by name, each with the reason."""


class BrokerWatch:
    """Runs ``probe`` every ``interval`` seconds and keeps its last answer in ``down``."""

    def __init__(self, probe: Probe, interval: float) -> None:
        self.probe = probe
        self.interval = interval
        self.down: dict[str, str] = {}
        """The brokers the last check could not reach (name -> reason); empty: every one answered."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check once (so ``down`` is true from the start), then keep checking in the background."""
        if self._task is None:
            await self.check()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="broker watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> None:
        try:
            down = await self.probe()
        except Exception as exc:  # a bug in a probe must not stop the checks, nor claim readiness
            log.exception("broker check failed")
            down = {"probe": repr(exc)}
        lost = sorted(set(down) - set(self.down))
        if lost:
            log.warning("not ready: %s", "; ".join(down[name] for name in lost))
        elif self.down and not down:
            log.info("ready again: every broker answers")
        self.down = down

    def reason(self) -> str:
        """Why the node is not ready, for ``/ready`` ("" while every broker answers)."""
        return "broker unreachable: " + ", ".join(sorted(self.down)) if self.down else ""

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the period of the check itself
            await self.check()
