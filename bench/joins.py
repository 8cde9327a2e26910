"""Joins benchmark (issue 15): does a subscribe (or a leave) cost more as the room grows?

One channel with presence, join/leave and history (`bench/results/hub-joins.toml`, written here) is grown
to each size of --sizes (default 1,000 / 3,000 / 9,000 / 18,000 subscribers). At each size the load client
measures, on top of the room:

* quiet: a batch of --batch connected clients subscribes at once (no one in the room asked for join/leave
  pushes), then the same batch unsubscribes; --repeats times. Server CPU per subscribe and per leave.
* watched: --watchers clients subscribe with `join_leave: true` (they asked for join/leave pushes); the same
  batch subscribes and unsubscribes again. Each join and leave is then --watchers deliveries; the figure is
  server CPU per delivery, (CPU of the watched batch - CPU of the quiet batch at the same size) / deliveries.
  The watchers then unsubscribe, and the room grows to the next size.

Server CPU is /proc schedstat over the hub's process tree (bench/procstat.py), net of the hub's idle CPU
(pings, the session clock: measured over --idle-s just before, at that size, and subtracted per batch).
A phase ends when every reply (and every join/leave push a watcher must get) has arrived. The fill (connect +
subscribe of the clients that grow the room, --concurrency at a time) is timed too, as the issue timed it.

The anchor: with --anchor REV (default: main's commit this branch started from, see ANCHOR) the same load
runs against that commit's hub, checked out with `git worktree add --detach` into a temporary directory
(removed at the end), started the same way, alternating with this checkout's hub in one run. Each hub runs
with the memory broker and, with --brokers memory,redis, on a redis-server of our own (free port, no
persistence; never the system one).

The load client is this file run as `joins.py client ...` (one uvloop + picows process). It holds
max(sizes) + batch + watchers connections; this sandbox caps a process at 20,000 open files.

usage: .venv/bin/python bench/joins.py [--quick] [--sizes 1000,3000,9000,18000] [--brokers memory,redis]
       [--anchor REV | --no-anchor] [--batch 300] [--watchers 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
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
WS_PATH = "/connection/websocket"
CHANNEL = b"room"
ANCHOR = "f47d41835cf480cb1e984d60c58c5f928b531943"
"""main when issue 15's joins work started: the hub whose subscribe cost grew with the room."""

ROOM = """\
[channel]
presence = true
join_leave = true
force_push_join_leave = false
history_size = 100
history_ttl = 300
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
"""
"""The room issue 15 measures in: the unnamed namespace with presence, join/leave and history
(bench/memory.py holds its idle connections in the same)."""

CONFIG = """\
# written by bench/joins.py: one room with presence, join/leave and history
allow_anonymous_connect_without_token = true
token_hmac_secret_key = "bench-joins-secret-of-at-least-32-bytes"
log_level = "warning"
client_channel_limit = 8
# The node re-adds every presence entry each presence_update_interval (O(room) every 25 s by default): a
# periodic cost, not a subscribe's. Spread out here so that it does not land in a measured batch.
presence_update_interval = "300s"
presence_ttl = "600s"

"""
CONFIG += ROOM


# =============================================================================== load client


class Conn:
    """One client connection (picows listener); counts replies by command id and join/leave pushes."""

    __slots__ = ("t", "state", "joins", "leaves", "waiting", "_ready")

    def __init__(self) -> None:
        self.t = None
        self.state = 0
        self.joins = 0
        self.leaves = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self._ready: asyncio.Future | None = None


def client_classes():
    from picows import WSListener, WSMsgType

    text = WSMsgType.TEXT

    class Listener(WSListener):
        def __init__(self, conn: Conn, counters: dict) -> None:
            super().__init__()
            self.conn = conn
            self.counters = counters

        def on_ws_connected(self, transport) -> None:
            self.conn.t = transport

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type != text:
                if frame.msg_type == WSMsgType.CLOSE:
                    self.counters["closed"] += 1
                    transport.disconnect()
                return
            conn, counters = self.conn, self.counters
            for line in frame.get_payload_as_bytes().split(b"\n"):
                if not line:
                    continue
                if line == b"{}":
                    transport.send(text, b"{}")
                    continue
                if line.startswith(b'{"push"'):
                    if b'"join":' in line:
                        conn.joins += 1
                        counters["joins"] += 1
                    elif b'"leave":' in line:
                        conn.leaves += 1
                        counters["leaves"] += 1
                    continue
                import orjson

                msg = orjson.loads(line)
                fut = conn.waiting.pop(msg.get("id", 0), None)
                if "error" in msg:
                    counters["errors"] += 1
                    if len(counters["error_lines"]) < 5:
                        counters["error_lines"].append(line[:200].decode(errors="replace"))
                if fut is not None and not fut.done():
                    fut.set_result(msg)

        def on_ws_disconnected(self, transport) -> None:
            self.counters["disconnected"] += 1
            for fut in self.conn.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("disconnected"))

    return Listener


