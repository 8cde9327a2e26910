"""Fan-out benchmark: the Switchboard hub vs a minimal `websockets.broadcast()` server.

For each N (default 100, 1000, 5000) and each variant this starts the server, then runs
bench/load_client.py in a separate process (N subscribers on one channel plus one WebSocket
JSON publisher, all over 127.0.0.1), then stops the server. Variants:

* baseline: `websockets.broadcast()` (bench/baseline_broadcast.py), WebSocket JSON subscribers;
* hub: the hub, WebSocket JSON subscribers;
* hub-protobuf: the hub, WebSocket subscribers on the `centrifuge-protobuf` subprotocol;
* hub-sse: the hub, Server-Sent Events subscribers (GET /connection/uni_sse, server-side
  subscription from the token's `channels` claim).

`--transports` picks the hub's (json,protobuf,sse); Protobuf and SSE run at the Ns of
`--transport-n` (default 1000), JSON at every N. It measures:

* server CPU microseconds per delivery (CPU of the server's process tree from /proc, over the
  phase; a delivery = one publication received by one subscriber), in two phases:
  "steady" (open loop, --rate deliveries/s) and "saturate" (closed loop, bounded window);
* p50/p99 publish-to-receive latency in the steady phase (time_ns embedded in the data);
* idle memory per connection: (server VmRSS after N connected + subscribed + --idle-s idle
  - VmRSS before connecting) / N.

It prints a table with the hub/baseline ratios and the targets, and appends JSON lines to
bench/results/fanout-<time>.jsonl. Every process is started here and stopped by its pid;
every step is bounded in time.

usage: .venv/bin/python bench/fanout.py [--n 100,1000,5000] [--quick] [--variants hub,baseline]
       [--transports json,protobuf,sse] [--transport-n 1000|all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procstat  # noqa: E402

PY = sys.executable
RESULTS = os.path.join(HERE, "results")
WS_PATH = "/connection/websocket"
CHANNEL = "bench"  # the load client's default --channel

# Pure fan-out: no history, presence or join/leave messages (Centrifugo option names). A config
# file switches development mode off, so anonymous connect/subscribe/publish are allowed explicitly.
# The token key is for the SSE subscribers: their token's channels claim subscribes them.
BENCH_SECRET = "bench-fanout-secret-of-at-least-32-bytes"
PURE_CONFIG = f"""\
# written by bench/fanout.py: measure pure fan-out
allow_anonymous_connect_without_token = true
token_hmac_secret_key = "{BENCH_SECRET}"   # SSE subscribers: a token whose channels claim is the channel
log_level = "warning"         # the hub logs every connect at info: 5000 lines per cell

[channel]
history_size = 0
history_ttl = 0
presence = false
join_leave = false
force_push_join_leave = false
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
"""

# Limits that would throttle the benchmark itself: the publisher sends hundreds of publish commands
# a second, and every SSE subscriber is the same user. Written only if this hub has the key (a
# config file with an unknown key is refused).
UNLIMITED = {"client_command_rate_limit": "0", "client_user_connection_limit": "0"}


def pure_config() -> str:
    """PURE_CONFIG, plus 0 (off) for each limit of UNLIMITED this checkout's hub knows."""
    import dataclasses

    sys.path.insert(0, ROOT)  # before bench/, whose inbox.py would shadow the inbox package hub imports
    from hub.config import Config

    known = {f.name for f in dataclasses.fields(Config)}
    extra = [
        f"{k} = {v}   # off: the bench's own load must not be throttled\n"
        for k, v in UNLIMITED.items()
        if k in known
    ]
    top, sep, tables = PURE_CONFIG.partition("\n[channel]")
    return top + "".join(extra) + sep + tables


TRANSPORTS = ("json", "protobuf", "sse")
HUB_VARIANT = {"json": "hub", "protobuf": "hub-protobuf", "sse": "hub-sse"}
PROTOBUF_CODEC = os.path.join(ROOT, "hub", "codec_protobuf.py")

