"""Documents benchmark: the hub's ``/doc/{name}`` beside three Yjs servers, on the same work, in one run.

It drives the shared harness (``../shared/bench/crdt``: ``run_all.sh`` + ``driver.mjs``, set up as its
README says) and never copies it. One invocation:

1. writes a bench config for the hub (anonymous clients may edit every document, no per-address
   connection limit, ``log_level = "warning"``, a fresh data directory per phase);
2. **main** phase: ``run_all.sh`` with ``PEERS="yws hocuspocus pycrdt custom"`` (the hub is ``custom``,
   started as ``switchboard serve --port {port} --config <file>``) at the issue's scale: 50 rooms x 10
   clients, capacity at 5,000 updates/s offered (45,000 deliveries/s), a late joiner per room on a
   50,000-edit document, awareness at 2,500 updates/s (and the convergence/throughput checks);
3. **probe** phase: capacity only at ``--probe-cap-rate`` per client (default 20: 10,000 updates/s
   offered), which every server here saturates below: its updates in / deliveries out per s is the
   ceiling;
4. a phase whose run of a peer was noisy (other processes used more than ``--noise-cores`` cores, or
   steal above ``--noise-steal`` %, during a measured scenario) is repeated once for the noisy peers
   (the hub and the y-websocket server together, since the targets compare them); the quieter run
   of each peer is kept;
5. prints one table and the two targets with PASS/FAIL, and writes both to ``<out>/table.md``.

Every server is started and stopped (by pid) by ``run_all.sh``; every wait in the driver is bounded.
``--from DIR`` prints the table again from a finished run's JSON files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import anchor_checkout  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HARNESS = ROOT.parent / "shared" / "bench" / "crdt"
PEERS = ("yws", "hocuspocus", "pycrdt", "custom", "anchor")
NAMES = {
    "yws": "y-websocket-server",
    "hocuspocus": "Hocuspocus",
    "pycrdt": "pycrdt-websocket",
    "custom": "hub",
    "anchor": "hub (anchor)",  # --anchor REV: that commit's hub, run as a second "custom" peer
}

# The scale (RESULTS.md "Large scale"): 500 clients x 10 edits/s = 5,000 updates/s offered.
MAIN_ARGS = [
    "--rooms", "50", "--clients", "10", "--edits", "40", "--rate", "2", "--cap-rate", "10",
    "--late-rooms", "5", "--late-edits", "50000", "--late-joiners", "3",
    "--aw-updates", "10", "--aw-rate", "5", "--timeout", "180", "--max-seconds", "1500",
]  # fmt: skip
PROBE_ARGS = [
    "--scenarios", "capacity", "--rooms", "50", "--clients", "10", "--edits", "40", "--timeout", "180",
]  # fmt: skip
QUICK_MAIN = [
    "--rooms", "10", "--clients", "5", "--edits", "40", "--rate", "5", "--cap-rate", "10",
    "--late-rooms", "2", "--late-edits", "5000", "--late-joiners", "2",
    "--aw-updates", "5", "--aw-rate", "5", "--timeout", "60", "--max-seconds", "600",
]  # fmt: skip
QUICK_PROBE = [
    "--scenarios", "capacity", "--rooms", "10", "--clients", "5", "--edits", "40", "--timeout", "60",
]  # fmt: skip

HUB_CONFIG = """\
# written by bench/crdt.py: the document endpoint open to the driver's anonymous clients
log_level = "warning"
data_dir = "{data_dir}"
doc_anonymous_access = "write"
# every simulated client comes from 127.0.0.1: no per-address cap on document connections
doc_user_connection_limit = 1000000
{queue}"""
QUEUE_NOTE = """\
# --hub-queue-bytes (before 634d62f a late joiner's 1.8 MB sync step 2 passed the default 1 MiB bound,
# so the hub closed it as slow (3008) and the provider reconnected forever)
client_queue_max_size = {size}
"""


def log(message: str) -> None:
    print(f"[crdt] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running the harness


def check_setup(harness: Path, node_dir: Path, venv: Path, switchboard: Path) -> list[str]:
    problems = []
    if not (harness / "run_all.sh").is_file():
        problems.append(f"no harness at {harness} (--harness)")
    if not (node_dir / "node_modules" / "yjs").is_dir():
        problems.append(f"no Node packages in {node_dir}: see the Setup section of {harness}/README.md")
    if not (venv / "bin" / "python").is_file():
        problems.append(f"no pycrdt-websocket venv at {venv}: see the Setup section of {harness}/README.md")
    if not switchboard.is_file():
        problems.append(f"no {switchboard}: run `make install`")
    if shutil.which("node") is None:
        problems.append("node is not on PATH")
    return problems


def run_phase(
    name: str,
    out: Path,
    peers: list[str],
    driver_args: list[str],
    args: argparse.Namespace,
) -> Path:
    """One ``run_all.sh`` run of ``peers``; returns the folder with ``<peer>.json``. ``anchor`` is the hub of
    ``--anchor``: ``run_all.sh`` knows one custom server, so it runs right after the others as a second
    ``custom`` run of its own, and its ``custom.json`` is kept as ``anchor.json``."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / "hub-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    config = folder / "hub.toml"
    queue = QUEUE_NOTE.format(size=args.hub_queue_bytes) if args.hub_queue_bytes else ""
    config.write_text(HUB_CONFIG.format(data_dir=data_dir, queue=queue))
    hub = f"{args.switchboard} serve --host 127.0.0.1 --port {{port}} --config {config}"
    others = [p for p in peers if p != "anchor"]
    if others:
        run_all(name, folder, others, driver_args, args, hub)
    if "anchor" in peers:
        anchor_folder = folder / "anchor-run"
        anchor_folder.mkdir(exist_ok=True)
        anchor_config = anchor_folder / "hub.toml"
        anchor_config.write_text(HUB_CONFIG.format(data_dir=anchor_folder / "hub-data", queue=queue))
        # The anchor's tree first on sys.path (``python -m`` from there), this venv's packages behind it.
        python = args.switchboard.parent / "python"
        anchor = (
            f"env -C {args.anchor_tree} {python} -m hub serve --host 127.0.0.1 --port {{port}} "
            f"--config {anchor_config}"
        )
        run_all(f"{name} (anchor {args.anchor})", anchor_folder, ["custom"], driver_args, args, anchor)
        if (anchor_folder / "custom.json").is_file():
            shutil.copyfile(anchor_folder / "custom.json", folder / "anchor.json")
    return folder