class Load:
    def __init__(self, a) -> None:
        self.a = a
        self.pids = [a.server_pid]
        self.counters = {
            "joins": 0,
            "leaves": 0,
            "errors": 0,
            "error_lines": [],
            "closed": 0,
            "disconnected": 0,
        }
        self.ids = 10
        self.Listener = client_classes()
        from picows import WSMsgType

        self.text = WSMsgType.TEXT

    def cmd(self, conn: Conn, body: bytes) -> asyncio.Future:
        self.ids += 1
        fut = asyncio.get_running_loop().create_future()
        conn.waiting[self.ids] = fut
        conn.t.send(self.text, b'{"id":%d,%s}' % (self.ids, body))
        return fut

    async def connect(self, n: int) -> list[Conn]:
        from picows import ws_connect

        out: list[Conn] = []
        sem = asyncio.Semaphore(self.a.concurrency)

        async def one() -> None:
            async with sem:
                conn = Conn()
                for attempt in range(3):
                    try:
                        await ws_connect(
                            lambda: self.Listener(conn, self.counters),
                            self.a.url,
                            websocket_handshake_timeout=30,
                            read_buffer_init_size=2048,
                        )
                        break
                    except Exception:  # noqa: BLE001 - retried, then raised
                        if attempt == 2:
                            raise
                        await asyncio.sleep(0.2 * (attempt + 1))
                reply = await asyncio.wait_for(self.cmd(conn, b'"connect":{}'), 30)
                if "error" in reply:
                    raise RuntimeError(f"connect refused: {reply}")
                out.append(conn)

        await asyncio.gather(*(one() for _ in range(n)))
        return out

    async def all(self, conns: list[Conn], body: bytes, limit: int | None = None) -> None:
        """Send ``body`` on every connection (``limit`` at a time, or all at once); wait for the replies."""
        if limit is None:
            replies = [self.cmd(c, body) for c in conns]
            await asyncio.wait_for(asyncio.gather(*replies), self.a.timeout)
            return
        sem = asyncio.Semaphore(limit)

        async def one(c: Conn) -> None:
            async with sem:
                await asyncio.wait_for(self.cmd(c, body), self.a.timeout)

        await asyncio.gather(*(one(c) for c in conns))

    async def pushes(self, target: int, leaves: bool = False) -> None:
        """Wait (polling, bounded) until ``target`` join (and leave) pushes have arrived in all."""

        def got() -> int:
            return self.counters["joins"] + (self.counters["leaves"] if leaves else 0)

        end = time.monotonic() + self.a.timeout
        while got() < target:  # noqa: ASYNC110 - the picows callbacks count; a poll is the cheapest wait
            if time.monotonic() > end:
                raise TimeoutError(f"{target - got()} join/leave pushes missing")
            await asyncio.sleep(0.005)

    def cpu(self) -> float:
        return sum(procstat.cpu(p)["sched_ns"] for p in self.pids) / 1e9

    async def idle_rate(self) -> float:
        c0, t0 = self.cpu(), time.monotonic()
        await asyncio.sleep(self.a.idle_s)
        return (self.cpu() - c0) / (time.monotonic() - t0)

    async def measured(self, what, idle: float, pushes: int = 0) -> dict:
        """CPU (net of idle) and wall time of ``what`` (a coroutine factory), until its replies and
        ``pushes`` more join/leave pushes have arrived."""
        c0, t0 = self.cpu(), time.monotonic()
        target = self.counters["joins"] + self.counters["leaves"] + pushes
        await what()
        await self.pushes(target, leaves=True)
        wall = time.monotonic() - t0
        cpu = self.cpu() - c0
        return {"cpu_s": cpu, "net_cpu_s": max(0.0, cpu - idle * wall), "wall_s": wall}


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


