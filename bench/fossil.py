"""Fossil deltas on a realistic sensor feed: encode time per publication and bytes on the wire, with and
without deltas, in one run.

The feed: one device's readings, a JSON object of ~30 numeric sensor fields plus a few fixed ones, where
``--changes`` fields move per reading (a random walk, so neighbouring digits often stay) and the clock
always moves. Each reading is encoded once, as the hub would: ``delta_payload(previous, current)``.

Printed per row (one row per number of changed fields):

- ``encode us``: ``create_delta`` + the delta-or-full choice, per publication (median, p99, mean), in
  CPU time of the thread (``thread_time_ns``: time the process waits for a busy CPU is not counted; the
  clock read itself adds ~1 us);
- ``json us``: turning the chosen payload into a JSON string for JSON clients (``orjson.dumps(str)``);
- ``full B``: the data as non-delta subscribers get it (JSON embedded as is; Protobuf bytes the same);
- ``delta B``: the data as delta subscribers get it: Protobuf (bytes) and JSON (a JSON string, escaped);
- ``saved``: 1 - delta bytes / full bytes, over the whole feed, first (full) publication included.

usage: python bench/fossil.py [--readings 5000] [--changes 1,3,10] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.fossil import apply_delta, delta_payload  # noqa: E402

KINDS = ["temperature", "humidity", "pressure", "flow", "vibration", "current"]


def device(rng: random.Random, n_fields: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"device": "boiler-7", "site": "plant-3/hall-B", "seq": 0}
    fields["ts"] = 1_700_000_000_000
    for i in range(n_fields):
        fields[f"{KINDS[i % len(KINDS)]}_{i:02d}"] = round(rng.uniform(0, 500), 2)
    fields.update(status="ok", unit_system="SI")
    return fields


def readings(rng: random.Random, n: int, n_fields: int, changes: int) -> list[bytes]:
    fields = device(rng, n_fields)
    sensors = [k for k in fields if k[-2:].isdigit()]
    out = [orjson.dumps(fields)]
    for _ in range(n - 1):
        for name in rng.sample(sensors, changes):
            fields[name] = round(fields[name] + rng.gauss(0, 0.5), 2)
        fields["seq"] += 1
        fields["ts"] += rng.randint(990, 1010)
        out.append(orjson.dumps(fields))
    return out


def row(feed: list[bytes]) -> dict[str, float]:
    encode: list[float] = []
    escape: list[float] = []
    full = delta_pb = delta_json = deltas = 0
    previous: bytes | None = None
    for data in feed:
        started = time.thread_time_ns()
        payload, is_delta = delta_payload(previous, data)
        encode.append((time.thread_time_ns() - started) / 1e9)
        started = time.thread_time_ns()
        as_json_string = orjson.dumps(payload.decode("utf-8"))
        escape.append((time.thread_time_ns() - started) / 1e9)
        if is_delta:
            assert apply_delta(previous or b"", payload) == data
            deltas += 1
        full += len(data)
        delta_pb += len(payload)
        delta_json += len(as_json_string)
        previous = data
    encode.sort()
    return {
        "size": statistics.mean(len(d) for d in feed),
        "enc_p50": encode[len(encode) // 2] * 1e6,
        "enc_p99": encode[int(len(encode) * 0.99)] * 1e6,
        "enc_mean": statistics.mean(encode) * 1e6,
        "json_mean": statistics.mean(escape) * 1e6,
        "full": full / len(feed),
        "delta_pb": delta_pb / len(feed),
        "delta_json": delta_json / len(feed),
        "saved_pb": 1 - delta_pb / full,
        "saved_json": 1 - delta_json / full,
        "deltas": deltas / len(feed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=5000)
    parser.add_argument("--fields", type=int, default=30)
    parser.add_argument("--changes", default="1,3,10")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.readings} readings of {args.fields} sensor fields; python {sys.version.split()[0]}")
    print(
        f"{'changed':>7} {'data B':>7} | {'encode us p50/p99/mean':>23} {'json us':>8} | "
        f"{'full B':>7} {'delta B pb/json':>16} | {'saved pb/json':>14} {'as delta':>8}"
    )
    for changes in (int(c) for c in args.changes.split(",")):
        r = row(readings(random.Random(args.seed), args.readings, args.fields, changes))
        print(
            f"{changes:>7} {r['size']:>7.0f} | "
            f"{r['enc_p50']:>7.1f} {r['enc_p99']:>7.1f} {r['enc_mean']:>7.1f} "
            f"{r['json_mean']:>8.2f} | {r['full']:>7.0f} {r['delta_pb']:>7.1f} {r['delta_json']:>8.1f} | "
            f"{r['saved_pb']:>6.1%} {r['saved_json']:>7.1%} {r['deltas']:>8.1%}"
        )


if __name__ == "__main__":
    main()