def run_all(
    name: str, folder: Path, peers: list[str], driver_args: list[str], args: argparse.Namespace, hub: str
) -> None:
    env = dict(os.environ)
    env.update(
        PEERS=" ".join(peers),
        OUT=str(folder),
        BASE_PORT=str(args.base_port),
        QUIET_MAX=str(args.quiet_max),
        CRDT_NODE_DIR=str(args.node_dir),
        CRDT_VENV=str(args.venv),
        CUSTOM_START=hub,
        CUSTOM_URL="ws://127.0.0.1:{port}/doc/{room}",
        CUSTOM_PROTO="yws",
    )
    command = ["bash", str(args.harness / "run_all.sh"), *driver_args]
    log(f"{name}: PEERS={' '.join(peers)!r} {' '.join(command[2:])}")
    started = time.monotonic()
    result = subprocess.run(command, cwd=args.harness, env=env, stdout=subprocess.DEVNULL, check=False)
    log(f"{name}: done in {time.monotonic() - started:.0f} s (rc {result.returncode}), results in {folder}")


# ---------------------------------------------------------------- reading results


@dataclass
class Run:
    peer: str
    path: Path
    data: dict[str, Any]

    def scenario(self, name: str) -> dict[str, Any]:
        value = self.data.get("scenarios", {}).get(name)
        return value if isinstance(value, dict) else {}

    def noise(self) -> tuple[float, float]:
        """The worst (other processes' cores, steal %) over the measured scenarios."""
        cores = [s.get("other_procs_cpu_cores", 0.0) or 0.0 for s in self.data.get("scenarios", {}).values()]
        steal = [s.get("steal_pct", 0.0) or 0.0 for s in self.data.get("scenarios", {}).values()]
        return (max(cores, default=0.0), max(steal, default=0.0))

    def noisy(self, cores: float, steal: float) -> bool:
        c, s = self.noise()
        return c > cores or s > steal


