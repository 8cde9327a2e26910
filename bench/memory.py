"""Memory per idle connection (issue 15): the hub beside the websockets library, and where the bytes go.

``memory.py idle`` (the default) runs bench/fanout.py's idle phase at --n (default 18,000: this sandbox caps
a process at 20,000 open files) for the websockets library's ``broadcast()`` server (the anchor) and the hub,
alternating, --repeats times, in one run. The hub's config is a namespace with presence, join/leave and
history (``bench/results/hub-memory.toml``, written here). Each cell: connect N clients and subscribe each to
one shared channel, wait --idle-s, then (server VmRSS after - before) / N, and the server's CPU over the idle
wait (pings every 25 s, the presence refresh every 25 s, the session clock): take --idle-s >= 30 to catch one
of each.

``memory.py breakdown`` runs the hub in this process (uvicorn with the hub's own protocol class, as
``switchboard serve`` does) with tracemalloc on, connects --n clients (bench/load_client.py in a subprocess),
and prints the bytes allocated per connection by source line (grouped by file), then one session's objects
by owner (a ``gc.get_referents`` walk from the uvicorn protocol of one connection, stopping at what a second
connection shares). tracemalloc counts what Python allocates (uvloop's handles included); RSS adds the
allocator's slack on top.

``--variants baseline,hub,hub-anchor`` adds the hub of --anchor (default: the commit before this work), from
its tree exported with ``git archive`` under bench/results/, to compare before and after in one run.

usage: .venv/bin/python bench/memory.py [idle] [--n 18000] [--repeats 2] [--idle-s 30] [--variants ...]
       .venv/bin/python bench/memory.py breakdown [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import fanout  # noqa: E402
import joins  # noqa: E402

sys.path.insert(0, ROOT)  # before bench/ (fanout puts it first): our packages before any bench file

RESULTS = os.path.join(HERE, "results")
CONFIG = """\
# written by bench/memory.py: one shared channel in a namespace with presence, join/leave and history
allow_anonymous_connect_without_token = true
token_hmac_secret_key = "bench-memory-secret-of-at-least-32-bytes"
log_level = "warning"
# One load-client process answers 18,000 connections' pings; on a busy box its pongs can come late, and
# a connection closed for that (3012) would be counted in the memory per connection all the same.
client_pong_timeout = "60s"

