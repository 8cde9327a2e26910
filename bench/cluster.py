"""Many-nodes benchmark: the hub as one node, and as three nodes on Redis (one server, then two shards).

Issue 5: "Three nodes on one Redis, then on two shards: one publisher, subscribers spread over the nodes.
Report deliveries per second, p50/p99 publish-to-receive latency, and the hub's and Redis's CPU per message,
beside the single-node figures from the same run."

Layouts, measured one after the other in one run, with the same N, rates and phases:

  1. 1node-memory     one node, memory broker (the baseline of this run);
  2. 1node-redis      one node on one Redis (every publication goes through Redis and back);
  3. 3nodes-redis     three nodes on one Redis;
  4. 3nodes-2shards   three nodes on two Redis servers (channels spread by consistent hashing).

Each layout runs once per entry of --channels (default "1,6"):

* 1 channel: every subscriber on channel `bench`, the issue's setting. A channel lives on one shard, so in
  layout 4 only one of the two Redis servers carries the traffic (the table shows its share).
* C channels (default 6): subscriber i on channel (i // nodes) % C, so each channel has N/C subscribers spread
  evenly over the nodes; the publisher goes round-robin over the channels. A publication then reaches N/C
  subscribers, so at the same deliveries/s there are C times more publications (and Redis work) per second.
  The channel names are `<prefix>0..<prefix>C-1`; the prefix is the first of bench, bench-a, bench-b, ...
  whose channels split evenly over the two shards of this run (the ring positions depend on the servers'
  ports), so both shards work equally in layout 4. The EVALSHA + PUBLISH calls each shard served are
  printed (one publish script per publication, plus the nodes' own control-channel traffic).

The load client is bench/load_client.py (one uvloop + picows process): N WebSocket JSON subscribers spread
round-robin over the nodes, one publisher on node 1, phases idle / warm-up / steady (open loop at --rate
deliveries/s: latency) / saturate (closed loop: max deliveries/s). Hub CPU is the sum over every node's
process tree; Redis CPU is each redis-server's /proc schedstat over the same phase (bench/procstat.py).

The machine has 2 vCPUs. Three nodes + Redis + the load client oversubscribe it, so deliveries/s and latency
with three nodes measure a crowded box, not what three machines would do. CPU per delivery (hub) and per
publication (Redis) are the meaningful figures; read the ratios against layout 1 of the same run.

Every process (redis-server on free ports, never the system one on 6379; hub nodes) is started here and
stopped by its pid; every step is bounded in time. Results: bench/results/cluster-<time>.jsonl (gitignored),
logs in bench/results/logs/cluster-<time>/.

The anchor (issue 15): with --anchor REV every cell also runs on that commit's hub (checked out with
`git worktree add --detach` into a temporary directory, removed at the end), right after (or before: the
order alternates) this checkout's, and the table is printed for each, with the goal's ratio (3 nodes on
Redis / one memory-broker node, saturated deliveries/s) side by side.

usage: .venv/bin/python bench/cluster.py [--quick] [--n 900] [--channels 1,6] [--layouts ...] [--repeats R]
       [--anchor REV]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import fanout  # noqa: E402 - reuse its process helpers and the pure fan-out hub config

PY = sys.executable
RESULTS = os.path.join(HERE, "results")
WS_PATH = "/connection/websocket"

# name -> (nodes, Redis servers); 0 servers = memory broker
LAYOUTS = {
    "1node-memory": (1, 0),
    "1node-redis": (1, 1),
    "3nodes-redis": (3, 1),
    "3nodes-2shards": (3, 2),
}
BASE = "1node-memory"
PREFIXES = ["bench"] + [f"bench-{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


# ------------------------------------------------------------------------------- Redis


class RedisProc:
    """A redis-server of our own: free loopback port, no persistence, own directory."""

    def __init__(self, logdir: str, name: str) -> None:
        self.port = fanout.free_port()
        self.dir = tempfile.mkdtemp(prefix=f"bench-redis-{name}-")
        self.log_path = os.path.join(logdir, f"redis-{name}.log")
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on {self.port} exited ({self.proc.returncode}): see {self.log_path}"
                )
            try:
                if self.client().ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > end:
                    raise
            time.sleep(0.05)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, protocol=2)

    def reset(self) -> None:
        """Between cells: no data, no command statistics."""
        c = self.client()
        c.flushall()
        c.config_resetstat()

    def calls(self) -> dict:
        """Calls per command since the last reset (INFO commandstats)."""
        stats = self.client().info("commandstats")
        return {k.removeprefix("cmdstat_"): v.get("calls", 0) for k, v in stats.items()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def shard_split(urls: list[str], names: list[str]) -> list[int]:
    """Which shard (index into urls) each channel lands on, by the hub's own ring (anonymous = tenant "")."""
    from channels.redis_shards import RedisShards, route_of

    shards = RedisShards(urls)
    return [shards.shard_for(route_of("", name)).index for name in names]


