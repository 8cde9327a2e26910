"""Live-feed benchmark: many sensors into many dashboards, half of them slow readers.

One run starts a hub (``python -m hub serve`` with a config written to bench/results/hub-feeds.toml) and
measures two phases on the same feed, one after the other:

* **conflated**: namespace ``feeds`` (``conflation = "latest"``, ``max_rate``, ``key_field = "/sensor"``,
  cache recovery, fossil deltas allowed);
* **baseline**: namespace ``raw``, the same feed without conflation (every reading to every subscriber,
  today's behaviour: a reader that falls behind is closed with 3008).

The feed: ``--sensors`` sensors (default 10,000) at 1 reading a second each, spread over ``--channels``
channels (default 100, so 100 sensors per channel, keyed by sensor); a reading is a JSON object of ~30
fields of which a few change each time (~700 bytes). A publisher process sends them over WebSockets
(batches of publish commands, open loop, paced every 10 ms).

The dashboards: ``--dashboards`` connections (default 1,000), dashboard i on channel i % channels:

* fast readers (half): picows clients reading everything; half of them ask for ``delta: "fossil"``.
  The plain ones give the publish-to-receive latency (the reading's ``ts``, time_ns at the publisher);
* slow readers (``--slow-share``, default half): ``websockets`` clients that read one frame every 100 ms
  and do not read the socket meanwhile (``max_queue=1``): what they receive (readings a second, how old
  each reading is when read) and whether they are disconnected.

Per phase it reports: readings published per second (achieved), server CPU (process tree, /proc) per
reading, server RSS every second (first, peak, last), fast subscribers' p50/p99 latency and bytes a
second per subscriber with and without delta, and what slow subscribers got (readings/s, p50/p99 age,
close codes). JSON lines go to bench/results/feeds-<time>.jsonl. Every process is started here and
stopped by its pid; every step is bounded in time.

``--micro`` measures in-process, without sockets, what a delivery costs the hub with and without fossil
deltas: ``--dashboards`` subscribers of one channel (JSON, then Protobuf; plain, then delta), 5,000
readings of the same feed handed to the node's fan-out and flushed to counting transports: process CPU per
delivery and bytes per delivery.

usage: .venv/bin/python bench/feeds.py [--quick] [--sensors 10000] [--channels 100] [--dashboards 1000]
       [--duration 30] [--max-rate 10] [--phases conflated,baseline]
       .venv/bin/python bench/feeds.py --micro [--dashboards 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import fanout  # noqa: E402 - its process helpers (free_port, wait_ready, stop_server)
import procstat  # noqa: E402

from channels.fossil import apply_delta  # noqa: E402

PY = sys.executable
RESULTS = os.path.join(HERE, "results")
TS_RE = re.compile(rb'"ts":(\d+)')
STEADY = {f"attr_{i:02d}": f"steady-value-{i:02d}" for i in range(24)}

CONFIG = """\
# written by bench/feeds.py
allow_anonymous_connect_without_token = true
log_level = "warning"
client_max_message_size = 1048576   # the publisher's batches

[[namespaces]]
name = "feeds"
conflation = "latest"
max_rate = {max_rate}
key_field = "/sensor"
max_keys = 10000
history_size = 1
history_ttl = 300
force_recovery_mode = "cache"
allowed_delta_types = ["fossil"]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true

