"""Added latency of a document update across nodes, against the same node.

Two nodes (two ``DocumentRooms``, each with its own ``RedisShards``, ``RedisDocumentRelay`` and store) in
one process share one Redis (a ``redis-server`` this script starts on a free port, or ``--redis URL``).
A writing client edits on node A; a reader on node A (same node) and a reader on node B (other node) record
when their node hands them the update (the moment a connection's ``send`` is called: the socket write
after it costs the same on both paths). Updates go one at a time (the next after both readers got the
previous one), so the figures are latencies, not throughput.

Run twice over: edits on the writer node (its own readers wait for the store commit, as on one node) and
edits on a non-writer node (relayed at once; the writer node stores them).

    .venv/bin/python bench/docs_nodes.py [--updates 3000] [--store redis|sqlite] [--redis URL] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from channels.redis_shards import RedisShards
from sync import protocol
from sync.protocol import SyncError
from sync.relay_redis import RedisDocumentRelay
from sync.rooms import DocumentRooms
from sync.store_redis import RedisDocumentStore
from sync.store_sqlite import SqliteDocumentStore


class Reader:
    """A room's peer that timestamps every update message it is sent."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.event = asyncio.Event()

    def send(self, message: bytes) -> None:
        if message[:2] == bytes([protocol.MSG_SYNC, protocol.SYNC_UPDATE]):
            self.arrived.append(time.perf_counter())
            self.event.set()

    def terminate(self, error: SyncError) -> None:
        raise RuntimeError(f"reader terminated: {error.reason}")


class Writer:
    def send(self, message: bytes) -> None:
        pass

    def terminate(self, error: SyncError) -> None:
        raise RuntimeError(f"writer terminated: {error.reason}")


@contextlib.asynccontextmanager
async def redis_server(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = await asyncio.create_subprocess_exec(
        *[
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        shards = RedisShards([f"redis://127.0.0.1:{port}/0"])
        for _ in range(500):
            with contextlib.suppress(Exception):
                await shards.shards[0].redis.ping()
                break
            await asyncio.sleep(0.01)  # polling the server's start
        await shards.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, updates: int, store_kind: str, edit_on_writer: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-docs-"))
    nodes: list[tuple[RedisShards, DocumentRooms]] = []
    try:
        for i in range(2):
            shards = RedisShards([url])
            await shards.start()
            store: Any = (
                RedisDocumentStore(shards) if store_kind == "redis" else SqliteDocumentStore(tmp / f"n{i}.db")
            )
            rooms = DocumentRooms(store, relay=RedisDocumentRelay(shards), unload_delay=60.0)
            nodes.append((shards, rooms))
        key = ("bench", f"doc-{time.time_ns()}")
        first = await nodes[0][1].acquire(key)  # node 0 loads first: the writer
        second = await nodes[1][1].acquire(key)
        assert first.writer and not second.writer
        edit_room, other_room = (first, second) if edit_on_writer else (second, first)
        writer, same, other = Writer(), Reader(), Reader()
        edit_room.join(writer, True)
        edit_room.join(same, True)
        other_room.join(other, True)
        doc: Doc[Any] = Doc()
        text = doc.get("text", type=Text)
        sent: list[float] = []
        for i in range(updates):
            state = doc.get_state()
            text.insert(len(text), "x")
            update = doc.get_update(state)
            message = protocol.update(update)
            same.event.clear()
            other.event.clear()
            sent.append(time.perf_counter())
            edit_room.receive(writer, message)
            async with asyncio.timeout(10):
                while len(same.arrived) <= i:
                    await same.event.wait()
                    same.event.clear()
                while len(other.arrived) <= i:
                    await other.event.wait()
                    other.event.clear()
        same_ms = [(a - s) * 1000 for a, s in zip(same.arrived, sent, strict=True)]
        other_ms = [(a - s) * 1000 for a, s in zip(other.arrived, sent, strict=True)]
        return {
            "edit on": "writer" if edit_on_writer else "non-writer",
            "same p50": statistics.median(same_ms),
            "same p99": percentile(same_ms, 0.99),
            "cross p50": statistics.median(other_ms),
            "cross p99": percentile(other_ms, 0.99),
        }
    finally:
        for shards, rooms in nodes:
            await rooms.close()
            await shards.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--redis", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(measure(args))


async def measure(args: argparse.Namespace) -> None:
    async with redis_server(args.redis) as url:
        print(f"{args.updates} updates one at a time, store={args.store}; ms from receive() to send()")
        for on_writer in (True, False):
            r = await run(url, args.updates, args.store, on_writer)
            print(
                f"edit on {r['edit on']:>10}: same node p50 {r['same p50']:.3f} p99 {r['same p99']:.3f} | "
                f"other node p50 {r['cross p50']:.3f} p99 {r['cross p99']:.3f} | "
                f"added p50 {r['cross p50'] - r['same p50']:+.3f}"
            )


if __name__ == "__main__":
    main()