def load_runs(folder: Path) -> dict[str, Run]:
    runs = {}
    for peer in PEERS:
        path = folder / f"{peer}.json"
        if path.is_file():
            try:
                runs[peer] = Run(peer, path, json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log(f"cannot read {path}: {exc}")
    return runs


def quieter(a: Run | None, b: Run | None) -> Run | None:
    if a is None or b is None:
        return a or b
    return a if a.noise() <= b.noise() else b


# ---------------------------------------------------------------- the table


def num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def lat(stats: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p99")) -> str:
    if not stats:
        return "-"
    return " / ".join(num(stats.get(k), 1) for k in keys)


def offered(run: Run, scenario: str) -> float:
    params = run.data.get("params", {})
    sc = run.scenario(scenario)
    rate = sc.get("rate_per_client")
    if not isinstance(rate, (int, float)):
        return float("nan")
    return float(params.get("rooms", 0) * params.get("clients", 0) * rate)


def keeps_up(run: Run) -> bool:
    """All delivered, and updates in per s within 5 % of what was offered."""
    cap = run.scenario("capacity")
    if not cap.get("all_delivered") or not cap.get("converged"):
        return False
    return float(cap.get("sent_updates_per_s", 0)) >= 0.95 * offered(run, "capacity")


def correctness(run: Run) -> str:
    bad = []
    for name, sc in run.data.get("scenarios", {}).items():
        if name in ("convergence", "throughput", "capacity") and not sc.get("converged"):
            bad.append(name)
        if name == "latejoin" and (sc.get("join_timeouts") or sc.get("join_content_mismatch")):
            bad.append(name)
        if name == "awareness" and not (sc.get("initial_all_see_all") and sc.get("final_states_consistent")):
            bad.append(name)
    return "ok" if not bad else "FAIL: " + ", ".join(bad)


def noise_text(run: Run | None) -> str:
    if run is None:
        return "-"
    cores, steal = run.noise()
    return f"{cores:.2f} / {steal:.0f}%"


def table(main: dict[str, Run], probe: dict[str, Run], tolerance: float) -> tuple[str, bool]:
    peers = [p for p in PEERS if p in main or p in probe]
    any_main = next(iter(main.values()), None)
    any_probe = next(iter(probe.values()), None)
    cap_offered = offered(any_main, "capacity") if any_main else float("nan")
    probe_offered = offered(any_probe, "capacity") if any_probe else float("nan")
    lines = [
        f"capacity offered {cap_offered:,.0f} updates/s; saturation probe offered {probe_offered:,.0f} "
        "updates/s (light raw y-protocols clients; in = updates through per s, out = deliveries per s)",
        "noise = worst CPU cores used by other processes / hypervisor steal % during that phase's scenarios",
        "",
        "| server | capacity in / out per s | capacity p50 / p99 ms | keeps up | capacity CPU | "
        "ceiling in / out per s | ceiling p50 / p99 ms | late join synced p50 / max ms | "
        "awareness p50 / p99 ms | awareness CPU | peak RSS MB | checks | noise main | noise probe |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for peer in peers:
        m, p = main.get(peer), probe.get(peer)
        cap = m.scenario("capacity") if m else {}
        top = p.scenario("capacity") if p else {}
        late = m.scenario("latejoin") if m else {}
        aw = m.scenario("awareness") if m else {}
        scenarios = m.data.get("scenarios", {}).values() if m else []
        rss = max((s.get("server_rss_peak_mb", 0) or 0 for s in scenarios), default=None)
        checks = [correctness(r) for r in (m, p) if r is not None]
        lines.append(
            "| "
            + " | ".join(
                [
                    NAMES[peer],
                    f"{num(cap.get('sent_updates_per_s'))} / {num(cap.get('delivered_updates_per_s'))}"
                    if cap
                    else "-",
                    lat(cap.get("latency_ms")),
                    ("yes" if keeps_up(m) else "no") if m and cap else "-",
                    f"{num(cap.get('server_cpu_pct'))} %" if cap else "-",
                    f"{num(top.get('sent_updates_per_s'))} / {num(top.get('delivered_updates_per_s'))}"
                    if top
                    else "-",
                    lat(top.get("latency_ms")),
                    lat(late.get("time_to_synced_ms"), ("p50", "max")),
                    lat(aw.get("update_latency_ms")),
                    f"{num(aw.get('server_cpu_pct'))} %" if aw else "-",
                    num(rss),
                    "ok" if checks and all(c == "ok" for c in checks) else "; ".join(checks) or "-",
                    noise_text(m),
                    noise_text(p),
                ]
            )
            + " |"
        )
    lines.append("")
    ok = True
    hub_m, yws_m = main.get("custom"), main.get("yws")
    if hub_m and yws_m and hub_m.scenario("capacity") and yws_m.scenario("capacity"):
        hub_p99 = hub_m.scenario("capacity").get("latency_ms", {}).get("p99", float("inf"))
        yws_p99 = yws_m.scenario("capacity").get("latency_ms", {}).get("p99", 0.0)
        passed = keeps_up(hub_m) and hub_p99 <= yws_p99
        ok &= passed
        lines.append(
            f"{'PASS' if passed else 'FAIL'}: hub keeps up at {cap_offered:,.0f}/s "
            f"({'yes' if keeps_up(hub_m) else 'no'}) with p99 {hub_p99:.1f} ms <= y-websocket-server's "
            f"{yws_p99:.1f} ms"
        )
    else:
        ok = False
        lines.append("FAIL: capacity results missing for the hub or the y-websocket server")
    hub_p, yws_p = probe.get("custom"), probe.get("yws")
    if hub_p and yws_p and hub_p.scenario("capacity") and yws_p.scenario("capacity"):
        hub_in = float(hub_p.scenario("capacity").get("sent_updates_per_s", 0))
        yws_in = float(yws_p.scenario("capacity").get("sent_updates_per_s", 0))
        hub_out = float(hub_p.scenario("capacity").get("delivered_updates_per_s", 0))
        yws_out = float(yws_p.scenario("capacity").get("delivered_updates_per_s", 0))
        passed = hub_in >= yws_in * (1 - tolerance) and hub_p.scenario("capacity").get("converged", False)
        ratio = hub_in / yws_in if yws_in else float("inf")
        tol = f" (tolerance {tolerance:.0%})" if tolerance else ""
        # Both kept up with the whole probe: neither ceiling was reached, the comparison says nothing.
        verdict = "PASS" if passed else "FAIL"
        if keeps_up(hub_p) and keeps_up(yws_p):
            verdict = "INCONCLUSIVE"
        ok &= verdict == "PASS"
        lines.append(
            f"{verdict}: hub ceiling {hub_in:,.0f} in / {hub_out:,.0f} out per s >= "
            f"y-websocket-server's {yws_in:,.0f} / {yws_out:,.0f}{tol}: {ratio:.2f}x"
        )
        for run in (hub_p, yws_p):
            if keeps_up(run):
                lines.append(
                    f"  note: {NAMES[run.peer]} kept up with the whole probe ({probe_offered:,.0f}/s): "
                    "its ceiling is at least that; raise --probe-cap-rate to find it"
                )
    else:
        ok = False
        lines.append("FAIL: probe results missing for the hub or the y-websocket server")
    return "\n".join(lines), ok


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    env = os.environ.get
    parser.add_argument("--harness", type=Path, default=Path(env("CRDT_HARNESS", str(DEFAULT_HARNESS))))
    parser.add_argument("--node-dir", type=Path, default=Path(env("CRDT_NODE_DIR", "/tmp/crdt-node")))
    parser.add_argument("--venv", type=Path, default=Path(env("CRDT_VENV", "/tmp/crdt-venv")))
    parser.add_argument("--switchboard", type=Path, default=ROOT / ".venv" / "bin" / "switchboard")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/crdt-<time>")
    parser.add_argument(
        "--anchor",
        default="",
        help="also run this commit's hub (its tree exported under bench/results/), e.g. 902dc77",
    )
    parser.add_argument("--peers", default=" ".join(PEERS), help="subset of: " + " ".join(PEERS))
    parser.add_argument("--base-port", type=int, default=12400)
    parser.add_argument(
        "--hub-queue-bytes",
        type=int,
        default=0,
        help="the hub's client_queue_max_size (default 0: the hub's own default)",
    )
    parser.add_argument("--probe-cap-rate", type=float, default=20.0, help="edits/s per client in the probe")
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument(
        "--scenarios",
        default="",
        help="main phase: only these driver scenarios (comma list, e.g. latejoin,capacity; default all five)",
    )
    parser.add_argument(
        "--driver",
        default="",
        help="more driver options for the main phase, appended (the driver takes the last of each), e.g. "
        "'--edits 100' for a 10 s capacity phase",
    )
    parser.add_argument("--quick", action="store_true", help="10 rooms x 5 clients, small docs: a smoke run")
    parser.add_argument("--quiet-max", type=int, default=60, help="s to wait for an idle machine per run")
    parser.add_argument("--noise-cores", type=float, default=0.5)
    parser.add_argument("--noise-steal", type=float, default=10.0)
    parser.add_argument("--no-repeat", action="store_true", help="never repeat a noisy phase")
    parser.add_argument("--tolerance", type=float, default=0.0, help="ceiling target slack (0.02 = 2 %%)")
    parser.add_argument("--from", dest="from_dir", type=Path, default=None, help="reprint a past run's table")
    return parser.parse_args(argv)


def collect(out: Path, phase: str) -> dict[str, Run]:
    """A phase's runs; where it was repeated, the quieter run of each peer."""
    runs = load_runs(out / phase)
    repeat = out / f"{phase}-repeat"
    if repeat.is_dir():
        for peer, run in load_runs(repeat).items():
            best = quieter(runs.get(peer), run)
            if best is not None:
                runs[peer] = best
    return runs


def maybe_repeat(phase: str, out: Path, driver_args: list[str], args: argparse.Namespace) -> None:
    runs = load_runs(out / phase)
    noisy = [peer for peer, run in runs.items() if run.noisy(args.noise_cores, args.noise_steal)]
    if not noisy or args.no_repeat:
        return
    for peer in noisy:
        cores, steal = runs[peer].noise()
        log(f"{phase}: {NAMES[peer]} was noisy ({cores:.2f} other cores, {steal:.0f}% steal)")
    if {"custom", "yws", "anchor"} & set(noisy):  # the targets compare these: repeat them together
        noisy = sorted(set(noisy) | ({"custom", "yws", "anchor"} & set(runs)), key=PEERS.index)
    run_phase(f"{phase}-repeat", out, noisy, driver_args, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_dir is not None:
        out = args.from_dir
    else:
        peers = args.peers.split()
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            log(f"unknown peers {unknown}; choose from {' '.join(PEERS)}")
            return 2
        problems = check_setup(args.harness, args.node_dir, args.venv, args.switchboard)
        if problems:
            for problem in problems:
                log(problem)
            return 2
        if args.anchor:
            args.anchor_tree = anchor_checkout(args.anchor)
            peers.append("anchor")
            NAMES["anchor"] = f"hub {args.anchor} (anchor)"
        out = args.out or ROOT / "bench" / "results" / time.strftime("crdt-%Y%m%d-%H%M%S")
        out.mkdir(parents=True, exist_ok=True)
        main_args = QUICK_MAIN if args.quick else MAIN_ARGS
        if args.scenarios:  # the driver takes the last --scenarios it is given
            main_args = [*main_args, "--scenarios", args.scenarios]
        main_args = [*main_args, *args.driver.split()]
        probe_args = [*(QUICK_PROBE if args.quick else PROBE_ARGS), "--cap-rate", f"{args.probe_cap_rate:g}"]
        run_phase("main", out, peers, main_args, args)
        maybe_repeat("main", out, main_args, args)
        if not args.no_probe:
            run_phase("probe", out, peers, probe_args, args)
            maybe_repeat("probe", out, probe_args, args)
    text, ok = table(collect(out, "main"), collect(out, "probe"), args.tolerance)
    (out / "table.md").write_text(text + "\n")
    print(text)
    log(f"raw JSON, driver and server logs under {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