async def client_main(a) -> int:
    load = Load(a)
    sub = b'"subscribe":{"channel":"%s"}' % CHANNEL
    sub_watch = b'"subscribe":{"channel":"%s","join_leave":true}' % CHANNEL
    unsub = b'"unsubscribe":{"channel":"%s"}' % CHANNEL
    batch = await load.connect(a.batch)
    watchers = await load.connect(a.watchers)
    room: list[Conn] = []
    for size in a.sizes:
        grow = size - len(room)
        t0, c0 = time.monotonic(), load.cpu()
        new = await load.connect(grow)
        await load.all(new, sub, a.concurrency)
        room += new
        fill_wall, fill_cpu = time.monotonic() - t0, load.cpu() - c0
        idle = await load.idle_rate()
        row: dict = {
            "phase": "size",
            "size": size,
            "fill_clients": grow,
            "fill_ms_per_client": round(fill_wall * 1e3 / grow, 3),
            "fill_cpu_us_per_client": round(fill_cpu * 1e6 / grow, 1),
            "idle_cores": round(idle, 4),
        }
        quiet_sub, quiet_leave = [], []
        for _ in range(a.repeats):
            s = await load.measured(lambda: load.all(batch, sub), idle)
            u = await load.measured(lambda: load.all(batch, unsub), idle)
            quiet_sub.append(s)
            quiet_leave.append(u)
        row["subscribe_us"] = round(statistics.median(x["net_cpu_s"] for x in quiet_sub) * 1e6 / a.batch, 1)
        row["leave_us"] = round(statistics.median(x["net_cpu_s"] for x in quiet_leave) * 1e6 / a.batch, 1)
        row["subscribe_us_all"] = [round(x["net_cpu_s"] * 1e6 / a.batch, 1) for x in quiet_sub]
        row["leave_us_all"] = [round(x["net_cpu_s"] * 1e6 / a.batch, 1) for x in quiet_leave]
        row["subscribe_wall_ms"] = round(statistics.median(x["wall_s"] for x in quiet_sub) * 1e3, 1)
        if a.watchers:
            w = len(watchers)
            pushes_before = load.counters["joins"]
            await load.all(watchers, sub_watch)
            # every watcher hears the joins of the watchers after it (and its own): wait for them first
            await load.pushes(pushes_before + w * (w + 1) // 2)
            idle_w = await load.idle_rate()
            ws_, wl_ = [], []
            for _ in range(a.repeats):
                ws_.append(await load.measured(lambda: load.all(batch, sub), idle_w, a.batch * w))
                wl_.append(await load.measured(lambda: load.all(batch, unsub), idle_w, a.batch * w))
            dlv = a.batch * w
            ws_cpu = statistics.median(x["net_cpu_s"] for x in ws_)
            wl_cpu = statistics.median(x["net_cpu_s"] for x in wl_)
            row["watched_subscribe_us"] = round(ws_cpu * 1e6 / a.batch, 1)
            row["watched_leave_us"] = round(wl_cpu * 1e6 / a.batch, 1)
            qs = statistics.median(x["net_cpu_s"] for x in quiet_sub)
            ql = statistics.median(x["net_cpu_s"] for x in quiet_leave)
            row["join_push_us_per_delivery"] = round(max(0.0, ws_cpu - qs) * 1e6 / dlv, 3)
            row["leave_push_us_per_delivery"] = round(max(0.0, wl_cpu - ql) * 1e6 / dlv, 3)
            await load.all(watchers, unsub)
        row["errors"] = load.counters["errors"]
        row["closed"] = load.counters["closed"]
        emit(row)
    emit({"phase": "client", **{k: v for k, v in load.counters.items()}})
    for c in batch + watchers + room:
        try:
            c.t.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
    await asyncio.sleep(0.5)
    return 0 if not load.counters["errors"] else 3


# =============================================================================== orchestrator


def fanout_helpers():
    import fanout

    return fanout


def run_cell(server: str, root: str, broker: str, redis, a, logdir: str, config_path: str) -> dict:
    fo = fanout_helpers()
    cell: dict = {"server": server, "broker": broker}
    bg, waited = fo.wait_quiet(a.quiet_threshold, a.quiet_wait)
    cell.update({"bg_cores_before": bg, "quiet_wait_s": waited, "load_before": os.getloadavg()})
    port = fo.free_port()
    data_dir = tempfile.mkdtemp(prefix="bench-joins-")
    if redis is not None:
        redis.reset()
    argv = fo.hub_argv(
        port, config_path, data_dir=data_dir, redis_urls=[redis.url] if redis is not None else []
    )
    log_path = os.path.join(logdir, f"{server}-{broker}.log")
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=root)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            why = fo.wait_ready(proc, port, 30)
            if why:
                cell["error"] = why
                return cell
            cmd = [
                PY,
                os.path.abspath(__file__),
                "client",
                "--url",
                f"ws://127.0.0.1:{port}{WS_PATH}",
                "--server-pid",
                str(proc.pid),
                "--sizes",
                ",".join(map(str, a.sizes)),
                "--batch",
                str(a.batch),
                "--watchers",
                str(a.watchers),
                "--repeats",
                str(a.repeats),
                "--idle-s",
                str(a.idle_s),
                "--concurrency",
                str(a.concurrency),
            ]
            try:
                r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.cell_timeout)
            except subprocess.TimeoutExpired:
                cell["error"] = f"load client exceeded {a.cell_timeout}s"
                return cell
            cell["sizes"] = []
            for line in r.stdout.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    if row.pop("phase") == "size":
                        cell["sizes"].append(row)
                    else:
                        cell["client"] = row
            if r.returncode != 0:
                cell["error"] = f"load client exit {r.returncode}: {r.stderr[-1500:]}"
        finally:
            fo.stop_server(proc)
            shutil.rmtree(data_dir, ignore_errors=True)
            cell["cell_seconds"] = round(time.monotonic() - t0, 1)
    cell["server_log_error_lines"], cell["server_log_excerpt"] = fo.scan_log(log_path)
    return cell


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def report(cells: list[dict], a) -> str:
    out = [
        f"Joins: one room (presence, join/leave, history 100); batch {a.batch} subscribes at once, "
        f"{a.watchers} watchers (join_leave: true) in the watched phase; medians of {a.repeats}; "
        f"server CPU net of idle; load average at start {os.getloadavg()[0]:.1f}."
    ]
    head = (
        f"{'hub':<8} {'broker':<7} {'size':>6} {'fill ms/cl':>10} {'sub us':>8} {'leave us':>9} "
        f"{'w.sub us':>9} {'w.leave us':>10} {'join us/dlv':>11} {'leave us/dlv':>12} "
        f"{'sub/first':>9} {'leave/first':>11} {'dlv/first':>9}"
    )
    out += ["", head, "-" * len(head)]
    by = {}
    for c in cells:
        if "error" in c:
            out.append(f"! {c['server']} {c['broker']}: {c['error'][:400]}")
        rows = c.get("sizes") or []
        by[(c["server"], c["broker"])] = rows
        first = rows[0] if rows else {}
        for r in rows:

            def rel(key, r=r, first=first):
                return f"{r[key] / first[key]:.2f}x" if first.get(key) and r.get(key) is not None else "-"

            out.append(
                f"{c['server']:<8} {c['broker']:<7} {r['size']:>6} {fmt(r['fill_ms_per_client'], '.2f'):>10} "
                f"{fmt(r.get('subscribe_us')):>8} {fmt(r.get('leave_us')):>9} "
                f"{fmt(r.get('watched_subscribe_us')):>9} {fmt(r.get('watched_leave_us')):>10} "
                f"{fmt(r.get('join_push_us_per_delivery'), '.2f'):>11} "
                f"{fmt(r.get('leave_push_us_per_delivery'), '.2f'):>12} "
                f"{rel('subscribe_us'):>9} {rel('leave_us'):>11} {rel('join_push_us_per_delivery'):>9}"
            )
        if c.get("server_log_error_lines"):
            out.append(
                f"! {c['server']} {c['broker']}: {c['server_log_error_lines']} error-looking lines: "
                + " | ".join(c["server_log_excerpt"][:3])[:400]
            )
    for broker in a.broker_list:
        mine, old = by.get(("hub", broker)), by.get(("anchor", broker))
        if mine and old:
            out.append("")
            out.append(
                f"hub/anchor ({broker}): "
                + "; ".join(
                    f"{m['size']}: sub {m['subscribe_us'] / o['subscribe_us']:.2f}x, "
                    f"leave {m['leave_us'] / o['leave_us']:.2f}x"
                    for m, o in zip(mine, old, strict=False)
                    if o.get("subscribe_us") and o.get("leave_us")
                )
            )
    out.append("")
    out.append(
        "Columns: fill = connect + subscribe of the clients that grew the room (wall ms per client); "
        "sub/leave us = server CPU per subscribe / unsubscribe, nobody asking for join/leave pushes; "
        "w.sub/w.leave = the same with the watchers in the room; us/dlv = (watched - quiet) CPU / "
        "join (leave) pushes delivered; x/first = this size over the first size (flat: within 1.2x)."
    )
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        ap = argparse.ArgumentParser()
        ap.add_argument("client")
        ap.add_argument("--url", required=True)
        ap.add_argument("--server-pid", type=int, required=True)
        ap.add_argument("--sizes", required=True)
        ap.add_argument("--batch", type=int, default=300)
        ap.add_argument("--watchers", type=int, default=500)
        ap.add_argument("--repeats", type=int, default=3)
        ap.add_argument("--idle-s", type=float, default=1.0)
        ap.add_argument("--concurrency", type=int, default=200)
        ap.add_argument("--timeout", type=float, default=120.0)
        a = ap.parse_args()
        a.sizes = [int(x) for x in a.sizes.split(",")]
        need = max(a.sizes) + a.batch + a.watchers + 100
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
        import uvloop

        return uvloop.run(client_main(a))

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 500,2000, one repeat: a smoke run")
    ap.add_argument("--sizes", default="1000,3000,9000,18000")
    ap.add_argument("--brokers", default="memory,redis", help="comma list of: memory, redis")
    ap.add_argument("--anchor", default=ANCHOR, help="git revision of the anchor hub (default: %(default)s)")
    ap.add_argument("--no-anchor", action="store_true", help="measure this checkout only")
    ap.add_argument("--batch", type=int, default=300)
    ap.add_argument("--watchers", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle-s", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=200, help="connects/subscribes in flight (fill)")
    ap.add_argument("--quiet-threshold", type=float, default=0.5)
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    ap.add_argument("--cell-timeout", type=float, default=1800.0)
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.repeats, a.quiet_wait = "500,2000", 1, 0.0
    a.sizes = [int(x) for x in str(a.sizes).split(",")]
    a.broker_list = [b for b in a.brokers.split(",") if b]
    if max(a.sizes) + a.batch + a.watchers + 200 > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        ap.error("sizes + batch + watchers exceed the open-file limit")
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", f"joins-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    config_path = os.path.join(RESULTS, "hub-joins.toml")
    with open(config_path, "w") as f:
        f.write(CONFIG)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it

    servers = [("hub", ROOT)]
    anchor_dir = None
    if not a.no_anchor:
        anchor_dir = tempfile.mkdtemp(prefix="bench-joins-anchor-")
        os.rmdir(anchor_dir)
        subprocess.run(
            ["git", "worktree", "add", "--detach", anchor_dir, a.anchor],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        servers.append(("anchor", anchor_dir))
    redis = None
    cells: list[dict] = []
    out_path = os.path.join(RESULTS, f"joins-{stamp}.jsonl")
    try:
        if "redis" in a.broker_list:
            import cluster

            redis = cluster.RedisProc(logdir, "joins")
            redis.start()
        with open(out_path, "a") as out:
            out.write(
                json.dumps(
                    {
                        "kind": "meta",
                        "argv": sys.argv[1:],
                        "sizes": a.sizes,
                        "anchor": a.anchor,
                        "load": os.getloadavg(),
                        **fanout_helpers().versions(),
                    }
                )
                + "\n"
            )
            for i, broker in enumerate(a.broker_list):
                order = servers if i % 2 == 0 else servers[::-1]
                for name, root in order:
                    t0 = time.monotonic()
                    cell = run_cell(
                        name, root, broker, redis if broker == "redis" else None, a, logdir, config_path
                    )
                    cell["kind"] = "cell"
                    cells.append(cell)
                    out.write(json.dumps(cell) + "\n")
                    out.flush()
                    print(
                        f"[{name} {broker}] {time.monotonic() - t0:.0f}s "
                        + (
                            cell.get("error", "")[:300]
                            or " ".join(
                                f"{r['size']}:{r.get('subscribe_us')}/{r.get('leave_us')}us"
                                for r in cell.get("sizes", [])
                            )
                        ),
                        flush=True,
                    )
            table = report(cells, a)
            out.write(json.dumps({"kind": "summary", "table": table}) + "\n")
    finally:
        if redis is not None:
            redis.stop()
        if anchor_dir is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", anchor_dir], cwd=ROOT, capture_output=True
            )
    print()
    print(table)
    print(f"\nresults: {os.path.relpath(out_path, os.getcwd())}")
    return 1 if any("error" in c for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
