"""Channels a part of the node must see every publication of, found by pattern as they are published to:
threshold alerts evaluate the readings of the channels their rules match, the MQTT bridge forwards the
channels its outbound routes match. Nobody can subscribe to a pattern, and the channels are not known in
advance, so the node learns them from publications.

How (``Watch``):

- ``patterns`` are every pattern configured for any such part (the same config on every node), whether or
  not this node runs the part: a node that accepts a publication must tell the nodes that do.
- ``Node.publish_to`` calls ``seen(key)`` before it publishes. The first time a node publishes to a channel
  that a pattern matches (and again after ``REANNOUNCE`` seconds), it asks every node (a control survey,
  ``watch``, this node included) to watch it, and waits for their answers: a node watches the channel if
  one of its own listeners' patterns matches it, by tapping it (``Node.tap``: the broker delivers the
  channel to it), and answers once the tap is in place. So every watching node sees the publication that
  made the channel known, and every one after it, in the broker's order.
- A watched channel without a publication for ``IDLE`` seconds is let go (untapped; its next publication
  announces it again). At most ``max_channels`` are watched per node: past it, new ones are not (counted in
  ``dropped``, one rate-limited log line) rather than grow without bound; such a channel is announced again
  after ``RETRY`` seconds. What a node remembers having announced is bounded too (``max_known``: then it
  forgets, and announces again).
- The control channel down: the survey fails, the publication goes ahead (a watch is worth less than a
  reading), this node watches the channel itself, and the next publication after ``REANNOUNCE`` asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from channels.names import ChannelKey
from channels.publication import ClientInfo, Publication
from hub.control import ControlUnavailable
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.node import ChannelTap, Node

log = logging.getLogger("switchboard.watch")

SURVEY = "watch"
REANNOUNCE = 300.0
"""Seconds after which a node publishing to a watched channel asks the others to watch it again."""
IDLE = 600.0
"""Seconds without a publication after which a node lets a watched channel go."""
SWEEP = 60.0
"""Seconds between two looks for idle channels."""
RETRY = 30.0
"""Seconds after which a channel some node could not watch (its bound, the control channel down) is
announced again."""


class _Fanout:
    """The node's one tap of a watched channel: hands each publication to the listeners that want it."""

    __slots__ = ("listeners", "last")

    def __init__(self, listeners: list[ChannelTap]) -> None:
        self.listeners = listeners
        self.last = time.monotonic()

    def publication(self, key: ChannelKey, pub: Publication) -> None:
        self.last = time.monotonic()
        for listener in self.listeners:
            listener.publication(key, pub)

    def join(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    def leave(self, key: ChannelKey, info: ClientInfo) -> None:
        pass


class Watch:
    def __init__(
        self,
        node: Node,
        patterns: Sequence[Callable[[str], bool]],
        *,
        max_channels: int = 10_000,
        max_known: int = 100_000,
    ) -> None:
        self.node = node
        self.patterns = list(patterns)
        """Every configured pattern, as a matcher of channel names (truthy: ``publish_to`` calls ``seen``)."""
        self.max_channels = max_channels
        self.max_known = max_known
        self._listeners: list[tuple[Callable[[str], bool], ChannelTap]] = []
        self._known: dict[ChannelKey, float] = {}
        """Channels this node has decided on: when it last announced one a pattern matches (0.0: none
        matches)."""
        self.watched: dict[ChannelKey, _Fanout] = {}
        self.dropped = 0
        self._announcing: dict[ChannelKey, asyncio.Future[None]] = {}
        """Announcements in flight: a publish to the same channel meanwhile waits for the same one."""
        self._sweeper: asyncio.Task[None] | None = None

    def listen(self, matches: Callable[[str], bool], listener: ChannelTap) -> None:
        """Hand ``listener`` every publication of the channels ``matches`` takes (from the first one
        published after the node learns of the channel). Every channel it takes, one of ``patterns``
        must take too (they come from the same config)."""
        self._listeners.append((matches, listener))

    def start(self) -> None:
        """Answer other nodes' announcements (on the node's control channel, as set when it starts) and
        let idle channels go."""
        self.node.control.answer(SURVEY, self._answer)
        if self._listeners and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # ------------------------------------------------------------ publishing side

    async def seen(self, key: ChannelKey) -> None:
        """About to publish to ``key``: make sure every node that watches such channels watches it."""
        now = time.monotonic()
        announced = self._known.get(key)
        if announced is not None and (announced == 0.0 or now - announced < REANNOUNCE):
            in_flight = self._announcing.get(key)
            if in_flight is not None:
                await asyncio.shield(in_flight)
            return
        if announced is None and not any(match(key[1]) for match in self.patterns):
            self._remember(key, 0.0)
            return
        self._remember(key, now)
        done = self._announcing[key] = asyncio.get_running_loop().create_future()
        try:
            answers = await self.node.control.survey(SURVEY, [key[0], key[1]])
            if not all(answers.values()):  # a node at its bound: ask again sooner
                self._remember(key, now - REANNOUNCE + RETRY)
        except ControlUnavailable as exc:
            log_limited(log, logging.WARNING, "watch of a channel not announced to every node: %s", exc)
            self._remember(key, now - REANNOUNCE + RETRY)
            await self._watch(key)
        finally:
            del self._announcing[key]
            done.set_result(None)

    def _remember(self, key: ChannelKey, when: float) -> None:
        if len(self._known) >= self.max_known:
            self._known.clear()
        self._known[key] = when

    # ------------------------------------------------------------ watching side

    async def _answer(self, args: list[Any]) -> bool:
        """Another node's (or this one's) announcement: True once watched (or not wanted here), False when
        wanted but at the bound (the announcing node asks again after ``RETRY``)."""
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            return True
        return await self._watch((args[0], args[1]))

    async def _watch(self, key: ChannelKey) -> bool:
        if key in self.watched:
            return True
        listeners = [listener for match, listener in self._listeners if match(key[1])]
        if not listeners:
            return True
        if len(self.watched) >= self.max_channels:
            self.dropped += 1
            log_limited(
                log, logging.WARNING, "%d channels watched already: %s is not", self.max_channels, key[1]
            )
            return False
        fanout = self.watched[key] = _Fanout(listeners)
        try:
            await self.node.tap(key, fanout)
        except BaseException:
            self.watched.pop(key, None)
            raise
        return True

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                log.exception("sweep of watched channels failed")

    async def sweep(self, now: float) -> None:
        """Let go the watched channels idle for ``IDLE`` seconds."""
        for key, fanout in list(self.watched.items()):
            if now - fanout.last >= IDLE and self.watched.get(key) is fanout:
                del self.watched[key]
                self._known.pop(key, None)
                await self.node.untap(key, fanout)