[[namespaces]]
name = "raw"
allowed_delta_types = ["fossil"]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
"""


def reading(sensor: int, seq: int, channel: int) -> bytes:
    """One reading of ~700 bytes: 30 fields, the ts, the sequence and three measurements change."""
    return orjson.dumps(
        {
            "sensor": f"s{sensor:05d}",
            "ts": time.time_ns(),
            "seq": seq,
            "temperature": round(20 + (seq * 7 + sensor) % 100 / 10, 1),
            "humidity": round(40 + (seq * 3 + sensor) % 200 / 10, 1),
            "pressure": 1013 + seq % 5,
            "site": f"plant-{channel}",
            **STEADY,
        }
    )


# ------------------------------------------------------------------------------- the publisher process


async def publisher(url: str, ns: str, sensors: int, channels: int, duration: float, conns: int) -> None:
    """Publish every sensor once a second for ``duration`` seconds over ``conns`` connections; print what
    was sent and acknowledged."""
    import websockets

    sockets = [await websockets.connect(url, max_size=None, ping_interval=None) for _ in range(conns)]
    acked = errors = 0
    expected = -1  # the readings sent, once publishing is over
    answered = asyncio.Event()

    async def read(ws: Any) -> None:
        nonlocal acked, errors
        async for frame in ws:
            for line in frame.split("\n"):
                if '"publish"' in line:
                    acked += 1
                elif '"error"' in line:
                    errors += 1
                elif line == "{}":
                    await ws.send("{}")
            if acked + errors == expected:
                answered.set()

    for ws in sockets:
        await ws.send('{"id":1,"connect":{}}')
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent, seq, cmd = 0, 0, 1
    tick = 0.01
    per_tick = sensors * tick  # 1 reading a second per sensor
    owed = 0.0
    sensor = 0
    while loop.time() - start < duration:
        owed += per_tick
        batches: list[list[bytes]] = [[] for _ in sockets]
        while owed >= 1:
            owed -= 1
            channel = sensor % channels
            seq += 1
            cmd += 1
            data = reading(sensor, seq, channel)
            batches[channel % conns].append(
                b'{"id":%d,"publish":{"channel":"%s:plant-%d","data":%s}}' % (cmd, ns.encode(), channel, data)
            )
            sent += 1
            sensor = (sensor + 1) % sensors
        for ws, batch in zip(sockets, batches, strict=True):
            for i in range(0, len(batch), 500):
                await ws.send(b"\n".join(batch[i : i + 500]).decode())
        await asyncio.sleep(max(0.0, start + (sent / sensors) - loop.time()))
    elapsed = loop.time() - start
    expected = sent
    if acked + errors == expected:
        answered.set()
    async with asyncio.timeout(30):
        await answered.wait()
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    print(json.dumps({"sent": sent, "acked": acked, "errors": errors, "seconds": round(elapsed, 2)}))


# ------------------------------------------------------------------------------- the dashboards


class Fast:
    """A dashboard that reads everything (picows)."""

    def __init__(self, url: str, channel: str, delta: bool, validate: bool) -> None:
        self.url, self.channel, self.delta, self.validate = url, channel, delta, validate
        self.pubs = 0
        self.bytes = 0
        self.latencies: list[int] = []
        self.closed: str | None = None
        self.base: bytes | None = None
        self.bad = 0
        self.subscribed = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        from picows import WSListener, WSMsgType, ws_connect

        owner = self
        sub = {"channel": self.channel, **({"delta": "fossil"} if self.delta else {})}
        hello = b'{"id":1,"connect":{}}\n' + orjson.dumps({"id": 2, "subscribe": sub})

        class Listener(WSListener):  # type: ignore[misc]
            def on_ws_connected(self, transport: Any) -> None:
                transport.send(WSMsgType.TEXT, hello)

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == WSMsgType.CLOSE:
                    owner.closed = str(frame.get_close_code())
                    transport.disconnect()
                    return
                payload = frame.get_payload_as_bytes()
                owner.handle(transport, payload)

        await ws_connect(Listener, self.url, websocket_handshake_timeout=30)

    def handle(self, transport: Any, payload: bytes) -> None:
        from picows import WSMsgType

        if payload == b"{}":
            transport.send(WSMsgType.TEXT, b"{}")
            return
        if not self.subscribed.done():
            if b'"id":2' in payload:
                self.subscribed.set_result(None)
            return
        if not RECORDING:
            return
        count = payload.count(b'"pub"')
        self.pubs += count
        self.bytes += len(payload)
        if not self.delta:
            now = time.time_ns()
            self.latencies += [now - int(ts) for ts in TS_RE.findall(payload)]
        elif self.validate:
            for line in payload.split(b"\n"):
                pub = orjson.loads(line).get("push", {}).get("pub") if line else None
                if pub is None:
                    continue
                raw = pub["data"].encode()
                if pub.get("delta"):
                    if self.base is None:
                        self.bad += 1
                        continue
                    raw = apply_delta(self.base, raw)
                self.base = raw
                if b'"sensor"' not in raw:
                    self.bad += 1


class Slow:
    """A dashboard that reads one frame every 100 ms and nothing in between (websockets, max_queue=1)."""

    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self.pubs = 0
        self.frames = 0
        self.ages: list[int] = []
        self.closed: str | None = None
        self.subscribed = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import websockets

        ws = await websockets.connect(
            self.url, max_size=None, max_queue=1, ping_interval=None, open_timeout=30
        )
        await ws.send(
            '{"id":1,"connect":{}}\n'
            + orjson.dumps({"id": 2, "subscribe": {"channel": self.channel}}).decode()
        )
        self.task = asyncio.create_task(self.run(ws))

    async def run(self, ws: Any) -> None:
        import websockets

        try:
            while True:
                frame = await ws.recv()
                if frame == "{}":
                    await ws.send("{}")
                    continue
                if not self.subscribed.done():
                    if '"id":2' in frame:
                        self.subscribed.set_result(None)
                    continue
                if RECORDING:
                    now = time.time_ns()
                    raw = frame.encode()
                    self.frames += 1
                    stamps = TS_RE.findall(raw)
                    self.pubs += len(stamps)
                    self.ages += [now - int(ts) for ts in stamps]
                await asyncio.sleep(0.1)
        except websockets.ConnectionClosed as exc:
            self.closed = str(exc.rcvd.code if exc.rcvd is not None else "no close frame")


RECORDING = False


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 1)


async def phase(a: argparse.Namespace, port: int, server: subprocess.Popen[bytes], ns: str) -> dict[str, Any]:
    global RECORDING
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    n_slow = int(a.dashboards * a.slow_share)
    n_fast = a.dashboards - n_slow
    fast: list[Fast] = []
    slow: list[Slow] = []
    for i in range(a.dashboards):
        channel = f"{ns}:plant-{i % a.channels}"
        if i % 2 == 0 and len(fast) < n_fast or len(slow) >= n_slow:
            delta = len(fast) % 2 == 1
            fast.append(Fast(url, channel, delta, validate=delta and len(fast) < 12))
        else:
            slow.append(Slow(url, channel))
    for i in range(0, len(fast), 50):
        await asyncio.gather(*(d.start() for d in fast[i : i + 50]))
    for i in range(0, len(slow), 50):
        await asyncio.gather(*(d.start() for d in slow[i : i + 50]))
    async with asyncio.timeout(120):
        await asyncio.gather(*(d.subscribed for d in [*fast, *slow]))
    rss: list[int] = []
    pub = await asyncio.create_subprocess_exec(
        PY, __file__, "--role", "publisher", "--url", url, "--ns", ns, "--sensors", str(a.sensors),
        "--channels", str(a.channels), "--duration", str(a.duration), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    cpu0 = procstat.cpu(server.pid)
    t0 = time.monotonic()
    RECORDING = True
    assert pub.stdout is not None
    line = b""
    while True:
        rss.append(procstat.rss_kb(server.pid))
        try:
            async with asyncio.timeout(1.0):
                line = await pub.stdout.readline()
            break
        except TimeoutError:
            continue
    RECORDING = False
    seconds = time.monotonic() - t0
    cpu = procstat.cpu_delta_s(cpu0, procstat.cpu(server.pid))
    await pub.wait()
    published = json.loads(line) if line else {"sent": 0, "acked": 0, "errors": 0, "seconds": 0}
    plain = [d for d in fast if not d.delta]
    deltas = [d for d in fast if d.delta]
    latencies = [x for d in plain for x in d.latencies]
    ages = [x for d in slow for x in d.ages]

    def per_sub(items: list[Any], attr: str) -> float:
        return round(sum(getattr(d, attr) for d in items) / max(1, len(items)) / seconds, 1)

    plain_bytes, delta_bytes = per_sub(plain, "bytes"), per_sub(deltas, "bytes")
    plain_pubs, delta_pubs = per_sub(plain, "pubs"), per_sub(deltas, "pubs")
    closes: dict[str, int] = {}
    for d in [*fast, *slow]:
        if d.closed is not None:
            closes[d.closed] = closes.get(d.closed, 0) + 1
    result = {
        "phase": "conflated" if ns == "feeds" else "baseline",
        "readings_sent": published["sent"],
        "readings_per_s": round(published["sent"] / max(published["seconds"], 1e-9)),
        "publish_errors": published["errors"],
        "seconds": round(seconds, 1),
        "server_cpu_s": round(cpu["cpu_s"], 2),
        "cpu_us_per_reading": round(cpu["cpu_s"] / max(1, published["sent"]) * 1e6, 1),
        "rss_mb_first_peak_last": [round(rss[0] / 1024), round(max(rss) / 1024), round(rss[-1] / 1024)],
        "fast_plain_p50_ms": pct(latencies, 0.5),
        "fast_plain_p99_ms": pct(latencies, 0.99),
        "fast_plain_pubs_per_s": plain_pubs,
        "fast_plain_bytes_per_s": plain_bytes,
        "fast_delta_pubs_per_s": delta_pubs,
        "fast_delta_bytes_per_s": delta_bytes,
        "delta_bytes_saved_pct": round(
            100
            * (1 - (delta_bytes / max(delta_pubs, 1e-9)) / max(plain_bytes / max(plain_pubs, 1e-9), 1e-9)),
            1,
        )
        if plain_pubs and delta_pubs
        else None,
        "delta_validation_errors": sum(d.bad for d in deltas),
        "slow_pubs_per_s": per_sub(slow, "pubs"),
        "slow_frames_per_s": per_sub(slow, "frames"),
        "slow_age_p50_ms": pct(ages, 0.5),
        "slow_age_p99_ms": pct(ages, 0.99),
        "close_codes": closes,
        "dashboards": {"fast_plain": len(plain), "fast_delta": len(deltas), "slow": len(slow)},
    }
    for d in slow:
        if d.task is not None:
            d.task.cancel()
    await asyncio.sleep(0.5)
    return result


# ------------------------------------------------------------------------------- in-process: CPU per delivery


class Sink:
    """A transport that only counts: what a delivery costs the hub up to the socket write."""

    name = "sink"

    def __init__(self, fmt: int) -> None:
        self.fmt = fmt
        self.bytes = 0

    def write_messages(self, messages: list[bytes]) -> int:
        self.bytes += sum(map(len, messages))
        return 0

    def close(self, code: int, reason: str) -> None:
        pass

    def unsent_bytes(self) -> int:
        return 0


def command(fmt: int, cmd: dict[str, Any]) -> bytes:
    """A client command as a session of format ``fmt`` (``hub.wire``) reads it: JSON, or one
    length-prefixed Protobuf ``Command``."""
    from centrifuge.protocol import client_pb2

    from hub.wire import JSON

    if fmt == JSON:
        return orjson.dumps(cmd)
    body = client_pb2.Command(**cmd).SerializeToString()
    size, prefix = len(body), bytearray()
    while True:
        prefix.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            return bytes(prefix) + body


async def micro(subscribers: int, publications: int) -> list[dict[str, Any]]:
    """Server CPU per delivery (process time of the fan-out, the encodes and the writers' flushes) and bytes
    per delivery, for one channel of ``subscribers`` without and with fossil deltas, over JSON and Protobuf,
    with the same readings (one channel, one sensor after another, as in the feed)."""
    from channels.broker_memory import MemoryBroker
    from channels.options import NamespaceOptions
    from channels.publication import Publication
    from hub.config import Config
    from hub.hooks import Hooks
    from hub.node import Node
    from hub.wire import JSON, PROTOBUF
    from presence.presence_memory import MemoryPresence

    ns = NamespaceOptions.from_mapping(
        {
            "allowed_delta_types": ["fossil"],
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
        }
    )
    readings = [reading(i % 100, i, 0) for i in range(publications)]
    rows = []
    for fmt_name, fmt in (("json", JSON), ("protobuf", PROTOBUF)):
        for delta in (False, True):
            cfg = Config(
                allow_anonymous_connect_without_token=True, namespaces={"bench": ns}, node_name="micro"
            )
            node = Node(cfg, MemoryBroker(), MemoryPresence(), Hooks())
            sinks = []
            for _ in range(subscribers):
                sink = Sink(fmt)
                client = node.new_session(sink, scope={})
                await client.handle_frame(command(fmt, {"id": 1, "connect": {}}))
                sub = {"channel": "bench:plant", **({"delta": "fossil"} if delta else {})}
                await client.handle_frame(command(fmt, {"id": 2, "subscribe": sub}))
                sinks.append(sink)
            node.scheduler.flush()
            for sink in sinks:
                sink.bytes = 0
            key = ("", "bench:plant")
            cpu0 = time.process_time()
            for offset, data in enumerate(readings, 1):
                node.handle_publication(key, Publication(data, offset=offset, key=f"s{offset % 100}"), "e")
                node.scheduler.flush()
            cpu = time.process_time() - cpu0
            deliveries = subscribers * publications
            rows.append(
                {
                    "phase": "micro",
                    "format": fmt_name,
                    "delta": delta,
                    "subscribers": subscribers,
                    "publications": publications,
                    "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2),
                    "cpu_us_per_publication": round(cpu / publications * 1e6, 1),
                    "bytes_per_delivery": round(sum(s.bytes for s in sinks) / deliveries, 1),
                    "reading_bytes": round(sum(map(len, readings)) / len(readings), 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="main", choices=["main", "publisher"])
    ap.add_argument(
        "--micro", action="store_true", help="in-process: CPU and bytes per delivery, with and without delta"
    )
    ap.add_argument("--quick", action="store_true", help="2,000 sensors, 200 dashboards, 10 s phases")
    ap.add_argument("--sensors", type=int, default=None)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--dashboards", type=int, default=None)
    ap.add_argument("--slow-share", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=None, help="seconds of publishing per phase")
    ap.add_argument("--max-rate", type=float, default=10.0)
    ap.add_argument("--phases", default="conflated,baseline")
    ap.add_argument("--url", default="")
    ap.add_argument("--ns", default="feeds")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.sensors = a.sensors or (2000 if a.quick else 10_000)
    a.channels = a.channels or (20 if a.quick else 100)
    a.dashboards = a.dashboards or (200 if a.quick else 1000)
    a.duration = a.duration or (10.0 if a.quick else 30.0)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if a.role == "publisher":
        runner(publisher(a.url, a.ns, a.sensors, a.channels, a.duration, conns=4))
        return
    os.makedirs(RESULTS, exist_ok=True)
    if a.micro:
        rows = runner(micro(subscribers=a.dashboards, publications=2000 if a.quick else 5000))
        with open(
            a.out or os.path.join(RESULTS, f"feeds-micro-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"), "a"
        ) as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        return
    config = os.path.join(RESULTS, "hub-feeds.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(max_rate=a.max_rate))
    out = a.out or os.path.join(RESULTS, f"feeds-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * a.dashboards + 100)), hard))
    rows = []
    for name in a.phases.split(","):
        port = fanout.free_port()
        log = open(os.path.join(RESULTS, f"hub-feeds-{name}.log"), "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            fanout.hub_argv(port, config),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            not_ready = fanout.wait_ready(server, port, 30)
            if not_ready:
                raise SystemExit(f"hub: {not_ready}")
            row = runner(phase(a, port, server, "feeds" if name == "conflated" else "raw"))
            row.update({"sensors": a.sensors, "channels": a.channels, "max_rate": a.max_rate})
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            fanout.stop_server(server)
            log.close()
    with open(out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"results: {out}")
    if len(rows) == 2:
        c, b = rows
        print(
            f"fast p99 {c['fast_plain_p99_ms']} ms conflated vs {b['fast_plain_p99_ms']} ms baseline; "
            f"slow readers {c['slow_pubs_per_s']}/s, p99 age {c['slow_age_p99_ms']} ms, "
            f"closes {c['close_codes']} "
            f"(baseline closes {b['close_codes']}); CPU/reading {c['cpu_us_per_reading']} vs "
            f"{b['cpu_us_per_reading']} us; bytes/s per fast sub: delta {c['fast_delta_bytes_per_s']} vs "
            f"plain {c['fast_plain_bytes_per_s']}"
        )


if __name__ == "__main__":
    main()
