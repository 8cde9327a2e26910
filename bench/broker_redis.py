"""RedisBroker costs on this machine: publish round trip, and CPU per delivered message on a subscriber.

Starts its own redis-server on a free loopback port (tests/redis_servers.py; never the system Redis), then:

1. round trip: sequential ``await broker.publish(...)``, one at a time, with history (the Lua script) and
   without (plain PUBLISH); p50/p99 in microseconds and publishes/s;
2. concurrent publish throughput: ``--window`` publishes in flight at once (one node);
3. dispatch floor: 20,000 messages as Redis sends them, fed from memory straight into the pub/sub protocol
   (hiredis parse + decode + handler, no socket): the CPU per message that the node cannot avoid;
4. delivery: a child *process* pipelines pre-encoded publications into the channel (the broker's wire format)
   while this process's RedisBroker is subscribed; CPU microseconds of this process per delivered message
   (read from the socket, parsed by hiredis, decoded, handed to a handler that only counts), and msgs/s.

usage: .venv/bin/python bench/broker_redis.py [--n 20000] [--size 100] [--window 64]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time

import hiredis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from channels.broker import HistoryPolicy  # noqa: E402
from channels.broker_redis import RedisBroker, encode_body  # noqa: E402
from channels.names import ChannelKey  # noqa: E402
from channels.publication import ClientInfo, Publication  # noqa: E402
from channels.redis_shards import RedisShards, route_of  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402

KEY: ChannelKey = ("bench", "chat:room")
HIST = HistoryPolicy(size=100, ttl=300.0)


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.done = asyncio.Event()

    def handle_publication(self, key: ChannelKey, pub: Publication, epoch: str) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()

    def handle_join(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    def handle_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    def handle_resubscribed(self, keys: list[ChannelKey]) -> None:
        pass


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def _publisher(url: str, channel: str, n: int, size: int) -> None:
    import redis

    body = encode_body(Publication(data=b"x" * size, info=ClientInfo("u", "c"), time=int(time.time() * 1000)))
    r = redis.Redis.from_url(url)
    batch = 500
    for start in range(0, n, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            pipe.publish(channel, b"P%d:" % (i + 1) + body)
        pipe.execute()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=64)
    args = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        shards = RedisShards([server.url])
        broker = RedisBroker(shards, node_id="bench")
        counter = Counter()
        broker.set_handler(counter)
        await broker.start()
        data = b"x" * args.size
        for label, hist in (("publish+history (script)", HIST), ("publish, no history", None)):
            lat = []
            for _ in range(min(args.n, 5000)):
                t0 = time.perf_counter()
                await broker.publish(KEY, data, history=hist)
                lat.append((time.perf_counter() - t0) * 1e6)
            print(
                f"round trip  {label:28s} p50 {statistics.median(lat):7.1f} us  p99 {_pct(lat, 0.99):7.1f} us"
                f"  {len(lat) / (sum(lat) / 1e6):8.0f}/s sequential"
            )
        sem = asyncio.Semaphore(args.window)

        async def one() -> None:
            async with sem:
                await broker.publish(KEY, data, history=HIST)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(args.n)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"concurrent  publish+history window {args.window:3d}     {args.n / wall:8.0f}/s"
            f"  client CPU {cpu / args.n * 1e6:6.1f} us/publish"
        )

        await broker.subscribe(KEY)
        channel = shards.channel("ch", route_of(*KEY))
        conn = next(iter(shards.shards[0]._conns.values()))
        body = encode_body(Publication(data=data, info=ClientInfo("u", "c"), time=int(time.time() * 1000)))
        wire = b"".join(
            hiredis.pack_command((b"message", channel, b"P%d:" % (i + 1) + body)) for i in range(20000)
        )
        counter.n, counter.target = 0, 20000
        c0 = time.process_time()
        for i in range(0, len(wire), 262144):  # what one read of asyncio's selector transport hands over
            conn.data_received(wire[i : i + 262144])
        cpu = time.process_time() - c0
        assert counter.n == 20000, counter.n
        per = cpu / 20000 * 1e6
        print(f"dispatch    20000 msgs from memory (no socket)         subscriber CPU {per:6.2f} us/msg")

        counter.n, counter.target = 0, args.n
        counter.done.clear()
        proc = multiprocessing.get_context("spawn").Process(
            target=_publisher, args=(server.url, channel, args.n, args.size)
        )
        c0 = time.process_time()
        t0 = time.perf_counter()
        proc.start()
        async with asyncio.timeout(120):
            await counter.done.wait()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        proc.join(30)
        print(
            f"delivery    {args.n} msgs of {args.size} B via pub/sub   {args.n / wall:8.0f}/s"
            f"  subscriber CPU {cpu / args.n * 1e6:6.2f} us/msg (socket read + parse + decode + handler)"
        )
        await shards.close()
    finally:
        server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