TARGET_CPU_RATIO = 2.0  # hub CPU per delivery <= 2x baseline at N=1000
TARGET_CPU_N = 1000
TARGET_IDLE_KB = 30.0  # idle memory <= 30 KB/conn at N=5000
TARGET_IDLE_N = 5000


# ------------------------------------------------------------------------------- processes


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> str | None:
    """None when GET /ready answers 200, else the reason it did not."""
    end = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < end:
        if proc.poll() is not None:
            return f"server exited with status {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return None
                last = f"/ready status {r.status}"
        except Exception as e:  # noqa: BLE001 - retried until timeout
            last = repr(e)
        time.sleep(0.1)
    return f"not ready after {timeout:.0f}s: {last}"


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server (and what it spawned), SIGKILL what is left after 10 s."""
    if proc.poll() is None:
        tree = procstat.tree_pids(proc.pid)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for pid in tree[1:]:  # children started by the server, if any survived it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def transport_of(variant: str) -> str:
    """What the subscribers of a variant speak."""
    for t, v in HUB_VARIANT.items():
        if variant == v:
            return t
    return "json"


def cell_variants(n: int, a) -> list[str]:
    """The variants run at N: baselines and hub (JSON) at every N, other transports at --transport-n."""
    out = []
    for v in a.variant_list:
        if v != "hub":
            out.append(v)
            continue
        for t in a.transport_list:
            if t == "json" or a.transport_ns is None or n in a.transport_ns:
                out.append(HUB_VARIANT[t])
    return out


def hub_token_secret(a) -> str:
    if a.hub_config == "pure":
        return BENCH_SECRET
    if a.hub_config_path is None:
        from hub.config import DEV_SECRET

        return DEV_SECRET
    with open(a.hub_config_path, "rb") as f:
        return str(tomllib.load(f).get("token_hmac_secret_key") or "")


def hub_argv(
    port: int,
    config: str | None = None,
    *,
    node_name: str | None = None,
    data_dir: str | None = None,
    redis_urls: Sequence[str] = (),
) -> list[str]:
    """``switchboard serve`` on 127.0.0.1:``port`` as ``python -m hub``: the hub of the checkout the process
    runs in (start it with ``cwd`` there), with what is given. Every bench starts its hubs with this."""
    argv = [PY, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config:
        argv += ["--config", config]
    if node_name:
        argv += ["--node-name", node_name]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for url in redis_urls:
        argv += ["--redis", url]
    return argv


def server_argv(variant: str, port: int, a) -> list[str]:
    if variant.startswith("hub"):
        return hub_argv(port, a.hub_config_path)
    if variant == "baseline":
        return [
            PY,
            os.path.join(HERE, "baseline_broadcast.py"),
            "--port",
            str(port),
            "--loop",
            a.baseline_loop,
        ]
    if variant == "baseline-coalesce":  # harness self-test: exercises the multi-push parser
        return [
            PY,
            os.path.join(HERE, "baseline_broadcast.py"),
            "--port",
            str(port),
            "--loop",
            a.baseline_loop,
            "--coalesce",
        ]
    raise SystemExit(f"unknown variant {variant!r}")


def box_busy_now(seconds: float = 1.0) -> float:
    b0 = procstat.box()
    time.sleep(seconds)
    return procstat.box_cores(b0, procstat.box())[0]


def wait_quiet(threshold: float, max_wait: float) -> tuple[float, float]:
    """Bounded wait until other load on the box is low. Returns (busy cores, seconds waited)."""
    t0 = time.monotonic()
    bg = box_busy_now()
    while bg > threshold and time.monotonic() - t0 < max_wait:
        bg = box_busy_now()
    return bg, round(time.monotonic() - t0, 1)


LOG_ERR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception|Error:", re.I)


def scan_log(path: str) -> tuple[int, list[str]]:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0, []
    bad = [ln for ln in lines if LOG_ERR.search(ln)]
    return len(bad), (bad[:5] + (["..."] if len(bad) > 5 else []) + lines[-5:] if bad else [])


def phase_args(a: argparse.Namespace) -> list[str]:
    """The load client's phase and size flags, the same for every orchestrator (fanout.py, cluster.py)."""
    return [
        "--rate",
        str(a.rate),
        "--steady-s",
        str(a.steady_s),
        "--sat-s",
        str(a.sat_s),
        "--warmup-s",
        str(a.warmup_s),
        "--idle-s",
        str(a.idle_s),
        "--window-deliveries",
        str(a.window_deliveries),
        "--drain-timeout",
        str(a.drain_timeout),
        "--connect-timeout",
        str(a.connect_timeout),
        "--data-bytes",
        str(a.data_bytes),
    ]


