"""A console tab's live events (Server-Sent Events at ``/admin/api/events``), and the node roster.

One stream per console session (a newer stream of the same session replaces the older: ``replaced``),
at most ``admin_max_streams`` per node. Its events, each ``event: <kind>`` with one JSON line:

- ``nodes``: every node of the hub (``info`` as announced on the control channel, so no node is asked
  anything; with a tenant, also that tenant's counts by survey) and the nodes recently gone, every
  ``node_info_interval``;
- for the inspected channel (at most one, ``?channel=``): ``presence`` (a full state, then ``presence_diff``
  for every join and leave the broker delivers: ``hub.admin.presence_diff``), ``pub`` (a publication as
  it passes: offset, info, data cut to ``PREVIEW_BYTES``) and ``meter`` (publications per second, total,
  dropped) once a second;
- ``signed_out`` (the session expired or was revoked, checked at each heartbeat) and ``replaced``, after
  which the stream ends; a comment line every ``HEARTBEAT`` seconds keeps proxies from closing it.

Bounds (a slow browser never makes the node hold more): the stream's queue holds at most ``QUEUE_BYTES``;
the tail forwards at most ``TAIL_RATE`` publications a second (``TAIL_BURST`` at once) and drops the rest
with a counter, as it drops what does not fit the queue. A presence diff that does not fit is not
dropped silently: the presence is marked stale and a fresh full state is read and sent instead.

The console never subscribes to every channel: the node taps the one inspected channel
(``Node.tap``), and cluster figures come from the nodes' own announcements.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from channels.names import ChannelKey
from channels.publication import ClientInfo, Publication
from hub import sse
from hub.admin import presence_diff as pd
from hub.admin.inspect import _json_preview
from hub.bots.identity import is_bot
from hub.limits import TokenBucket
from presence.presence import PresenceUnavailable

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.admin")

HEARTBEAT = 15.0
QUEUE_BYTES = 512 * 1024
PREVIEW_BYTES = 2048
TAIL_RATE = 50.0
TAIL_BURST = 100
MAX_PRESENCE = 1000
"""Connections a tab's presence list holds at most (the first ones; the page says when it is cut)."""
GONE_KEPT = 64
GONE_FOR = 3600.0
"""A node that vanished is shown as gone for this long (at most GONE_KEPT of them)."""


# ---------------------------------------------------------------- the node roster (pure)


@dataclass(slots=True)
class Roster:
    """The nodes last seen and those that vanished (``gone``: name -> (last info, when it vanished))."""

    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)

    def update(self, nodes: list[dict[str, Any]], now: float) -> None:
        current = {str(n.get("name")): n for n in nodes}
        for name, info in self.live.items():
            if name not in current:
                self.gone[name] = (info, now)
        for name in current:
            self.gone.pop(name, None)
        self.live = current
        for name in [n for n, (_, at) in self.gone.items() if now - at > GONE_FOR]:
            del self.gone[name]
        while len(self.gone) > GONE_KEPT:
            oldest = min(self.gone, key=lambda n: self.gone[n][1])
            del self.gone[oldest]

    def as_json(self) -> dict[str, Any]:
        return {
            "nodes": list(self.live.values()),
            "gone": [{"info": info, "gone_at": at} for info, at in self.gone.values()],
        }


# ---------------------------------------------------------------- presence metas


def meta_of(info: ClientInfo) -> dict[str, Any]:
    meta: dict[str, Any] = {"client": info.client, "user": info.user}
    if is_bot(info.conn_info):
        meta["bot"] = True
    if info.conn_info is not None:
        meta["conn_info"] = _json_preview(info.conn_info)
    if info.chan_info is not None:
        meta["chan_info"] = _json_preview(info.chan_info)
    return meta


# ---------------------------------------------------------------- one tab's stream


