"""Soak benchmark (issue 15): a sustained mixed load for ``--seconds`` (default 600) on one node, then on
three nodes sharing one Redis, with the hub's memory, lost publications, error log lines and latency.

The load, the same for each layout (every client spread round-robin over the nodes):

* channels with history and presence (namespace ``soak``: history 200 for 5 min, presence, join/leave,
  recovery): ``--subscribers`` WebSocket JSON clients on ``--channels`` channels, publications through the
  server API (``POST /api/publish``, nodes in turn) at ``--rate`` per second in all;
* SSE: ``--sse`` ``uni_sse`` streams (subscribed by their token's ``channels`` claim);
* documents: ``--docs`` documents with ``--editors`` y-websocket editors each (pycrdt), ``--edit-rate`` edits
  per second per editor;
* clients coming and going: every ``--churn`` seconds one subscriber disconnects and comes back (to the
  next node) subscribing with ``recover`` from its last offset, one SSE stream resumes with
  ``Last-Event-ID``, one editor reconnects and syncs again, and one short-lived client connects,
  subscribes (join/leave pushes), asks for presence and leaves.

What it checks and prints:

* lost publications: every subscriber and SSE stream counts what it got per channel by offset (a gap is a
  loss; a recovery fills it), and at the end each must have reached the channel's last offset (the publish
  answers say which); duplicates too. Must be zero.
* error log lines of every node (``ERROR``/``CRITICAL``/tracebacks; must be zero), and the warnings by kind;
* RSS of each node every ``--sample`` seconds, and its slope after ``--warmup`` seconds (least squares,
  MB per minute, with the first and last RSS after warm-up);
* publish-to-receive latency (p50/p99/max, and p99 per minute), documents converged (every editor of a
  document holds the same text with every edit exactly once), CPU of each node (/proc).

Every process (redis-server on a free port, hub nodes) is started here and stopped by its pid; every wait
is bounded. The machine is shared: the figures say how busy it was (other processes' CPU).

usage: .venv/bin/python bench/soak.py [--seconds 600] [--layouts 1node,3nodes] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvloop
import websockets
from pycrdt import Doc, Text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The project's packages first (bench/inbox.py would hide the inbox package), then bench's helpers.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != HERE]
from hub.auth import mint_token  # noqa: E402
from sync import protocol  # noqa: E402

sys.path.append(HERE)
import cluster  # noqa: E402 - its RedisProc
import fanout  # noqa: E402 - free_port, wait_ready, stop_server
import procstat  # noqa: E402

PY = sys.executable
RESULTS = os.path.join(HERE, "results")
SECRET = "bench-soak-secret-of-at-least-32-bytes!"
API_KEY = "bench-soak-api-key"
CONFIG = f"""\
# written by bench/soak.py
token_hmac_secret_key = "{SECRET}"
allow_anonymous_connect_without_token = true
api_key = "{API_KEY}"
log_level = "warning"
doc_anonymous_access = "write"
doc_user_connection_limit = 1000000
client_user_connection_limit = 0
client_command_rate_limit = 0