def pick_prefix(urls: list[str], channels: int) -> tuple[str, list[int]]:
    """The first prefix whose channels split evenly over the shards (or the most even one tried)."""
    best = None
    for prefix in PREFIXES:
        split = shard_split(urls, [f"{prefix}{i}" for i in range(channels)])
        counts = [split.count(i) for i in range(len(urls))]
        spread = max(counts) - min(counts)
        if best is None or spread < best[0]:
            best = (spread, prefix, split)
        if spread <= channels % len(urls):
            break
    return best[1], best[2]


# ------------------------------------------------------------------------------- one cell


def node_argv(port: int, name: str, redis_urls: list[str], data_dir: str, a) -> list[str]:
    """The command line of one node (run with cwd and PYTHONPATH at the hub's checkout)."""
    return fanout.hub_argv(port, a.hub_config_path, node_name=name, data_dir=data_dir, redis_urls=redis_urls)


def run_cell(
    layout: str,
    channels: int,
    prefix: str,
    rep: int,
    redis: list[RedisProc],
    a,
    logdir: str,
    hub: tuple[str, str] = ("hub", ROOT),
) -> dict:
    nodes, nshards = LAYOUTS[layout]
    shards = redis[:nshards]
    cell = {
        "layout": layout,
        "nodes": nodes,
        "shards": nshards,
        "channels": channels,
        "channel_prefix": prefix if channels > 1 else "bench",
        "n": a.n,
        "repeat": rep,
        "hub": hub[0],
    }
    bg, waited = fanout.wait_quiet(a.quiet_threshold, a.quiet_wait)
    cell.update({"bg_cores_before": bg, "quiet_wait_s": waited})
    for r in shards:
        r.reset()
    procs: list[subprocess.Popen] = []
    logs = []
    ports = [fanout.free_port() for _ in range(nodes)]
    data_root = tempfile.mkdtemp(prefix="bench-cluster-")
    t_start = time.monotonic()
    try:
        for k, port in enumerate(ports):
            log_path = os.path.join(logdir, f"{hub[0]}-{layout}-c{channels}-r{rep}-node{k + 1}.log")
            logs.append(log_path)
            data_dir = os.path.join(data_root, f"node{k + 1}")
            with open(log_path, "w") as log:
                procs.append(
                    subprocess.Popen(
                        node_argv(port, f"node{k + 1}", [r.url for r in shards], data_dir, a),
                        cwd=hub[1],
                        env=dict(os.environ, PYTHONPATH=hub[1]),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        for k, (proc, port) in enumerate(zip(procs, ports, strict=True)):
            why = fanout.wait_ready(proc, port, a.ready_timeout)
            if why:
                cell["error"] = f"node{k + 1}: {why}"
                return cell
        urls = [f"ws://127.0.0.1:{p}{WS_PATH}" for p in ports]
        cmd = [
            PY,
            os.path.join(HERE, "load_client.py"),
            "--url",
            urls[0],
            "--sub-urls",
            ",".join(urls),
            "--n",
            str(a.n),
            "--server-pid",
            ",".join(str(p.pid) for p in procs),
            "--redis-pid",
            ",".join(str(r.proc.pid) for r in shards),
            "--channel",
            prefix if channels > 1 else "bench",
            "--channels",
            str(channels),
            *fanout.phase_args(a),
        ]
        if not fanout.run_load_client(cmd, a, cell):
            return cell
        add_redis_net(cell)
        for k, proc in enumerate(procs):
            if proc.poll() is not None:
                cell.setdefault("error", f"node{k + 1} died during the run (status {proc.returncode})")
        # what each shard did over the whole cell (warm-up included): one publish script per publication,
        # plus the nodes' own traffic (control channel announcements, presence) wherever it lives
        cell["redis_calls"] = [
            {
                k: v
                for k, v in r.calls().items()
                if k in ("evalsha", "eval", "publish", "spublish", "subscribe", "xadd")
            }
            for r in shards
        ]
    finally:
        for proc in procs:
            fanout.stop_server(proc)
        shutil.rmtree(data_root, ignore_errors=True)
        cell["cell_seconds"] = round(time.monotonic() - t_start, 1)
    nerr, excerpt = 0, []
    for path in logs:
        n, ex = fanout.scan_log(path)
        nerr += n
        excerpt += ex[:4]
    cell["server_logs"] = [os.path.relpath(p, ROOT) for p in logs]
    cell["server_log_error_lines"] = nerr
    if excerpt:
        cell["server_log_excerpt"] = excerpt
    return cell


def add_redis_net(cell: dict) -> None:
    """Redis CPU per publication / delivery net of what Redis burns anyway: its idle CPU measured in the
    idle phase (nodes connected and subscribed, nothing published: serverCron, the nodes' own traffic).
    At ~20 publications/s (one channel, 900 subscribers) that idle share is most of the gross figure."""
    idle = g(cell, "idle", "redis_idle_cpu_util")
    if idle is None:
        return
    for ph in ("steady", "saturate"):
        row = cell.get(ph)
        if not row or row.get("redis_cpu_s") is None:
            continue
        net = max(0.0, row["redis_cpu_s"] - idle * row["redis_wall_s"])
        row["redis_net_cpu_s"] = round(net, 4)
        if row.get("published"):
            row["redis_net_us_per_publication"] = round(net * 1e6 / row["published"], 2)
        if row.get("delivered"):
            row["redis_net_us_per_delivery"] = round(net * 1e6 / row["delivered"], 3)


# ------------------------------------------------------------------------------- reporting


def g(cell: dict, phase: str, key: str):
    return (cell.get(phase) or {}).get(key)


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def ratio(v, base) -> str:
    return "-" if v is None or not base else f"{v / base:.2f}x"


def is_noisy(c: dict, a) -> bool:
    if (c.get("bg_cores_before") or 0) > a.quiet_threshold:
        return True
    return any(
        (g(c, ph, "box_steal_cores") or 0) > 0.1 or (g(c, ph, "other_cores") or 0) > a.noise_threshold
        for ph in ("steady", "saturate")
    )


def aggregate(cells: list[dict]) -> dict:
    """Median over the repeats of one (layout, channels) without errors (clean ones if any)."""
    ok = [c for c in cells if "error" not in c]
    ok = [c for c in ok if not c.get("noisy")] or ok
    m = {}
    for key, ph, field in (
        ("steady_dps", "steady", "deliveries_per_s"),
        ("p50", "steady", "p50_ms"),
        ("p99", "steady", "p99_ms"),
        ("steady_us", "steady", "server_cpu_us_per_delivery"),
        ("steady_redis_us_pub", "steady", "redis_net_us_per_publication"),
        ("steady_redis_us_dlv", "steady", "redis_net_us_per_delivery"),
        ("steady_redis_gross_us_pub", "steady", "redis_cpu_us_per_publication"),
        ("sat_dps", "saturate", "deliveries_per_s"),
        ("sat_pps", "saturate", "publications_per_s"),
        ("sat_us", "saturate", "server_cpu_us_per_delivery"),
        ("sat_redis_us_pub", "saturate", "redis_net_us_per_publication"),
        ("sat_redis_us_dlv", "saturate", "redis_net_us_per_delivery"),
        ("redis_idle_cores", "idle", "redis_idle_cpu_util"),
        ("steady_other", "steady", "other_cores"),
        ("sat_other", "saturate", "other_cores"),
        ("sat_hub_cores", "saturate", "server_cpu_util"),
        ("sat_redis_cores", "saturate", "redis_cpu_util"),
        ("sat_busy", "saturate", "box_busy_cores"),
        ("idle_kb", "idle", "idle_kb_per_conn"),
    ):
        m[key] = med(g(c, ph, field) for c in ok)
    m["lost"] = sum((g(c, ph, "missing") or 0) for c in cells for ph in ("steady", "saturate"))
    m["errors"] = [c["error"] for c in cells if "error" in c]
    m["noisy"] = bool(ok) and all(c.get("noisy") for c in ok)
    m["runs"] = len(cells)
    m["clean"] = sum(1 for c in cells if "error" not in c and not c.get("noisy"))
    calls = [c.get("redis_calls") for c in ok if c.get("redis_calls")]
    if calls:
        last = calls[-1]
        m["shard_scripts"] = [
            sum(d.get(k, 0) for k in ("evalsha", "eval", "publish", "spublish")) for d in last
        ]
    cpu_each = [g(c, "saturate", "redis_cpu_s_each") for c in ok if g(c, "saturate", "redis_cpu_s_each")]
    if cpu_each:
        m["shard_cpu_s_sat"] = cpu_each[-1]
    return m


def report(cells: list[dict], a) -> tuple[str, dict]:
    out = [
        f"Many nodes, one hub: N={a.n} WebSocket JSON subscribers spread round-robin over the nodes, "
        f"1 publisher on node 1, {a.data_bytes} B data; steady {a.rate:,.0f} deliveries/s "
        f"for {a.steady_s:g} s, "
        f"saturate {a.sat_s:g} s ({a.window_deliveries} deliveries in flight); hub config: "
        + (
            f"history {a.history_size} / {a.history_ttl} s, presence and join/leave off"
            if a.history_size
            else "pure fan-out (history, presence, join/leave off)"
        )
        + f"; {os.cpu_count()} vCPUs."
    ]
    summary = {"kind": "summary", "groups": {}}
    head = (
        f"{'layout':<15} {'steady dlv/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'hub us/dlv':>10} "
        f"{'redis us/pub':>12} {'redis us/dlv':>12} | {'sat dlv/s':>9} {'hub us/dlv':>10} "
        f"{'redis us/pub':>12} {'redis us/dlv':>12} {'hub/redis cores':>15} {'lost':>5}  notes"
    )
    for ch in a.channel_list:
        prefix = next((c["channel_prefix"] for c in cells if c["channels"] == ch), "bench")
        fan = a.n // ch
        out.append("")
        out.append(
            f"== {ch} channel{'s' if ch > 1 else ''}: each publication reaches {fan} subscribers"
            + (f" (channels {prefix}0..{prefix}{ch - 1})" if ch > 1 else " (channel bench)")
        )
        out.append(head)
        out.append("-" * len(head))
        aggs = {}
        for lay in a.layout_list:
            mine = [c for c in cells if c["layout"] == lay and c["channels"] == ch]
            if not mine:
                continue
            m = aggs[lay] = aggregate(mine)
            notes = []
            if m["errors"]:
                notes.append(f"ERROR x{len(m['errors'])}")
            if m["runs"] > 1:
                notes.append(f"{m['clean']}/{m['runs']} clean")
            if m["noisy"]:
                other = f"{fmt(m['steady_other'], '.2f')}/{fmt(m['sat_other'], '.2f')}"
                notes.append(f"noisy (others used {other} cores)")
            if m.get("redis_idle_cores") is not None:
                notes.append(f"redis idle {m['redis_idle_cores'] * 1000:.1f} ms/s")
            if m.get("shard_scripts") and len(m["shard_scripts"]) > 1:
                notes.append("EVALSHA+PUBLISH per shard " + "/".join(f"{x:,}" for x in m["shard_scripts"]))
            if m.get("shard_cpu_s_sat") and len(m["shard_cpu_s_sat"]) > 1:
                notes.append("shard CPU s (sat) " + "/".join(f"{x:.2f}" for x in m["shard_cpu_s_sat"]))
            cores = (
                "-"
                if m["sat_hub_cores"] is None
                else f"{m['sat_hub_cores']:.2f}/{fmt(m['sat_redis_cores'], '.2f')}"
            )
            out.append(
                f"{lay:<15} {fmt(m['steady_dps']):>12} {fmt(m['p50'], '.2f'):>7} {fmt(m['p99'], '.2f'):>7} "
                f"{fmt(m['steady_us'], '.2f'):>10} {fmt(m['steady_redis_us_pub'], '.1f'):>12} "
                f"{fmt(m['steady_redis_us_dlv'], '.3f'):>12} | {fmt(m['sat_dps']):>9} "
                f"{fmt(m['sat_us'], '.2f'):>10} {fmt(m['sat_redis_us_pub'], '.1f'):>12} "
                f"{fmt(m['sat_redis_us_dlv'], '.3f'):>12} {cores:>15} {m['lost']:>5}  {'; '.join(notes)}"
            )
        b = aggs.get(BASE)
        if b:
            for lay, m in aggs.items():
                if lay == BASE:
                    continue
                out.append(
                    f"{lay + '/1node':<15} {ratio(m['steady_dps'], b['steady_dps']):>12} "
                    f"{ratio(m['p50'], b['p50']):>7} {ratio(m['p99'], b['p99']):>7} "
                    f"{ratio(m['steady_us'], b['steady_us']):>10} {'':>12} {'':>12} | "
                    f"{ratio(m['sat_dps'], b['sat_dps']):>9} {ratio(m['sat_us'], b['sat_us']):>10}"
                )
        summary["groups"][str(ch)] = aggs
    out.append("")
    for c in cells:
        tag = f"{c['layout']} c{c['channels']} r{c['repeat']}"
        if "error" in c:
            out.append(f"! {tag}: {c['error'][:300]}")
        if c.get("server_log_error_lines"):
            out.append(f"! {tag}: {c['server_log_error_lines']} error-looking lines in the node logs")
            for ln in c.get("server_log_excerpt", [])[:4]:
                out.append(f"    {ln[:200]}")
        cl = c.get("client") or {}
        if cl.get("close_codes"):
            out.append(f"! {tag}: the hub closed connections: {cl['close_codes']}")
        for ph in ("steady", "saturate"):
            if g(c, ph, "missing"):
                out.append(
                    f"! {tag} {ph}: {g(c, ph, 'missing')} deliveries missing, "
                    f"{g(c, ph, 'subs_short')} subscribers short"
                )
    out.append(
        "Columns: dlv = delivery (one publication received by one subscriber); hub us/dlv = CPU of every "
        "node's process tree / deliveries; redis us/pub and us/dlv = CPU of the redis-server processes, "
        "net of their idle CPU (notes: redis idle, measured with every node connected and nothing "
        "published), / publications and / deliveries (steady: open loop at the fixed rate; "
        "sat: closed loop); "
        "hub/redis cores = CPU utilisation while saturating; lost = deliveries missing after the drain; "
        "ratio rows: layout / 1node-memory of this run (dlv/s, latency, hub us/dlv). 2 vCPUs: three "
        "nodes + Redis + the load client oversubscribe the box, so dlv/s and latency with three nodes "
        "are those of a crowded box; the CPU per delivery is the meaningful figure. Medians over the "
        "clean runs (all runs if none is clean); noisy = other processes used > "
        f"{a.noise_threshold:g} cores during a phase or > {a.quiet_threshold:g} cores just before "
        "the cell, or steal > 0.1 cores."
    )
    summary["table"] = out
    return "\n".join(out), summary


def goal_lines(cells: list[dict], a, hubs: list[str]) -> str:
    """Issue 15's goal: 3 nodes on Redis deliver >= 0.7x one memory-broker node's deliveries/s (saturate)."""
    out = ["", "Goal: 3nodes-redis saturated dlv/s >= 0.7x 1node-memory's (same N, same run):"]
    for ch in a.channel_list:
        parts = []
        for hub in hubs:
            mine = [c for c in cells if c["hub"] == hub and c["channels"] == ch]
            mem = aggregate([c for c in mine if c["layout"] == BASE])
            red = aggregate([c for c in mine if c["layout"] == "3nodes-redis"])
            if mem.get("sat_dps") and red.get("sat_dps"):
                r, m = red["sat_dps"], mem["sat_dps"]
                parts.append(f"{hub} {r:,.0f}/{m:,.0f} = {r / m:.2f}x")
        if parts:
            out.append(f"  {ch} channel{'s' if ch > 1 else ''}: " + "; ".join(parts))
    return "\n".join(out) if len(out) > 2 else ""


# ------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: short phases, about 1-2 min")
    ap.add_argument("--n", type=int, default=900, help="subscribers (a multiple of 3 x every channel count)")
    ap.add_argument("--channels", default="1,6", help="comma list of channel counts; each runs every layout")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma list of: {', '.join(LAYOUTS)}")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (median; order alternates)")
    ap.add_argument("--rate", type=float, default=20000, help="steady phase, deliveries/s")
    ap.add_argument("--steady-s", type=float, default=None)
    ap.add_argument("--sat-s", type=float, default=None)
    ap.add_argument("--warmup-s", type=float, default=None)
    ap.add_argument("--idle-s", type=float, default=None)
    ap.add_argument("--window-deliveries", type=int, default=10000)
    ap.add_argument("--data-bytes", type=int, default=100)
    ap.add_argument("--drain-timeout", type=float, default=10.0)
    ap.add_argument("--connect-timeout", type=float, default=60.0)
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--quiet-threshold", type=float, default=0.3)
    ap.add_argument("--quiet-wait", type=float, default=None, help="max s to wait for a quiet box per cell")
    ap.add_argument("--noise-threshold", type=float, default=0.25)
    ap.add_argument(
        "--history-size",
        type=int,
        default=0,
        help="keep history (default 0: pure fan-out, as bench/fanout.py)",
    )
    ap.add_argument("--history-ttl", type=int, default=300, help="seconds, with --history-size")
    ap.add_argument("--out", default=None)
    ap.add_argument("--anchor", default=None, help="git revision whose hub runs every cell too")
    a = ap.parse_args()
    q = a.quick
    a.steady_s = a.steady_s if a.steady_s is not None else (1.5 if q else 5.0)
    a.sat_s = a.sat_s if a.sat_s is not None else (1.5 if q else 5.0)
    a.warmup_s = a.warmup_s if a.warmup_s is not None else (0.3 if q else 1.0)
    a.idle_s = a.idle_s if a.idle_s is not None else (1.0 if q else 2.0)  # also Redis's idle CPU
    a.quiet_wait = a.quiet_wait if a.quiet_wait is not None else (0.0 if q else 15.0)
    a.channel_list = [int(x) for x in a.channels.split(",") if x.strip()]
    a.layout_list = [x.strip() for x in a.layouts.split(",") if x.strip()]
    for lay in a.layout_list:
        if lay not in LAYOUTS:
            ap.error(f"unknown layout {lay!r}: choose among {', '.join(LAYOUTS)}")
    for ch in a.channel_list:
        if ch < 1 or a.n % ch or (a.n // ch) % max(LAYOUTS[x][0] for x in a.layout_list):
            ap.error(f"--n {a.n} must split evenly over {ch} channels and over the nodes of every layout")
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not on PATH")

    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", f"cluster-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    a.hub_config_path = os.path.join(RESULTS, "hub-cluster.toml")
    config = fanout.pure_config().replace("bench/fanout.py", "bench/cluster.py")
    if a.history_size:
        # publications also go into each channel's stream (XADD + trim in the publish script)
        config = config.replace("history_size = 0", f"history_size = {a.history_size}").replace(
            "history_ttl = 0", f"history_ttl = {a.history_ttl}"
        )
        assert f"history_size = {a.history_size}" in config, "pure_config() changed: update bench/cluster.py"
    with open(a.hub_config_path, "w") as f:
        f.write(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.n + 1000:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (a.n + 1000 if hard == resource.RLIM_INFINITY else min(hard, a.n + 1000), hard),
        )

    hubs = [("hub", ROOT)]
    anchor_dir = None
    if a.anchor:
        anchor_dir = tempfile.mkdtemp(prefix="bench-cluster-anchor-")
        os.rmdir(anchor_dir)
        subprocess.run(
            ["git", "worktree", "add", "--detach", anchor_dir, a.anchor],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        hubs.append(("anchor", anchor_dir))
    nredis = max(LAYOUTS[x][1] for x in a.layout_list)
    redis = [RedisProc(logdir, f"shard{i}") for i in range(nredis)]
    out_path = a.out or os.path.join(RESULTS, f"cluster-{stamp}.jsonl")
    cells: list[dict] = []
    t0 = time.monotonic()
    rc = 0
    try:
        for r in redis:
            r.start()
        redis_version = redis[0].client().info("server").get("redis_version") if redis else None
        prefixes = {}
        for ch in a.channel_list:
            if ch > 1 and nredis >= 2:
                prefixes[ch], split = pick_prefix([r.url for r in redis[:2]], ch)
                print(f"{ch} channels: prefix {prefixes[ch]!r}, shard of each channel {split}", flush=True)
            else:
                prefixes[ch] = "bench"
        meta = {
            "kind": "meta",
            "time": stamp,
            "argv": sys.argv[1:],
            "n": a.n,
            "channels": a.channel_list,
            "layouts": a.layout_list,
            "rate": a.rate,
            "steady_s": a.steady_s,
            "sat_s": a.sat_s,
            "warmup_s": a.warmup_s,
            "window_deliveries": a.window_deliveries,
            "data_bytes": a.data_bytes,
            "redis_ports": [r.port for r in redis],
            "redis_version": redis_version,
            "history_size": a.history_size,
            "history_ttl": a.history_ttl,
            "channel_prefixes": prefixes,
            "cpus": os.cpu_count(),
            **fanout.versions(),
        }
        with open(out_path, "a") as out:
            out.write(json.dumps(meta) + "\n")
            for rep in range(a.repeats):
                for ch in a.channel_list:
                    order = a.layout_list if rep % 2 == 0 else a.layout_list[::-1]
                    for lay, hub in [
                        (lay, h) for lay in order for h in (hubs if rep % 2 == 0 else hubs[::-1])
                    ]:
                        c = run_cell(lay, ch, prefixes[ch], rep, redis, a, logdir, hub)
                        c["kind"] = "cell"
                        c["noisy"] = is_noisy(c, a)
                        cells.append(c)
                        out.write(json.dumps(c) + "\n")
                        out.flush()
                        st, sa = c.get("steady") or {}, c.get("saturate") or {}
                        print(
                            f"[{time.monotonic() - t0:6.1f}s] {hub[0]:<6} {lay:<15} c{ch} r{rep} "
                            f"steady p50/p99 {fmt(st.get('p50_ms'), '.2f')}/"
                            f"{fmt(st.get('p99_ms'), '.2f')} ms "
                            f"hub {fmt(st.get('server_cpu_us_per_delivery'), '.2f')} us/dlv | "
                            f"sat {fmt(sa.get('deliveries_per_s'))}/s "
                            f"hub {fmt(sa.get('server_cpu_us_per_delivery'), '.2f')} us/dlv "
                            f"redis {fmt(sa.get('redis_cpu_us_per_publication'), '.1f')} us/pub | "
                            f"{c['cell_seconds']}s"
                            + (" | noisy" if c["noisy"] else "")
                            + (f" | ERROR {c['error'][:200]}" if "error" in c else ""),
                            flush=True,
                        )
            tables = []
            for name, _ in hubs:
                table, summary = report([c for c in cells if c["hub"] == name], a)
                summary["hub"] = name
                tables.append(f"### {name}" + (f" ({a.anchor})" if name == "anchor" else "") + "\n" + table)
                out.write(json.dumps(summary, default=str) + "\n")
            table = "\n\n".join(tables) + goal_lines(cells, a, [h for h, _ in hubs])
    finally:
        for r in redis:
            r.stop()
        if anchor_dir is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", anchor_dir], cwd=ROOT, capture_output=True
            )
    print()
    print(table)
    print(
        f"\nresults: {os.path.relpath(out_path, os.getcwd())}  logs: {os.path.relpath(logdir, os.getcwd())}"
    )
    if any("error" in c for c in cells):
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