"""
CONFIG += joins.ROOM


def write_config() -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "hub-memory.toml")
    with open(path, "w") as f:
        f.write(CONFIG)
    return path


# ------------------------------------------------------------------------------- idle


def anchor_checkout(rev: str) -> str:
    """``rev``'s tree under bench/results/anchor-<rev> (``git archive``, no worktree): the hub before."""
    sha = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = os.path.join(RESULTS, f"anchor-{sha}")
    if not os.path.isdir(path):
        os.makedirs(path)
        archive = subprocess.run(["git", "-C", ROOT, "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def run_variant(v: str, rep: int, a: argparse.Namespace, logdir: str) -> dict:
    """One fanout.py cell; ``hub-anchor`` is the hub of the --anchor commit (run from its tree)."""
    if v != "hub-anchor":
        return fanout.run_cell(v, a.n, rep, a, logdir)
    root = fanout.ROOT
    fanout.ROOT = a.anchor_path  # ``python -m hub`` from there imports that tree's hub
    try:
        c = fanout.run_cell("hub", a.n, rep, a, logdir)
    finally:
        fanout.ROOT = root
    c["variant"] = "hub-anchor"
    return c


def idle(a: argparse.Namespace) -> int:
    a.hub_config_path = write_config()
    variants = [v for v in a.variants.split(",") if v]
    if "hub-anchor" in variants:
        a.anchor_path = anchor_checkout(a.anchor)
    a.baseline_loop = "asyncio"
    a.sse_token = ""
    a.rate, a.steady_s, a.sat_s, a.warmup_s = 1000.0, 0.0, 0.0, 0.0
    a.window_deliveries, a.drain_timeout, a.data_bytes = 1000, 5.0, 100
    a.ready_timeout = 60.0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", f"memory-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    out_path = os.path.join(RESULTS, f"memory-{stamp}.jsonl")
    cells: list[dict] = []
    with open(out_path, "w") as out:
        for rep in range(a.repeats):
            order = variants if rep % 2 == 0 else variants[::-1]
            for v in order:
                c = run_variant(v, rep, a, logdir)
                cells.append(c)
                out.write(json.dumps(c) + "\n")
                out.flush()
                i = c.get("idle") or {}
                print(
                    f"{v:<9} N={a.n} r{rep}: {fanout.fmt(i.get('idle_kb_per_conn'), '.2f')} KB/conn, "
                    f"idle CPU {fanout.fmt(i.get('idle_server_cpu_util'), '.3f')} cores over {a.idle_s:g} s, "
                    f"connect {fanout.fmt(i.get('connect_s'), '.1f')} s"
                    + (f" ERROR {c['error'][:300]}" if "error" in c else ""),
                    flush=True,
                )
    print()
    print(f"N={a.n}, {a.repeats} runs each, medians (bench/memory.py idle, box shared with other sessions):")
    figures = {}
    for v in variants:
        kb = [g["idle"]["idle_kb_per_conn"] for g in cells if g["variant"] == v and "idle" in g]
        cpu = [g["idle"]["idle_server_cpu_util"] for g in cells if g["variant"] == v and "idle" in g]
        if kb:
            figures[v] = statistics.median(kb)
            print(
                f"  {v:<9} {statistics.median(kb):6.2f} KB/conn (runs {', '.join(f'{x:.2f}' for x in kb)}); "
                f"idle CPU {statistics.median(cpu) * 100:.1f}% of a core"
            )
    if "hub" in figures and "baseline" in figures:
        print(
            f"  hub/baseline {figures['hub'] / figures['baseline']:.2f}x; goal: hub <= 15 KB/conn: "
            + ("PASS" if figures["hub"] <= 15 else "FAIL")
        )
    if "hub" in figures and "hub-anchor" in figures:
        print(f"  hub/anchor ({a.anchor}) {figures['hub'] / figures['hub-anchor']:.2f}x")
    print(f"results: {os.path.relpath(out_path, os.getcwd())}")
    return 1 if any("error" in c for c in cells) else 0


# ------------------------------------------------------------------------------- breakdown

STOP_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.GetSetDescriptorType,
)


def named_children(obj: object) -> list[tuple[str, object]]:
    """What ``obj`` refers to, named by attribute, slot or key where it has one."""
    if isinstance(obj, types.FrameType):
        return list(obj.f_locals.items())
    if isinstance(obj, types.CoroutineType):
        return [(obj.__qualname__, x) for x in (obj.cr_frame, obj.cr_await) if x is not None]
    out: list[tuple[str, object]] = []
    named: set[int] = set()
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        out.append(("(dict)", d))
        named.add(id(d))
        for k, v in d.items():
            out.append((str(k), v))
            named.add(id(v))
    for cls in type(obj).__mro__:
        for slot in cls.__dict__.get("__slots__", ()) or ():
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                try:
                    v = getattr(obj, slot)
                except AttributeError:
                    continue
                out.append((slot, v))
                named.add(id(v))
    if isinstance(obj, dict) and id(obj) not in LEAF:
        for k, v in obj.items():
            out.append((k if isinstance(k, str) else "(key)", v))
            out.append(("(key)", k))
            named.update((id(k), id(v)))
    for ref in gc.get_referents(obj):
        if id(ref) not in named:
            out.append((type(ref).__name__, ref))
    return out


LEAF: set[int] = set()
"""Instance dicts: counted for their size, their items named through their owner."""


def walk(root: object, stop: set[int]) -> dict[int, tuple[object, str]]:
    """Objects reachable from ``root`` (not through ``stop`` or shared vocabulary), each with the path of
    the first owner seen (``protocol.conn.reader`` ...), three levels deep at most."""
    seen: dict[int, tuple[object, str]] = {}
    todo = collections.deque([(root, "connection")])
    while todo:
        obj, path = todo.popleft()
        if id(obj) in seen or id(obj) in stop or isinstance(obj, STOP_TYPES):
            continue
        if isinstance(obj, (int, float, bool)) or obj is None:
            continue
        seen[id(obj)] = (obj, path)
        if id(obj) in LEAF:
            continue
        for name, ref in named_children(obj):
            if name == "(dict)":
                LEAF.add(id(ref))
            todo.append((ref, f"{path}.{name}" if path.count(".") < 3 else path))
    return seen


def breakdown(a: argparse.Namespace) -> int:
    import tracemalloc

    if a.anchor_tree:
        sys.path.insert(0, anchor_checkout(a.anchor))  # that commit's hub, in this process
        sys.modules.pop("hub", None)

    tracemalloc.start(1)
    import uvloop

    return uvloop.run(_breakdown(a))


async def _breakdown(a: argparse.Namespace) -> int:
    import tracemalloc

    from hub.app import Switchboard
    from hub.cli import _server_class, uvicorn_config
    from hub.config import load_config
    from hub.logs import setup_logging

    cfg = load_config(write_config())
    cfg.host, cfg.port = "127.0.0.1", fanout.free_port()
    setup_logging("warning", cfg.log_format)
    app = Switchboard(cfg)
    server = _server_class()(uvicorn_config(app, cfg, app.node.metrics))
    server.metrics, server.drain, server.shutdown_timeout = app.node.metrics, app.drain, 5.0
    serving = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's flag, no event to wait on
        await asyncio.sleep(0.05)
    node = app.node
    gc.collect()
    before = tracemalloc.take_snapshot()
    client = subprocess.Popen(  # noqa: ASYNC220 - the load process runs beside the loop
        [
            sys.executable,
            os.path.join(HERE, "load_client.py"),
            "--url",
            f"ws://127.0.0.1:{cfg.port}{fanout.WS_PATH}",
            "--n",
            str(a.n),
            "--server-pid",
            str(os.getpid()),
            "--idle-s",
            "60",
            "--steady-s",
            "0",
            "--sat-s",
            "0",
            "--warmup-s",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        t0 = time.monotonic()
        while sum(1 for c in node.sessions if c.subs) < a.n:
            if time.monotonic() - t0 > 120 or client.poll() is not None:
                print(
                    "clients did not all subscribe:",
                    client.stderr.read().decode()[-500:] if client.poll() is not None else "timeout",
                    file=sys.stderr,
                )
                return 2
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        gc.collect()
        after = tracemalloc.take_snapshot()
        protocols = [p for p in server.server_state.connections if getattr(p, "handshake_complete", False)]
        one, two = protocols[len(protocols) // 2], protocols[len(protocols) // 2 + 1]
        report_tracemalloc(before, after, a.n)
        report_walk(one, two, node, app, server)
    finally:
        client.kill()
        client.wait()
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
    return 0


def report_tracemalloc(before, after, n: int) -> None:
    stats = after.compare_to(before, "lineno")
    by_file: dict[str, int] = collections.Counter()
    lines = []
    for s in stats:
        if s.size_diff <= 0:
            continue
        frame = s.traceback[0]
        f = frame.filename
        for marker in ("site-packages/", "/work/wt/perf-memory/", "lib/python3.11/"):
            if marker in f:
                f = f.split(marker, 1)[1]
        by_file[f] += s.size_diff
        lines.append((s.size_diff, f"{f}:{frame.lineno}", s.count_diff))
    total = sum(by_file.values())
    print(
        f"tracemalloc: {total / n:,.0f} bytes per connection allocated and still held after {n} connections"
    )
    print("| file | bytes/conn |")
    print("|---|---|")
    for f, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:20]:
        if size / n >= 8:
            print(f"| {f} | {size / n:,.0f} |")
    print("\n| line | bytes/conn | objects/conn |")
    print("|---|---|---|")
    for size, where, count in sorted(lines, reverse=True)[:30]:
        if size / n >= 16:
            print(f"| {where} | {size / n:,.0f} | {count / n:.2f} |")


def report_walk(one, two, node, app, server) -> None:
    import sys as _sys

    state = server.server_state
    stop = {
        id(x)
        for x in (
            node,
            app,
            server,
            server.config,
            state,
            state.connections,
            state.tasks,
            server.config.loaded_app,
            asyncio.get_running_loop(),
            node.config,
            node.registry,
            node.presence,
            node.broker,
            node.sessions,
            node.scheduler,
            node.slot_clock,
            node.metrics,
            sys.modules,
        )
    }

    def task_of(protocol):
        for t in state.tasks:
            frame = t.get_coro().cr_frame
            if frame is not None and frame.f_locals.get("self") is protocol:
                return t
        return None

    client_of = {c.transport._raw: c for c in node.sessions if hasattr(c.transport, "_raw")}

    def root(protocol):
        return {"protocol": protocol, "task": task_of(protocol), "client": client_of.get(protocol)}

    a_objs = walk(root(one), stop)
    b_objs = walk(root(two), stop)
    own = {k: v for k, v in a_objs.items() if k not in b_objs}
    by_path: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj, path in own.values():
        by_path[path][0] += _sys.getsizeof(obj)
        by_path[path][1] += 1
    total = sum(v[0] for v in by_path.values())
    print(
        f"\none connection's own objects (gc walk from its uvicorn protocol, shared ones left out): "
        f"{total:,} bytes in {len(own)} objects (getsizeof; allocator overhead not included)"
    )
    print("| owner | bytes | objects |")
    print("|---|---|---|")
    for path, (size, count) in sorted(by_path.items(), key=lambda kv: -kv[1][0]):
        if size >= 64:
            print(f"| {path} | {size:,} | {count} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="idle", choices=["idle", "breakdown"])
    ap.add_argument("--n", type=int, default=None, help="connections (idle: 18000, breakdown: 2000)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--variants",
        default="baseline,hub",
        help="comma list of: baseline (websockets), hub (this checkout), hub-anchor (--anchor's hub)",
    )
    ap.add_argument(
        "--anchor", default="902dc77", help="the commit hub-anchor runs (default: where this work began)"
    )
    ap.add_argument("--anchor-tree", action="store_true", help="breakdown: of the --anchor commit's hub")
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--connect-timeout", type=float, default=600.0)
    ap.add_argument("--quiet-threshold", type=float, default=0.3)
    ap.add_argument("--quiet-wait", type=float, default=10.0)
    a = ap.parse_args()
    if a.mode == "breakdown":
        a.n = a.n or 2000
        return breakdown(a)
    a.n = a.n or 18000
    return idle(a)


if __name__ == "__main__":
    sys.exit(main())
