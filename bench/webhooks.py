"""Webhook deliveries per second from the outbox to a local receiver, and the delay from event to delivery
at a steady rate below that, on SQLite and on PostgreSQL; with a baseline from the same run: the same
receiver's request rate from a plain httpx loop (same concurrency, same body size, no outbox, no signing).

    .venv/bin/python bench/webhooks.py [--events 3000] [--seconds 5] [--concurrency 8]
        [--stores sqlite,postgres]

The receiver runs in a process of its own (the machine has 2 cores: the worker and the receiver each get
one); it answers 200 at once and keeps, per request, the time from the event's creation (``t`` in its
data) to its arrival. Throughput: ``--events`` events appended at once, then the time until the last is
delivered. Delay: events appended every 10 ms at ``--load`` (default 50%) of the measured throughput for
``--seconds``; p50/p99 of event -> arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import orjson  # noqa: E402

from hub.outbound.routes import Routes  # noqa: E402
from hub.outbound.settings import Webhook  # noqa: E402
from inbox.inbox import InboxOptions, InboxStore  # noqa: E402
from inbox.inbox_postgres import PostgresInbox  # noqa: E402
from inbox.inbox_sqlite import SqliteInbox  # noqa: E402
from inbox.outbox import OutboxEvent, RetryPolicy, TaskState, Topic  # noqa: E402
from tests.postgres_servers import PostgresServer  # noqa: E402
from tests.redis_servers import free_port  # noqa: E402
from workers.outbox import OutboxWorker  # noqa: E402
from workers.webhook import WebhookSender  # noqa: E402

KEY = b"bench-webhook-signing-key-32-byte"


# ---------------------------------------------------------------- the receiver (its own process)


def receiver_main(port: int, ready: Any) -> None:
    import uvloop

    delays: list[float] = []
    count = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if head.startswith(b"GET /stats"):
                    out = orjson.dumps({"count": count[0], "delays": delays})
                    delays.clear()
                    count[0] = 0
                else:
                    count[0] += 1
                    t = orjson.loads(body).get("data", {}).get("t")
                    if t:
                        delays.append(time.time() - t)
                    out = b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        result: dict[str, Any] = (await http.get(url.replace("/hook", "/stats"))).json()
        return result


# ---------------------------------------------------------------- measurements


def body_of(n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "publication",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "tenant": "",
            "data": {"n": n, "t": 0},
        }
    )


async def baseline(url: str, concurrency: int, seconds: float) -> float:
    """Requests per second of a plain httpx loop (``concurrency`` loops on one client)."""
    done = 0
    body = body_of(0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as http:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await http.post(url, content=body, headers={"content-type": "application/json"})
                assert response.status_code == 200
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    await stats(url)  # reset the receiver
    return done / elapsed


def events(start: int, count: int) -> list[OutboxEvent]:
    now = time.time()
    return [OutboxEvent("", Topic.PUBLICATION, {"n": n, "t": now}) for n in range(start, start + count)]


async def until_empty(store: InboxStore) -> None:
    while await store.tasks(state=TaskState.PENDING, limit=1):  # noqa: ASYNC110 - no event across the worker
        await asyncio.sleep(0.01)  # polling the store


async def measure(
    store: InboxStore, hook: Webhook, n_events: int, seconds: float, load: float
) -> dict[str, float]:
    worker = OutboxWorker(store, [WebhookSender(hook, store.origin)], name="bench")
    # throughput: a backlog, drained
    for start in range(0, n_events, 1000):
        await store.append(events(start, min(1000, n_events - start)))
    started = time.perf_counter()
    worker.start()
    await until_empty(store)
    rate = n_events / (time.perf_counter() - started)
    await stats(hook.url)
    # delay at a steady rate below it
    target = rate * load
    per_tick = max(1, round(target / 100))
    deadline = time.perf_counter() + seconds
    sent = 0
    while time.perf_counter() < deadline:
        tick = time.perf_counter()
        await store.append(events(n_events + sent, per_tick))
        worker.wake()
        sent += per_tick
        await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - tick)))  # the producer's pace
    await until_empty(store)
    await worker.stop()
    got = await stats(hook.url)
    delays = sorted(got["delays"])
    return {
        "deliveries_per_s": rate,
        "steady_rate": sent / seconds,
        "p50_ms": statistics.median(delays) * 1000,
        "p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000,
        "delivered": got["count"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--load", type=float, default=0.5)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    port = free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=receiver_main, args=(port, ready), daemon=True)
    proc.start()
    ready.wait(10)
    url = f"http://127.0.0.1:{port}/hook"
    hook = Webhook("bench", url, (KEY,), frozenset(Topic), max_concurrency=args.concurrency, timeout=10.0)
    routes = Routes([hook])
    options = InboxOptions(route=routes.route, retry=RetryPolicy(base=0.05, cap=1.0))
    print(
        f"cpus {os.cpu_count()}, concurrency {args.concurrency}, {args.events} events, load {args.load:.0%}"
    )
    for loops in sorted({1, args.concurrency}):
        rate = await baseline(url, loops, 3.0)
        print(f"baseline  plain httpx, {loops} loop(s): {rate:8.0f} requests/s")
    postgres: PostgresServer | None = None
    try:
        for kind in args.stores.split(","):
            store: InboxStore
            if kind == "sqlite":
                tmp = tempfile.mkdtemp(prefix="bench-webhooks-")
                store = SqliteInbox(Path(tmp) / "inbox.sqlite3", options)
            else:
                postgres = PostgresServer({"fsync": "off", "synchronous_commit": "off"})
                postgres.start()
                store = PostgresInbox(postgres.dsn(), options)
            await store.open()
            r = await measure(store, hook, args.events, args.seconds, args.load)
            await store.close()
            print(
                f"{kind:9} outbox -> webhook: {r['deliveries_per_s']:8.0f} deliveries/s;"
                f" at {r['steady_rate']:.0f}/s: delay p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
                f" ({r['delivered']:.0f} delivered)"
            )
    finally:
        if postgres is not None:
            postgres.stop()
        proc.kill()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
