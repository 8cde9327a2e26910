"""A node's periodic presence refresh on Redis: its wall time, how long it holds the event loop, and what
it does when Redis stalls in the middle of it (issue 15: a node of the 100,000-connection run logged
"presence refresh of 15213 entries failed" during the connect storm).

Starts its own redis-server on a free loopback port (tests/redis_servers.py; never the system Redis). The
node's sessions are stand-ins (one subscription with presence each, ``--n`` of them over ``--channels``
channels), read as ``hub.node.Node._presence_entries`` reads them. For each implementation (this tree's
``presence/presence_redis.py``, and ``--before FILE``, e.g. an older one from ``git show``):

1. a refresh of every entry with Redis idle: wall time and the longest the loop was held (a 1 ms ticker's
   worst lateness), reading the sessions included;
2. the same with Redis stalled (``CLIENT PAUSE --pause-ms WRITE``) just as it starts, the node's Redis
   timeout ``--timeout`` s: what the refresh says, how long it took, how many entries it renewed, and how
   many of the adds sent meanwhile (one every 5 ms to other channels, as subscribes would) failed.

usage: .venv/bin/python bench/presence_refresh.py [--n 20000] [--channels 100] [--pause-ms 3000]
       git show <commit>:presence/presence_redis.py > /tmp/before.py
       .venv/bin/python bench/presence_refresh.py --before /tmp/before.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from channels.names import ChannelKey  # noqa: E402
from channels.publication import ClientInfo  # noqa: E402
from channels.redis_shards import RedisShards, route_of  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402

TTL = 60.0


class Sub:
    __slots__ = ("active", "info", "key", "presence")

    def __init__(self, key: ChannelKey, info: ClientInfo) -> None:
        self.key, self.info, self.active, self.presence = key, info, True, True


class Session:
    __slots__ = ("subs",)

    def __init__(self, sub: Sub) -> None:
        self.subs = {sub.key[1]: sub}


def sessions(n: int, channels: int) -> set[Session]:
    return {
        Session(
            Sub(("", f"many{i % channels}"), ClientInfo(f"user{i}", f"{i:08x}-3f1c-4b5e-9a7d-1c2e3f4a5b6c"))
        )
        for i in range(n)
    }


def lazily(held: set[Session]) -> Iterator[tuple[ChannelKey, ClientInfo]]:
    """As hub.node.Node._presence_entries reads the sessions."""
    for client in list(held):
        for sub in list(client.subs.values()):
            if sub.active and sub.presence:
                yield sub.key, sub.info


def at_once(held: set[Session]) -> list[tuple[ChannelKey, ClientInfo]]:
    """As the node read them before: one list, in one step."""
    return [(sub.key, sub.info) for c in held for sub in c.subs.values() if sub.active and sub.presence]


class Ticker:
    """The worst lateness of a 1 ms timer: how long the loop was held at most (and by the collector)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.gc = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - t - 0.001)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc = max(self.gc, time.perf_counter() - self._gc_started)

    async def stop(self) -> float:
        gc.callbacks.remove(self._gc)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        return self.worst


def load(path: str | None) -> Any:
    if path is None:
        from presence import presence_redis

        return presence_redis
    spec = importlib.util.spec_from_file_location("presence_redis_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def renewed(r: aioredis.Redis, shards: RedisShards, channels: int, since: float) -> int:
    """Entries whose expire-at was set at or after ``since`` (Redis time)."""
    n = 0
    for c in range(channels):
        zkey = shards.key("presence_exp", route_of("", f"many{c}"))
        n += await r.zcount(zkey, since + TTL, "+inf")
    return n


async def run(label: str, module: Any, server: RedisServer, a: argparse.Namespace) -> None:
    lazy = hasattr(module, "REFRESH_SLICE")  # this tree's: reads the sessions itself
    held = sessions(a.n, a.channels)
    shards = RedisShards([server.url], connect_timeout=a.timeout)
    await shards.start()
    r = aioredis.Redis.from_url(server.url)
    try:
        p = module.RedisPresence(shards, ttl=TTL, node_id="bench")
        await p.refresh(at_once(held))  # every entry present once

        async def refresh() -> str:
            try:
                await p.refresh(lazily(held) if lazy else at_once(held))
                return "ok"
            except Exception as exc:  # noqa: BLE001 - reported
                return f"{type(exc).__name__}: {exc}"[:220]

        for rnd in range(a.rounds):
            ticker = Ticker()
            await asyncio.sleep(0.01)  # the ticker runs before the refresh starts
            t = time.perf_counter()
            outcome = await refresh()
            wall = time.perf_counter() - t
            worst = await ticker.stop()
            print(
                f"{label} idle redis #{rnd + 1}: {outcome}; wall {wall * 1e3:.0f} ms,"
                f" loop held <= {worst * 1e3:.1f} ms (longest collection {ticker.gc * 1e3:.1f} ms)"
            )

        failed_adds = 0
        stop = asyncio.Event()

        async def adds() -> None:
            nonlocal failed_adds
            i = 0
            while not stop.is_set():
                try:
                    await p.add(("", f"late{i % a.channels}"), ClientInfo("late", f"late-{i}"))
                except Exception:  # noqa: BLE001 - counted
                    failed_adds += 1
                i += 1
                await asyncio.sleep(0.005)

        seconds, micros = await r.time()
        since = seconds + micros / 1e6
        adder = asyncio.get_running_loop().create_task(adds())
        server.command("CLIENT", "PAUSE", str(a.pause_ms), "WRITE")
        t = time.perf_counter()
        outcome = await refresh()
        wall = time.perf_counter() - t
        stop.set()
        await adder
        server.command("CLIENT", "UNPAUSE")
        n = await renewed(r, shards, a.channels, since)
        print(
            f"{label} redis paused {a.pause_ms} ms: {outcome}\n"
            f"    wall {wall:.1f} s; {n} of {a.n} entries renewed; {failed_adds} adds failed meanwhile"
        )
    finally:
        await r.aclose()
        await shards.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause-ms", type=int, default=3000)
    ap.add_argument("--timeout", type=float, default=1.0, help="the node's redis_connect_timeout")
    ap.add_argument("--before", help="another presence_redis.py to measure in the same run")
    a = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        if a.before:
            await run("before", load(a.before), server, a)
            server.command("FLUSHALL")
        await run("after ", load(None), server, a)
    finally:
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
