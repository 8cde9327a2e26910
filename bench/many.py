"""Many idle connections across nodes (issue 15): 100,000 subscribed connections on 6 nodes and one Redis.

Starts a redis-server of its own (free port, no persistence), --nodes `switchboard serve` nodes on it with
presence on (bench/results/hub-many.toml, written here: --channels channels `many0..`, presence and a
short history, no join/leave pushes), and ceil(N / --per-holder) holder processes (this file run as
``many.py hold``: uvloop + picows, each under this sandbox's 20,000 open files a process) that connect N
clients round-robin over the nodes, subscribe each to one channel (client i to many<i % channels>) and
answer pings. Then, while they are held:

* the time to connect and subscribe them all (or, past --connect-s, how many made it);
* each node's RSS, Redis's used_memory and RSS, and per connection;
* idle CPU of every node, of Redis and of the holders over --idle-s (pings every 25 s, presence refresh
  every 25 s: take --idle-s >= 25 to catch one of each);
* on every node: a probe client publishes to a channel and the holders count that every subscriber of it,
  on every node, got it exactly once; and a presence_stats query answers the channel's whole count (the
  subscribers of all nodes), and a presence query on a probe channel lists the probes of every node.

Everything it starts it stops by pid; every step is bounded; the whole run is kept under --budget-s.
The box is shared and has 2 cores: the holders and 6 nodes and Redis crowd it; times are the crowded box's.

usage: .venv/bin/python bench/many.py [--n 100000] [--nodes 6] [--channels 100] [--idle-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import select
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procstat  # noqa: E402

PY = sys.executable
RESULTS = os.path.join(HERE, "results")
CONFIG = """\
# written by bench/many.py: idle subscribed connections with presence, over several nodes and one Redis
allow_anonymous_connect_without_token = true
token_hmac_secret_key = "bench-many-secret-of-at-least-32-bytes"
log_level = "warning"
# the holders answer the pings of up to 16,700 connections a process on a crowded box: their pongs may be late
client_pong_timeout = "60s"