[[namespaces]]
name = "soak"
presence = true
join_leave = true
force_push_join_leave = true
history_size = 200
history_ttl = 300
force_recovery = true
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
allow_history_for_client = true
allow_history_for_anonymous = true
"""
MAX_PUBLISHING = 32
"""Publish calls in flight at most (open loop until then)."""
KEEPALIVE_EXPIRY = 2.0
"""Seconds the publisher's pool reuses an idle connection: well under the node's keep-alive timeout (5 s,
uvicorn's ``timeout_keep_alive``). At httpx's default (5 s too) a request sent on a connection idle for
about 5 s races the node closing it: the node closes with the request unread, the kernel answers with a
reset, and the call fails with ``httpx.ReadError`` (6 and 26 publish calls in the first 10-minute runs;
11 in 600 calls timed to reuse a connection after 4.97-5.03 s idle, none with this expiry)."""
ERROR_RE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")
WARNING_RE = re.compile(r"\bWARNING\b")


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, RSS bytes), in MB per minute."""
    if len(samples) < 3:
        return None
    xs = [t for t, _ in samples]
    ys = [r / 1e6 for _, r in samples]
    return statistics.linear_regression(xs, ys).slope * 60


# ---------------------------------------------------------------- what the clients count


@dataclass
class Tally:
    """Per channel: the offsets one receiver got (a gap is a loss; recovery fills it)."""

    last: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicates: int = 0
    received: int = 0

    def start(self, channel: str, offset: int) -> None:
        self.last.setdefault(channel, offset)

    def got(self, channel: str, offset: int, stats: Stats, data: Any) -> None:
        last = self.last.get(channel)
        if last is None:
            self.last[channel] = offset
        elif offset <= last:
            self.duplicates += 1
            return
        elif offset > last + 1:
            self.lost += offset - last - 1
            stats.gaps.append((channel, last, offset))
        self.last[channel] = offset
        self.received += 1
        if isinstance(data, dict) and "t" in data:
            stats.latency.append((time.time(), (time.time_ns() - data["t"]) / 1e6))


@dataclass
class Stats:
    latency: list[tuple[float, float]] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    published: int = 0
    publish_failed: int = 0
    final_offset: dict[str, int] = field(default_factory=dict)
    reconnects: Counter[str] = field(default_factory=Counter)
    edits: int = 0
    presence_checks: int = 0
    publish_waits: int = 0


def frames(raw: str | bytes) -> list[dict[str, Any]]:
    """One WebSocket message of the JSON protocol: replies and pushes, one per line."""
    return [
        orjson.loads(line) for line in (raw.encode() if isinstance(raw, str) else raw).split(b"\n") if line
    ]


async def until_either(work: Any, stop: asyncio.Event, bounce: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``stop`` or ``bounce`` is set (then cancel it)."""
    task = asyncio.ensure_future(work)
    events = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(bounce.wait())]
    try:
        await asyncio.wait([task, *events], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in [task, *events]:
            t.cancel()
    if task.done() and not task.cancelled():
        task.result()


RECONNECT_ON = (OSError, websockets.WebSocketException, TimeoutError, httpx.HTTPError)


class Client:
    """One simulated client of node ``index % len(urls)``: sessions one after the other until ``stop``; a
    session ends when ``bounce`` is set (the client comes back) or its connection fails (counted)."""

    kind = "client"

    def __init__(self, urls: list[str], index: int, channel: str, stats: Stats) -> None:
        self.urls = urls
        self.node = index % len(urls)
        self.index = index
        self.channel = channel
        self.stats = stats
        self.tally = Tally()

    async def run(self, stop: asyncio.Event, bounce: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._session(stop, bounce)
            except RECONNECT_ON as exc:
                self.stats.errors[f"{self.kind}: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                await asyncio.sleep(0.5)

    async def _session(self, stop: asyncio.Event, bounce: asyncio.Event) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- WebSocket subscribers


class Subscriber(Client):
    kind = "subscriber"

    def __init__(self, urls: list[str], index: int, channel: str, stats: Stats) -> None:
        super().__init__(urls, index, channel, stats)
        self.epoch = ""
        self.ready = asyncio.Event()

    async def _session(self, stop: asyncio.Event, bounce: asyncio.Event) -> None:
        url = self.urls[self.node] + "/connection/websocket"
        async with websockets.connect(url, max_size=None, compression=None, open_timeout=30) as ws:
            self.ws = ws
            await ws.send(orjson.dumps({"id": 1, "connect": {}}).decode())
            sub: dict[str, Any] = {"channel": self.channel}
            if self.channel in self.tally.last:
                sub.update(recover=True, offset=self.tally.last[self.channel], epoch=self.epoch)
            await ws.send(orjson.dumps({"id": 2, "subscribe": sub}).decode())
            bounce.clear()
            await until_either(self._receive(ws), stop, bounce)
            self.ready.clear()

    async def _receive(self, ws: Any) -> None:
        async for raw in ws:
            for message in frames(raw):
                await self._handle(ws, message)

    async def _handle(self, ws: Any, message: dict[str, Any]) -> None:
        if not message:  # a ping
            await ws.send("{}")
            return
        if "error" in message:
            self.stats.errors[f"subscriber reply error {message['error']}"] += 1
            return
        if message.get("id") == 2:
            reply = message["subscribe"]
            if self.channel in self.tally.last and reply.get("epoch") != self.epoch:
                self.stats.errors["subscriber: epoch changed"] += 1
            if self.channel in self.tally.last and not reply.get("recovered"):
                self.stats.errors["subscriber: not recovered"] += 1
            self.epoch = reply.get("epoch", "")
            for pub in reply.get("publications") or []:
                self.tally.got(self.channel, pub.get("offset", 0), self.stats, pub.get("data"))
            self.tally.start(self.channel, reply.get("offset", 0))
            self.ready.set()
            return
        push = message.get("push")
        if push and "pub" in push and push.get("channel") == self.channel:
            pub = push["pub"]
            self.tally.got(self.channel, pub.get("offset", 0), self.stats, pub.get("data"))


async def short_lived(url: str, channel: str, stats: Stats) -> None:
    """Connect, subscribe (a join push for the others), ask for presence, leave."""
    try:
        async with websockets.connect(url + "/connection/websocket", compression=None, open_timeout=30) as ws:
            await ws.send(orjson.dumps({"id": 1, "connect": {}}).decode())
            await ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": channel}}).decode())
            await ws.send(orjson.dumps({"id": 3, "presence": {"channel": channel}}).decode())
            async with asyncio.timeout(30):
                while True:
                    for message in frames(await ws.recv()):
                        if "error" in message:
                            stats.errors[f"short-lived: {message['error']}"] += 1
                            return
                        if message.get("id") == 3:
                            if not message["presence"].get("presence"):
                                stats.errors["short-lived: empty presence"] += 1
                            stats.presence_checks += 1
                            return
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        stats.errors[f"short-lived: {type(exc).__name__}"] += 1


# ---------------------------------------------------------------- SSE streams


class SseStream(Client):
    kind = "sse"

    def __init__(
        self, urls: list[str], index: int, channel: str, stats: Stats, client: httpx.AsyncClient
    ) -> None:
        super().__init__(urls, index, channel, stats)
        self.client = client
        self.last_id = ""
        self.token = mint_token(SECRET, f"sse-{index}", channels=[channel])

    async def _session(self, stop: asyncio.Event, bounce: asyncio.Event) -> None:
        client = self.client
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        params = {"cf_connect": json.dumps({"token": self.token})}
        url = self.urls[self.node] + "/connection/uni_sse"
        bounce.clear()
        async with client.stream("GET", url, params=params, headers=headers, timeout=None) as response:
            if response.status_code != 200:
                self.stats.errors[f"sse: status {response.status_code}"] += 1
                await asyncio.sleep(1)
                return
            await until_either(self._read(response), stop, bounce)

    async def _read(self, response: httpx.Response) -> None:
        event_id, data = "", []
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "" and data:
                self._event(orjson.loads("\n".join(data)))
                if event_id:
                    self.last_id = event_id
                event_id, data = "", []

    def _event(self, message: Any) -> None:
        if not isinstance(message, dict) or not message:
            return
        if "connect" in message:
            sub = (message["connect"].get("subs") or {}).get(self.channel)
            if sub is None:
                self.stats.errors["sse: not subscribed"] += 1
                return
            if self.channel in self.tally.last and not sub.get("recovered"):
                self.stats.errors["sse: not recovered"] += 1
            for pub in sub.get("publications") or []:
                self.tally.got(self.channel, pub.get("offset", 0), self.stats, pub.get("data"))
            self.tally.start(self.channel, sub.get("offset", 0))
        elif "pub" in message and message.get("channel") == self.channel:
            pub = message["pub"]
            self.tally.got(self.channel, pub.get("offset", 0), self.stats, pub.get("data"))


# ---------------------------------------------------------------- documents


class Editor(Client):
    """A y-websocket client editing document ``name`` (its ``channel``) at ``rate`` edits/s."""

    kind = "editor"

    def __init__(self, urls: list[str], index: int, name: str, stats: Stats) -> None:
        super().__init__(urls, index, name, stats)
        self.name = name
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("t", type=Text)
        self.outbox: list[bytes] = []
        self.applying = False
        self.doc.observe(self._changed)
        self.edits = 0
        self.rate = 0.0

    def _changed(self, event: Any) -> None:
        if not self.applying:  # our own edits go out; a remote change came from the server
            self.outbox.append(event.update)

    async def _session(self, stop: asyncio.Event, bounce: asyncio.Event) -> None:
        url = f"{self.urls[self.node]}/doc/{self.name}"
        async with websockets.connect(url, max_size=None, compression=None, open_timeout=30) as ws:
            bounce.clear()
            self.outbox.clear()  # what the server lacks goes in our step 2
            await ws.send(protocol.sync_step1(self.doc.get_state()))
            reader = asyncio.ensure_future(self._read(ws))
            try:
                while not (stop.is_set() or bounce.is_set()):
                    if reader.done():
                        reader.result()
                        return
                    rate = self.rate
                    if rate > 0:
                        self.text.insert(len(self.text), f"<{self.index}:{self.edits}>")
                        self.edits += 1
                        self.stats.edits += 1
                    for update in self.outbox:
                        await ws.send(protocol.update(update))
                    self.outbox.clear()
                    await asyncio.sleep(1 / rate if rate > 0 else 0.2)
            finally:
                reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for data in ws:
            message = protocol.decode(data)
            if isinstance(message, protocol.SyncStep1):
                await ws.send(protocol.sync_step2(self.doc.get_update(message.state_vector)))
            elif isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
                self.applying = True
                try:
                    self.doc.apply_update(message.update)
                finally:
                    self.applying = False


# ---------------------------------------------------------------- nodes


class Node:
    def __init__(self, name: str, config: str, logdir: str, redis_url: str | None) -> None:
        self.name = name
        self.port = fanout.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix=f"soak-{name}-")
        self.log_path = os.path.join(logdir, f"{name}.log")
        argv = fanout.hub_argv(
            self.port,
            config,
            node_name=name,
            data_dir=self.data_dir,
            redis_urls=[redis_url] if redis_url else [],
        )
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.rss: list[tuple[float, int]] = []

    def wait(self) -> None:
        problem = fanout.wait_ready(self.proc, self.port, 60)
        if problem:
            raise RuntimeError(f"node {self.name}: {problem} (see {self.log_path})")

    def sample(self, at: float) -> None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.rss.append((at, int(line.split()[1]) * 1024))
        except OSError:
            pass

    def cpu_s(self) -> float:
        c = procstat.cpu(self.proc.pid)
        return float(c["user_s"] + c["sys_s"])

    def log_lines(self) -> tuple[list[str], Counter[str]]:
        errors: list[str] = []
        warnings: Counter[str] = Counter()
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if ERROR_RE.search(line):
                    errors.append(line.rstrip())
                elif WARNING_RE.search(line):
                    warnings[re.sub(r"\d+", "N", line.split("WARNING", 1)[-1].strip())[:120]] += 1
        return errors, warnings

    def stop(self) -> None:
        fanout.stop_server(self.proc)


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- one layout


async def publisher(
    urls: list[str], channels: list[str], rate: float, stop: asyncio.Event, stats: Stats
) -> None:
    """Open loop at ``rate`` publications/s in all, channels and nodes in turn, over the server API."""
    limits = httpx.Limits(
        max_connections=MAX_PUBLISHING,
        max_keepalive_connections=MAX_PUBLISHING,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=30, limits=limits) as client:
        started = time.monotonic()
        n = 0
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            channel = channels[i % len(channels)]
            body = {"channel": channel, "data": {"t": time.time_ns(), "n": i}}
            try:
                response = await client.post(f"{urls[i % len(urls)]}/api/publish", json=body)
                result = response.json().get("result")
            except (httpx.HTTPError, ValueError) as exc:
                stats.publish_failed += 1
                stats.errors[f"publish: {type(exc).__name__}"] += 1
                return
            if result is None:
                stats.publish_failed += 1
                stats.errors[f"publish: {response.text[:100]}"] += 1
                return
            stats.published += 1
            stats.final_offset[channel] = max(stats.final_offset.get(channel, 0), result["offset"])

        while not stop.is_set():
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) >= MAX_PUBLISHING:  # the nodes (or this process) are behind: wait, count it
                stats.publish_waits += 1
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        if pending:
            await asyncio.wait(pending, timeout=30)


async def run_layout(layout: str, nodes_count: int, a: argparse.Namespace, logdir: str) -> dict[str, Any]:
    redis = None
    nodes: list[Node] = []
    config = os.path.join(logdir, "hub.toml")
    with open(config, "w") as f:  # noqa: ASYNC230 - before any client runs
        f.write(CONFIG)
    try:
        if nodes_count > 1:
            redis = cluster.RedisProc(logdir, layout)
            redis.start()
        for i in range(nodes_count):
            nodes.append(Node(f"{layout}-n{i + 1}", config, logdir, redis.url if redis else None))
        for node in nodes:
            node.wait()
        log(f"{layout}: {nodes_count} node(s) ready" + (f", Redis {redis.url}" if redis else ""))
        return await drive(layout, nodes, a)
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()


async def drive(layout: str, nodes: list[Node], a: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    ws_urls = [n.ws_url for n in nodes]
    http_urls = [n.url for n in nodes]
    channels = [f"soak:c{i}" for i in range(a.channels)]
    stop = asyncio.Event()
    subs = [Subscriber(ws_urls, i, channels[i % len(channels)], stats) for i in range(a.subscribers)]
    sub_bounce = [asyncio.Event() for _ in subs]
    editors = [Editor(ws_urls, i, f"soak-doc-{i % a.docs}", stats) for i in range(a.docs * a.editors)]
    for e in editors:
        e.rate = a.edit_rate
    ed_bounce = [asyncio.Event() for _ in editors]
    limits = httpx.Limits(max_connections=a.sse + 10, max_keepalive_connections=a.sse + 10)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, read=None)) as sse_client:
        streams = [
            SseStream(http_urls, i, channels[i % len(channels)], stats, sse_client) for i in range(a.sse)
        ]
        sse_bounce = [asyncio.Event() for _ in streams]
        tasks = [asyncio.ensure_future(s.run(stop, b)) for s, b in zip(subs, sub_bounce, strict=True)]
        tasks += [asyncio.ensure_future(s.run(stop, b)) for s, b in zip(streams, sse_bounce, strict=True)]
        async with asyncio.timeout(120):
            await asyncio.gather(*(s.ready.wait() for s in subs))
        log(
            f"{layout}: {len(subs)} subscribers, {len(streams)} SSE streams; "
            "starting publications and editors"
        )
        tasks += [asyncio.ensure_future(e.run(stop, b)) for e, b in zip(editors, ed_bounce, strict=True)]
        pub_stop = asyncio.Event()
        pub_task = asyncio.ensure_future(publisher(http_urls, channels, a.rate, pub_stop, stats))
        started = time.monotonic()
        cpu0 = [n.cpu_s() for n in nodes]
        busy0 = machine_busy_s()
        short: set[asyncio.Task[None]] = set()
        next_sample = next_churn = started
        rng = random.Random(1)
        k = 0
        while (now := time.monotonic()) - started < a.seconds:
            if now >= next_sample:
                for node in nodes:
                    node.sample(now - started)
                next_sample += a.sample
            if now >= next_churn:
                next_churn += a.churn
                sub_bounce[rng.randrange(len(subs))].set()
                chosen = rng.randrange(len(subs))
                subs[chosen].node = (subs[chosen].node + 1) % len(nodes)  # comes back elsewhere
                sub_bounce[chosen].set()
                if streams:
                    sse_bounce[rng.randrange(len(streams))].set()
                if editors:
                    ed_bounce[rng.randrange(len(editors))].set()
                t = asyncio.ensure_future(
                    short_lived(ws_urls[k % len(nodes)], channels[k % len(channels)], stats)
                )
                short.add(t)
                t.add_done_callback(short.discard)
                k += 1
            await asyncio.sleep(min(next_sample, next_churn) - time.monotonic())
        elapsed = time.monotonic() - started
        cpu = [n.cpu_s() - c for n, c in zip(nodes, cpu0, strict=True)]
        busy = machine_busy_s() - busy0
        log(f"{layout}: load done after {elapsed:.0f} s; settling")
        pub_stop.set()
        await pub_task
        for node in nodes:
            node.sample(time.monotonic() - started)
        # Settle: every receiver reaches each channel's last offset (bounded).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - a bounded poll
            r.tally.last.get(r.channel, 0) < stats.final_offset.get(r.channel, 0) for r in [*subs, *streams]
        ):
            await asyncio.sleep(0.2)
        converged = await converge(editors, ed_bounce)
        stop.set()
        for t in [*tasks, *short]:
            t.cancel()
        await asyncio.gather(*tasks, *short, return_exceptions=True)
    tail = sum(
        max(0, stats.final_offset.get(r.channel, 0) - r.tally.last.get(r.channel, 0))
        for r in [*subs, *streams]
    )
    receivers = [*subs, *streams]
    result: dict[str, Any] = {
        "layout": layout,
        "nodes": len(nodes),
        "seconds": round(elapsed, 1),
        "published": stats.published,
        "publish_failed": stats.publish_failed,
        "publish_waits": stats.publish_waits,
        "received": sum(r.tally.received for r in receivers),
        "lost_gaps": sum(r.tally.lost for r in receivers),
        "lost_tail": tail,
        "duplicates": sum(r.tally.duplicates for r in receivers),
        "gaps_sample": stats.gaps[:5],
        "client_errors": dict(stats.errors.most_common(10)),
        "presence_checks": stats.presence_checks,
        "edits": stats.edits,
        "docs_converged": converged,
        "node_cpu_s": [round(c, 1) for c in cpu],
        "other_procs_cores": round(max(0.0, busy - sum(cpu)) / elapsed, 2),
    }
    lat = [ms for _, ms in stats.latency]
    result["latency_ms"] = {
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "max": max(lat, default=None),
        "n": len(lat),
    }
    per_min: dict[int, list[float]] = {}
    for at, ms in stats.latency:
        per_min.setdefault(int((at - stats.latency[0][0]) // 60), []).append(ms)
    result["latency_p99_per_min"] = [round(percentile(v, 0.99) or 0, 1) for _, v in sorted(per_min.items())]
    result["rss"] = []
    for node in nodes:
        after = [(t, r) for t, r in node.rss if t >= a.warmup]
        errors, warnings = node.log_lines()
        result["rss"].append(
            {
                "node": node.name,
                "start_mb": round(node.rss[0][1] / 1e6, 1) if node.rss else None,
                "after_warmup_mb": round(after[0][1] / 1e6, 1) if after else None,
                "end_mb": round(node.rss[-1][1] / 1e6, 1) if node.rss else None,
                "peak_mb": round(max(r for _, r in node.rss) / 1e6, 1) if node.rss else None,
                "slope_mb_per_min": None if (s := slope_mb_per_min(after)) is None else round(s, 3),
                "samples_mb": [round(r / 1e6, 1) for _, r in node.rss],
                "error_lines": len(errors),
                "errors_sample": errors[:5],
                "warnings": dict(warnings.most_common(5)),
            }
        )
    return result


async def converge(editors: list[Editor], bounces: list[asyncio.Event]) -> dict[str, Any]:
    """Editors stop editing and reconnect once more (a last sync); then every editor of a document must hold
    the same text, with every edit exactly once (bounded wait)."""
    for e, bounce in zip(editors, bounces, strict=True):
        e.rate = 0.0
        bounce.set()
    by_doc: dict[str, list[Editor]] = {}
    for e in editors:
        by_doc.setdefault(e.name, []).append(e)
    deadline = time.monotonic() + 60
    bad: list[str] = []
    while True:
        bad = []
        for name, group in by_doc.items():
            texts = {str(e.text) for e in group}
            expected = sum(e.edits for e in group)
            if len(texts) != 1 or len(re.findall(r"<\d+:\d+>", next(iter(texts)))) != expected:
                bad.append(name)
        if not bad or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return {"documents": len(by_doc), "not_converged": bad}


# ---------------------------------------------------------------- report


def report(results: list[dict[str, Any]], a: argparse.Namespace) -> str:
    out = []
    for r in results:
        out.append(
            f"== {r['layout']}: {r['nodes']} node(s), {r['seconds']} s, machine: other processes "
            f"{r['other_procs_cores']} cores (2 vCPU)"
        )
        out.append(
            f"publications {r['published']:,} (failed {r['publish_failed']}, publisher waited "
            f"{r['publish_waits']} times), deliveries {r['received']:,}, "
            f"lost {r['lost_gaps'] + r['lost_tail']} "
            f"(gaps {r['lost_gaps']}, never reached {r['lost_tail']}), "
            f"duplicates {r['duplicates']}"
        )
        lat = r["latency_ms"]
        out.append(
            f"latency ms p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} max {fmt(lat['max'])} "
            f"over {lat['n']:,}; "
            f"p99 per minute {r['latency_p99_per_min']}"
        )
        out.append(
            f"documents {r['docs_converged']['documents']}, "
            f"not converged {r['docs_converged']['not_converged']}, "
            f"edits {r['edits']:,}; presence checks {r['presence_checks']}; node CPU s {r['node_cpu_s']}"
        )
        if r["client_errors"]:
            out.append(f"client-side errors: {r['client_errors']}")
        for n in r["rss"]:
            out.append(
                f"  {n['node']}: RSS start {n['start_mb']} MB, after warm-up {n['after_warmup_mb']}, end "
                f"{n['end_mb']}, peak {n['peak_mb']}; slope after {a.warmup:.0f} s: "
                f"{n['slope_mb_per_min']} MB/min; error lines {n['error_lines']}"
            )
            out.append(f"    RSS samples MB: {n['samples_mb']}")
            for line in n["errors_sample"]:
                out.append(f"    ERROR: {line[:300]}")
            if n["warnings"]:
                out.append(f"    warnings: {n['warnings']}")
        lost = r["lost_gaps"] + r["lost_tail"]
        errors = sum(n["error_lines"] for n in r["rss"])
        out.append(
            f"{'PASS' if lost == 0 else 'FAIL'}: lost publications {lost}; "
            f"{'PASS' if errors == 0 else 'FAIL'}: error log lines {errors}; "
            f"{'PASS' if not r['docs_converged']['not_converged'] else 'FAIL'}: documents converged"
        )
    return "\n".join(out)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="load time per layout")
    ap.add_argument("--layouts", default="1node,3nodes")
    ap.add_argument("--warmup", type=float, default=None, help="s before the RSS slope counts (default 1/5)")
    ap.add_argument("--sample", type=float, default=10.0, help="s between RSS samples")
    ap.add_argument("--churn", type=float, default=1.0, help="s between two rounds of comings and goings")
    ap.add_argument("--subscribers", type=int, default=60)
    ap.add_argument("--channels", type=int, default=6)
    ap.add_argument("--rate", type=float, default=20.0, help="publications/s in all")
    ap.add_argument("--sse", type=int, default=8)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--editors", type=int, default=3)
    ap.add_argument("--edit-rate", type=float, default=2.0, help="edits/s per editor")
    ap.add_argument("--quick", action="store_true", help="60 s per layout, 5 s samples")
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.sample = 60.0, 5.0
    if a.warmup is None:
        a.warmup = a.seconds / 5
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", f"soak-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    layouts = {"1node": 1, "3nodes": 3}
    results = []
    for layout in a.layouts.split(","):
        results.append(uvloop.run(run_layout(layout, layouts[layout], a, logdir)))
        with open(os.path.join(RESULTS, f"soak-{stamp}.jsonl"), "a") as f:
            f.write(json.dumps(results[-1]) + "\n")
    text = report(results, a)
    print(text)
    print(f"logs: {logdir}")
    failed = any(
        r["lost_gaps"] + r["lost_tail"]
        or any(n["error_lines"] for n in r["rss"])
        or r["docs_converged"]["not_converged"]
        for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
