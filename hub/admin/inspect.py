"""What one node tells the console about itself: its figures (announced with ``info``), a user's
connections and its open documents (answers to the console's control-channel surveys).

Every answer is bounded (``MAX_CONNECTIONS``, ``MAX_DOCUMENTS``, ``MAX_STATE``, a client's subscriptions
are at most ``client_channel_limit``) and made of plain msgpack-able values, since it crosses the control
channel. Nothing here changes a node.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from hub.wire import PROTOBUF
from sync.protocol import NULL_STATE

if TYPE_CHECKING:
    from channels.redis_shards import RedisShards
    from hub.docs import Documents
    from hub.node import Node

MAX_CONNECTIONS = 500
"""Connections of one user one node lists at most (the count says how many there are)."""
MAX_DOCUMENTS = 500
"""Open documents one node lists at most (the busiest first)."""
MAX_STATE = 2048
"""Bytes of one awareness state or connection info shown; longer ones are cut (and say so)."""


def _json_preview(raw: bytes | None) -> Any:
    """A client-chosen JSON value for display: parsed when short, else a cut string."""
    if raw is None:
        return None
    if len(raw) > MAX_STATE:
        return {"truncated": True, "text": raw[:MAX_STATE].decode(errors="replace")}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"unreadable": raw[:MAX_STATE].decode(errors="replace")}


class ProcessFigures:
    """CPU (percent of one core since the last reading) and resident memory of this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last = (clock(), time.process_time())

    def read(self) -> dict[str, float]:
        now, cpu = self.clock(), time.process_time()
        wall = now - self._last[0]
        percent = 100.0 * (cpu - self._last[1]) / wall if wall > 0 else 0.0
        self._last = (now, cpu)
        return {"cpu": round(percent, 1), "rss": rss_bytes()}


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def node_figures(
    documents: Documents, redis: RedisShards | None, process: ProcessFigures | None = None
) -> Callable[[], dict[str, Any]]:
    """A source for ``Node.info_sources``: process, documents and Redis shards of this node."""
    process = process if process is not None else ProcessFigures()

    def figures() -> dict[str, Any]:
        out: dict[str, Any] = {
            "process": process.read(),
            "num_documents": len(documents.rooms.rooms),
            "num_doc_connections": len(documents.peers),
        }
        if redis is not None:
            out["redis"] = [{"name": s.name, "connected": s.connected} for s in redis.shards]
        return out

    return figures


# ---------------------------------------------------------------- a user's connections


def user_connections(node: Node, tenant: str, user: str) -> dict[str, Any]:
    """This node's connections of ``user`` in ``tenant`` (at most MAX_CONNECTIONS, oldest first)."""
    now_mono, now_wall = time.monotonic(), time.time()
    clients = sorted(node.registry.user_clients(tenant, user), key=lambda c: c.created)
    out = []
    for c in clients[:MAX_CONNECTIONS]:
        out.append(
            {
                "node": node.id,
                "client": c.id,
                "user": c.user,
                "bot": c.bot,
                "transport": c.transport.name,
                "protocol": "protobuf" if c.fmt == PROTOBUF else "json",
                "sdk": {"name": c.name, "version": c.version},
                "remote": c.remote,
                "session": c.session,
                "connected_at": round(now_wall - (now_mono - c.created), 3),
                "expires_at": c.expires_at,
                "subscriptions": sorted(name for name, sub in c.subs.items() if sub.active),
                "conn_info": _json_preview(c.conn_info),
            }
        )
    return {"connections": out, "total": len(clients)}


# ---------------------------------------------------------------- documents


def open_documents(documents: Documents, tenant: str, node_id: str) -> dict[str, Any]:
    """This node's open documents of ``tenant``: the busiest MAX_DOCUMENTS."""
    rooms = [room for key, room in documents.rooms.rooms.items() if key[0] == tenant]
    rooms.sort(key=lambda r: (-len(r.peers), r.key[1]))
    out = [
        {
            "node": node_id,
            "name": room.key[1],
            "connections": len(room.peers),
            "awareness": len(room.awareness),
            "size": room.size,
            "writer": room.writer,
            "unstored": room.unstored,
            "log_rows": room.log_rows,
            "stored_at": room.stored_at,
        }
        for room in rooms[:MAX_DOCUMENTS]
    ]
    return {"documents": out, "total": len(rooms)}


def document_peers(documents: Documents, tenant: str, name: str, node_id: str) -> dict[str, Any] | None:
    """Who has document ``name`` open on this node, and each connection's awareness states (cursor,
    name, ...); None when it is not open here."""
    room = documents.rooms.rooms.get((tenant, name))
    if room is None:
        return None
    peers = []
    for peer, can_write in list(room.peers.items())[:MAX_CONNECTIONS]:
        states = []
        for client_id in sorted(room.awareness.owned_by(peer)):
            state = room.awareness.state(client_id)
            if state is not None and state != NULL_STATE:
                states.append({"client_id": client_id, "state": _json_preview(state)})
        access = getattr(peer, "access", None)
        peers.append(
            {
                "node": node_id,
                "id": getattr(peer, "id", ""),
                "user": access.user if access is not None else "",
                "write": can_write,
                "remote": getattr(peer, "remote", ""),
                "awareness": states,
            }
        )
    return {
        "node": node_id,
        "size": room.size,
        "writer": room.writer,
        "unstored": room.unstored,
        "log_rows": room.log_rows,
        "stored_at": room.stored_at,
        "peers": peers,
        "total_peers": len(room.peers),
    }