[channel]
presence = true
join_leave = false
history_size = 10
history_ttl = 300
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
"""


# =============================================================================== holder process


async def hold(a: argparse.Namespace) -> int:
    from picows import WSListener, WSMsgType, ws_connect

    urls = a.urls.split(",")
    state = {"connected": 0, "subscribed": 0, "failed": 0, "closed": 0, "pubs": 0, "dup": 0}
    seen: set[tuple[int, bytes]] = set()

    class Conn(WSListener):
        __slots__ = ("i",)

        def __init__(self, i: int) -> None:
            self.i = i

        def on_ws_connected(self, t) -> None:
            state["connected"] += 1
            ch = f"{a.prefix}{self.i % a.channels}"
            t.send(
                WSMsgType.TEXT, b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"%s"}}' % ch.encode()
            )

        def on_ws_frame(self, t, frame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                return
            for line in frame.get_payload_as_bytes().split(b"\n"):
                if line == b"{}":
                    t.send(WSMsgType.TEXT, b"{}")
                elif line.startswith(b'{"id":2'):
                    state["subscribed" if b'"subscribe"' in line else "failed"] += 1
                elif b'"pub"' in line:
                    key = (self.i, line[line.find(b'"probe":') :][:40])
                    if key in seen:
                        state["dup"] += 1
                    seen.add(key)
                    state["pubs"] += 1

        def on_ws_disconnected(self, t) -> None:
            state["closed"] += 1

    sem = asyncio.Semaphore(a.concurrency)

    async def one(i: int) -> None:
        async with sem:
            for attempt in range(3):
                try:
                    await ws_connect(lambda: Conn(i), urls[i % len(urls)], websocket_handshake_timeout=60)
                    return
                except Exception:  # noqa: BLE001 - counted
                    await asyncio.sleep(0.5 * (attempt + 1))
            state["failed"] += 1

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(one(i)) for i in range(a.first, a.first + a.n)]
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line or line.strip() == b"stop":
            break
        if line.strip() == b"halt":  # no more connects: what is held stays, the checks count on it
            for t in tasks:
                t.cancel()
        print(json.dumps({**state, "pending": sum(1 for t in tasks if not t.done())}), flush=True)
    return 0


# =============================================================================== orchestrator


class Holder:
    def __init__(self, first: int, n: int, a: argparse.Namespace, urls: list[str]) -> None:
        self.proc = subprocess.Popen(
            [
                PY,
                os.path.abspath(__file__),
                "hold",
                "--urls",
                ",".join(urls),
                "--first",
                str(first),
                "--n",
                str(n),
                "--channels",
                str(a.channels),
                "--prefix",
                a.prefix,
                "--concurrency",
                str(a.concurrency),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def ask(self, timeout: float = 30.0, what: str = "report") -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return {}
        line = self.proc.stdout.readline()
        return json.loads(line) if line.startswith("{") else {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(20)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(5)


def total(holders: list[Holder]) -> dict:
    out: dict = {}
    for h in holders:
        for k, v in h.ask().items():
            out[k] = out.get(k, 0) + v
    return out


def probe_checks(
    ports: list[int], a: argparse.Namespace, holders: list[Holder], per_channel: dict
) -> list[str]:
    """On every node: a publish reaches each subscriber of its channel once (on every node), presence_stats
    answers the channel's whole count, and presence on a probe channel lists the probes of every node."""
    from websockets.sync.client import connect

    lines = []
    probes = []
    for port in ports:
        ws = connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=60, close_timeout=5)
        ws.send('{"id":1,"connect":{}}')
        json.loads(ws.recv(60).split("\n")[0])
        ws.send('{"id":2,"subscribe":{"channel":"manyprobe"}}')
        while '"id":2' not in ws.recv(60):
            pass
        probes.append(ws)
    before = total(holders).get("pubs", 0)
    expected = 0
    for k, ws in enumerate(probes):
        ch = f"{a.prefix}{k % a.channels}"
        expected += per_channel.get(ch, 0)
        ws.send(
            json.dumps({"id": 3, "publish": {"channel": ch, "data": {"probe": f"node{k}-{time.time_ns()}"}}})
        )
        while '"id":3' not in (r := ws.recv(60)):
            pass
        ok = '"publish"' in r
        ws.send(json.dumps({"id": 4, "presence_stats": {"channel": ch}}))
        while '"id":4' not in (r := ws.recv(60)):
            pass
        stats = json.loads([x for x in r.split("\n") if '"id":4' in x][0]).get("presence_stats", {})
        ws.send('{"id":5,"presence":{"channel":"manyprobe"}}')
        while '"id":5' not in (r := ws.recv(60)):
            pass
        pres = (
            json.loads([x for x in r.split("\n") if '"id":5' in x][0]).get("presence", {}).get("presence", {})
        )
        lines.append(
            f"node{k + 1}: publish to {ch} {'ok' if ok else 'FAILED: ' + r[:200]}; presence_stats "
            f"{stats.get('num_clients')} clients (subscribed there: {per_channel.get(ch, 0)}) "
            f"{'ok' if stats.get('num_clients') == per_channel.get(ch, 0) else 'MISMATCH'}; presence of "
            f"manyprobe lists {len(pres)} of {len(ports)} probes "
            f"{'ok' if len(pres) == len(ports) else 'MISMATCH'}"
        )
    end = time.monotonic() + 60
    got = 0
    while time.monotonic() < end:
        t = total(holders)
        got = t.get("pubs", 0) - before
        if got >= expected:
            break
        time.sleep(1)
    t = total(holders)
    lines.append(
        f"publications delivered to held subscribers: {got} of {expected} expected "
        f"({'ok' if got == expected else 'MISMATCH'}), duplicates {t.get('dup', 0)}"
    )
    for ws in probes:
        ws.close()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "hold"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--prefix", default="many")
    ap.add_argument("--per-holder", type=int, default=16_000)
    ap.add_argument("--concurrency", type=int, default=200, help="connects in flight per holder")
    ap.add_argument("--connect-s", type=float, default=360.0, help="stop waiting for connections after this")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--budget-s", type=float, default=600.0)
    # holder options
    ap.add_argument("--urls", default="")
    ap.add_argument("--first", type=int, default=0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.mode == "hold":
        import uvloop

        return uvloop.run(hold(a))
    return run(a)


def run(a: argparse.Namespace) -> int:
    import fanout
    from cluster import RedisProc

    t_start = time.monotonic()
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", f"many-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    cfg_path = os.path.join(RESULTS, "hub-many.toml")
    with open(cfg_path, "w") as f:
        f.write(CONFIG)
    print(
        f"ulimit -n: {resource.getrlimit(resource.RLIMIT_NOFILE)}; {os.cpu_count()} cores; N={a.n} over "
        f"{a.nodes} nodes, {a.channels} channels",
        flush=True,
    )
    redis = RedisProc(logdir, "many")
    redis.start()
    nodes: list[subprocess.Popen] = []
    holders: list[Holder] = []
    logs = []
    try:
        ports = [fanout.free_port() for _ in range(a.nodes)]
        for k, port in enumerate(ports):
            log = open(os.path.join(logdir, f"node{k + 1}.log"), "w")
            logs.append(log)
            nodes.append(
                subprocess.Popen(
                    fanout.hub_argv(
                        port,
                        cfg_path,
                        node_name=f"n{k + 1}",
                        data_dir=tempfile.mkdtemp(prefix=f"many-n{k + 1}-"),
                        redis_urls=[redis.url],
                    ),
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        for proc, port in zip(nodes, ports, strict=True):
            why = fanout.wait_ready(proc, port, 60)
            if why:
                print(f"node on {port}: {why}")
                return 2
        rss0 = [procstat.rss_kb(p.pid) for p in nodes]
        rc = redis.client()
        redis_mem0 = rc.info("memory")["used_memory"]
        redis_rss0 = procstat.rss_kb(redis.proc.pid)
        urls = [f"ws://127.0.0.1:{p}/connection/websocket" for p in ports]
        t0 = time.monotonic()
        per = a.per_holder
        for i in range(math.ceil(a.n / per)):
            holders.append(Holder(i * per, min(per, a.n - i * per), a, urls))
        last = {}
        deadline = t0 + a.connect_s
        while time.monotonic() < deadline:
            time.sleep(5)
            last = total(holders)
            print(
                f"[{time.monotonic() - t0:5.0f}s] connected {last.get('connected', 0):,} subscribed "
                f"{last.get('subscribed', 0):,} failed {last.get('failed', 0)} "
                f"closed {last.get('closed', 0)}",
                flush=True,
            )
            if last.get("subscribed", 0) + last.get("failed", 0) >= a.n:
                break
        connect_s = time.monotonic() - t0
        for h in holders:  # connects still in flight are dropped: the checks need a set that holds still
            h.ask(what="halt")
        time.sleep(3)
        last = total(holders)
        held = last.get("subscribed", 0)
        print(
            f"held: {held:,} subscribed connections of {a.n:,} after {connect_s:.0f} s "
            f"({held / connect_s:,.0f}/s)" + ("" if held >= a.n else " -- NOT ALL: see below"),
            flush=True,
        )
        time.sleep(2)
        c0 = [procstat.cpu(p.pid) for p in nodes]
        r0 = procstat.cpu(redis.proc.pid)
        h0 = [procstat.cpu(h.proc.pid) for h in holders]
        time.sleep(a.idle_s)
        c1 = [procstat.cpu(p.pid) for p in nodes]
        r1 = procstat.cpu(redis.proc.pid)
        h1 = [procstat.cpu(h.proc.pid) for h in holders]
        rss = [procstat.rss_kb(p.pid) for p in nodes]
        mem = rc.info("memory")
        redis_rss = procstat.rss_kb(redis.proc.pid)
        node_cpu = [procstat.cpu_delta_s(x, y)["cpu_s"] / a.idle_s for x, y in zip(c0, c1, strict=True)]
        hold_cpu = sum(procstat.cpu_delta_s(x, y)["cpu_s"] for x, y in zip(h0, h1, strict=True)) / a.idle_s
        red_cpu = procstat.cpu_delta_s(r0, r1)["cpu_s"] / a.idle_s
        for k, (x, y) in enumerate(zip(rss0, rss, strict=True)):
            print(
                f"node{k + 1}: RSS {y / 1024:,.0f} MB (started at {x / 1024:,.0f} MB), idle CPU "
                f"{node_cpu[k] * 100:.1f}% of a core"
            )
        conns = max(held, 1)
        print(
            f"nodes: RSS {sum(rss) / 1024:,.0f} MB in all, {(sum(rss) - sum(rss0)) / conns:.1f} KB per held "
            f"connection over the nodes' start; idle CPU {sum(node_cpu) * 100:.1f}% of a core in all "
            f"({sum(node_cpu) / conns * 1e6:.2f} us/s per connection)"
        )
        print(
            f"redis: used_memory {mem['used_memory'] / 2**20:,.1f} MB (started at {redis_mem0 / 2**20:.1f}), "
            f"{(mem['used_memory'] - redis_mem0) / conns:.0f} bytes per connection; "
            f"RSS {redis_rss / 1024:,.0f} MB "
            f"(started {redis_rss0 / 1024:.0f}); idle CPU {red_cpu * 100:.1f}% of a core"
        )
        print(f"holders: idle CPU {hold_cpu * 100:.1f}% of a core (answering pings)", flush=True)
        # the checks: with every client held each channel's count is known; else presence's count on node 1
        if time.monotonic() - t_start < a.budget_s - 90:
            if held >= a.n:
                counts = {f"{a.prefix}{c}": len(range(c, a.n, a.channels)) for c in range(a.channels)}
            else:
                counts = presence_counts(ports[0], a)
                print(
                    "not every client is held: the counts checked are node 1's presence_stats, compared "
                    "with every other node's answer and with the deliveries"
                )
            for line in probe_checks(ports, a, holders, counts):
                print(line, flush=True)
        else:
            print("no time left in the budget for the checks")
        h = total(holders)
        print(
            f"at the end: connected {h.get('connected', 0):,} subscribed {h.get('subscribed', 0):,} closed "
            f"{h.get('closed', 0)}; whole run {time.monotonic() - t_start:.0f} s"
        )
        bad = 0
        for k in range(a.nodes):
            n_err, excerpt = fanout.scan_log(os.path.join(logdir, f"node{k + 1}.log"))
            bad += n_err
            for ln in excerpt[:3]:
                print(f"  node{k + 1} log: {ln[:200]}")
        print(f"error-looking lines in the node logs: {bad} (logs: {os.path.relpath(logdir, os.getcwd())})")
        return 0
    finally:
        for h in holders:
            h.stop()
        for p in nodes:
            fanout.stop_server(p)
        redis.stop()
        for log in logs:
            log.close()


def presence_counts(port: int, a: argparse.Namespace) -> dict:
    """Each channel's subscriber count as presence_stats answers it (when not every client was held)."""
    from websockets.sync.client import connect

    out = {}
    ws = connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=60)
    ws.send('{"id":1,"connect":{}}')
    ws.recv(60)
    for c in range(min(a.channels, a.nodes)):
        ch = f"{a.prefix}{c}"
        ws.send(json.dumps({"id": 10 + c, "presence_stats": {"channel": ch}}))
        while f'"id":{10 + c}' not in (r := ws.recv(60)):
            pass
        line = [x for x in r.split("\n") if f'"id":{10 + c}' in x][0]
        out[ch] = json.loads(line).get("presence_stats", {}).get("num_clients", 0)
    ws.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