def run_load_client(cmd: list[str], a: argparse.Namespace, cell: dict) -> bool:
    """Run the load client within a time limit derived from its phases and merge its JSON rows (one per
    phase) into ``cell``; its failure goes to ``cell["error"]``. False when it ran past the limit."""
    limit = a.connect_timeout * 2 + a.idle_s + a.warmup_s + a.steady_s + a.sat_s + 3 * a.drain_timeout + 30
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        cell["error"] = f"load client exceeded {limit:.0f}s"
        return False
    for line in r.stdout.splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        phase = row.pop("phase")
        row.pop("n", None)
        cell[phase] = row
        if phase == "client" and row.get("error"):
            cell["error"] = row["error"]
    if r.returncode != 0 and "error" not in cell:
        cell["error"] = f"load client exit {r.returncode}: {r.stderr[-800:]}"
    elif r.stderr.strip():
        cell["client_stderr"] = r.stderr[-800:]
    return True


def run_cell(variant: str, n: int, rep: int, a, logdir: str) -> dict:
    cell = {"variant": variant, "n": n, "repeat": rep}
    bg, waited = wait_quiet(a.quiet_threshold, a.quiet_wait)
    cell.update({"bg_cores_before": bg, "quiet_wait_s": waited})
    port = free_port()
    log_path = os.path.join(logdir, f"{variant}-N{n}-r{rep}.log")
    t_start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            server_argv(variant, port, a),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            why = wait_ready(proc, port, a.ready_timeout)
            if why:
                cell["error"] = f"server: {why}"
                return cell
            cmd = [
                PY,
                os.path.join(HERE, "load_client.py"),
                "--url",
                f"ws://127.0.0.1:{port}{WS_PATH}",
                "--n",
                str(n),
                "--server-pid",
                str(proc.pid),
                *phase_args(a),
                "--transport",
                transport_of(variant),
            ]
            if transport_of(variant) == "sse":
                cmd += ["--token", a.sse_token]
            if not run_load_client(cmd, a, cell):
                return cell
            if proc.poll() is not None:
                cell.setdefault("error", f"server died during the run (status {proc.returncode})")
            if "error" in cell and transport_of(variant) == "protobuf" and not os.path.exists(PROTOBUF_CODEC):
                cell["error"] += " [hub/codec_protobuf.py is not in this checkout: no Protobuf codec]"
        finally:
            stop_server(proc)
            cell["cell_seconds"] = round(time.monotonic() - t_start, 1)
    nerr, excerpt = scan_log(log_path)
    cell["server_log"] = os.path.relpath(log_path, ROOT)
    cell["server_log_error_lines"] = nerr
    if excerpt:
        cell["server_log_excerpt"] = excerpt
    return cell


# ------------------------------------------------------------------------------- reporting


def g(cell: dict, phase: str, key: str):
    return (cell.get(phase) or {}).get(key)