class Stream:
    """The events of one console tab. ``events()`` yields the bytes to write; the tap methods are called
    by the node on its fan-out path and only queue."""

    def __init__(
        self,
        node: Node,
        *,
        sid: str,
        tenant: str | None,
        key: ChannelKey | None,
        presence: bool,
        live_presence: bool,
        nodes: Callable[[], Awaitable[dict[str, Any]]],
        still_valid: Callable[[], Awaitable[bool]],
        interval: float,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.node = node
        self.sid = sid
        self.tenant = tenant
        self.key = key
        self.presence = presence
        self.live_presence = live_presence
        self._nodes = nodes
        self._still_valid = still_valid
        self.interval = interval
        self.heartbeat = heartbeat
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._ended: str | None = None
        self._state: pd.State = {}
        self._pending: list[pd.Diff] | None = []
        """Diffs that arrived before the first full state was read (None once it was)."""
        self._stale = False
        self._truncated = False
        """The presence list holds only the first MAX_PRESENCE connections."""
        self._bucket = TokenBucket(TAIL_RATE, TAIL_BURST, time.monotonic())
        self.total = 0
        self.dropped = 0
        self._second = 0

    # ------------------------------------------------------------ queueing (synchronous)

    def _put(self, kind: str, body: Any) -> bool:
        frame = sse.event(orjson.dumps(body, default=str), name=kind.encode())
        if self._queued + len(frame) > QUEUE_BYTES:
            return False
        self._queue.append(frame)
        self._queued += len(frame)
        self._wakeup.set()
        return True

    def end(self, kind: str, body: Any = None) -> None:
        """Send ``kind`` (``replaced``, ``signed_out``) and end the stream (even when the queue is full)."""
        if self._ended is None:
            self._ended = kind
            frame = sse.event(orjson.dumps(body or {}), name=kind.encode())
            self._queue.append(frame)
            self._queued += len(frame)
            self._wakeup.set()

    # ------------------------------------------------------------ ChannelTap

    def publication(self, key: ChannelKey, pub: Publication) -> None:
        self.total += 1
        self._second += 1
        if not self._bucket.take(time.monotonic()):
            self.dropped += 1
            return
        data = pub.data
        body: dict[str, Any] = {"offset": pub.offset, "time": time.time(), "size": len(data)}
        if self.node is not None and self.node.namespaces.binary(key[1]):  # (tests give no node)
            # Any bytes: shown as base64, as every JSON surface shows binary data (hub.wire)
            body["data"] = base64.b64encode(data[:PREVIEW_BYTES]).decode()
            body["binary"] = True
            if len(data) > PREVIEW_BYTES:
                body["truncated"] = True
        elif len(data) > PREVIEW_BYTES:
            body["data"] = data[:PREVIEW_BYTES].decode(errors="replace")
            body["truncated"] = True
        else:
            body["data"] = orjson.Fragment(data)
        if pub.info is not None:
            body["info"] = {"user": pub.info.user, "client": pub.info.client}
        if pub.tags:
            body["tags"] = pub.tags
        if not self._put("pub", body):
            self.dropped += 1

    def join(self, key: ChannelKey, info: ClientInfo) -> None:
        self._diff(pd.join(meta_of(info)))

    def leave(self, key: ChannelKey, info: ClientInfo) -> None:
        self._diff(pd.leave(meta_of(info)))

    def _diff(self, diff: pd.Diff) -> None:
        if self._pending is not None:
            if len(self._pending) < MAX_PRESENCE:
                self._pending.append(diff)
            else:
                self._stale = True
            return
        if diff.joins and pd.count(self._state)[0] >= MAX_PRESENCE:
            # The list shows the first MAX_PRESENCE connections; later joins are not kept (leaves are).
            self._truncated = True
            diff = pd.Diff(leaves=diff.leaves)
        synced = pd.sync_diff(self._state, diff)
        self._state = synced.state
        if synced.diff and not self._put("presence_diff", self._presence_body(synced.diff.as_json())):
            self._stale = True
            self._wakeup.set()

    def _presence_body(self, body: dict[str, Any]) -> dict[str, Any]:
        connections, users = pd.count(self._state)
        return {**body, "num_clients": connections, "num_users": users, "truncated": self._truncated}

    # ------------------------------------------------------------ the loop

    async def _full_presence(self) -> None:
        """Read the channel's presence and send it whole (after any diffs that arrived meanwhile)."""
        assert self.key is not None
        try:
            members = await self.node.presence.get(self.key)
        except PresenceUnavailable:
            self._put("presence", {"available": True, "error": "presence backend unavailable"})
            return
        metas = [meta_of(info) for info in members.values()]
        state = pd.from_metas(metas[:MAX_PRESENCE])
        for diff in self._pending or ():
            state = pd.sync_diff(state, diff).state
        self._pending = None
        self._stale = False
        self._truncated = len(metas) > MAX_PRESENCE
        self._state = state
        connections, users = pd.count(state)
        body = {
            "available": True,
            "live": self.live_presence,
            "state": {k: dict(v) for k, v in state.items()},
            "num_clients": max(connections, len(members)) if len(metas) > MAX_PRESENCE else connections,
            "num_users": users,
            "truncated": self._truncated,
        }
        if not self._put("presence", body):
            self._stale = True

    async def events(self) -> Any:
        """Yield the stream's bytes until it ends. The caller writes them and stops iterating when the
        browser is gone; the tap is the caller's to remove."""
        yield sse.retry(3000)
        loop = asyncio.get_running_loop()
        next_nodes = next_beat = next_meter = loop.time()
        if self.key is not None:
            if self.presence:
                await self._full_presence()
            else:
                self._pending = None
                self._put("presence", {"available": False})
        while True:
            now = loop.time()
            if now >= next_nodes:
                next_nodes = now + self.interval
                with contextlib.suppress(Exception):
                    self._put("nodes", await self._nodes())
            if self.key is not None and now >= next_meter:
                next_meter = now + 1.0
                self._put("meter", {"rate": self._second, "total": self.total, "dropped": self.dropped})
                self._second = 0
            if now >= next_beat:
                next_beat = now + self.heartbeat
                if not await self._still_valid():
                    self.end("signed_out")
                else:
                    yield sse.HEARTBEAT
            if self._stale and self.key is not None and self.presence:
                await self._full_presence()
            while self._queue:
                frame = self._queue.popleft()
                self._queued -= len(frame)
                yield frame
            if self._ended is not None:
                return
            self._wakeup.clear()
            wait = min(next_nodes, next_beat, next_meter if self.key is not None else next_beat) - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, wait))
