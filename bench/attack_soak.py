"""Attack soak (issue 10): tests/hub/test_attack_soak.py for minutes, with figures.

One ``switchboard serve`` set up as for production (tests/soak.py's ``SOAK_SETTINGS``: secret, API key, every
limit the attacker meets) carries the normal traffic of tests/soak.py (three centrifuge-python subscribers of
``chat:room``, one over Protobuf; an SDK publisher at --rate publications a second; a y-websocket writer and
watcher of a document). Two phases in one run:

1. **baseline**: the normal traffic alone for --baseline seconds;
2. **attack**: the same traffic while ``python -m tests.attacker`` (a second process) runs every attack of
   issue 10 at once for --seconds.

Printed: the node's RSS every --every seconds during the attack (from /proc) and its slope over the attack's
second half (MB/min: a leak shows as a steady climb once the bounds are full), its peak, and what it is once
the attacker has gone; the normal traffic's publish-to-receive latency (p50/p99/max over every delivery) in
both phases and their ratio; the node's CPU (cores used, bench/procstat.py) in each phase; what the normal
clients noticed (tests/soak.py's ``problems()``: must be none); each attack's rounds and outcome counts.

The machine is shared and noisy (2 cores, other jobs): the load average is printed with the figures; the
latency ratio, not its absolute values, is the comparable figure, and under attack the attacker process and
the node compete with the traffic for the same two cores.

usage: .venv/bin/python bench/attack_soak.py [--seconds 300] [--baseline 60] [--rate 20] [--every 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # ROOT first: a bench script never hides a package of ours
import procstat  # noqa: E402

from tests.attacker import STARTED  # noqa: E402
from tests.nodes import API_KEY, SECRET, HubNode  # noqa: E402
from tests.soak import MB, NormalTraffic, Phase, soak_config  # noqa: E402


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, bytes) samples, in MB a minute."""
    if len(samples) < 2:
        return float("nan")
    xs = [t for t, _ in samples]
    ys = [rss / MB for _, rss in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60 if var else float("nan")


async def sample_rss(node: HubNode, samples: list[tuple[float, int]], every: float, start: float) -> None:
    """Append (seconds since ``start``, RSS) every 0.25 s; print a line every ``every`` seconds."""
    printed = -every
    while True:
        now = time.monotonic() - start
        samples.append((now, node.rss()))
        if now - printed >= every:
            printed = now
            print(
                f"  t={now:6.1f} s  rss={samples[-1][1] / MB:7.1f} MB  load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
        await asyncio.sleep(0.25)  # the sampling interval


def phase_line(name: str, phase: Phase, cpu_s: float) -> str:
    s = phase.summary()
    return (
        f"{name:9s} {phase.seconds:6.1f} s  {s['publications']:6d} pubs  {s['deliveries']:6d} deliveries  "
        f"p50 {s['p50_ms']:8.2f} ms  p99 {s['p99_ms']:8.2f} ms  max {s['max_ms']:8.2f} ms  "
        f"node CPU {cpu_s / max(phase.seconds, 1e-9):.2f} cores"
    )


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="attack-soak-"))
    node = HubNode("soak", work, soak_config(work / "hub.toml", log_level="warning"))
    await node.start()
    traffic = NormalTraffic(node.url, f"ws://127.0.0.1:{node.port}/doc", rate=args.rate)
    attacker = None
    try:
        await traffic.start()
        print(f"node pid {node.pid}, port {node.port}, rss {node.rss() / MB:.1f} MB; load {os.getloadavg()}")

        cpu0 = procstat.cpu(node.pid)
        baseline = await traffic.run(args.baseline)
        cpu_baseline = procstat.cpu_delta_s(cpu0, procstat.cpu(node.pid))["cpu_s"]
        rss_before = node.rss()
        print(f"baseline done: rss {rss_before / MB:.1f} MB")

        attacker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.attacker", "--url", node.http, "--api-key", API_KEY,
            "--secret", SECRET, "--seconds", str(args.seconds),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert attacker.stdout is not None
        assert (await attacker.stdout.readline()).decode().strip() == STARTED
        samples: list[tuple[float, int]] = []
        start = time.monotonic()
        sampler = asyncio.ensure_future(sample_rss(node, samples, args.every, start))
        cpu1 = procstat.cpu(node.pid)
        attacking = asyncio.ensure_future(attacker.communicate())
        under_attack = await traffic.run(until=attacking)
        cpu_attack = procstat.cpu_delta_s(cpu1, procstat.cpu(node.pid))["cpu_s"]
        out, _ = await attacking
        sampler.cancel()
        rss_end = node.rss()
        await asyncio.sleep(5)  # what the node holds once the attacker's connections are gone for a while
        rss_after = node.rss()

        outcomes = json.loads(out)
        half = [(t, r) for t, r in samples if t >= samples[-1][0] / 2]
        peak = max(r for _, r in samples)
        print()
        print(
            f"RSS: before the attack {rss_before / MB:.1f} MB, peak {peak / MB:.1f} MB, "
            f"at its end {rss_end / MB:.1f} MB, 5 s later {rss_after / MB:.1f} MB"
        )
        print(f"     slope over the attack's second half {slope_mb_per_min(half):+.2f} MB/min")
        print()
        print(phase_line("baseline", baseline, cpu_baseline))
        print(phase_line("attack", under_attack, cpu_attack))
        b, a = baseline.summary(), under_attack.summary()
        p50, p99 = a["p50_ms"] / b["p50_ms"], a["p99_ms"] / b["p99_ms"]
        print(f"latency under attack / baseline: p50 x{p50:.1f}, p99 x{p99:.1f}")
        problems = traffic.problems()
        print(f"\nwhat the normal clients noticed: {problems or 'nothing'}")
        print("\nattacker outcomes:")
        for name, counts in sorted(outcomes.items()):
            print(f"  {name:20s} " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        print(f"\nload average at the end: {os.getloadavg()}")
        return 1 if problems else 0
    finally:
        if attacker is not None and attacker.returncode is None:
            attacker.kill()
        await traffic.close()
        await node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="attack phase")
    parser.add_argument("--baseline", type=float, default=60.0, help="normal traffic alone, first")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="publications a second of the normal publisher"
    )
    parser.add_argument("--every", type=float, default=10.0, help="seconds between two printed RSS lines")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