def med(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def is_noisy(c: dict, a) -> bool:
    """Other load before the cell, hypervisor steal, or other processes busy during a phase."""
    if (c.get("bg_cores_before") or 0) > a.quiet_threshold:
        return True
    for ph in ("steady", "saturate"):
        if (g(c, ph, "box_steal_cores") or 0) > 0.1 or (g(c, ph, "other_cores") or 0) > a.noise_threshold:
            return True
    return False


def aggregate(cells: list[dict], a) -> dict:
    """Median over the clean repeats of one (variant, N); over all of them if none is clean."""
    ok = [c for c in cells if "error" not in c] or cells
    clean = [c for c in ok if not c.get("noisy")]
    ok = clean or ok
    lost = 0
    for c in cells:
        for ph in ("steady", "saturate"):
            lost += g(c, ph, "missing") or 0
    return {
        "steady_dps": med(g(c, "steady", "deliveries_per_s") for c in ok),
        "steady_us": med(g(c, "steady", "server_cpu_us_per_delivery") for c in ok),
        "p50": med(g(c, "steady", "p50_ms") for c in ok),
        "p99": med(g(c, "steady", "p99_ms") for c in ok),
        "sat_dps": med(g(c, "saturate", "deliveries_per_s") for c in ok),
        "sat_us": med(g(c, "saturate", "server_cpu_us_per_delivery") for c in ok),
        "sat_util": med(g(c, "saturate", "server_cpu_util") for c in ok),
        "idle_kb": med(g(c, "idle", "idle_kb_per_conn") for c in ok),
        "lost": lost,
        "disconnects": sum(g(c, "client", "disconnects") or 0 for c in cells),
        "noisy": not clean,
        "clean": len(clean),
        "errors": [c["error"] for c in cells if "error" in c],
        "log_errors": sum(c.get("server_log_error_lines", 0) for c in cells),
        "runs": len(cells),
    }


def fmt(v, spec: str = ",.0f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def verdict(ok) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


VW = 23  # width of the variant column


def ratio_row(label: str, n: int, h: dict, b: dict) -> str:
    """CPU per delivery (steady, saturate) and idle memory of h over b."""
    return (
        f"{label:<{VW}} {n:>5} | {'':>9} {fmt(ratio(h['steady_us'], b['steady_us']), '.2f') + 'x':>7} "
        f"{'':>15} | {'':>9} {fmt(ratio(h['sat_us'], b['sat_us']), '.2f') + 'x':>7} {'':>5} | "
        f"{fmt(ratio(h['idle_kb'], b['idle_kb']), '.2f') + 'x':>7} |"
    )


def report(all_cells: list[dict], ns: list[int], a) -> tuple[str, dict]:
    agg = {}
    for n in ns:
        for v in cell_variants(n, a):
            cells = [c for c in all_cells if c["variant"] == v and c["n"] == n]
            if cells:
                agg[(v, n)] = aggregate(cells, a)
    out = []
    out.append(
        f"Fan-out, 127.0.0.1, {os.cpu_count()} CPUs shared by server and load client. "
        f"steady: open loop {a.rate:,.0f} deliveries/s for {a.steady_s:g}s; "
        f"saturate: closed loop, ceil({a.window_deliveries}/N) publications in flight "
        f"for {a.sat_s:g}s; "
        f"data {a.data_bytes} B; hub config: {a.hub_config_label}. "
        f"Median of {a.repeats} run(s) per cell. The publisher speaks WebSocket JSON; "
        f"subscribers: hub/baseline WebSocket JSON, hub-protobuf centrifuge-protobuf, "
        f"hub-sse uni_sse."
    )
    hdr = (
        f"{'variant':<{VW}} {'N':>5} | {'steady':>9} {'CPU':>7} {'p50 / p99':>15} | "
        f"{'saturate':>9} {'CPU':>7} {'srv':>5} | {'idle':>7} | {'lost':>5} {'note':<10}"
    )
    sub = (
        f"{'':<{VW}} {'':>5} | {'deliv/s':>9} {'us/dlv':>7} {'ms':>15} | "
        f"{'deliv/s':>9} {'us/dlv':>7} {'cores':>5} | {'KB/conn':>7} | {'dlv':>5} {'':<10}"
    )
    out += [hdr, sub, "-" * len(hdr)]
    for n in ns:
        for v in cell_variants(n, a):
            s = agg.get((v, n))
            if s is None:
                continue
            note = []
            if s["errors"]:
                note.append("ERROR")
            if s["noisy"]:
                note.append("noisy")
            elif s["runs"] > 1:
                note.append(f"{s['clean']}/{s['runs']}clean")
            if s["disconnects"]:
                note.append(f"{s['disconnects']}disc")
            if s["log_errors"]:
                note.append("log-err")
            lat = f"{fmt(s['p50'], '.2f')} / {fmt(s['p99'], '.2f')}" if s["p50"] is not None else "-"
            out.append(
                f"{v:<{VW}} {n:>5} | {fmt(s['steady_dps']):>9} {fmt(s['steady_us'], '.2f'):>7} "
                f"{lat:>15} | {fmt(s['sat_dps']):>9} {fmt(s['sat_us'], '.2f'):>7} "
                f"{fmt(s['sat_util'], '.2f'):>5} | {fmt(s['idle_kb'], '.1f'):>7} | "
                f"{s['lost']:>5} {' '.join(note)}"
            )
        for v in cell_variants(n, a):
            for ref in ("baseline", "hub"):
                h, b = agg.get((v, n)), agg.get((ref, n))
                if h and b and v.startswith("hub") and v != ref:
                    out.append(ratio_row(f"  {v}/{ref}", n, h, b))
    out.append("")

    summary = {"kind": "summary"}
    h, b = agg.get(("hub", TARGET_CPU_N)), agg.get(("baseline", TARGET_CPU_N))
    if h and b:
        rs, rsat = ratio(h["steady_us"], b["steady_us"]), ratio(h["sat_us"], b["sat_us"])
        ok_s = None if rs is None else rs <= TARGET_CPU_RATIO
        ok_sat = None if rsat is None else rsat <= TARGET_CPU_RATIO
        out.append(
            f"Target: hub CPU per delivery <= {TARGET_CPU_RATIO:g}x baseline at N={TARGET_CPU_N}: "
            f"steady {fmt(rs, '.2f')}x "
            f"({fmt(h['steady_us'], '.2f')} vs {fmt(b['steady_us'], '.2f')} us) "
            f"{verdict(ok_s)}; saturate {fmt(rsat, '.2f')}x "
            f"({fmt(h['sat_us'], '.2f')} vs {fmt(b['sat_us'], '.2f')} us) {verdict(ok_sat)}"
        )
        summary.update(
            {
                "cpu_ratio_steady_n1000": rs,
                "cpu_ratio_saturate_n1000": rsat,
                "cpu_target_steady": verdict(ok_s),
                "cpu_target_saturate": verdict(ok_sat),
            }
        )
    else:
        out.append(
            f"Target: hub CPU per delivery <= {TARGET_CPU_RATIO:g}x baseline at N={TARGET_CPU_N}: "
            f"not measured in this run"
        )
    for n in ns:
        parts = []
        b, j = agg.get(("baseline", n)), agg.get(("hub", n))
        for t in TRANSPORTS:
            s = agg.get((HUB_VARIANT[t], n))
            if s is None or (t == "json" and len([x for x in TRANSPORTS if (HUB_VARIANT[x], n) in agg]) < 2):
                continue
            rel = []
            if b:
                rel.append(
                    f"{fmt(ratio(s['steady_us'], b['steady_us']), '.2f')}x/"
                    f"{fmt(ratio(s['sat_us'], b['sat_us']), '.2f')}x baseline"
                )
            if j and t != "json":
                rel.append(
                    f"{fmt(ratio(s['steady_us'], j['steady_us']), '.2f')}x/"
                    f"{fmt(ratio(s['sat_us'], j['sat_us']), '.2f')}x hub json"
                )
            parts.append(
                f"{t} {fmt(s['steady_us'], '.2f')}/{fmt(s['sat_us'], '.2f')}"
                + (f" ({', '.join(rel)})" if rel else "")
            )
            summary.setdefault("transports", {}).setdefault(str(n), {})[t] = {
                "steady_us": s["steady_us"],
                "sat_us": s["sat_us"],
                "idle_kb": s["idle_kb"],
                "steady_vs_baseline": ratio(s["steady_us"], b["steady_us"]) if b else None,
                "sat_vs_baseline": ratio(s["sat_us"], b["sat_us"]) if b else None,
                "steady_vs_hub_json": ratio(s["steady_us"], j["steady_us"]) if j else None,
                "sat_vs_hub_json": ratio(s["sat_us"], j["sat_us"]) if j else None,
            }
        if parts:
            base = f"; baseline {fmt(b['steady_us'], '.2f')}/{fmt(b['sat_us'], '.2f')}" if b else ""
            out.append(
                f"Transports at N={n}, hub CPU us/delivery steady/saturate: " + "; ".join(parts) + base
            )
    h, b = agg.get(("hub", TARGET_IDLE_N)), agg.get(("baseline", TARGET_IDLE_N))
    if h and h["idle_kb"] is not None:
        ok = h["idle_kb"] <= TARGET_IDLE_KB
        base = (
            f", baseline {fmt(b['idle_kb'], '.1f')} KB/conn, "
            f"ratio {fmt(ratio(h['idle_kb'], b['idle_kb']), '.2f')}x"
            if b
            else ""
        )
        out.append(
            f"Target: hub idle memory <= {TARGET_IDLE_KB:g} KB/conn at N={TARGET_IDLE_N}: "
            f"{h['idle_kb']:.1f} KB/conn {verdict(ok)}{base}"
        )
        summary.update({"idle_kb_n5000": h["idle_kb"], "idle_target": verdict(ok)})
    else:
        out.append(
            f"Target: hub idle memory <= {TARGET_IDLE_KB:g} KB/conn at N={TARGET_IDLE_N}: "
            f"not measured in this run"
        )
    for (v, n), s in agg.items():
        for e in s["errors"]:
            out.append(f"! {v} N={n}: {e}")
        if s["lost"]:
            out.append(f"! {v} N={n}: {s['lost']} deliveries missing after the drain timeout")
    for c in all_cells:
        if c.get("server_log_error_lines"):
            out.append(
                f"! {c['variant']} N={c['n']}: {c['server_log_error_lines']} error-looking lines in "
                f"{c['server_log']}"
            )
            for ln in c.get("server_log_excerpt", [])[:6]:
                out.append(f"    {ln[:200]}")
        cl = c.get("client") or {}
        for e in (cl.get("errors") or [])[:3]:
            out.append(f"! {c['variant']} N={c['n']} client saw: {e}")
        if cl.get("close_codes"):
            out.append(f"! {c['variant']} N={c['n']} server closed connections: {cl['close_codes']}")
    out.append(
        "Columns: CPU us/dlv = server process-tree CPU / deliveries; srv cores = server CPU "
        "utilisation while saturating (1.0 = one core); lost = deliveries missing; "
        f"clean = runs without noise; noisy = no clean run: steal > 0.1 cores, other load > "
        f"{a.quiet_threshold:g} cores before the cell or > {a.noise_threshold:g} cores "
        f"during a phase. "
        f"Medians use clean runs only."
    )
    summary["table"] = out
    return "\n".join(out), summary


# ------------------------------------------------------------------------------- main


def versions() -> dict:
    out = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        from importlib.metadata import version

        for pkg in ("websockets", "picows", "uvloop", "orjson", "uvicorn", "starlette"):
            try:
                out[pkg] = version(pkg)
            except Exception:  # noqa: BLE001 - not installed
                pass
    except ImportError:
        pass
    try:
        out["git"] = (
            subprocess.run(
                ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        # the hub measured is the working tree: say which of its files differ from HEAD
        out["git_uncommitted"] = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "hub", "channels", "presence"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
    except Exception:  # noqa: BLE001
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--n",
        default=None,
        help="comma-separated subscriber counts (default 100,1000,5000; --quick: 100,1000)",
    )
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 1 min)")
    ap.add_argument(
        "--variants",
        default="baseline,hub",
        help="comma list of: hub, baseline, baseline-coalesce (self-test)",
    )
    ap.add_argument(
        "--transports",
        default="json,protobuf,sse",
        help="what the hub's subscribers speak, comma list of: json (WebSocket JSON), "
        "protobuf (WebSocket centrifuge-protobuf), sse (uni_sse); the variants are hub, "
        "hub-protobuf, hub-sse",
    )
    ap.add_argument(
        "--transport-n",
        default="1000",
        help="Ns at which protobuf and sse run (comma list, or 'all'); json runs at every N",
    )
    ap.add_argument(
        "--hub-config",
        default="pure",
        help="'pure' (history/presence/join-leave off, written to bench/results/), "
        "'dev' (no --config) or a path to a TOML file",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--rate", type=float, default=20000, help="steady phase, deliveries/s")
    ap.add_argument("--steady-s", type=float, default=None)
    ap.add_argument("--sat-s", type=float, default=None)
    ap.add_argument("--warmup-s", type=float, default=None)
    ap.add_argument("--idle-s", type=float, default=2.0)
    ap.add_argument("--window-deliveries", type=int, default=10000)
    ap.add_argument("--data-bytes", type=int, default=100)
    ap.add_argument("--drain-timeout", type=float, default=10.0)
    ap.add_argument("--connect-timeout", type=float, default=60.0)
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--quiet-threshold", type=float, default=0.3, help="busy cores counted as a quiet box")
    ap.add_argument("--quiet-wait", type=float, default=None, help="max s to wait for a quiet box per cell")
    ap.add_argument(
        "--noise-threshold",
        type=float,
        default=0.25,
        help="cores used by other processes during a phase above which a run is noisy",
    )
    ap.add_argument(
        "--retry-noisy",
        type=int,
        default=None,
        help="extra runs of a cell whose runs were all noisy (default 1; --quick 0)",
    )
    ap.add_argument("--baseline-loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--out", default=None, help="JSON lines file (default bench/results/fanout-<time>.jsonl)")
    a = ap.parse_args()
    quick = a.quick
    a.n = a.n or ("100,1000" if quick else "100,1000,5000")
    a.steady_s = a.steady_s if a.steady_s is not None else (1.5 if quick else 5.0)
    a.sat_s = a.sat_s if a.sat_s is not None else (1.5 if quick else 5.0)
    a.warmup_s = a.warmup_s if a.warmup_s is not None else (0.3 if quick else 1.0)
    a.quiet_wait = a.quiet_wait if a.quiet_wait is not None else (0.0 if quick else 15.0)
    a.retry_noisy = a.retry_noisy if a.retry_noisy is not None else (0 if quick else 1)
    ns = [int(x) for x in a.n.split(",") if x.strip()]
    a.variant_list = [v.strip() for v in a.variants.split(",") if v.strip()]
    a.transport_list = [t.strip() for t in a.transports.split(",") if t.strip()]
    for t in a.transport_list:
        if t not in TRANSPORTS:
            ap.error(f"unknown transport {t!r}: choose among {','.join(TRANSPORTS)}")
    a.transport_ns = (
        None if a.transport_n == "all" else [int(x) for x in a.transport_n.split(",") if x.strip()]
    )
    variants = sorted(
        {v for n in ns for v in cell_variants(n, a)}, key=[*a.variant_list, *HUB_VARIANT.values()].index
    )

    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(RESULTS, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    if a.hub_config == "pure":
        a.hub_config_path = os.path.join(RESULTS, "hub-fanout.toml")
        with open(a.hub_config_path, "w") as f:
            f.write(pure_config())
        a.hub_config_label = "pure fan-out (history, presence, join/leave off)"
    elif a.hub_config == "dev":
        a.hub_config_path = None
        a.hub_config_label = "dev mode defaults"
    else:
        a.hub_config_path = os.path.abspath(a.hub_config)
        a.hub_config_label = a.hub_config_path
    a.sse_token = ""
    if "hub-sse" in variants:
        from hub.auth import mint_token

        a.sse_token = mint_token(hub_token_secret(a), "bench-sse", channels=[CHANNEL])

    # 5000 subscribers + 1 publisher: server and client each need N+ descriptors (inherited).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(ns) + 1000
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < max(ns) + 100:
        print(
            f"warning: RLIMIT_NOFILE {soft} < N={max(ns)}; raise the hard limit (ulimit -Hn)", file=sys.stderr
        )

    out_path = a.out or os.path.join(RESULTS, f"fanout-{stamp}.jsonl")
    meta = {
        "kind": "meta",
        "time": stamp,
        "argv": sys.argv[1:],
        "ns": ns,
        "variants": variants,
        "rate": a.rate,
        "steady_s": a.steady_s,
        "sat_s": a.sat_s,
        "warmup_s": a.warmup_s,
        "idle_s": a.idle_s,
        "window_deliveries": a.window_deliveries,
        "data_bytes": a.data_bytes,
        "hub_config": a.hub_config_label,
        "baseline_loop": a.baseline_loop,
        "transports": a.transport_list,
        "transport_n": a.transport_ns,
        "protobuf_codec_present": os.path.exists(PROTOBUF_CODEC),
        "cpus": os.cpu_count(),
        "nofile": soft,
        **versions(),
    }
    cells = []
    t0 = time.monotonic()
    with open(out_path, "a") as out:
        out.write(json.dumps(meta) + "\n")
        for rep in range(a.repeats):
            for n in ns:
                here = cell_variants(n, a)
                order = here if rep % 2 == 0 else here[::-1]  # alternate to spread drift
                for v in order:
                    c = run_cell(v, n, rep, a, logdir)
                    c["kind"] = "cell"
                    c["noisy"] = is_noisy(c, a)
                    cells.append(c)
                    out.write(json.dumps(c) + "\n")
                    out.flush()
                    st, sa, idle = c.get("steady") or {}, c.get("saturate") or {}, c.get("idle") or {}
                    print(
                        f"[{time.monotonic() - t0:6.1f}s] {v:<{VW}} N={n:<5} r{rep} "
                        f"steady {fmt(st.get('server_cpu_us_per_delivery'), '.2f')} us/dlv "
                        f"p50/p99 {fmt(st.get('p50_ms'), '.2f')}/{fmt(st.get('p99_ms'), '.2f')} ms | "
                        f"sat {fmt(sa.get('deliveries_per_s'))}/s "
                        f"{fmt(sa.get('server_cpu_us_per_delivery'), '.2f')} us/dlv | "
                        f"idle {fmt(idle.get('idle_kb_per_conn'), '.1f')} KB/conn | {c['cell_seconds']}s"
                        + (" | noisy" if c["noisy"] else "")
                        + (f" | ERROR {c['error'][:200]}" if "error" in c else ""),
                        flush=True,
                    )
        # cells whose every run was noisy get extra runs (bounded), after the main pass
        for n in ns:
            for v in cell_variants(n, a):
                for _ in range(a.retry_noisy):
                    mine = [c for c in cells if c["variant"] == v and c["n"] == n]
                    if not mine or any(not c["noisy"] for c in mine) or any("error" in c for c in mine):
                        break
                    rep = max(c["repeat"] for c in mine) + 1
                    c = run_cell(v, n, rep, a, logdir)
                    c["kind"] = "cell"
                    c["noisy"] = is_noisy(c, a)
                    c["retry_of_noisy"] = True
                    cells.append(c)
                    out.write(json.dumps(c) + "\n")
                    out.flush()
                    print(
                        f"[{time.monotonic() - t0:6.1f}s] {v:<{VW}} N={n:<5} r{rep} "
                        "(rerun, all runs were noisy) " + ("noisy again" if c["noisy"] else "clean"),
                        flush=True,
                    )
        table, summary = report(cells, ns, a)
        out.write(json.dumps(summary) + "\n")
    print()
    print(table)
    print(
        f"\nresults: {os.path.relpath(out_path, os.getcwd())}  "
        f"server logs: {os.path.relpath(logdir, os.getcwd())}"
    )
    return 1 if any("error" in c for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
