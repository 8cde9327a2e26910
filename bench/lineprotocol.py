"""Parser throughput for ingest batches, without the hub: points per second on one core for a Telegraf-like
line protocol batch (plain lines: the split fast path; lines with strings or escapes: the tokenizer),
parsing alone and parsed + mapped to readings, and for the same points as JSON lines.

usage: python bench/lineprotocol.py [--lines 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.ingest import parse_json_lines  # noqa: E402
from channels.lineprotocol import LineMapping, parse_line_protocol, readings_from_line_protocol  # noqa: E402


def plain_line(rng: random.Random, i: int) -> str:
    host = f"web-{i % 50}"
    fields = ",".join(f"f{j}={rng.uniform(0, 100):.3f}" for j in range(8))
    stamp = 1_700_000_000_000_000_000 + i
    return f"sensor,host={host},site=plant-3,sensor=s{i % 500} {fields},count={i}i {stamp}"


def tokenized_line(rng: random.Random, i: int) -> str:
    return (
        f'procstat,host=web-{i % 50},process_name=my\\ app cmdline="nginx: worker process",'
        f"cpu={rng.uniform(0, 100):.2f},pid={i}i {1_700_000_000_000_000_000 + i}"
    )


def rate(body: bytes, parse: Callable[[bytes], object], points: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        parse(body)
        best = min(best, time.process_time() - started)
    return points / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(1)
    mapping = LineMapping.from_mapping({"channel": "sensors:{tag:site}.{tag:host}", "key": "{tag:sensor}"})
    plain = "\n".join(plain_line(rng, i) for i in range(args.lines)).encode()
    tokenized = "\n".join(tokenized_line(rng, i) for i in range(args.lines)).encode()
    points = parse_line_protocol(plain).items
    json_lines = b"\n".join(
        orjson.dumps({"channel": f"sensors:{p.measurement}", "key": dict(p.tags)["sensor"], "data": p.fields})
        for p in points
    )
    print(f"{args.lines} lines a batch, best of {args.repeats}; python {sys.version.split()[0]}")
    for label, body, parse in (
        ("line protocol, plain (split path)", plain, parse_line_protocol),
        ("line protocol, strings/escapes (tokenizer)", tokenized, parse_line_protocol),
        (
            "line protocol, plain, parsed + mapped",
            plain,
            lambda b: readings_from_line_protocol(b, mapping, 0),
        ),
        ("JSON lines, same points", json_lines, parse_json_lines),
    ):
        per_s = rate(body, parse, args.lines, args.repeats)
        size = len(body) / args.lines
        print(f"{label:<45} {per_s:>10,.0f} points/s  {1e6 / per_s:>6.1f} us/point  {size:.0f} B/line")


if __name__ == "__main__":
    main()
